"""Keras faces for the numpy-only datasets of `reliability.faulty`, and a tiny model."""

from __future__ import annotations

import itertools
from typing import Any

import keras

from reliability import faulty


class KerasView(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` over a numpy-only dataset (`reliability.faulty.Faulty`).

    It pickles as the inner dataset, so worker processes unpickle numpy-only code and never
    import TensorFlow (milliseconds per worker start instead of seconds). Epoch hooks and
    state changes reach the inner dataset, and the engine ships the updated pickle to the
    workers at every pass, as it would for any PyDataset.
    """

    def __init__(self, impl: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.impl = impl

    @property
    def num_batches(self):
        return self.impl.num_batches

    def __len__(self) -> int:
        return len(self.impl)

    def __getitem__(self, index: int):
        return self.impl[index]

    def on_epoch_begin(self) -> None:
        self.impl.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self.impl.on_epoch_end()

    def __reduce__(self):
        return (faulty.identity, (self.impl,))


def tiny_model(width: int = faulty.FEATURES, dict_input: bool = False) -> keras.Model:
    """A compiled one-layer regression model (about a millisecond per step)."""
    if dict_input:
        inp = keras.Input((width,), name="features")
        model = keras.Model({"features": inp}, keras.layers.Dense(1)(inp))
    else:
        model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


class EpochMarks(keras.callbacks.Callback):
    """Records `wrapped.stats.delivered` at every epoch end (splits stats into epochs)."""

    def __init__(self, wrapped: Any):
        super().__init__()
        self.wrapped = wrapped
        self.marks: list[int] = []

    def on_train_begin(self, logs=None):
        self.marks = [self.wrapped.stats.delivered]

    def on_epoch_end(self, epoch, logs=None):
        self.marks.append(self.wrapped.stats.delivered)


def epochs_of(wrapped: Any, marks: list[int]) -> list[list[int]]:
    """The dataset indices delivered in each epoch, from `EpochMarks.marks`."""
    records = {r.sequence: r.index for r in wrapped.stats}
    return [[records[s] for s in range(a, b)] for a, b in itertools.pairwise(marks)]
