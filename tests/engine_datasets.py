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
