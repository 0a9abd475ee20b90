"""`Prefetcher`: the restartable, exactly-once prefetching enqueuer.

Data path, top to bottom:

1. A *stream* is one consumer's pass: an ordered list of dataset indices (one epoch:
   `range(n)` or a permutation) or, for infinite datasets, an endless run of indices
   from a start index. Any number of streams can be open at once (training, validation,
   a nested `evaluate` from a callback); each has its own order, cursor and reorder
   buffer, and all of them share one worker pool and its config.
2. Positions of a stream are submitted to the pool (threads or processes), at most
   `held_batches(config)` (`engine/arithmetic.py`) ahead of that stream's cursor.
3. Results land in the stream's reorder buffer keyed by position; `Stream.next()` hands
   out the position at the cursor, and only that one, then advances the cursor.

Exactly-once delivery follows from (3): a position is delivered only by moving the
cursor past it, and a result for a position the cursor has passed, for a closed stream,
or already buffered is dropped (`_accepts`). `reconfigure()` can therefore swap or
resize the pool at any moment: finished batches stay in the buffers and are served;
positions that were in flight are submitted again to the new pool, and whichever copy
arrives first wins. Nothing is lost, nothing is delivered twice, the order never changes.

A switch to another mode (threads <-> processes) can start the new pool in the
background (`reconfigure(config, background=True)`): the current pool keeps serving
until the new one is ready, and the switch then happens between two batches, so
starting processes never stalls the consumer. Every task carries the *generation* of
the pool it was submitted to, so each `BatchRecord` says which config produced it.

The engine knows nothing about Keras or Optuna; it runs any object with
`__getitem__` (and, for processes, a picklable one).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine import _pickling
from keras_loadtune.engine._processes import ProcessPool
from keras_loadtune.engine._threads import ThreadPool
from keras_loadtune.engine.arithmetic import held_batches
from keras_loadtune.engine.errors import BatchTimeoutError, PrefetcherClosedError
from keras_loadtune.engine.records import BatchRecord, LoaderStats, StartupRecord

logger = logging.getLogger("keras_loadtune")

_OK = 0
_ERR = 1
_SEED_MASK = (1 << 63) - 1


def check_seconds(arg: str, value: Any) -> None:
    """Raises ValueError unless `value` is None or a positive number of seconds."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
    ):
        raise ValueError(f"{arg} must be a positive number of seconds or None; got {value!r}.")


def batch_seed(stream_seed: int, index: int) -> int:
    """The seed a worker process uses for dataset index `index` of a seeded stream.

    Depends only on the stream's seed and the index, never on which worker or which
    config produced the batch, so seeded random augmentation is reproducible across
    worker counts and switches.
    """
    return (stream_seed * 1_000_003 + index * 7_919 + 1) & _SEED_MASK


def _check_order(order: Any) -> None:
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


class Prefetcher:
    """Prefetches `source[index]` with a live-reconfigurable worker pool, exactly once.

    Args:
        source: Any object with `__getitem__(index)`; must be picklable for process mode.
        config: Initial `LoaderConfig`.
        timeout: Optional per-batch timeout in seconds: if the consumer waits longer than
            this for one batch, `next()` raises `BatchTimeoutError` naming the index.
        idle_timeout: Seconds without a consumer (no `next()` call) and no work in flight
            after which the workers are released; they restart on the next use. This is
            what frees worker processes and threads after training is interrupted
            (Ctrl-C, an exception in another callback). `None` keeps them until `close()`.
        name: Prefix of worker thread/process names (shows up in `ps`/`py-spy`).
        stats: Where batch and start-up records go (default: a new `LoaderStats`); pass
            one to keep a single history across prefetchers.

    Example:

    ```python
    from keras_loadtune import LoaderConfig
    from keras_loadtune.engine import Prefetcher

    with Prefetcher(my_dataset, LoaderConfig(workers=4)) as pf:
        pf.begin_pass(range(len(my_dataset)))
        first = pf.next()
        pf.reconfigure(LoaderConfig(workers=8, max_queue_size=16))  # mid-pass
        rest = [pf.next() for _ in range(len(my_dataset) - 1)]
    ```
    """

    def __init__(
        self,
        source: Any,
        config: LoaderConfig,
        *,
        timeout: float | None = None,
        idle_timeout: float | None = 10.0,
        name: str = "keras_loadtune",
        stats: LoaderStats | None = None,
    ):
        if not hasattr(type(source), "__getitem__"):
            raise TypeError(
                "source must be indexable (define __getitem__(index) -> batch); "
                f"got {type(source).__name__}."
            )
        if not isinstance(config, LoaderConfig):
            raise TypeError(f"config must be a LoaderConfig; got {type(config).__name__}.")
        check_seconds("timeout", timeout)
        check_seconds("idle_timeout", idle_timeout)
        if stats is not None and not isinstance(stats, LoaderStats):
            raise TypeError(f"stats must be a LoaderStats or None; got {type(stats).__name__}.")
        self._source = source
        self._config = config
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._last_activity = time.monotonic()
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._reconfigure_lock = threading.Lock()
        self._pool: ThreadPool | ProcessPool | None = None
        self._generation = 0  # bumps with every pool or resize; tags submitted tasks
        self._producers: dict[int, LoaderConfig] = {}  # generation -> config
        self._pending: LoaderConfig | None = None  # background switch in progress
        self._switch_error: BaseException | None = None
        self._switcher: threading.Thread | None = None
        self._retired: list[threading.Thread] = []
        self._stream_ids = itertools.count(1)
        self._streams: dict[int, Stream] = {}
        self._default: Stream | None = None  # the stream behind begin_pass()/next()
        self._stream_next = 0  # infinite default streams continue across passes
        self._source_version = 0
        self._source_fingerprint = _pickling.fingerprint(source)
        self._valid_from = 0  # results of earlier generations saw a stale source
        self._fatal: BaseException | None = None
        self._closed = False
        self._sequence = 0
        self.stats = stats if stats is not None else LoaderStats()
        if idle_timeout is not None:
            _janitor.watch(self)

    # -- properties --------------------------------------------------------------------
    @property
    def config(self) -> LoaderConfig:
        """The active `LoaderConfig` (the one serving now)."""
        return self._config

    @property
    def pending_config(self) -> LoaderConfig | None:
        """The config a background switch is starting, or `None`."""
        return self._pending

    @property
    def source(self) -> Any:
        """The indexable dataset the workers read from."""
        return self._source

    @property
    def pass_id(self) -> int:
        """Id of the stream behind `begin_pass`/`next` (0 before the first pass)."""
        return self._default.id if self._default is not None else 0

    @property
    def pass_finished(self) -> bool:
        """True when no pass is open or every position of the finite pass was delivered."""
        stream = self._default
        return stream is None or stream.finished

    @property
    def open_streams(self) -> int:
        """How many streams are open."""
        with self._cond:
            return len(self._streams)

    @property
    def closed(self) -> bool:
        """True once `close()` ran; a closed prefetcher cannot be restarted."""
        return self._closed

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of live worker processes (empty in thread mode)."""
        pool = self._pool
        return list(pool.pids) if isinstance(pool, ProcessPool) else []

    @property
    def outstanding(self) -> int:
        """Positions submitted to the workers whose batch has not arrived yet (all streams)."""
        with self._cond:
            return sum(len(s._outstanding) for s in self._streams.values())

    # -- streams -----------------------------------------------------------------------
    def open_stream(
        self,
        order: Sequence[int] | None,
        *,
        start: int = 0,
        seed: int | None = None,
        consumer: int = 0,
    ) -> Stream:
        """Opens a new stream over `order` (dataset indices), or an infinite one if None.

        Args:
            order: The dataset indices of the pass, in delivery order; `None` for an
                infinite stream of `start, start + 1, ...`.
            start: First index of an infinite stream.
            seed: If given, process workers seed Python's `random` and NumPy's global
                RNG with `batch_seed(seed, index)` before producing each batch.
            consumer: A tag copied into every `BatchRecord` of the stream (e.g. which
                Keras consumer reads it), so measurements can pick one consumer.
        """
        _check_order(order)
        self._check_open()
        self._ensure_pool()
        with self._cond:
            stream = Stream(self, next(self._stream_ids), order, start, seed, consumer)
            self._streams[stream.id] = stream
            self._last_activity = time.monotonic()
            self._top_up(stream)
        return stream

    def source_changed(self) -> None:
        """Tells the engine the source's state may have changed (e.g. an epoch hook ran).

        If a cheap fingerprint of the source shows a change, batches prefetched but not
        yet delivered are produced again from the new state (threads and processes), and
        worker processes get a fresh copy; so every batch delivered after the change sees
        it, as with a dataset read without prefetching. Nothing changed: nothing is done.
        """
        self._source_version += 1
        fingerprint = _pickling.fingerprint(self._source)
        if fingerprint is not None and fingerprint == self._source_fingerprint:
            return
        self._source_fingerprint = fingerprint
        pool = self._pool
        if pool is not None:
            pool.update_source(self._source, self._source_version)
        with self._cond:
            self._new_generation(self._config)
            self._valid_from = self._generation  # earlier results carry the old state
            for stream in self._streams.values():
                stream._buffer.clear()
                stream._outstanding.clear()
                stream._submitted = stream._cursor
            self._top_up_all()

    # -- the default stream (one consumer) -----------------------------------------------
    def begin_pass(self, order: Sequence[int] | None) -> None:
        """Starts a new pass over `order` (dataset indices), or an infinite stream if None.

        Undelivered results of the previous pass are dropped. An infinite stream starts at
        the index after the last one delivered, so it continues across passes and restarts.
        """
        _check_order(order)
        self.source_changed()  # epoch hooks may have changed what workers must see
        previous = self._default
        if previous is not None:
            if previous._infinite:
                self._stream_next = previous._base + previous._cursor
            previous.close()
        self._default = self.open_stream(order, start=self._stream_next)

    def pause(self) -> None:
        """Stops submitting new work for the current pass; finished batches are kept."""
        if self._default is not None:
            self._default.pause()

    def resume(self) -> None:
        """Resumes submitting work for the current pass."""
        if self._default is not None:
            self._default.resume()

    def next(self) -> Any:
        """Returns the next batch of the current pass (see `Stream.next`)."""
        if self._default is None:
            self._check_open()
            raise RuntimeError("keras_loadtune: next() called before begin_pass().")
        return self._default.next()

    # -- reconfiguration ---------------------------------------------------------------
    def reconfigure(self, config: LoaderConfig, *, background: bool = False) -> None:
        """Switches to `config` at a batch boundary, losing and repeating nothing.

        Same mode: the pool is resized in place (only added workers pay start-up).
        Other mode: a new pool starts (its start-up cost is recorded in `stats.startups`),
        in-flight positions move to it, and the old pool is retired in the background.

        Args:
            config: The config to switch to.
            background: For a switch of mode, start the new pool off the calling thread
                while the current pool keeps serving; the switch happens once the new
                workers are ready (`pending_config` shows it until then). A failed start
                leaves the current config active and is reported by `switch_error`.
                Without it, the call blocks until the switch is done and raises the
                start-up error (e.g. `DatasetNotPicklableError`) itself.
        """
        if not isinstance(config, LoaderConfig):
            raise TypeError(f"config must be a LoaderConfig; got {type(config).__name__}.")
        self._check_open()
        with self._reconfigure_lock:
            if self._pending is not None:  # a newer request supersedes a pending switch
                self._pending = config if config != self._config else None
                return
            old = self._config
            pool = self._pool
            if config == old:
                return
            if pool is None:
                self._config = config
                return
            if config.use_multiprocessing == old.use_multiprocessing:
                t0 = time.perf_counter()
                started = pool.resize(config.workers)
                seconds = time.perf_counter() - t0
                with self._cond:
                    self._config = config
                    self._new_generation(config)
                    self._top_up_all()
                if started:
                    self.stats.add_startup(StartupRecord(config, started, seconds, t0))
                return
            if background:
                self._pending = config
                self._switch_error = None
                self._switcher = threading.Thread(
                    target=self._switch_in_background,
                    name=f"{self._name}-switch",
                    daemon=True,
                )
                self._switcher.start()
                return
            new_pool = self._start_pool(config)
            self._swap_pool(new_pool, config)
        logger.debug("keras_loadtune: loader reconfigured %s -> %s", old, config)

    @property
    def switch_error(self) -> BaseException | None:
        """Why the last background switch failed (`None` if it did not)."""
        return self._switch_error

    def wait_for_switch(self, timeout: float | None = None) -> bool:
        """Blocks until a background switch is done; True if none is pending any more."""
        thread = self._switcher
        if thread is not None:
            thread.join(timeout)
        return self._pending is None

    # -- lifecycle ---------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Stops every worker and joins every engine thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pool = self._pool
            self._pool = None
            self._pending = None
            for stream in self._streams.values():
                stream._closed = True
            self._streams.clear()
            self._cond.notify_all()
        switcher = self._switcher
        if switcher is not None:
            switcher.join(timeout)
        stuck = pool.close(timeout) if pool is not None else []
        for thread in self._retired:
            thread.join(timeout)
        self._retired.clear()
        if stuck:
            logger.warning(
                "keras_loadtune: %d worker thread(s) still inside __getitem__ after close; "
                "they are daemon threads and end with the interpreter.",
                len(stuck),
            )

    def release_workers(self, timeout: float = 5.0, *, force: bool = False) -> bool:
        """Stops the worker pool but keeps the streams; workers restart on the next use.

        Only acts when no work is in flight, so nothing needs to be submitted again, unless
        `force`: then positions in flight are dropped and submitted again on restart (used
        after a failed pass, whose remaining batches nobody will ask for).
        Returns True if a pool was released.
        """
        with self._reconfigure_lock, self._cond:
            busy = any(s._outstanding for s in self._streams.values())
            if self._pool is None or (busy and not force) or self._pending is not None:
                return False
            pool = self._pool
            self._pool = None
            for stream in self._streams.values():
                if stream._outstanding:
                    stream._outstanding.clear()
                    stream._submitted = stream._cursor  # _top_up skips what is buffered
        pool.close(timeout)
        logger.debug("keras_loadtune: released idle workers (%s)", self._config)
        return True

    def idle_seconds(self) -> float:
        """Seconds since a consumer last asked for a batch."""
        return time.monotonic() - self._last_activity

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter teardown
        try:
            self.close(timeout=1.0)
        except Exception:
            pass

    # -- ResultSink (called from worker threads / the collector thread) ---------------
    def on_result(self, key: Any, batch: Any, wall_s: float, cpu_s: float, nbytes: int) -> None:
        """Pool callback: a batch for `key` = (stream, position, generation) is ready."""
        with self._cond:
            stream = self._accepts(key)
            if stream is not None:
                position = key[1]
                stream._buffer[position] = (_OK, batch, wall_s, cpu_s, nbytes, key[2])
                stream._outstanding.discard(position)
                self._cond.notify_all()

    def on_error(self, key: Any, exc: BaseException) -> None:
        """Pool callback: `__getitem__` raised for `key`; it is raised in order by `next()`."""
        with self._cond:
            stream = self._accepts(key)
            if stream is not None:
                position = key[1]
                index = stream._index_at(position)
                mode = self._producers.get(key[2], self._config).mode
                exc.add_note(
                    f"keras_loadtune: raised by {type(self._source).__name__}.__getitem__({index}) "
                    f"in a {mode} worker."
                )
                stream._buffer[position] = (_ERR, exc)
                stream._outstanding.discard(position)
                self._cond.notify_all()

    def on_fatal(self, exc: BaseException) -> None:
        """Pool callback: the pool is broken (a worker died); waiting consumers raise `exc`.

        The broken pool is replaced when the next stream opens or resumes.
        """
        with self._cond:
            if self._fatal is None:
                self._fatal = exc
            self._cond.notify_all()

    # -- internals (call with self._cond held unless noted) ----------------------------
    def _accepts(self, key: Any) -> Stream | None:
        stream_id, position, generation = key
        stream = self._streams.get(stream_id)
        if (
            stream is None
            or generation < self._valid_from
            or position < stream._cursor
            or position in stream._buffer
        ):
            return None
        return stream

    def _new_generation(self, config: LoaderConfig) -> None:
        self._generation += 1
        self._producers[self._generation] = config
        if len(self._producers) > 64:  # tasks of very old generations are long gone
            for old in sorted(self._producers)[:-32]:
                del self._producers[old]

    def _top_up(self, stream: Stream) -> None:
        pool = self._pool
        if stream._paused or stream._closed or pool is None or self._fatal is not None:
            return
        limit = stream._limit(self._config)
        while stream._submitted < limit:
            position = stream._submitted
            stream._submitted += 1
            if position in stream._buffer:
                continue
            stream._outstanding.add(position)
            self._submit(pool, stream, position)

    def _top_up_all(self) -> None:
        for stream in self._streams.values():
            self._top_up(stream)

    def _submit(self, pool: ThreadPool | ProcessPool, stream: Stream, position: int) -> None:
        index = stream._index_at(position)
        key = (stream.id, position, self._generation)
        if stream._seed is None:
            pool.submit(key, index)
        else:
            pool.submit(key, index, batch_seed(stream._seed, index))

    def _next(self, stream: Stream) -> Any:
        t0 = time.perf_counter()
        if self._pool is None or self._fatal is not None:
            self._ensure_pool()  # restarts released or broken workers
        with self._cond:
            self._last_activity = time.monotonic()
            while True:
                if self._closed:
                    raise PrefetcherClosedError("keras_loadtune: the prefetcher was closed.")
                if stream._closed:
                    raise RuntimeError("keras_loadtune: next() called on a closed stream.")
                if not stream._infinite and stream._cursor >= len(stream._order):
                    raise EndOfPass
                entry = stream._buffer.pop(stream._cursor, None)
                if entry is not None:
                    break
                if self._fatal is not None:
                    raise self._fatal
                stream._paused = False
                self._top_up(stream)
                waited = time.perf_counter() - t0
                if self._timeout is not None and waited >= self._timeout:
                    index = stream._index_at(stream._cursor)
                    raise BatchTimeoutError(
                        f"keras_loadtune: batch {index} did not arrive within "
                        f"{self._timeout:g} s (a worker may be stuck in __getitem__({index})). "
                        "Raise `timeout` if batches are legitimately this slow.",
                        index=index,
                        timeout=self._timeout,
                    )
                if self._pool is None and not stream._outstanding:
                    # Released by the janitor between our restart and now: start again.
                    self._cond.release()
                    try:
                        self._ensure_pool()
                    finally:
                        self._cond.acquire()
                    continue
                limit = 1.0 if self._timeout is None else min(1.0, self._timeout - waited)
                self._cond.wait(limit)
            position = stream._cursor
            index = stream._index_at(position)
            stream._cursor += 1
            self._top_up(stream)
            depth = len(stream._buffer)
            tail = not stream._infinite and stream._submitted >= len(stream._order)
            config = self._config
            sequence = self._sequence
            self._sequence += 1
            self._last_activity = time.monotonic()
        wait_s = time.perf_counter() - t0
        if entry[0] == _ERR:
            raise entry[1]
        _, batch, wall, cpu, nbytes, generation = entry
        self.stats.add_batch(
            BatchRecord(
                sequence,
                index,
                wait_s,
                wall,
                cpu,
                depth,
                nbytes,
                config,
                t0 + wait_s,
                tail,
                stream.id,
                self._producers.get(generation),
                stream.consumer,
            )
        )
        return batch

    def _resume(self, stream: Stream) -> None:
        self._check_open()
        self._ensure_pool()
        with self._cond:
            self._last_activity = time.monotonic()
            stream._paused = False
            self._top_up(stream)

    def _close_stream(self, stream: Stream) -> None:
        with self._cond:
            stream._closed = True
            stream._buffer.clear()
            stream._outstanding.clear()
            self._streams.pop(stream.id, None)
            if self._default is stream:
                self._default = None
            self._cond.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise PrefetcherClosedError(
                "keras_loadtune: this loader was closed; wrap the dataset again to reuse it."
            )

    def _ensure_pool(self) -> ThreadPool | ProcessPool:
        """Starts a pool for the current config if there is none or it broke (no lock held)."""
        with self._reconfigure_lock:
            broken = None
            if self._fatal is not None and self._pool is not None:
                with self._cond:
                    if any(s._outstanding for s in self._streams.values()):
                        return self._pool  # consumers of the failed pass still see the error
                    broken, self._pool = self._pool, None
            if broken is not None:
                self._retire(broken)
            if self._pool is None:
                self._check_open()
                pool = self._start_pool(self._config)
                with self._cond:
                    self._pool = pool
                    self._fatal = None
                    self._new_generation(self._config)
                    self._top_up_all()
            return self._pool

    def _start_pool(self, config: LoaderConfig, *, background: bool = False) -> Any:
        """Creates a pool with `config.workers` ready workers; records the start-up cost."""
        t0 = time.perf_counter()
        pool_cls = ProcessPool if config.use_multiprocessing else ThreadPool
        pool = pool_cls(self._source, self, self._name)
        try:
            if self._source_version:
                pool.update_source(self._source, self._source_version)
            started = pool.resize(config.workers)
        except BaseException as exc:
            pool.close(timeout=1.0)
            if background:
                error = f"{type(exc).__name__}: {exc}"
                seconds = time.perf_counter() - t0
                self.stats.add_startup(StartupRecord(config, 0, seconds, t0, True, error))
            raise
        self.stats.add_startup(
            StartupRecord(config, started, time.perf_counter() - t0, t0, background)
        )
        return pool

    def _swap_pool(self, new_pool: Any, config: LoaderConfig) -> None:
        """Makes `new_pool` serve `config`; in-flight positions move to it (reconfigure lock)."""
        with self._cond:
            old_pool = self._pool
            self._pool = new_pool
            self._config = config
            self._fatal = None
            self._new_generation(config)
            if old_pool is not None:
                old_pool.cancel_pending()
            for stream in self._streams.values():
                for position in sorted(stream._outstanding):
                    self._submit(new_pool, stream, position)
            self._top_up_all()
        if old_pool is not None:
            self._retire(old_pool)

    def _switch_in_background(self) -> None:
        config = self._pending
        try:
            while config is not None:
                try:
                    new_pool = self._start_pool(config, background=True)
                except BaseException as exc:
                    self._switch_error = exc
                    logger.debug("keras_loadtune: background switch to %s failed: %s", config, exc)
                    with self._reconfigure_lock:
                        self._pending = None
                    return
                with self._reconfigure_lock:
                    wanted = self._pending
                    if self._closed or wanted is None:
                        self._pending = None
                        new_pool.close(timeout=1.0)
                        return
                    other_mode = wanted.use_multiprocessing != config.use_multiprocessing
                    if wanted != config and other_mode:
                        new_pool.close(timeout=1.0)
                        config = wanted  # superseded by a request for the other mode
                        continue
                    self._swap_pool(new_pool, config)
                    self._pending = None
                    if wanted != config:  # same mode, other size or queue: apply in place
                        started = new_pool.resize(wanted.workers)
                        with self._cond:
                            self._config = wanted
                            self._new_generation(wanted)
                            self._top_up_all()
                        del started
                logger.debug("keras_loadtune: loader switched in the background to %s", config)
                return
        finally:
            with self._cond:
                self._cond.notify_all()

    def _release_if_idle(self) -> None:
        if (
            self._idle_timeout is not None
            and self._pool is not None
            and self.idle_seconds() > self._idle_timeout
        ):
            self.release_workers()

    def _retire(self, pool: ThreadPool | ProcessPool) -> None:
        """Closes an old pool in the background so training does not wait for it."""
        self._retired = [t for t in self._retired if t.is_alive()]
        thread = threading.Thread(
            target=pool.close, name=f"{self._name}-retire", daemon=True, kwargs={"timeout": 5.0}
        )
        thread.start()
        self._retired.append(thread)


class _Janitor:
    """One daemon thread that releases the workers of idle prefetchers."""

    def __init__(self) -> None:
        self._prefetchers: weakref.WeakSet[Prefetcher] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, prefetcher: Prefetcher) -> None:
        with self._lock:
            self._prefetchers.add(prefetcher)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="keras_loadtune-janitor", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(0.25)
            with self._lock:
                for closed in [p for p in self._prefetchers if p.closed]:
                    self._prefetchers.discard(closed)
                prefetchers = list(self._prefetchers)
                if not prefetchers:
                    self._thread = None
                    return
            for prefetcher in prefetchers:
                try:
                    prefetcher._release_if_idle()
                except Exception:  # never let the janitor die
                    logger.debug("keras_loadtune: idle release failed", exc_info=True)
            del prefetchers


_janitor = _Janitor()


@atexit.register
def _close_all() -> None:
    for prefetcher in list(_janitor._prefetchers):
        try:
            prefetcher.close(timeout=1.0)
        except Exception:
            pass
