"""Nothing fixed when compute-bound: no Optuna, no study, no extra thread, no batch-end hook.

Each fit runs in a fresh interpreter, so what other tests imported cannot hide an import
the tuner made. The fits are compute-bound on every backend (steps of several ms,
batches that cost nothing, a 20% wait threshold), so the verdict does not depend on the
machine's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.keras

ROOT = Path(__file__).resolve().parents[1]

_FIT = textwrap.dedent(
    """
    import json, sys, threading
    sys.path.insert(0, {tests!r})
    import keras
    from keras_datasets import FEATURES, IndexPyDataset
    import keras_loadtune as klt

    layers = [keras.layers.Dense(512, activation="relu") for _ in range(2)]
    model = keras.Sequential([keras.Input((FEATURES,)), *layers, keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    tuner = klt.LoadTuner(verbose=0, wait_threshold=0.2, storage={storage!r})
    names = []

    class Threads(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            names.extend(t.name for t in threading.enumerate())

    with tuner.wrap(IndexPyDataset(n=60, batch_size=64)) as train:
        model.fit(train, epochs=1, verbose=0, callbacks=[tuner, Threads()])
    print(json.dumps({{
        "phase": str(tuner.phase),
        "optuna": "optuna" in sys.modules,
        "ticking": tuner.ticking,
        "threads": sorted(set(n for n in names if n.startswith("keras_loadtune-session"))),
        "decision": tuner.report.decision,
    }}))
    """
)


def test_a_compute_bound_fit_never_imports_optuna_nor_opens_its_storage(tmp_path):
    db = tmp_path / "klt.db"
    code = _FIT.format(tests=str(ROOT / "tests"), storage=f"sqlite:///{db}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["phase"] == "compute-bound" and seen["decision"] == "compute-bound", seen
    assert seen["optuna"] is False
    assert seen["threads"] == []  # no session thread: nothing started off the training thread
    assert seen["ticking"] is False  # tuning over: no Python of ours per step
    assert not db.exists()  # the storage is opened only for a fit worth tuning
