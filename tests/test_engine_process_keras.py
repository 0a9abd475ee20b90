"""`engine/process/_keras.py`, the engine's one module that knows Keras, without Keras.

A fake `keras.src...py_dataset_adapter` module stands in for Keras, so these tests
import neither Keras nor a backend.
"""

import sys
import types

import numpy as np
import pytest

from keras_loadtune.engine.process import _keras, _shipping


@pytest.fixture
def fake_keras(monkeypatch):
    """A `PyDataset` base class in a fake Keras module, and a fake `keras` package."""
    adapter = types.ModuleType(_keras._PYDATASET_MODULE)

    class PyDataset:
        pass

    PyDataset.__module__ = adapter.__name__
    adapter.PyDataset = PyDataset
    monkeypatch.setitem(sys.modules, adapter.__name__, adapter)
    monkeypatch.setitem(sys.modules, "keras", types.ModuleType("keras"))
    monkeypatch.delenv(_keras.USER_ENV_VAR, raising=False)
    return PyDataset


def _framework_object():
    cls = type("Module", (), {"__module__": "torch.nn"})
    return cls()


def test_a_numpy_only_dataset_travels_with_the_stand_in_base(fake_keras):
    class NumpyOnly(fake_keras):
        def __getitem__(self, index):
            return np.full(2, index)

    ds = NumpyOnly()
    assert _keras.is_keras_dataset(ds)
    assert _keras.keras_base(ds) is fake_keras
    assert _keras.uses_only_the_base(ds)
    assert _keras.light_pickle(ds) == (fake_keras, (NumpyOnly.__module__,))
    assert _keras.preload_modules(ds) == []  # workers import no Keras: nothing to preload


def test_a_dataset_holding_a_framework_object_needs_the_real_keras(fake_keras):
    class HoldsAModel(fake_keras):
        def __init__(self):
            self.model = _framework_object()

        def __getitem__(self, index):
            return np.full(2, index)

    ds = HoldsAModel()
    assert _keras.is_keras_dataset(ds)
    assert not _keras.uses_only_the_base(ds)
    assert _keras.light_pickle(ds) is None
    assert _keras.preload_modules(ds) == ["keras"]
    assert _keras.needs_framework(ds)


def test_the_users_backend_choice_turns_the_stand_in_off(fake_keras, monkeypatch):
    class NumpyOnly(fake_keras):
        def __getitem__(self, index):
            return np.full(2, index)

    monkeypatch.setenv(_keras.USER_ENV_VAR, "trainer")
    assert _keras.light_pickle(NumpyOnly()) is None
    assert _keras.worker_backend(NumpyOnly()) is None


def test_objects_that_are_not_keras_datasets():
    for owner in ([1, 2], object(), np.zeros(3)):
        assert not _keras.is_keras_dataset(owner)
        assert _keras.keras_base(owner) is None
        assert _keras.light_pickle(owner) is None
        assert _keras.preload_modules(owner) == []


def test_the_shipped_pickle_names_the_stand_in_not_the_keras_base(fake_keras):
    class NumpyOnly(fake_keras):
        def __init__(self):
            self.scale = 3

        def __getitem__(self, index):
            return np.full(2, index * self.scale)

    shipper = _shipping.SourceShipper("klt_test_stand_in_")
    try:
        shipment = shipper.ship(NumpyOnly())
        assert shipper.light_base
        # A worker rebuilds the class on the stand-in; this process gets its own class
        # back (cloudpickle tracks classes it sent by value), so look at the pickle.
        assert _keras.__name__.encode() in shipment.data and b"stand_in" in shipment.data
        assert _keras._PYDATASET_MODULE.encode() not in shipment.data
        assert _shipping.load(shipment)[2].tolist() == [6, 6]
    finally:
        shipper.close()
