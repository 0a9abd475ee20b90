"""`Stream`: one consumer's pass over the dataset, with its own cursor and reorder buffer.

Owns the per-consumer state of the data path (see `prefetcher.py` for the whole path
and the exactly-once invariant): the pass's order of dataset indices, the cursor (the
position delivered next), which positions were submitted, which are in flight, and the
finished batches waiting for the cursor. Also the per-batch seed of a seeded stream
(`batch_seed`) and the check of an `order` argument (`check_order`).

A stream holds no lock of its own: its state is guarded by its prefetcher's lock, and
its public methods delegate to the prefetcher, which owns the pool and the lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine.arithmetic import held_batches

if TYPE_CHECKING:
    from keras_loadtune.engine.prefetcher import Prefetcher

_SEED_MASK = (1 << 63) - 1


def batch_seed(stream_seed: int, index: int) -> int:
    """The seed a worker process uses for dataset index `index` of a seeded stream.

    Depends only on the stream's seed and the index, never on which worker or which
    config produced the batch, so seeded random augmentation is reproducible across
    worker counts and switches.
    """
    return (stream_seed * 1_000_003 + index * 7_919 + 1) & _SEED_MASK


def check_order(order: Any) -> None:
    """Raises TypeError unless `order` is a sequence of dataset indices or None."""
    if order is not None and (
        isinstance(order, (str, bytes, dict))
        or not (hasattr(order, "__len__") and hasattr(order, "__getitem__"))
    ):
        raise TypeError(
            "order must be a sequence of dataset indices (list, range, array) or None "
            f"for an infinite stream; got {type(order).__name__}."
        )


class EndOfPass(Exception):
    """Raised by `next()` when every position of a finite pass was delivered."""


class Stream:
    """One consumer's pass over the dataset, served by its `Prefetcher`'s pool.

    Created by `Prefetcher.open_stream`. State is guarded by the prefetcher's lock.
    Iterating a stream yields its batches until the pass ends.

    Example:

    ```python
    with Prefetcher(my_dataset, LoaderConfig(workers=4)) as pf:
        train = pf.open_stream(range(len(my_dataset)))
        val = pf.open_stream(range(len(my_dataset)))   # its own cursor, same pool
        first = train.next()
        everything_val = list(val)
    ```
    """

    def __init__(
        self,
        prefetcher: Prefetcher,
        stream_id: int,
        order: Sequence[int] | None,
        start: int,
        seed: int | None,
        consumer: int,
    ):
        self._prefetcher = prefetcher
        self.id = stream_id
        self.consumer = consumer
        self._order = order
        self._infinite = order is None
        self._base = start
        self._seed = seed
        self._cursor = 0  # position the consumer gets next
        self._submitted = 0  # positions < _submitted were submitted (or found buffered)
        self._buffer: dict[int, tuple] = {}  # finished, not yet delivered
        self._outstanding: set[int] = set()  # submitted, no result yet
        self._paused = False
        self._closed = False

    @property
    def finished(self) -> bool:
        """True once every position of a finite pass was delivered (or the stream closed)."""
        with self._prefetcher._cond:
            return self._closed or (not self._infinite and self._cursor >= len(self._order))

    @property
    def delivered(self) -> int:
        """Batches delivered so far."""
        return self._cursor

    @property
    def next_index(self) -> int | None:
        """Dataset index the stream delivers next (`None` once a finite pass is done)."""
        with self._prefetcher._cond:
            if self._infinite:
                return self._base + self._cursor
            return self._order[self._cursor] if self._cursor < len(self._order) else None

    def next(self) -> Any:
        """Returns the next batch, blocking until it is ready.

        Raises:
            EndOfPass: the finite pass is complete.
            Exception: the exception `__getitem__` raised for this position (original type
                and message, with a note naming the index), after all earlier batches.
            WorkerDiedError: a worker process died with work in flight.
            BatchTimeoutError: the batch took longer than the prefetcher's `timeout`.
        """
        return self._prefetcher._next(self)

    def pause(self) -> None:
        """Stops submitting new work; in-flight and finished batches are kept."""
        with self._prefetcher._cond:
            self._paused = True

    def resume(self) -> None:
        """Resumes submitting work."""
        self._prefetcher._resume(self)

    def close(self) -> None:
        """Ends the stream; its undelivered batches are dropped. Idempotent."""
        self._prefetcher._close_stream(self)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        try:
            return self.next()
        except EndOfPass:
            raise StopIteration from None

    def __repr__(self) -> str:
        size = "infinite" if self._infinite else len(self._order)
        return f"Stream(id={self.id}, {size}, delivered={self._cursor})"

    # -- internals (prefetcher lock held) --------------------------------------------------
    def _index_at(self, position: int) -> int:
        if self._infinite:
            return self._base + position
        return self._order[position]  # type: ignore[index]

    def _limit(self, config: LoaderConfig) -> int:
        limit = self._cursor + held_batches(config)
        return limit if self._infinite else min(limit, len(self._order))
