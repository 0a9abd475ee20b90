"""Epochs of a wrapped input as Keras's own `EpochIterator` serves them, for the exactly-once
tests of the batch sources (a Grain `MapDataset`, a PyTorch `DataLoader`)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
from keras.src.trainers.epoch_iterator import EpochIterator


def served_epochs(
    wrapped: Any,
    epochs: int,
    reconfigure_at: dict,
    ids: Callable[[Any], list[float]],
    *,
    plan_passes: bool = False,
) -> list[list[list[float]]]:
    """Per epoch, the `ids(x)` of every batch `EpochIterator` serves (shuffle on), with
    `wrapped.reconfigure(reconfigure_at[(epoch, step)])` after that step; each batch's y
    must be twice its x's first column. `plan_passes`: say at each epoch begin how many
    follow (`TunedPyDataset.plan_passes`, as `LoadTuner` does)."""
    random.seed(0)
    iterator = EpochIterator(wrapped, shuffle=True)
    out = []
    for epoch in range(epochs):
        if plan_passes:
            wrapped.plan_passes(epochs - epoch - 1)
        seen = []
        for step, _, batch in iterator:
            x, y = batch[0][0], batch[0][1]
            assert np.array_equal(np.asarray(y).reshape(-1), 2 * np.asarray(x)[..., 0].reshape(-1))
            seen.append(ids(x))
            config = reconfigure_at.get((epoch, step))
            if config is not None:
                wrapped.reconfigure(config)
        out.append(seen)
    return out
