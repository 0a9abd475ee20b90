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

This module owns the data path: submission, results, delivery and its records. The
rest lives beside it: `stream.py` (a stream's cursor and reorder buffer),
`_pool_control.py` (starting, resizing, switching, retiring and releasing the pool;
a base class of `Prefetcher`), `_janitor.py` (releasing idle workers), and
`_threads.py` / `_processes.py` (the two pools).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine import _pickling
from keras_loadtune.engine._janitor import janitor
from keras_loadtune.engine._pool import WorkerPool
from keras_loadtune.engine._pool_control import PoolControl
from keras_loadtune.engine._processes import ProcessPool
from keras_loadtune.engine.errors import BatchTimeoutError, PrefetcherClosedError
from keras_loadtune.engine.records import BatchRecord, LoaderStats
from keras_loadtune.engine.stream import EndOfPass, Stream, batch_seed, check_order

logger = logging.getLogger("keras_loadtune")

_OK = 0
_ERR = 1


def check_seconds(arg: str, value: Any) -> None:
    """Raises ValueError unless `value` is None or a positive number of seconds."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
    ):
        raise ValueError(f"{arg} must be a positive number of seconds or None; got {value!r}.")


class Prefetcher(PoolControl):
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
        # Reentrant only so that a stream closed by a finalizer on a thread that holds it
        # (see `_close_stream`) can tell: nothing else re-enters it.
        self._cond = threading.Condition(threading.RLock())
        self._closing: collections.deque[Stream] = collections.deque()  # deferred closes
        self._reconfigure_lock = threading.Lock()
        self._pool: WorkerPool | None = None
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
        self._shm_note: str | None = None
        if idle_timeout is not None:
            janitor.watch(self)

    # -- properties --------------------------------------------------------------------
    @property
    def config(self) -> LoaderConfig:
        """The active `LoaderConfig` (the one serving now)."""
        return self._config

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
    def shm_fallback_note(self) -> str | None:
        """One line for the report if `/dev/shm` was too small for some arrays, else None.

        Those arrays went through the pipe instead (slower, never a SIGBUS); the note
        stays after the process pool is retired.
        """
        pool = self._pool
        if isinstance(pool, ProcessPool):
            note = pool.fallback_note
            if note is not None:
                self._shm_note = note
        return self._shm_note

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
        check_order(order)
        self._check_open()
        self._ensure_pool()
        with self._cond:
            self._reap_closing()
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
        if isinstance(pool, ProcessPool):  # threads read self._source itself
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
        check_order(order)
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
            or stream._closed
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

    def _submit(self, pool: WorkerPool, stream: Stream, position: int) -> None:
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
            self._reap_closing()
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
        # A Keras iterator dropped without being exhausted is a generator that closes its
        # stream in a `finally`, run by the garbage collector on whichever thread it
        # happens to run, possibly while that thread holds our lock (inside `_top_up`,
        # say). Taking the lock again there would deadlock or change state under the
        # holder's feet: the stream is only marked closed, and the next call reaps it.
        if self._cond._is_owned():  # type: ignore[attr-defined]
            stream._closed = True
            self._closing.append(stream)
            return
        with self._cond:
            self._forget(stream)
            self._reap_closing()
            self._cond.notify_all()

    def _reap_closing(self) -> None:
        """Forgets the streams whose close was deferred (lock held)."""
        while self._closing:
            self._forget(self._closing.popleft())

    def _forget(self, stream: Stream) -> None:
        stream._closed = True
        stream._buffer.clear()
        stream._outstanding.clear()
        self._streams.pop(stream.id, None)
        if self._default is stream:
            self._default = None

    def _check_open(self) -> None:
        if self._closed:
            raise PrefetcherClosedError(
                "keras_loadtune: this loader was closed; wrap the dataset again to reuse it."
            )
