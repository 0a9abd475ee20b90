"""Tests for `keras_loadtune.keras_adapter._hooks`: the adapter Keras gets for a wrapped
dataset raises no warning the user did not cause (issue #23: wrapping a generator
function made `fit` warn "`shuffle=True` was passed, but will be ignored")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from keras_loadtune.keras_adapter import _hooks
from keras_loadtune.keras_adapter.dataset import TunedPyDataset


def _batches():
    for _ in range(3):
        yield np.zeros((2, 1)), np.zeros((2, 1))


def test_a_wrapped_generator_function_gets_no_shuffle_warning():
    with TunedPyDataset(_batches) as ds:
        assert ds.num_batches is None
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            adapter = _hooks._tuned_adapter(ds, shuffle=True)  # fit's default
        assert not [w for w in seen if "shuffle" in str(w.message)]
        assert adapter is not None


class _Endless(TunedPyDataset):
    @property
    def num_batches(self):
        return None


def test_an_infinite_pydataset_still_warns_like_keras():
    from keras_datasets import IndexPyDataset

    with _Endless(IndexPyDataset(n=4)) as ds, pytest.warns(UserWarning, match="shuffle=True"):
        _hooks._tuned_adapter(ds, shuffle=True)
