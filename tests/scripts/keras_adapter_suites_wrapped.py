"""Keras 3.15.1's own DataLoader and Grain adapter tests, with every input wrapped.

Runs `keras/src/trainers/data_adapters/torch_data_loader_adapter_test.py` and
`grain_dataset_adapter_test.py` (shipped in the installed Keras package) with the
adapter each test builds replaced by `get_data_adapter(tuner.wrap(x))`; inputs that
`tuner.wrap` returns unchanged (iterable-style loaders, Grain iterators) keep Keras's
own adapter. Prints the failures and how many inputs were wrapped. With
`--keras-metadata` the wrapped adapter answers `batch_size`, the partial batch and
`num_batches` as Keras's own adapter does, so only the batches themselves are checked.

    KERAS_BACKEND=jax python tests/scripts/keras_adapter_suites_wrapped.py [--keras-metadata]

Known differences (Keras 3.15.1): the wrapped adapter is a `PyDatasetAdapter`, whose
`batch_size` / `has_partial_batch` are None, and which knows a Grain `MapDataset`'s
length (Keras's Grain adapter says None); a `str` given as a Grain dataset gets
keras-loadtune's `TypeError` instead of Keras's `ValueError`.
"""

from __future__ import annotations

import sys
import unittest

from keras.src.trainers import data_adapters
from keras.src.trainers.data_adapters import grain_dataset_adapter_test as grain_tests
from keras.src.trainers.data_adapters import torch_data_loader_adapter_test as torch_tests
from keras.src.trainers.data_adapters.grain_dataset_adapter import GrainDatasetAdapter
from keras.src.trainers.data_adapters.torch_data_loader_adapter import TorchDataLoaderAdapter

import keras_loadtune as klt

COUNT = {"wrapped": 0, "unchanged": 0}


def _wrapping(original):
    def adapter(x, *args, **kwargs):
        wrapped = klt.LoadTuner(storage=None, verbose=0).wrap(x)
        if wrapped is x:
            COUNT["unchanged"] += 1
            return original(x, *args, **kwargs)
        COUNT["wrapped"] += 1
        served = data_adapters.get_data_adapter(wrapped, shuffle=False)
        if "--keras-metadata" in sys.argv:  # check the data path alone
            served.__class__ = _with_metadata(type(served), original(x, *args, **kwargs))
        return served

    return adapter


def _with_metadata(cls: type, keras_adapter) -> type:
    """`cls` answering Keras's adapter's batch_size / partial batch / num_batches."""
    names = ("batch_size", "has_partial_batch", "partial_batch_size", "num_batches")
    return type(
        cls.__name__, (cls,), {n: property(lambda _, n=n: getattr(keras_adapter, n)) for n in names}
    )


class _GrainModule:
    GrainDatasetAdapter = staticmethod(_wrapping(GrainDatasetAdapter))


def main() -> int:
    torch_tests.TorchDataLoaderAdapter = _wrapping(TorchDataLoaderAdapter)
    grain_tests.grain_dataset_adapter = _GrainModule
    suite = unittest.TestSuite()
    for module in (torch_tests, grain_tests):
        suite.addTests(unittest.TestLoader().loadTestsFromModule(module))
    result = unittest.TextTestRunner(verbosity=1, stream=sys.stdout).run(suite)
    for kind, items in (("FAIL", result.failures), ("ERROR", result.errors)):
        for test, trace in items:
            print(kind, test.id(), "|", trace.strip().splitlines()[-1][:200])
    print(COUNT)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
