"""Pins the Keras internals `keras_loadtune.keras_adapter._hooks` relies on.

If one of these fails after a Keras upgrade, the adapter needs porting before the new
version can be allowed in setup.cfg; the assertion message says what moved.
"""

from __future__ import annotations

import configparser
import inspect
import re
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

from keras.src.trainers import data_adapters, epoch_iterator  # noqa: E402
from keras.src.trainers.data_adapters import py_dataset_adapter  # noqa: E402

from keras_loadtune.keras_adapter import _hooks  # noqa: E402

pytestmark = pytest.mark.keras

REPO = Path(__file__).resolve().parent.parent
MOVED = "Keras internals moved: keras_loadtune.keras_adapter._hooks must be ported. "


class _Plain(keras.utils.PyDataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        import numpy as np

        return np.zeros((1, 1)), np.zeros((1, 1))


def _source(obj) -> str:
    return inspect.getsource(obj)


def test_epoch_iterator_calls_get_data_adapter_through_the_module_attribute():
    src = _source(epoch_iterator.EpochIterator.__init__)
    assert "data_adapters.get_data_adapter(" in src, (
        MOVED + "EpochIterator no longer calls `data_adapters.get_data_adapter(...)` through "
        "the module attribute, so wrapping that attribute no longer routes TunedPyDataset."
    )
    assert epoch_iterator.data_adapters is data_adapters, (
        MOVED + "keras.src.trainers.epoch_iterator.data_adapters is not the module we patch."
    )


def test_py_dataset_adapter_has_the_methods_we_inherit():
    adapter = py_dataset_adapter.PyDatasetAdapter
    for name in ("_standardize_batch", "_get_iterator", "get_tf_dataset", "get_numpy_iterator"):
        assert callable(getattr(adapter, name, None)), (
            MOVED + f"PyDatasetAdapter.{name} is gone; TunedPyDatasetAdapter inherits it."
        )
    params = list(inspect.signature(adapter.__init__).parameters)
    assert params[:4] == ["self", "x", "class_weight", "shuffle"], (
        MOVED + f"PyDatasetAdapter.__init__ signature changed: {params}"
    )


def test_py_dataset_adapter_builds_every_iterator_from_one_enqueuer_get():
    adapter = py_dataset_adapter.PyDatasetAdapter
    for name in ("get_numpy_iterator", "get_jax_iterator", "get_tf_dataset"):
        assert "self._get_iterator" in _source(getattr(adapter, name)), (
            MOVED + f"PyDatasetAdapter.{name} no longer builds its iterator with "
            "self._get_iterator()."
        )
    assert "self.enqueuer is None" in _source(adapter._get_iterator), (
        MOVED + "_get_iterator no longer takes the enqueuer path when an enqueuer is set."
    )
    for name in ("_finite_enqueuer_generator", "_infinite_enqueuer_generator"):
        src = _source(getattr(adapter, name))
        assert src.count("self.enqueuer.get()") == 1 and "_standardize_batch" in src, (
            MOVED + f"PyDatasetAdapter.{name} no longer reads one enqueuer.get() per "
            "iterator (StreamEnqueuer opens one stream per get())."
        )
    assert "self.enqueuer is not None" in _source(adapter.get_tf_dataset), (
        MOVED + "get_tf_dataset no longer skips its tf.data prefetch for enqueuer-fed "
        "datasets (`self.enqueuer is not None`)."
    )
    for name in ("on_epoch_begin", "on_epoch_end"):
        assert callable(getattr(adapter, name, None)), MOVED + f"{name} is gone."


def test_epoch_iterator_makes_a_new_iterator_exactly_when_keras_starts_a_pass():
    src = _source(epoch_iterator.EpochIterator._enumerate_iterator)
    assert "self._current_iterator is None or self.steps_per_epoch is None" in src, (
        MOVED + "EpochIterator no longer keeps one iterator across epochs only under "
        "steps_per_epoch; streams follow Keras's iterators, so re-check the lifecycle tests."
    )
    assert "self._current_iterator = None" in _source(epoch_iterator.EpochIterator.reset), (
        MOVED + "EpochIterator.reset no longer drops the iterator."
    )


def test_get_data_adapter_routes_tuned_datasets_to_our_adapter_only():
    import keras_loadtune as klt

    _hooks.install(klt.TunedPyDataset)
    _hooks.install(klt.TunedPyDataset)  # idempotent: wrapped once
    patched = data_adapters.get_data_adapter
    assert getattr(patched, "_keras_loadtune", False), "get_data_adapter is not wrapped"
    original = patched._keras_loadtune_original
    assert not getattr(original, "_keras_loadtune", False), "get_data_adapter wrapped twice"

    with klt.wrap(_Plain()) as wrapped:
        ours = data_adapters.get_data_adapter(wrapped, shuffle=True)
        assert type(ours) is _hooks.TunedPyDatasetAdapter
        # Keras's get_tf_dataset skips its own tf.data prefetch when an enqueuer is set.
        assert ours.enqueuer is not None
        assert ours.shuffle is True
        # What Keras's EpochIterator builds goes through the same hook.
        it = epoch_iterator.EpochIterator(wrapped, shuffle=False)
        assert type(it.data_adapter) is _hooks.TunedPyDatasetAdapter

    theirs = data_adapters.get_data_adapter(_Plain(workers=2), shuffle=True)
    assert type(theirs) is py_dataset_adapter.PyDatasetAdapter
    assert type(theirs.enqueuer).__name__ == "OrderedEnqueuer"
    with klt.wrap(_Plain()) as wrapped, pytest.raises(ValueError, match="`y` should not be"):
        data_adapters.get_data_adapter(wrapped, y=[1, 2])


def test_installed_keras_is_within_the_supported_range():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    requires = cfg["options"]["install_requires"]
    match = re.search(r"keras>=([\d.]+),<([\d.]+)", requires)
    assert match, f"no `keras>=X,<Y` pin in setup.cfg install_requires: {requires!r}"
    low, high = (tuple(int(p) for p in v.split(".")) for v in match.groups())
    version = tuple(int(p) for p in re.findall(r"\d+", keras.__version__)[:3])
    assert low <= version < high, (
        f"keras {keras.__version__} is outside setup.cfg's keras>={match[1]},<{match[2]}; "
        "run tests/test_keras_internals.py against it and widen the pin only if it passes."
    )
    assert low >= (3, 6) and high <= (3, 16), "the pin widened past what this file pinned"
