"""Numpy-only (TensorFlow-free), module-level and therefore picklable datasets with injected faults.

Worker processes unpickle these without importing Keras, so process-mode cases start in
milliseconds instead of the seconds a `keras.utils.PyDataset` costs (its unpickling imports
TensorFlow in every worker). `reliability.kdata.KerasView` puts a Keras face on them.

Batch `i` is `(x, y)`: `x` has shape `(rows, FEATURES)` filled with `i`, `y` holds the
dataset's epoch counter, so a test can read back which index (and epoch state) a batch
came from.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np

FEATURES = 4

# Hung *threads* cannot be killed; tests set this event in teardown to let them go.
RELEASE_HANGS = threading.Event()


class CorruptRecordError(ValueError):
    """The injected `__getitem__` failure (a custom type, so 'original type' is checkable)."""


def identity(obj):
    """Unpickling helper for `KerasView.__reduce__` (lives here so workers need no Keras)."""
    return obj


class Faulty:
    """`ds[i]` is `(x filled with i, y = epoch)`; misbehaves at index `at` as `fault` says.

    Faults:
        "raise":  raises `CorruptRecordError("corrupt record <i>")`.
        "kill":   the worker *process* SIGKILLs itself (refused in the test process itself).
        "hang":   blocks "forever" (until `RELEASE_HANGS` is set, or the process is killed).
        "wrong":  returns a string instead of a batch.

    Args:
        n: Batches per epoch; `None` makes the dataset infinite.
        at: Index that misbehaves (`None`: none).
        fault: One of the faults above.
        delay: Seconds each batch sleeps (makes training input-bound, latency-like).
        cpu: CPU seconds of pure-Python work per batch, holding the GIL (CPU-bound).
        rows: Rows per batch; `rows=None` varies them with the index (1, 2, 3, 1, ...).
        width: Features per row; `None` varies them with the index (4, 5, 6, 4, ...).
        as_dict: Return `({"features": x}, y)` instead of `(x, y)`.
        big: ~1 MiB batches (they travel through shared memory in process mode).
        labels: `y` is a class label (`index % 2`) instead of the epoch counter.
        stamp: A file path; the "kill" fault writes `time.time()` there just before dying.
    """

    def __init__(
        self,
        n: int | None = 8,
        at: int | None = None,
        fault: str | None = None,
        *,
        delay: float = 0.0,
        cpu: float = 0.0,
        rows: int | None = 2,
        width: int | None = FEATURES,
        as_dict: bool = False,
        big: bool = False,
        labels: bool = False,
        stamp: str | None = None,
    ):
        self.n = n
        self.at = at
        self.fault = fault
        self.delay = delay
        self.cpu = cpu
        self.rows = rows
        self.width = width
        self.as_dict = as_dict
        self.big = big
        self.labels = labels
        self.stamp = stamp
        self.epoch = 0
        self.begins = 0
        self.ends = 0
        self.owner_pid = os.getpid()

    @property
    def num_batches(self) -> int | None:
        return self.n

    def __len__(self) -> int:
        if self.n is None:
            raise TypeError("infinite dataset")
        return self.n

    def _misbehave(self, index: int):
        if self.fault == "raise":
            raise CorruptRecordError(f"corrupt record {index}")
        if self.fault == "kill":
            if os.getpid() == self.owner_pid:
                raise RuntimeError("refusing to SIGKILL the test process (thread mode?)")
            if self.stamp:
                with open(self.stamp, "w") as f:
                    f.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)
        if self.fault == "hang":
            RELEASE_HANGS.wait(3600)
            raise RuntimeError("hang released")
        if self.fault == "wrong":
            return "not a batch"
        raise AssertionError(f"unknown fault {self.fault!r}")

    def __getitem__(self, index: int):
        if self.at is not None and index == self.at:
            return self._misbehave(index)
        if self.delay:
            time.sleep(self.delay)
        if self.cpu:
            end = time.thread_time() + self.cpu
            while time.thread_time() < end:
                sum(range(500))
        rows = self.rows if self.rows is not None else 1 + index % 3
        width = self.width if self.width is not None else FEATURES + index % 3
        if self.big:  # ~1 MiB: over the 256 KiB shared-memory threshold
            rows = 65536 // width + 1
        x = np.full((rows, width), index, dtype="float32")
        y = np.full((rows, 1), index % 2 if self.labels else self.epoch, dtype="float32")
        if self.as_dict:
            return {"features": x}, y
        return x, y

    def on_epoch_begin(self) -> None:
        self.begins += 1

    def on_epoch_end(self) -> None:
        self.ends += 1
        self.epoch += 1


class Unpicklable(Faulty):
    """Cannot be pickled: an attribute holds a `threading.Lock` (or a lambda)."""

    def __init__(self, *args, holder: str = "lock", **kwargs):
        super().__init__(*args, **kwargs)
        self.holder = threading.Lock() if holder == "lock" else (lambda x: x)
