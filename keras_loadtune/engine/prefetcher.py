"""`Prefetcher`: the restartable, exactly-once prefetching enqueuer.

Data path, top to bottom:

1. A *pass* is an ordered list of dataset indices (one epoch: `range(n)` or a
   permutation) or, for infinite datasets, an endless stream that continues
   where the last delivered batch left off.
2. Positions of the pass are submitted to a worker pool (threads or processes),
   at most `max_queue_size` ahead of the position the consumer is at.
3. Results land in a reorder buffer keyed by position; `next()` hands out the
   position at the cursor, and only that one, then advances the cursor.

Exactly-once delivery follows from (3): a position is delivered only by moving
the cursor past it, and a result for a position the cursor has passed (or a
stale pass) is dropped. `reconfigure()` can therefore swap or resize the pool at
any moment: finished batches stay in the buffer and are served; positions that
were in flight are submitted again to the new pool, and whichever copy arrives
first wins. Nothing is lost, nothing is delivered twice, the order never changes.

The engine knows nothing about Keras or Optuna; it runs any object with
`__getitem__` (and, for processes, a picklable one).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine._processes import ProcessPool
from keras_loadtune.engine._threads import ThreadPool
from keras_loadtune.engine.errors import BatchTimeoutError, PrefetcherClosedError
from keras_loadtune.engine.records import BatchRecord, LoaderStats, StartupRecord

logger = logging.getLogger("keras_loadtune")

_OK = 0
_ERR = 1


def check_seconds(arg: str, value: Any) -> None:
    """Raises ValueError unless `value` is None or a positive number of seconds."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
    ):
        raise ValueError(f"{arg} must be a positive number of seconds or None; got {value!r}.")


class EndOfPass(Exception):
    """Raised by `Prefetcher.next()` when every position of a finite pass was delivered."""


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
        self._source = source
        self._config = config
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._last_activity = time.monotonic()
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._reconfigure_lock = threading.Lock()
        self._pool: ThreadPool | ProcessPool | None = None
        self._retired: list[threading.Thread] = []
        self._pass_id = 0
        self._order: Sequence[int] | None = None
        self._infinite = False
        self._base = 0  # infinite streams: dataset index of position 0 of this pass
        self._stream_next = 0  # infinite streams: index after the last delivered one
        self._cursor = 0
        self._submitted = 0
        self._buffer: dict[int, tuple] = {}
        self._outstanding: set[int] = set()
        self._paused = True
        self._fatal: BaseException | None = None
        self._closed = False
        self._sequence = 0
        self.stats = LoaderStats()
        if idle_timeout is not None:
            _janitor.watch(self)

    # -- properties --------------------------------------------------------------------
    @property
    def config(self) -> LoaderConfig:
        """The active `LoaderConfig`."""
        return self._config

    @property
    def source(self) -> Any:
        """The indexable dataset the workers read from."""
        return self._source

    @property
    def pass_id(self) -> int:
        """Increments with every `begin_pass`."""
        return self._pass_id

    @property
    def pass_finished(self) -> bool:
        """True when no pass is open or every position of the finite pass was delivered."""
        with self._cond:
            return self._pass_id == 0 or (
                not self._infinite and self._cursor >= len(self._order or ())
            )

    @property
    def closed(self) -> bool:
        """True once `close()` ran; a closed prefetcher cannot be restarted."""
        return self._closed

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of live worker processes (empty in thread mode)."""
        pool = self._pool
        return pool.pids if isinstance(pool, ProcessPool) else []

    # -- passes ------------------------------------------------------------------------
    def begin_pass(self, order: Sequence[int] | None) -> None:
        """Starts a new pass over `order` (dataset indices), or an infinite stream if None.

        Undelivered results of the previous pass are dropped. An infinite stream starts at
        the index after the last one delivered, so it continues across passes and restarts.
        """
        if order is not None and (
            isinstance(order, (str, bytes, dict))
            or not (hasattr(order, "__len__") and hasattr(order, "__getitem__"))
        ):
            raise TypeError(
                "order must be a sequence of dataset indices (list, range, array) or None "
                f"for an infinite stream; got {type(order).__name__}."
            )
        self._check_open()
        pool = self._ensure_pool()
        if isinstance(pool, ProcessPool):
            # State changed by on_epoch_begin/on_epoch_end must reach the processes.
            pool.update_source(self._source)
        with self._cond:
            self._pass_id += 1
            self._order = order
            self._infinite = order is None
            self._base = self._stream_next
            self._cursor = 0
            self._submitted = 0
            self._buffer.clear()
            self._outstanding.clear()
            self._paused = False
            self._top_up()

    def pause(self) -> None:
        """Stops submitting new work; in-flight and finished batches are kept."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        """Resumes submitting work for the open pass."""
        self._check_open()
        self._ensure_pool()
        with self._cond:
            self._last_activity = time.monotonic()
            self._paused = False
            self._top_up()

    def next(self) -> Any:
        """Returns the next batch of the pass, blocking until it is ready.

        Raises:
            EndOfPass: the finite pass is complete.
            Exception: the exception `__getitem__` raised for this position (original type
                and message, with a note naming the index), after all earlier batches.
            WorkerDiedError: a worker process died.
            BatchTimeoutError: the batch took longer than `timeout`.
        """
        t0 = time.perf_counter()
        with self._cond:
            self._last_activity = time.monotonic()
            if self._pool is None and not self._closed and self._pass_id:
                self._cond.release()
                try:
                    self._ensure_pool()
                finally:
                    self._cond.acquire()
            while True:
                if self._closed:
                    raise PrefetcherClosedError("keras_loadtune: the prefetcher was closed.")
                if self._pass_id == 0:
                    raise RuntimeError("keras_loadtune: next() called before begin_pass().")
                if not self._infinite and self._cursor >= len(self._order):  # type: ignore[arg-type]
                    raise EndOfPass
                entry = self._buffer.pop(self._cursor, None)
                if entry is not None:
                    break
                if self._fatal is not None:
                    raise self._fatal
                if self._paused:
                    self._paused = False
                self._top_up()
                waited = time.perf_counter() - t0
                if self._timeout is not None and waited >= self._timeout:
                    index = self._index_at(self._cursor)
                    raise BatchTimeoutError(
                        f"keras_loadtune: batch {index} did not arrive within "
                        f"{self._timeout:g} s (a worker may be stuck in __getitem__({index})). "
                        "Raise `timeout` if batches are legitimately this slow.",
                        index=index,
                        timeout=self._timeout,
                    )
                limit = 1.0 if self._timeout is None else min(1.0, self._timeout - waited)
                self._cond.wait(limit)
            position = self._cursor
            index = self._index_at(position)
            self._cursor += 1
            if self._infinite:
                self._stream_next = index + 1
            self._top_up()
            depth = len(self._buffer)
            tail = not self._infinite and self._submitted >= len(self._order)  # type: ignore[arg-type]
            config = self._config
            sequence = self._sequence
            self._sequence += 1
            self._last_activity = time.monotonic()
        wait_s = time.perf_counter() - t0
        if entry[0] == _ERR:
            raise entry[1]
        _, batch, wall, cpu, nbytes = entry
        self.stats.add_batch(
            BatchRecord(
                sequence, index, wait_s, wall, cpu, depth, nbytes, config, t0 + wait_s, tail
            )
        )
        return batch

    # -- reconfiguration ---------------------------------------------------------------
    def reconfigure(self, config: LoaderConfig) -> None:
        """Switches to `config` at the next batch boundary, losing and repeating nothing.

        Same mode: the pool is resized in place (only added workers pay start-up).
        Other mode: a new pool starts (its start-up cost is recorded in `stats.startups`),
        in-flight positions move to it, and the old pool is retired in the background.
        If the new pool cannot start (e.g. the dataset cannot be pickled), the old config
        stays active and the error is raised.
        """
        if not isinstance(config, LoaderConfig):
            raise TypeError(f"config must be a LoaderConfig; got {type(config).__name__}.")
        self._check_open()
        with self._reconfigure_lock:
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
                    self._top_up()
                if started:
                    self.stats.add_startup(StartupRecord(config, started, seconds, t0))
                return
            new_pool = self._start_pool(config)
            with self._cond:
                old_pool = self._pool
                self._pool = new_pool
                self._config = config
                old_pool.cancel_pending()
                for position in sorted(self._outstanding):
                    new_pool.submit((self._pass_id, position), self._index_at(position))
                self._top_up()
            self._retire(old_pool)
        logger.debug("keras_loadtune: loader reconfigured %s -> %s", old, config)

    # -- lifecycle ---------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Stops every worker and joins every engine thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pool = self._pool
            self._pool = None
            self._cond.notify_all()
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
        """Stops the worker pool but keeps the pass; workers restart on the next use.

        Only acts when no work is in flight, so nothing needs to be submitted again, unless
        `force`: then positions in flight are dropped and submitted again on restart (used
        after a failed pass, whose remaining batches nobody will ask for).
        Returns True if a pool was released.
        """
        with self._reconfigure_lock, self._cond:
            if self._pool is None or (self._outstanding and not force):
                return False
            pool = self._pool
            self._pool = None
            if self._outstanding:
                self._outstanding.clear()
                self._submitted = self._cursor  # _top_up skips what is already buffered
        pool.close(timeout)
        logger.debug("keras_loadtune: released idle workers (%s)", self._config)
        return True

    def idle_seconds(self) -> float:
        """Seconds since the consumer last asked for a batch."""
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
        """Pool callback: a batch for `key` = (pass id, position) is ready; stale keys drop."""
        with self._cond:
            if self._accepts(key):
                position = key[1]
                self._buffer[position] = (_OK, batch, wall_s, cpu_s, nbytes)
                self._outstanding.discard(position)
                self._cond.notify_all()

    def on_error(self, key: Any, exc: BaseException) -> None:
        """Pool callback: `__getitem__` raised for `key`; it is raised in order by `next()`."""
        with self._cond:
            if self._accepts(key):
                position = key[1]
                index = self._index_at(position)
                exc.add_note(
                    f"keras_loadtune: raised by {type(self._source).__name__}.__getitem__({index}) "
                    f"in a {self._config.mode} worker."
                )
                self._buffer[position] = (_ERR, exc)
                self._outstanding.discard(position)
                self._cond.notify_all()

    def on_fatal(self, exc: BaseException) -> None:
        """Pool callback: the pool is broken (a worker died); `next()` raises `exc`."""
        with self._cond:
            if self._fatal is None:
                self._fatal = exc
            self._cond.notify_all()

    # -- internals (call with self._cond held unless noted) ----------------------------
    def _accepts(self, key: Any) -> bool:
        pass_id, position = key
        return (
            pass_id == self._pass_id and position >= self._cursor and position not in self._buffer
        )

    def _index_at(self, position: int) -> int:
        if self._infinite:
            return self._base + position
        return self._order[position]  # type: ignore[index]

    def _top_up(self) -> None:
        if self._paused or self._pool is None or self._fatal is not None or self._pass_id == 0:
            return
        limit = self._cursor + self._config.max_queue_size
        if not self._infinite:
            limit = min(limit, len(self._order))  # type: ignore[arg-type]
        while self._submitted < limit:
            position = self._submitted
            self._submitted += 1
            if position in self._buffer:
                continue
            self._outstanding.add(position)
            self._pool.submit((self._pass_id, position), self._index_at(position))

    def _check_open(self) -> None:
        if self._closed:
            raise PrefetcherClosedError(
                "keras_loadtune: this loader was closed; wrap the dataset again to reuse it."
            )

    def _ensure_pool(self) -> ThreadPool | ProcessPool:
        """Starts the pool for the current config if there is none (no lock held)."""
        with self._reconfigure_lock:
            if self._pool is None:
                self._pool = self._start_pool(self._config)
            return self._pool

    def _start_pool(self, config: LoaderConfig) -> ThreadPool | ProcessPool:
        """Creates a pool with `config.workers` ready workers; records the start-up cost."""
        t0 = time.perf_counter()
        pool_cls = ProcessPool if config.use_multiprocessing else ThreadPool
        pool = pool_cls(self._source, self, self._name)
        try:
            started = pool.resize(config.workers)
        except BaseException:
            pool.close(timeout=1.0)
            raise
        self.stats.add_startup(StartupRecord(config, started, time.perf_counter() - t0, t0))
        return pool

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
