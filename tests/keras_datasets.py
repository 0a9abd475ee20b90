"""Module-level (hence picklable) `keras.utils.PyDataset` subclasses for the Keras tests.

Every batch carries the dataset index it came from (and, where useful, the epoch counter
the dataset's own `on_epoch_end` advances), so a test can see exactly what the model got.
"""

from __future__ import annotations

import threading
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


class SamplePyDataset(keras.utils.PyDataset):
    """Keras-test-style data: `y[:, 0]` is each sample's index, `x` a fixed function of it.

    `samples` rows in batches of `batch_size` (the last one may be smaller); `infinite`
    cycles through them forever (`num_batches` is None). With `dict_batches`, batches are
    `{"x": ..., "y": ...}`. `delay` sleeps in every `__getitem__`; thread workers count
    how many `__getitem__` calls ran at once (`peak_concurrency`).
    """

    def __init__(
        self,
        samples: int = 64,
        batch_size: int = 16,
        infinite: bool = False,
        dict_batches: bool = False,
        delay: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.samples = samples
        self.batch_size = batch_size
        self.infinite = infinite
        self.dict_batches = dict_batches
        self.delay = delay
        self.peak_concurrency = 0
        self._running = 0
        self._lock = threading.Lock()

    @property
    def num_batches(self):
        return None if self.infinite else -(-self.samples // self.batch_size)

    def __getitem__(self, index: int):
        with self._lock:
            self._running += 1
            self.peak_concurrency = max(self.peak_concurrency, self._running)
        try:
            if self.delay:
                time.sleep(self.delay)
            index %= -(-self.samples // self.batch_size)
            start = index * self.batch_size
            rows = np.arange(start, min(start + self.batch_size, self.samples))
            x = np.stack([np.sin(rows + k) for k in range(FEATURES)], axis=1).astype("float32")
            y = np.stack([rows, rows], axis=1).astype("float32")
            return {"x": x, "y": y} if self.dict_batches else (x, y)
        finally:
            with self._lock:
                self._running -= 1

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class ShapeShiftingPyDataset(keras.utils.PyDataset):
    """Three batches of different shapes: x (16, 4), (16, 5), (2, 6); y (16, 2), (16, 2), (2, 2)."""

    SHAPES = (((16, 4), (16, 2)), ((16, 5), (16, 2)), ((2, 6), (2, 2)))

    @property
    def num_batches(self):
        return len(self.SHAPES)

    def __getitem__(self, index: int):
        x_shape, y_shape = self.SHAPES[index]
        return np.ones(x_shape, "float32"), np.ones(y_shape, "float32")


class RaisingPyDataset(keras.utils.PyDataset):
    """Four batches; batches 0 and 1 are fine, 2 and 3 raise `ValueError("Expected exception")`."""

    @property
    def num_batches(self):
        return 4

    def __getitem__(self, index: int):
        if index < 2:
            return np.ones((8, FEATURES), "float32"), np.zeros((8, 2), "float32")
        raise ValueError("Expected exception")


class HookTrackingPyDataset(keras.utils.PyDataset):
    """Records its epoch hooks in `tracker` (1: begin, 2: end); 4 batches, or endless."""

    def __init__(self, infinite: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.infinite = infinite
        self.tracker: list[int] = []

    @property
    def num_batches(self):
        return None if self.infinite else 4

    def __getitem__(self, index: int):
        return np.full((4, 2), index % 4, dtype="float32")

    def on_epoch_begin(self) -> None:
        self.tracker.append(1)

    def on_epoch_end(self) -> None:
        self.tracker.append(2)


class LabelPyDataset(keras.utils.PyDataset):
    """Two batches of two rows; `y` holds integer class labels 0, 1, 2, 1 (for class_weight)."""

    LABELS = np.array([0, 1, 2, 1], dtype="int32")

    @property
    def num_batches(self):
        return 2

    def __getitem__(self, index: int):
        rows = slice(2 * index, 2 * index + 2)
        x = np.arange(20, dtype="float32").reshape(4, 5)[rows]
        return x, self.LABELS[rows]


class UnevenPyDataset(keras.utils.PyDataset):
    """The values 0..`total`-1 in batches of 2, 3, 4, 2, 3, 4, ... rows (inputs only)."""

    def __init__(self, total: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.bounds = [0]
        sizes = (2, 3, 4)
        while self.bounds[-1] < total:
            self.bounds.append(min(total, self.bounds[-1] + sizes[(len(self.bounds) - 1) % 3]))

    @property
    def num_batches(self):
        return len(self.bounds) - 1

    def __getitem__(self, index: int):
        start, stop = self.bounds[index], self.bounds[index + 1]
        return (np.arange(start, stop, dtype="float32").reshape(-1, 1),)
