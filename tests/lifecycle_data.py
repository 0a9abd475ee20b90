"""Datasets and a probe for the Keras lifecycle tests: what did the model really see?

Every sample of batch `i` has `x = y = i`. The `BatchId` metric keeps the largest `y` of
the last batch, so `logs["batch_id"]` after each train/test step names the batch the
step consumed, on every backend, with no backend-specific code.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

FEATURES = 3


class IdDataset(keras.utils.PyDataset):
    """`n` batches; batch `i` is all `i` (plus `offset`, which `on_epoch_end` may bump)."""

    def __init__(self, n: int = 5, batch_size: int = 2, bump_on_epoch_end: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.n = n
        self.batch_size = batch_size
        self.bump = bump_on_epoch_end
        self.offset = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        value = float(index + self.offset)
        x = np.full((self.batch_size, FEATURES), value, dtype="float32")
        y = np.full((self.batch_size, 1), value, dtype="float32")
        return x, y

    def on_epoch_end(self) -> None:
        self.offset += self.bump


class RandomDataset(IdDataset):
    """Batch `i` carries draws from Python's `random` and NumPy's global RNG."""

    def __getitem__(self, index: int):
        import random

        x, y = super().__getitem__(index)
        x = x + np.float32(random.random()) + np.random.rand(*x.shape).astype("float32")
        return x, y


class BatchId(keras.metrics.Metric):
    """The largest target of the last batch (the batch's id in these datasets)."""

    def __init__(self, name: str = "batch_id", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.value.assign(ops.cast(ops.max(y_true), self.value.dtype))

    def result(self):
        return ops.convert_to_tensor(self.value)

    def reset_state(self):
        self.value.assign(0.0)


def model(*, build: bool = False) -> keras.Model:
    """A tiny model that learns nothing (learning rate 0), so ids stay readable."""
    m = keras.Sequential([keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse", metrics=[BatchId()])
    if build:
        m.build((None, FEATURES))
    return m


def identity_model() -> keras.Model:
    inputs = keras.Input((FEATURES,))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


class Seen(keras.callbacks.Callback):
    """Records the batch id of every train and test step, per epoch."""

    def __init__(self):
        super().__init__()
        self.train: list[list[int]] = []
        self.test: list[list[int]] = []
        self._test_run: list[int] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.train.append([])

    def on_train_batch_end(self, batch, logs=None):
        if not self.train:  # a fit without epoch hooks (never in Keras 3)
            self.train.append([])
        self.train[-1].append(round(float(logs["batch_id"])))

    def on_test_begin(self, logs=None):
        self._test_run = []
        self.test.append(self._test_run)

    def on_test_batch_end(self, batch, logs=None):
        self._test_run.append(round(float(logs["batch_id"])))
