"""Module-level (hence picklable) `keras.utils.PyDataset` subclasses for the Keras tests.

Every batch carries the dataset index it came from (and, where useful, the epoch counter
the dataset's own `on_epoch_end` advances), so a test can see exactly what the model got.
"""

from __future__ import annotations

import time

import keras
import numpy as np

FEATURES = 4


class IndexPyDataset(keras.utils.PyDataset):
    """Batch `i`: `x` is filled with `i`, `y` with the epoch counter.

    `on_epoch_begin`/`on_epoch_end` count their calls; `on_epoch_end` also advances `epoch`,
    which process workers only see if the engine sends them the updated dataset.
    """

    def __init__(self, n: int = 6, batch_size: int = 2, delay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.n = n
        self.batch_size = batch_size
        self.delay = delay
        self.epoch = 0
        self.begins = 0
        self.ends = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if self.delay:
            time.sleep(self.delay)
        x = np.full((self.batch_size, FEATURES), index, dtype="float32")
        y = np.full((self.batch_size, 1), self.epoch, dtype="float32")
        return x, y

    def on_epoch_begin(self) -> None:
        self.begins += 1

    def on_epoch_end(self) -> None:
        self.ends += 1
        self.epoch += 1


class InfinitePyDataset(keras.utils.PyDataset):
    """An endless stream: batch `i` is filled with `i`."""

    def __init__(self, batch_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.batch_size = batch_size

    @property
    def num_batches(self):
        return None

    def __getitem__(self, index: int):
        x = np.full((self.batch_size, FEATURES), index, dtype="float32")
        return x, np.zeros((self.batch_size, 1), dtype="float32")


class FailingPyDataset(IndexPyDataset):
    """`__getitem__(fail_at)` raises a `KeyError`."""

    def __init__(self, n: int, fail_at: int, **kwargs):
        super().__init__(n, **kwargs)
        self.fail_at = fail_at

    def __getitem__(self, index: int):
        if index == self.fail_at:
            raise KeyError(f"cannot load sample {index}")
        return super().__getitem__(index)


class StructuredPyDataset(keras.utils.PyDataset):
    """Batches of a chosen structure; with `vary`, the batch size changes with the index."""

    def __init__(self, kind: str, n: int = 5, vary: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.n = n
        self.vary = vary

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        rows = 1 + index % 3 if self.vary else 2
        rng = np.random.default_rng(index)
        x = rng.normal(size=(rows, FEATURES)).astype("float32")
        y = (rng.random((rows, 1)) > 0.5).astype("float32")
        w = rng.random(rows).astype("float32")
        if self.kind == "x":
            return (x,)
        if self.kind == "array":
            return x
        if self.kind == "xy":
            return x, y
        if self.kind == "list":
            return [x, y]
        if self.kind == "xyw":
            return x, y, w
        if self.kind == "dict":
            return {"features": x}
        raise ValueError(self.kind)


def xy_stream():
    """A zero-argument generator factory: an endless stream of `(x, y)` batches."""
    i = 0
    while True:
        yield np.full((2, FEATURES), i, dtype="float32"), np.zeros((2, 1), dtype="float32")
        i += 1
