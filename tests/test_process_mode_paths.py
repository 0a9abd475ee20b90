"""Process mode where plain Keras works: unguarded scripts, notebooks, Ctrl-C, idle deaths,
and switches that never stall training (issue #11). Run on every Keras backend.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from lifecycle_data import IdDataset, Seen, model

import keras_loadtune as klt
from keras_loadtune import LoaderConfig
from keras_loadtune.engine import Prefetcher

pytestmark = [pytest.mark.keras, pytest.mark.timeout(300)]

SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def test_a_training_script_without_main_guard_runs_its_body_once(tmp_path):
    log = tmp_path / "body.log"
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "keras_unguarded.py")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=_env(KLT_BODY_LOG=str(log)),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fit done" in out.stdout
    assert len(log.read_text().splitlines()) == 1, log.read_text()


def test_ctrl_c_to_the_process_group_then_fit_again(tmp_path):
    proc = subprocess.Popen(
        ["setsid", sys.executable, str(SCRIPTS / "keras_sigint.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=_env(),
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    assert "interrupted" in stdout
    assert "second fit steps 24" in stdout, stdout
    assert "Traceback" not in stderr, stderr[-3000:]
    # Nothing of the script's session is left behind (the forkserver and resource
    # tracker notice their parent is gone within moments).
    deadline = time.monotonic() + 10
    while True:
        left = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True)
        if not left.stdout.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left.stdout.strip() == "", left.stdout


def test_a_worker_killed_while_idle_is_replaced_on_next_use():
    data = klt.TunedPyDataset(IdDataset(6), LoaderConfig(2, 3, True), idle_timeout=None)
    try:
        first = Seen()
        model().fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[first])
        pids = data.worker_pids
        assert pids
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(0.3)
        second = Seen()
        model().fit(data, epochs=2, verbose=0, shuffle=False, callbacks=[second])
        assert second.train == [list(range(6))] * 2
    finally:
        data.close()


def test_a_notebook_trains_with_process_workers_on_a_class_it_defines(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "import keras, numpy as np, keras_loadtune as klt",
        (
            "class Rows(keras.utils.PyDataset):\n"
            "    def __len__(self):\n        return 6\n"
            "    def __getitem__(self, i):\n"
            "        return np.full((2, 3), i, 'float32'), np.zeros((2, 1), 'float32')"
        ),
        (
            "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\n"
            "m.compile('sgd', 'mse')\n"
            "data = klt.wrap(Rows(workers=2, use_multiprocessing=True))\n"
            "h = m.fit(data, epochs=2, verbose=0)\n"
            "assert len(data.worker_pids) == 2, data.worker_pids\n"
            "print('trained', len(h.history['loss']))\n"
            "data.close()"
        ),
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    os.environ.setdefault("KERAS_BACKEND", keras.backend.backend())
    client.execute()
    outputs = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert "trained 2" in outputs, nb.cells[-1].outputs


class _Python:
    """A loader whose batches take ~4 ms of Python work."""

    def __getitem__(self, index):
        t = time.perf_counter()
        while time.perf_counter() - t < 0.004:
            pass
        return np.full(4, index, "float32")


def test_a_switch_to_processes_does_not_stall_the_consumer():
    with Prefetcher(_Python(), LoaderConfig(2, 4), idle_timeout=None) as pf:
        pf.begin_pass(None)
        gaps = []
        last = time.perf_counter()
        for step in range(4000):
            pf.next()
            time.sleep(0.002)  # the training step
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            if step == 20:
                pf.reconfigure(LoaderConfig(2, 4, True), background=True)
            if step > 20 and pf.pending_config is None:
                break
        assert pf.config.use_multiprocessing, "the switch never completed"
        startup = next(s for s in pf.stats.startups if s.background)
        assert startup.error is None
        # The process pool took startup.seconds to come up; no step waited for it.
        assert max(gaps[21:]) < max(0.5 * startup.seconds, 0.05), (max(gaps), startup)


FINALIZE_SCRIPT = """
import time
import numpy as np, keras
import keras_loadtune as klt

class Rows(keras.utils.PyDataset):
    def __len__(self):
        return 30
    def __getitem__(self, i):
        time.sleep(0.005)
        return np.full((4, 3), i, "float32"), np.zeros((4, 1), "float32")

def main():
    tuner = klt.LoadTuner(storage=None, seed=0, verbose=0)
    data = tuner.wrap(Rows())
    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    m.compile("sgd", "mse")
    m.fit(data, validation_data=tuner.wrap(Rows()), epochs=2, verbose=0, callbacks=[tuner])
    return m

model = main()
print("done")
"""


def test_a_script_exits_without_tensorflow_finalization_errors(tmp_path):
    # Issue #11, 6: runs that used the tuner ended with TensorFlow's "Error occurred when
    # finalizing GeneratorDataset iterator" at interpreter exit: Optuna imported inside a
    # training step kept that step's frames, and fit's tf.data iterators, alive.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("a tf.data message: TensorFlow backend only")
    out = subprocess.run(
        [sys.executable, "-c", FINALIZE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "done" in out.stdout
    assert "finalizing GeneratorDataset" not in out.stderr, out.stderr[-3000:]
