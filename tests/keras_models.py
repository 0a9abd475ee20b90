"""Backend-agnostic Keras models and callbacks that record what the trainer really did.

Only `keras.layers` / `keras.ops` and the trainer's public step methods: the same code
runs under `KERAS_BACKEND` = tensorflow, jax and torch.
"""

from __future__ import annotations

import keras
import numpy as np


def _x_of(batch):
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, dict):
        batch = batch.get("features", batch.get("x"))
    return np.asarray(batch)


class RecordingModel(keras.Model):
    """A one-layer model that remembers every batch it was given, per step kind.

    Compile it with `run_eagerly=True` so the recorded batches are concrete arrays. The
    JAX trainer calls `train_step(state, data)` (stateless), TensorFlow and torch call
    `train_step(data)`: the batch is always the last argument.
    """

    def __init__(self, units: int = 1):
        super().__init__()
        self.dense = keras.layers.Dense(units)
        self.seen: dict[str, list] = {"train": [], "test": [], "predict": []}

    def call(self, x):
        if isinstance(x, dict):
            x = x.get("features", x.get("x"))
        return self.dense(x)

    def _record(self, kind, data):
        self.seen[kind].append(keras.tree.map_structure(np.asarray, data))

    def train_step(self, *args):
        self._record("train", args[-1])
        return super().train_step(*args)

    def test_step(self, *args):
        self._record("test", args[-1])
        return super().test_step(*args)

    def predict_step(self, *args):
        self._record("predict", args[-1])
        return super().predict_step(*args)

    def indices(self, kind: str) -> list[int]:
        """First value of `x` of each batch of one kind, in the order the model got them."""
        return [int(_x_of(batch).flat[0]) for batch in self.seen[kind]]

    def samples(self, kind: str) -> list[int]:
        """`y[:, 0]` of every batch of one kind, concatenated (sample indices)."""
        out: list[int] = []
        for batch in self.seen[kind]:
            y = batch["y"] if isinstance(batch, dict) else batch[1]
            out.extend(int(v) for v in np.asarray(y)[:, 0])
        return out


class StepObserver(keras.callbacks.Callback):
    """Counts the trainer's batch and epoch hooks, per loop."""

    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def _bump(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def on_epoch_begin(self, epoch, logs=None):
        self._bump("epoch_begin")

    def on_epoch_end(self, epoch, logs=None):
        self._bump("epoch_end")

    def on_train_batch_begin(self, batch, logs=None):
        self._bump("train_batch_begin")

    def on_train_batch_end(self, batch, logs=None):
        self._bump("train_batch_end")

    def on_test_batch_end(self, batch, logs=None):
        self._bump("test_batch_end")

    def on_predict_batch_end(self, batch, logs=None):
        self._bump("predict_batch_end")
