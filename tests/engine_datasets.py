"""Module-level (hence picklable) datasets for engine tests. Imports numpy only."""

from __future__ import annotations

import os
import signal
import time

import numpy as np


class IndexDataset:
    """`ds[i]` is an array holding `i` (and the epoch counter, to check state propagation)."""

    def __init__(self, n: int, delay: float = 0.0, shape: tuple[int, ...] = (2,)):
        self.n = n
        self.delay = delay
        self.shape = shape
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if self.delay:
            time.sleep(self.delay)
        x = np.full(self.shape, index, dtype=np.int64)
        return x, np.array([self.epoch], dtype=np.int64)

    def on_epoch_end(self) -> None:
        self.epoch += 1


class FailingDataset(IndexDataset):
    def __init__(self, n: int, fail_at: int, delay: float = 0.0):
        super().__init__(n, delay)
        self.fail_at = fail_at

    def __getitem__(self, index: int):
        if index == self.fail_at:
            raise KeyError(f"cannot load sample {index}")
        return super().__getitem__(index)


class SuicidalDataset(IndexDataset):
    """The worker process producing `kill_at` SIGKILLs itself."""

    def __init__(self, n: int, kill_at: int):
        super().__init__(n)
        self.kill_at = kill_at

    def __getitem__(self, index: int):
        if index == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(index)


class HangingDataset(IndexDataset):
    def __init__(self, n: int, hang_at: int):
        super().__init__(n)
        self.hang_at = hang_at

    def __getitem__(self, index: int):
        if index == self.hang_at:
            time.sleep(3600)
        return super().__getitem__(index)


class JitterDataset(IndexDataset):
    """Like `IndexDataset`, but batches take 0-4 ms (a fixed function of the index).

    Workers therefore finish out of order, which is what the reorder buffer must undo.
    """

    def __getitem__(self, index: int):
        time.sleep(((index * 7919) % 5) * 0.001)
        return super().__getitem__(index)


class BigFailingDataset(IndexDataset):
    """Big (shared-memory sized) batches; `__getitem__(fail_at)` raises."""

    def __init__(self, n: int, fail_at: int, shape: tuple[int, ...] = (256, 256)):
        super().__init__(n, shape=shape)
        self.fail_at = fail_at

    def __getitem__(self, index: int):
        if index == self.fail_at:
            raise ValueError(f"corrupt record {index}")
        return super().__getitem__(index)


class BigSuicidalDataset(SuicidalDataset):
    """Big (shared-memory sized) batches; the worker producing `kill_at` SIGKILLs itself."""

    def __init__(self, n: int, kill_at: int, delay: float = 0.0):
        super().__init__(n, kill_at)
        self.shape = (256, 256)
        self.delay = delay


class LockHoldingDataset(IndexDataset):
    """Cannot be pickled: holds a `threading.Lock`."""

    def __init__(self, n: int):
        super().__init__(n)
        import threading

        self.lock = threading.Lock()


class LambdaDataset(IndexDataset):
    """Cannot be pickled: holds a lambda."""

    def __init__(self, n: int):
        super().__init__(n)
        self.transform = lambda x: x


class RecordingDataset(IndexDataset):
    """Thread mode only: remembers every index it was asked for."""

    def __init__(self, n: int, delay: float = 0.0):
        super().__init__(n, delay)
        self.calls: list[int] = []

    def __getitem__(self, index: int):
        self.calls.append(index)
        return super().__getitem__(index)


def count_to_three():
    """A generator factory: yields 0, 1, 2 (as arrays) and stops."""
    for i in range(3):
        yield np.array([i])


def pid_stream():
    """A generator factory: an endless stream of (worker pid, serial number) pairs."""
    serial = 0
    while True:
        yield np.array([os.getpid(), serial])
        serial += 1


class SlowToLoad(IndexDataset):
    """Unpickling it in a worker takes `load_s` seconds (a slow-starting worker)."""

    def __init__(self, n: int, load_s: float):
        super().__init__(n)
        self.load_s = load_s

    def __setstate__(self, state: dict) -> None:
        time.sleep(state["load_s"])
        self.__dict__.update(state)


class BigBatches:
    """`batch_mib` MiB batches holding their index, from a dataset holding `data`."""

    def __init__(self, n: int, batch_mib: int, data: np.ndarray | None = None):
        self.n = n
        self.batch_mib = batch_mib
        self.data = data

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        x = np.full(self.batch_mib << 17, index, dtype=np.float64)
        checksum = float(self.data[:: 1 << 20].sum()) if self.data is not None else 0.0
        return x, np.array([checksum])
