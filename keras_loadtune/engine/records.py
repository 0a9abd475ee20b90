"""Per-batch and per-start-up measurements the engine exposes (read-only).

The training thread pays for a delivery's record on every step, so `LoaderStats.add`
keeps the record's fields as one plain tuple (no object built, about 0.1 us); a
`BatchRecord` is built only when someone reads it (`batches_since`, iteration).
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_loadtune.config import LoaderConfig


def batch_nbytes(obj: Any) -> int:
    """Bytes of array data in a (nested) batch (what `BatchRecord.nbytes` holds).

    Example:

    >>> import numpy as np
    >>> batch_nbytes((np.zeros(4, np.float32), {"y": np.zeros(2, np.int64)}))
    32
    """
    if isinstance(obj, dict):
        return sum(batch_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(batch_nbytes(v) for v in obj)
    nbytes = getattr(obj, "nbytes", None)
    return int(nbytes) if isinstance(nbytes, (int, np.integer)) else 0


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """Timings of one delivered batch.

    Args:
        sequence: Delivery number over the prefetcher's lifetime (0, 1, 2, ...).
        index: The dataset index delivered.
        wait_s: Seconds the consumer (the training loop) blocked waiting for it.
        produce_wall_s: Wall-clock seconds `__getitem__` took in the worker (inline: the
            consumer's wait, `__getitem__` and a microsecond of bookkeeping).
        produce_cpu_s: CPU seconds the worker spent in `__getitem__` (thread CPU time);
            much less than `produce_wall_s` means latency-bound (I/O, sleeps, network).
            Inline (`LoaderConfig.inline`), the thread's CPU clock is read on the first
            16 batches of a stream and then on 1 in 16; between, the wall time times the
            last measured CPU share.
        queue_depth: Finished batches waiting in the buffer right after this delivery.
        nbytes: Bytes of array data in the batch (inline: as last measured, on the same
            sample of batches as the CPU time).
        config: The loader config that produced it.
        delivered_at: `time.perf_counter()` at delivery.
        pass_tail: True when every position of the (finite) pass had already been handed
            to the workers: the end-of-epoch stretch where the consumer drains what is
            left and the workers sit idle, which makes any config look fast.
        stream: Id of the stream (one consumer's pass) it was delivered to.
        producer: The config of the pool that produced it. It differs from `config`
            right after a switch, while batches finished by the previous pool are served;
            a trial is measured only on batches its own config produced.
        consumer: The tag the stream was opened with (`Prefetcher.open_stream`).
    """

    sequence: int
    index: int
    wait_s: float
    produce_wall_s: float
    produce_cpu_s: float
    queue_depth: int
    nbytes: int
    config: LoaderConfig
    delivered_at: float
    pass_tail: bool = False
    stream: int = 0
    producer: LoaderConfig | None = None
    consumer: int = 0


@dataclass(frozen=True, slots=True)
class StartupRecord:
    """Cost of starting (or resizing to) a worker pool.

    Args:
        config: The config the pool was started for.
        workers_started: How many new workers were started.
        seconds: Wall-clock seconds until the new workers were ready to produce.
        at: `time.perf_counter()` when the start began.
        background: True when the pool started off the training thread while the
            previous config kept serving (a switch of mode); the training loop did not
            wait for it.
        error: Why the start failed (`None`: it succeeded).
    """

    config: LoaderConfig
    workers_started: int
    seconds: float
    at: float
    background: bool = False
    error: str | None = None


class LoaderStats:
    """Thread-safe, bounded history of `BatchRecord`s and `StartupRecord`s.

    Keeps the last `capacity` batch records plus running totals, so reading it is cheap
    and memory stays flat however long training runs.

    Example:

    ```python
    stats = wrapped.stats
    new = stats.batches_since(cursor)     # records delivered after `cursor`
    cursor = stats.delivered
    stats.total_wait_s                    # cumulative consumer wait
    ```
    """

    def __init__(self, capacity: int = 4096):
        self._lock = threading.Lock()
        # BatchRecords, or their fields as a tuple (`add`), built on read.
        self._batches: collections.deque[BatchRecord] = collections.deque(maxlen=capacity)
        self._startups: list[StartupRecord] = []
        self.delivered = 0
        self.total_wait_s = 0.0

    def add_batch(self, record: BatchRecord) -> None:
        """Adds one delivery's record."""
        with self._lock:
            self._batches.append(record)
            self.delivered = record.sequence + 1
            self.total_wait_s += record.wait_s

    def add(self, fields: tuple) -> None:
        """Adds one delivery's record as the tuple of `BatchRecord`'s fields, in order.

        The engine's hot path: the `BatchRecord` is built when it is first read.
        """
        with self._lock:
            self._batches.append(fields)  # type: ignore[arg-type]
            self.delivered = fields[0] + 1
            self.total_wait_s += fields[2]

    def _materialize(self, items: list) -> list[BatchRecord]:
        return [r if type(r) is BatchRecord else BatchRecord(*r) for r in items]

    def add_startup(self, record: StartupRecord) -> None:
        with self._lock:
            self._startups.append(record)

    def batches_since(self, sequence: int) -> list[BatchRecord]:
        """Records with `record.sequence >= sequence` that are still kept."""
        with self._lock:
            if not self._batches or self.delivered <= sequence:
                return []
            wanted = min(self.delivered - sequence, len(self._batches))
            # Read from the right end: O(new records), not O(history), on every step.
            newest = list(itertools.islice(reversed(self._batches), wanted))
        newest.reverse()
        return self._materialize(newest)

    @property
    def startups(self) -> list[StartupRecord]:
        with self._lock:
            return list(self._startups)

    def __iter__(self) -> Iterator[BatchRecord]:
        with self._lock:
            items = list(self._batches)
        return iter(self._materialize(items))

    def __len__(self) -> int:
        with self._lock:
            return len(self._batches)
