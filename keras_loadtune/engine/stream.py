"""`Stream`: one consumer's pass over the dataset: order, cursor, reorder buffer, in-flight set.

Owns the per-consumer state of the data path (see `prefetcher.py` for the whole path
and the exactly-once invariant): the pass's order of dataset indices, the cursor (the
position delivered next), the submit pointer, the positions in flight, and the
finished batches waiting for the cursor. Nothing else reads or writes that state: the
prefetcher and the pool controller call the methods below. Also here: the per-batch
seed of a seeded stream (`batch_seed`), the check of an `order` argument
(`check_order`), and `StreamRegistry`, the set of open streams.

Lock order (the one place it is written down). A thread that holds a lock of a level
takes only locks of a *later* level:

1. `Stream._consumer`: one `next()` at a time on a stream; held while an inline
   config makes the batch on the consumer's thread.
2. `PoolControl._lock`: pool changes (start, resize, switch, source change, release).
   `next()` takes it only to restart a released or broken pool, never on a ready batch.
3. `Stream._lock` (with its `_cond`): the stream's state. Held for a few dictionary operations, and
   while submitting to the pool, so a pool change that moves in-flight positions
   (taking this lock after publishing the new `Serving`) never misses a submission.
4. Leaves: a pool's own locks (`ThreadPool`'s task queue, `ProcessPool._lock`; a pool
   never calls its sink with them held) and `LoaderStats._lock`.

The registry of open streams takes no lock: its single `dict` operations are atomic
under the GIL, so a stream closed by a finalizer (on whichever thread the garbage
collector runs, whatever that thread holds) never waits for a lock.

Hand-over: a worker offers its result to the stream (`offer`), which wakes the
consumer only if it is waiting for exactly that position; a ready batch is taken by
`next()` with one uncontended lock and no thread switch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from keras_loadtune.engine._pool import PoolState, Serving
from keras_loadtune.engine.arithmetic import held_batches
from keras_loadtune.engine.errors import BatchTimeoutError, PrefetcherClosedError
from keras_loadtune.engine.records import LoaderStats, batch_nbytes

_SEED_MASK = (1 << 63) - 1
_SAMPLED = 16  # inline: CPU time and size measured on 1 batch in 16 (after the first 16)
OK = 0
ERR = 1


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


class StreamHost(Protocol):
    """What a stream needs from its prefetcher (implemented by `Prefetcher`).

    Read once, when the stream opens: `source`, `timeout` and `state` (the cell the
    stream reads on every batch, written by the pool controller only).

    Example:

    ```python
    host: StreamHost = prefetcher
    serving = host.serving_for_next()   # the pool now; restarts a released one
    ```
    """

    @property
    def source(self) -> Any:
        """The dataset, read by an inline config on the consumer's thread."""
        ...

    @property
    def timeout(self) -> float | None:
        """Seconds a consumer waits for one batch before `BatchTimeoutError`."""
        ...

    @property
    def state(self) -> PoolState:
        """The pool's state: what serves now, why it broke, whether it is closed."""
        ...

    @property
    def closed(self) -> bool:
        """True once the prefetcher was closed (set before its streams are shut)."""
        ...

    @property
    def stats(self) -> LoaderStats:
        """Where delivered batches are recorded."""
        ...

    @property
    def sequence(self) -> Iterator[int]:
        """Delivery numbers, shared by the prefetcher's streams."""
        ...

    def serving_for_next(self) -> Serving:
        """The pool serving now, restarting a released or broken one (no lock held)."""
        ...

    def record(
        self,
        stream: Stream,
        index: int,
        wait_s: float,
        produced: tuple,
        depth: int,
        tail: bool,
        delivered_at: float,
    ) -> None:
        """Records one delivered batch; `produced` is `(wall_s, cpu_s, nbytes, generation)`."""
        ...

    def forget(self, stream: Stream) -> None:
        """Drops a closed stream from the open set (lock-free)."""
        ...


class Stream:
    """One consumer's pass over the dataset, served by its `Prefetcher`'s pool.

    Created by `Prefetcher.open_stream`. Iterating a stream yields its batches until
    the pass ends. With an inline config (`LoaderConfig.inline`), `next()` calls the
    dataset on the caller's thread, as Keras does for its default config.

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
        host: StreamHost,
        stream_id: int,
        order: Sequence[int] | None,
        start: int,
        seed: int | None,
        consumer: int,
    ):
        self._host = host
        self._state = host.state
        self._source = host.source
        self._timeout = host.timeout
        self._add_record = host.stats.add
        self._sequence = host.sequence
        self.id = stream_id
        self.consumer = consumer
        self._order = order
        self._length: int | None = None if order is None else len(order)
        self._base = start
        self._seed = seed
        self._consumer = threading.Lock()
        # The state lock; `with self._lock` is cheaper than entering the Condition.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = False  # the consumer sleeps on _cond for the cursor's batch
        # Inline: CPU time and bytes are measured on a sample of batches (see _make_inline).
        self._made_inline = 0
        self._cpu_ratio = 1.0
        self._nbytes = 0
        self._cursor = 0  # position the consumer gets next
        self._submitted = 0  # positions < _submitted were submitted (or found buffered)
        self._buffer: dict[int, tuple] = {}  # finished, not yet delivered
        # Submitted, no result yet; always within [_cursor, _submitted).
        self._outstanding: set[int] = set()
        self._valid_from = 0  # results of earlier generations saw a stale source
        self._paused = False
        self._closed = False

    # -- public ------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once every position of a finite pass was delivered (or the stream closed)."""
        return self._closed or (self._length is not None and self._cursor >= self._length)

    @property
    def delivered(self) -> int:
        """Batches delivered so far."""
        return self._cursor

    @property
    def infinite(self) -> bool:
        """True for an endless stream (no `order`)."""
        return self._length is None

    @property
    def next_index(self) -> int | None:
        """Dataset index the stream delivers next (`None` once a finite pass is done)."""
        cursor = self._cursor
        if self._length is not None and cursor >= self._length:
            return None
        return self.index_at(cursor)

    @property
    def in_flight(self) -> int:
        """Positions submitted to the workers whose batch has not arrived yet."""
        return len(self._outstanding)

    def index_at(self, position: int) -> int:
        """The dataset index at `position` of the pass."""
        if self._length is None:
            return self._base + position
        return self._order[position]  # type: ignore[index]

    def next(self) -> Any:
        """Returns the next batch, blocking until it is ready.

        Raises:
            EndOfPass: the finite pass is complete.
            Exception: the exception `__getitem__` raised for this position (original type
                and message, with a note naming the index), after all earlier batches.
            WorkerDiedError: a worker process died with work in flight.
            BatchTimeoutError: the batch took longer than the prefetcher's `timeout`
                (not for an inline config: the consumer's own thread makes the batch).
        """
        t0 = time.perf_counter()
        with self._consumer:
            state = self._state
            serving = state.serving
            if state.fatal is not None or (serving.pool is None and not serving.inline):
                serving = self._host.serving_for_next()  # restarts a released or broken pool
            position = self._cursor  # only this consumer moves it (consumer lock held)
            length = self._length
            if (
                serving.inline
                and position not in self._buffer
                and not self._closed
                and (length is None or position < length)
            ):
                # Inline, nothing to serve from the buffer: made here, with no state lock
                # taken before (a result landing meanwhile is dropped in _make_inline).
                index = self._base + position if length is None else self._order[position]
                return self._make_inline(position, index, t0, serving)
            with self._lock:
                position = self._cursor
                # A ready batch, or the common inline case, without a call; a closed
                # stream has an empty buffer, a finished one nothing at its cursor.
                entry = self._buffer.pop(position, None)
                if entry is None and not (
                    serving.inline
                    and not self._closed
                    and (self._length is None or position < self._length)
                ):
                    entry = self._take(serving, t0)
                    position = self._cursor
                if entry is None:  # inline: made below, on this thread, without _lock
                    length = self._length
                    index = self._base + position if length is None else self._order[position]
                else:
                    self._cursor = position + 1
                    self._top_up()
                    depth = len(self._buffer)
                    tail = self._length is not None and self._submitted >= self._length
            if entry is None:
                return self._make_inline(position, index, t0, serving)
        delivered_at = time.perf_counter()
        if entry[0] == ERR:
            raise entry[1]
        index = self.index_at(position)
        self._host.record(self, index, delivered_at - t0, entry[2:], depth, tail, delivered_at)
        return entry[1]

    def pause(self) -> None:
        """Stops submitting new work; in-flight and finished batches are kept."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        """Resumes submitting work (restarting released workers)."""
        self._host.serving_for_next()
        with self._lock:
            self._paused = False
            self._top_up()

    def close(self) -> None:
        """Ends the stream; its undelivered batches are dropped. Idempotent.

        Safe from a finalizer on any thread: it takes only this stream's own lock.
        """
        self.shut()
        self._host.forget(self)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        try:
            return self.next()
        except EndOfPass:
            raise StopIteration from None

    def __repr__(self) -> str:
        size = "infinite" if self._length is None else self._length
        return f"Stream(id={self.id}, {size}, delivered={self._cursor})"

    # -- called by the prefetcher and the pool controller (any thread) -----------------
    def offer(self, position: int, generation: int, entry: tuple) -> bool:
        """A worker's result for `position`: kept unless delivered, stale or already here.

        `entry` is `(OK, batch, wall_s, cpu_s, nbytes, generation)` or `(ERR, exc)`.
        Wakes the consumer only if it waits for exactly this position.
        """
        with self._lock:
            if position < self._cursor:  # delivered (made inline meanwhile, or a copy)
                self._outstanding.discard(position)
                return False
            if self._closed or generation < self._valid_from or position in self._buffer:
                return False
            self._buffer[position] = entry
            self._outstanding.discard(position)
            if self._waiting and position == self._cursor:
                self._cond.notify()
            return True

    def top_up(self) -> None:
        """Submits positions up to the window of the pool serving now."""
        with self._lock:
            self._top_up()

    def move_in_flight(self) -> None:
        """After a pool change: in-flight positions go to the new pool, then the window fills.

        Called once the new `Serving` is published; a submission made before this runs
        is in the in-flight set and so moves too. Whichever copy of a position arrives
        first is kept (`offer`).
        """
        with self._lock:
            serving = self._state.serving
            pool = serving.pool
            if pool is not None and not self._closed:
                for position in sorted(self._outstanding):
                    self._submit(pool, serving.generation, position)
            elif serving.inline:  # made on demand from now on; late results still count
                self._outstanding.clear()
                self._submitted = self._cursor
            self._top_up()
            if self._waiting:
                self._cond.notify_all()

    def drop_in_flight(self) -> None:
        """The pool went away (released): positions in flight are submitted again later."""
        with self._lock:
            if self._outstanding:
                self._outstanding.clear()
                self._submitted = self._cursor  # _top_up skips what is buffered

    def restart(self, generation: int) -> None:
        """The source changed: everything not yet delivered is made again from `generation` on."""
        with self._lock:
            self._valid_from = generation
            self._buffer.clear()
            self._outstanding.clear()
            self._submitted = self._cursor
            self._top_up()

    def wake(self) -> None:
        """Wakes a waiting consumer to look again (a fatal error, a switch, a close)."""
        with self._lock:
            self._cond.notify_all()

    def shut(self) -> None:
        """Marks the stream closed and drops its batches; a waiting consumer raises."""
        with self._lock:
            self._closed = True
            self._buffer.clear()
            self._outstanding.clear()
            self._cond.notify_all()

    # -- internals (self._cond held) ---------------------------------------------------
    def _take(self, serving: Serving, t0: float) -> tuple | None:
        """The entry at the cursor, waiting for it; None: make it inline (lock held)."""
        host, state = self._host, self._state
        timeout = self._timeout
        while True:
            if self._closed:
                if host.closed:
                    raise PrefetcherClosedError("keras_loadtune: the prefetcher was closed.")
                raise RuntimeError("keras_loadtune: next() called on a closed stream.")
            position = self._cursor
            if self._length is not None and position >= self._length:
                raise EndOfPass
            entry = self._buffer.pop(position, None)
            if entry is not None:
                return entry
            if serving.inline:
                return None
            fatal = state.fatal
            if fatal is not None:
                raise fatal
            self._paused = False
            self._top_up()
            waited = time.perf_counter() - t0
            if timeout is not None and waited >= timeout:
                index = self.index_at(position)
                raise BatchTimeoutError(
                    f"keras_loadtune: batch {index} did not arrive within "
                    f"{timeout:g} s (a worker may be stuck in __getitem__({index})). "
                    "Raise `timeout` if batches are legitimately this slow.",
                    index=index,
                    timeout=timeout,
                )
            if serving.pool is None and not self._outstanding:
                # Released by the janitor between our restart and now: start again.
                self._lock.release()
                try:
                    serving = host.serving_for_next()
                finally:
                    self._lock.acquire()
                continue
            self._waiting = True
            try:
                self._cond.wait(1.0 if timeout is None else min(1.0, timeout - waited))
            finally:
                self._waiting = False
            serving = state.serving

    def _make_inline(self, position: int, index: int, t0: float, serving: Serving) -> Any:
        """Makes the batch at `position` on this thread (consumer lock held, not _lock).

        The wall time is counted from the call of `next()`. The thread's CPU clock costs
        about 1 us a read, as much as the rest of the hand-over: it is read for the
        first `_SAMPLED` batches and then every `_SAMPLED`-th, and the batches between
        carry the last measured CPU share of their wall time and the last measured size.
        """
        made = self._made_inline
        self._made_inline = made + 1
        sampled = made < _SAMPLED or made % _SAMPLED == 0
        c0 = time.thread_time() if sampled else 0.0
        try:
            batch = self._source[index]
        except Exception as exc:
            self._advance_inline(position)
            exc.add_note(
                f"keras_loadtune: raised by {type(self._source).__name__}"
                f".__getitem__({index}) on the training thread (inline)."
            )
            raise
        delivered_at = time.perf_counter()
        # From the call of next(): a clock read less; the bookkeeping before the call of
        # __getitem__ (about a microsecond) counts as making the batch.
        wall = delivered_at - t0
        if sampled:
            cpu = time.thread_time() - c0
            self._cpu_ratio = min(cpu / wall, 1.0) if wall > 0 else 1.0
            self._nbytes = batch_nbytes(batch)
        else:
            cpu = wall * self._cpu_ratio
        with self._lock:
            self._buffer.pop(position, None)  # see _advance_inline
            self._outstanding.discard(position)
            cursor = self._cursor = position + 1
            if self._submitted < cursor:
                self._submitted = cursor
            depth = len(self._buffer)
        tail = self._length is not None and cursor >= self._length
        config = serving.config  # inline: the producer's config is the serving one
        self._add_record(  # the fields of a BatchRecord, without the host.record hop
            (
                next(self._sequence),
                index,
                wall,
                wall,
                cpu,
                depth,
                self._nbytes,
                config,
                delivered_at,
                tail,
                self.id,
                config,
                self.consumer,
            )
        )
        return batch

    def _advance_inline(self, position: int) -> None:
        """Moves the cursor past a position made inline (here: one that failed).

        A late result of a pool retired by the switch to inline may have landed at this
        position meanwhile: the batch just made is the one delivered, that one dropped.
        A switch to a pool meanwhile (a background switch publishes from its own thread)
        filled the window already (`move_in_flight`), this position included: it leaves
        the in-flight set here, and its result is dropped when it comes.
        """
        with self._lock:
            self._buffer.pop(position, None)
            self._outstanding.discard(position)
            self._cursor = position + 1
            if self._submitted < self._cursor:
                self._submitted = self._cursor

    def _top_up(self) -> None:
        state = self._state
        serving = state.serving
        pool = serving.pool
        if pool is None or self._paused or self._closed or state.fatal is not None:
            return
        limit = self._cursor + held_batches(serving.config)
        if self._length is not None and limit > self._length:
            limit = self._length
        while self._submitted < limit:
            position = self._submitted
            self._submitted = position + 1
            if position in self._buffer:
                continue
            self._outstanding.add(position)
            self._submit(pool, serving.generation, position)

    def _submit(self, pool: Any, generation: int, position: int) -> None:
        index = self.index_at(position)
        key = (self.id, position, generation)
        if self._seed is None:
            pool.submit(key, index)
        else:
            pool.submit(key, index, batch_seed(self._seed, index))


class StreamRegistry:
    """The open streams of one prefetcher, by id; lock-free (single dict operations).

    Example:

    ```python
    streams = StreamRegistry()
    streams.add(stream)
    streams.get(stream.id) is stream
    busy = any(s.in_flight for s in streams.all())
    ```
    """

    def __init__(self) -> None:
        self._by_id: dict[int, Stream] = {}

    def add(self, stream: Stream) -> None:
        """Registers an open stream."""
        self._by_id[stream.id] = stream

    def remove(self, stream: Stream) -> None:
        """Forgets a stream (idempotent)."""
        self._by_id.pop(stream.id, None)

    def get(self, stream_id: int) -> Stream | None:
        """The open stream with this id, or None."""
        return self._by_id.get(stream_id)

    def all(self) -> list[Stream]:
        """A snapshot of the open streams."""
        return list(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
