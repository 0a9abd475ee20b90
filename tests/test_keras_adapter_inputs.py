"""`keras_adapter/inputs.py` and `input_kind.py`: which inputs are tuned, which only measured.

tf.data and arrays are diagnosed, never touched: `tuner.wrap` hands them back unchanged,
the tuner measures the fit, and the report names tf.data's own knobs.
"""

from __future__ import annotations

import grain
import keras
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from tuners import make_tuner

import keras_loadtune as klt
from keras_loadtune.keras_adapter.input_kind import InputKind, classify
from keras_loadtune.keras_adapter.inputs import plan_input
from keras_loadtune.keras_adapter.torch_source import TorchLoaderSource

pytestmark = [pytest.mark.keras]


def _tf_data():
    import tensorflow as tf

    x = np.arange(64, dtype="float32").reshape(32, 2)
    return tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(8)


class _Py(keras.utils.PyDataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return np.zeros((1, 2)), np.zeros((1, 1))


@pytest.mark.parametrize(
    ("make", "kind", "measured_only"),
    [
        (lambda: _Py(), InputKind.PYDATASET, False),
        (lambda: lambda: iter([]), InputKind.GENERATOR, False),
        (
            lambda: DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2),
            InputKind.TORCH_DATALOADER,
            False,
        ),
        (lambda: grain.MapDataset.range(4).batch(2), InputKind.GRAIN, False),
        # Grain runs it (`GrainIterSource`, retuned at epoch boundaries)
        (lambda: grain.MapDataset.range(4).to_iter_dataset(), InputKind.GRAIN, False),
        (_tf_data, InputKind.TF_DATA, True),
        (lambda: np.zeros((4, 2)), InputKind.OTHER, False),  # TunedPyDataset rejects it
    ],
    ids=["pydataset", "generator", "torch", "grain-map", "grain-iter", "tf.data", "array"],
)
def test_each_kind_is_recognised_and_planned(make, kind, measured_only):
    x = make()
    assert classify(x) is kind
    plan = plan_input(x)
    assert plan.kind is kind and plan.measured_only is measured_only
    assert kind.tunable is (kind is not InputKind.TF_DATA and kind is not InputKind.OTHER)
    if measured_only:
        assert plan.note  # says why, and which knobs are the input's own
    if kind is InputKind.TORCH_DATALOADER:
        assert isinstance(plan.source, TorchLoaderSource)


def test_a_loaders_timeout_and_ignored_settings_are_carried():
    loader = DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2, timeout=7, pin_memory=True)
    plan = plan_input(loader)
    assert plan.timeout == 7.0 and "pin_memory" in plan.note
    with klt.wrap(loader) as wrapped:
        assert wrapped._timeout == 7.0


def test_tf_data_is_returned_unchanged_measured_and_its_knobs_named():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    tuner = make_tuner(fast=False, warmup_steps=1)
    data = _tf_data()
    assert tuner.wrap(data) is data
    model.fit(data, epochs=2, callbacks=[tuner], verbose=0, shuffle=False)
    report = tuner.report
    assert report.decision == "not-wrapped"
    assert any("num_parallel_calls=tf.data.AUTOTUNE" in n and "cache()" in n for n in report.notes)
    assert len(report.epoch_wait_fractions) == 2  # measured, epoch by epoch


@pytest.mark.parametrize(("wait", "advised"), [(0.30, True), (0.01, False)])
def test_unwrapped_input_that_waited_is_advised_its_own_knobs(wait, advised):
    # report/_advice.py's `tune_the_input`: the advice for inputs `tuner.wrap` passes on.
    from keras_loadtune.report import TuningReport

    report = TuningReport("not-wrapped", None, None, epoch_wait_fractions=[0.5, wait])
    named = [a for a in report.advice if "num_parallel_calls=tf.data.AUTOTUNE" in a]
    assert bool(named) is advised
    if advised:
        assert "30%" in named[0] and "tuner.wrap" in named[0]
    wrapped = TuningReport("kept-baseline", None, None, epoch_wait_fractions=[0.5, wait])
    assert not any("num_parallel_calls" in a for a in wrapped.advice)
