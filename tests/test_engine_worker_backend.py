"""Workers import Keras with its numpy backend unless the dataset needs a framework."""

import json
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from keras_loadtune.engine.process import _keras, _start

SCRIPT = Path(__file__).parent / "scripts" / "worker_backend.py"


def _run(kind: str) -> tuple[list[str], list[dict], list[int]]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), kind], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return lines[0]["preload"], lines[1:-1], lines[-1]["forkserver_threads"]


@pytest.mark.keras
def test_numpy_only_main_dataset_gets_preloaded_numpy_keras_in_tensorflow_trainer():
    preload, batches, forkserver_threads = _run("plain")
    assert "keras" in preload  # a __main__ class has no module: Keras itself is preloaded
    # Why forking workers from the forkserver is safe: after importing Keras (numpy
    # backend) it still runs one thread, so no lock can be held by another thread.
    assert forkserver_threads == [1]
    assert len(batches) == 2 and len({b["pid"] for b in batches}) >= 1
    for b in batches:
        assert b["backend"] == "numpy"
        assert b["tensorflow_imported"] is False
        assert b["ops_type"] == "numpy.ndarray"  # keras.ops in a worker gives NumPy


@pytest.mark.keras
def test_dataset_using_tensorflow_keeps_the_trainer_backend_in_workers():
    _, batches, _ = _run("tf")
    for b in batches:
        assert b["backend"] == "tensorflow"
        assert b["tensorflow_imported"] is True


@pytest.mark.keras
def test_main_dataset_referring_to_no_keras_starts_workers_without_keras():
    preload, batches, forkserver_threads = _run("numpy")
    assert "keras" not in preload  # nothing of Keras to preload
    assert forkserver_threads == [1]
    assert len(batches) == 2
    for b in batches:
        assert b["keras_imported"] is False  # unpickled against the stand-in base
        assert b["base"] == "keras_loadtune.engine.process._keras"
        assert b["workers"] == 2  # the knobs travel with the instance


@pytest.mark.keras
def test_the_escape_hatch_sends_the_real_keras_base(monkeypatch):
    monkeypatch.setenv(_keras.USER_ENV_VAR, "trainer")
    _, batches, _ = _run("numpy")
    for b in batches:
        assert b["keras_imported"] is True
        assert b["base"].startswith("keras.")


class _NumpyOnly:
    def __getitem__(self, index):
        return types.SimpleNamespace(index=index)


def test_needs_framework_sees_module_globals_attributes_and_closures(monkeypatch):
    fake_tf = types.ModuleType("tensorflow")
    assert not _keras.needs_framework(_NumpyOnly())
    holder = _NumpyOnly()
    holder.model = types.SimpleNamespace()
    holder.tensor = type("Tensor", (), {"__module__": "torch"})()
    assert _keras.needs_framework(holder)

    def factory():
        yield fake_tf.constant

    assert _keras.needs_framework(factory) is False  # the module holds no framework
    monkeypatch.setitem(globals(), "tf", fake_tf)

    def uses_global():
        yield tf  # noqa: F821 - resolved through this module's globals at call time

    # This test module is importable, so the whole module is scanned for frameworks.
    assert _keras.needs_framework(uses_global)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("trainer", None), ("jax", "jax"), ("auto", "numpy"), ("", "numpy")],
)
def test_escape_hatch_env_var(monkeypatch, choice, expected):
    monkeypatch.setenv(_keras.USER_ENV_VAR, choice)
    assert _keras.worker_backend(_NumpyOnly()) == expected


def test_forkserver_applies_the_chosen_backend(monkeypatch):
    monkeypatch.setenv(_keras.ENV_VAR, "numpy")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    _keras.apply_in_forkserver()
    import os

    assert os.environ["KERAS_BACKEND"] == "numpy"


def test_without_jax_workers_keep_the_trainer_backend(monkeypatch):
    # Keras's numpy backend imports jax: with tensorflow-cpu alone it cannot load.
    monkeypatch.delenv(_keras.USER_ENV_VAR, raising=False)
    real_find_spec = _keras.importlib.util.find_spec
    monkeypatch.setattr(
        _keras.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "jax" else real_find_spec(name, *a),
    )
    assert _keras.worker_backend(_NumpyOnly()) is None


def _main_class(body: dict) -> type:
    import keras

    return type("MainDataset", (keras.utils.PyDataset,), {"__module__": "__main__", **body})


@pytest.mark.keras
def test_stand_in_base_only_for_main_datasets_referring_to_nothing_heavy(monkeypatch):
    import keras

    from keras_loadtune.engine import cold_start_estimate_s

    def numpy_item(self, i):
        return np.zeros(2) + i

    def keras_item(self, i):
        return keras.ops.zeros(2)  # refers to `keras`: the real base is needed

    numpy_only = _main_class({"__getitem__": numpy_item, "__len__": lambda self: 2})()
    uses_keras = _main_class({"__getitem__": keras_item, "__len__": lambda self: 2})()
    monkeypatch.setattr(_start, "_prewarm_thread", None)  # no forkserver prewarmed yet
    assert _keras.uses_only_the_base(numpy_only)
    assert cold_start_estimate_s(numpy_only) == _start.LIGHT_POOL_START_S
    assert not _keras.uses_only_the_base(uses_keras)
    assert cold_start_estimate_s(uses_keras) is None
    # Once a prewarm has started the forkserver, any dataset's pool is a fork away.
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    monkeypatch.setattr(_start, "_prewarm_thread", done)
    assert cold_start_estimate_s(uses_keras) == _start.WARM_POOL_START_S
    monkeypatch.setattr(_start, "_prewarm_thread", None)
    numpy_only.model = keras.layers.Dense(1)  # a Keras object among its attributes
    assert not _keras.uses_only_the_base(numpy_only)
    del numpy_only.model
    monkeypatch.setenv(_keras.USER_ENV_VAR, "trainer")
    assert not _keras.uses_only_the_base(numpy_only)


MODULE_SCRIPT = Path(__file__).parent / "scripts" / "module_dataset_pool.py"


def _run_module(kind: str) -> tuple[dict, list[dict], dict]:
    out = subprocess.run(
        [sys.executable, str(MODULE_SCRIPT), kind], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return lines[0], lines[1:-1], lines[-1]


@pytest.mark.keras
def test_module_dataset_using_only_numpy_gets_the_light_pool_and_its_module_never_reruns():
    # klt_user_project/data.py imports Keras at its top and logs each import of itself.
    decision, batches, imports = _run_module("numpy")
    assert decision["light"] and decision["by_value"] == ["klt_user_project.data"]
    # Light until the prewarm thread has started the forkserver, a fork away once it has;
    # the prewarm may finish between the two reads, never the other way round.
    assert decision["estimate"] in (_start.LIGHT_POOL_START_S, _start.WARM_POOL_START_S)
    if decision["prewarmed"]:
        assert decision["estimate"] == _start.WARM_POOL_START_S
    assert "keras" not in decision["preload"]
    assert "klt_user_project.data" not in decision["preload"]
    assert len(batches) == 2
    for b in batches:
        assert b["keras_imported"] is False  # the stand-in base, classes sent by value
        assert b["module_imported"] is False  # the worker never imports the module...
        assert b["base"] == "keras_loadtune.engine.process._keras"
    assert imports["imported_by"] == [str(imports["trainer"])]  # ...nor does the forkserver


@pytest.mark.keras
def test_a_helper_function_from_another_project_module_travels_by_value_too():
    # The usual project layout: the dataset module imports a NumPy helper by name from
    # another module of the project (`from .augment import flip`); both go by value.
    decision, batches, imports = _run_module("other-function")
    assert decision["light"]
    assert decision["by_value"] == ["klt_user_project.data", "klt_user_project.other"]
    assert all(not b["keras_imported"] and not b["module_imported"] for b in batches)
    assert imports["imported_by"] == [str(imports["trainer"])]


@pytest.mark.keras
@pytest.mark.parametrize("kind", ["keras", "other"])
def test_module_dataset_using_keras_or_another_project_module_keeps_the_real_module(kind):
    decision, batches, _ = _run_module(kind)
    assert not decision["light"] and decision["by_value"] is None
    assert "klt_user_project.data" in decision["preload"]
    assert all(b["module_imported"] for b in batches)


@pytest.mark.keras
def test_by_value_modules_scan_of_module_datasets(monkeypatch):
    monkeypatch.syspath_prepend(str(MODULE_SCRIPT.parent))
    from klt_user_project import data

    assert _keras.by_value_modules(data.NumpyOnly()) == ("klt_user_project.data",)
    assert _keras.by_value_modules(data.UsesKeras()) is None
    assert _keras.by_value_modules(data.UsesOtherModule()) is None
    assert _keras.uses_only_the_base(data.NumpyOnly())


@pytest.mark.keras
def test_a_module_dataset_that_cannot_go_by_value_goes_by_reference(monkeypatch):
    import threading

    monkeypatch.syspath_prepend(str(MODULE_SCRIPT.parent))
    from klt_user_project import data

    from keras_loadtune.engine.process import _shipping

    monkeypatch.setattr(data, "SCALE", threading.Lock())  # a module constant pickle refuses
    ds = data.NumpyOnly()
    blob, light = _shipping.dumps_light(
        ds, None, light_base=None, by_value=("klt_user_project.data",)
    )
    assert light is False
    import pickle

    assert type(pickle.loads(blob)) is data.NumpyOnly  # by reference: the real class
    import cloudpickle

    assert "klt_user_project.data" not in cloudpickle.list_registry_pickle_by_value()


@pytest.mark.keras
def test_a_module_dataset_sent_by_value_surfaces_its_own_exception_class(monkeypatch):
    monkeypatch.syspath_prepend(str(MODULE_SCRIPT.parent))
    from klt_user_project import data

    from keras_loadtune import LoaderConfig
    from keras_loadtune.engine import Prefetcher

    ds = data.Raises()
    assert _keras.by_value_modules(ds) == ("klt_user_project.data",)
    with Prefetcher(ds, LoaderConfig(2, 2, True)) as pf:
        pf.begin_pass(range(2))
        pf.next()
        with pytest.raises(data.BadBatch, match="batch 1 is broken"):  # not a RuntimeError
            pf.next()
