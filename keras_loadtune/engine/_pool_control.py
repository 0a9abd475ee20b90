"""`PoolControl`: which worker pool serves a `Prefetcher`: start, resize, switch, retire, release.

A component the prefetcher holds. It owns the pool's lifecycle and everything about
it: the `PoolState` cell that streams read on every batch (the `Serving` triple of
pool, config and generation, the fatal error of a broken pool, closed), the config of
every generation (`producer`), a background switch (the pending config, its thread and
its error), the pools being retired, and the time of last use that idle release
goes by. An inline config (`LoaderConfig.inline`) is served by no pool at all: the
consumer's thread makes each batch.

Every change of pool or size publishes a new `Serving` with a new generation, then
asks each stream to move its in-flight positions (`Stream.move_in_flight`), so the data
path's exactly-once invariant (`prefetcher.py`) holds across all of it. Locks: its own
`_lock` serialises pool changes and comes before any stream's lock (the lock order is
in `stream.py`).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine._pool import PoolState, Serving, WorkerPool
from keras_loadtune.engine._sink import ResultSink
from keras_loadtune.engine._threads import ThreadPool
from keras_loadtune.engine.errors import PrefetcherClosedError
from keras_loadtune.engine.process import ProcessPool
from keras_loadtune.engine.records import LoaderStats, StartupRecord
from keras_loadtune.engine.stream import StreamRegistry

logger = logging.getLogger("keras_loadtune")


class PoolControl:
    """Starts, resizes, switches, retires and releases the pool serving a prefetcher's streams.

    Args:
        source: The dataset the pools read.
        config: The initial config.
        sink: Where pools report results (the prefetcher).
        streams: The prefetcher's open streams; each is told when the pool changes.
        stats: Where start-up records go.
        name: Prefix of worker thread and process names.

    Example:

    ```python
    with Prefetcher(my_dataset, LoaderConfig(workers=2)) as pf:
        pf.reconfigure(LoaderConfig(workers=2, use_multiprocessing=True), background=True)
        pf.wait_for_switch(timeout=60)
        assert pf.switch_error is None and pf.pending_config is None
    ```
    """

    def __init__(
        self,
        source: Any,
        config: LoaderConfig,
        *,
        sink: ResultSink,
        streams: StreamRegistry,
        stats: LoaderStats,
        name: str,
    ):
        self._source = source
        # Weak: the prefetcher holds this controller, and an unused prefetcher must be
        # freed by reference counting alone (its janitor entry then goes too).
        self._sink = weakref.ref(sink)
        self._streams = streams
        self._stats = stats
        self._name = name
        self._lock = threading.Lock()  # serialises pool changes (level 2 of stream.py)
        self._state = PoolState(Serving(None, config, 0))
        self._producers: dict[int, LoaderConfig] = {0: config}  # generation -> config
        self._pending: LoaderConfig | None = None  # background switch in progress
        self._switch_error: BaseException | None = None
        self._switcher: threading.Thread | None = None
        self._retired: list[threading.Thread] = []
        self._source_version = 0
        self._last_used = time.monotonic()
        self._seen_delivered = stats.delivered  # deliveries when last looked (idle release)

    # -- what serves now ---------------------------------------------------------------
    @property
    def state(self) -> PoolState:
        """The cell streams read on every batch (written here only)."""
        return self._state

    @property
    def serving(self) -> Serving:
        """The pool serving now, its config and generation (one consistent snapshot)."""
        return self._state.serving

    @property
    def config(self) -> LoaderConfig:
        """The active config."""
        return self._state.serving.config

    @property
    def pool(self) -> WorkerPool | None:
        """The live pool (None: inline, released, or not started)."""
        return self._state.serving.pool

    @property
    def fatal(self) -> BaseException | None:
        """Why the pool broke (a worker died), or None."""
        return self._state.fatal

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._state.closed

    @property
    def pending_config(self) -> LoaderConfig | None:
        """The config a background switch is starting, or `None`."""
        return self._pending

    @property
    def switch_error(self) -> BaseException | None:
        """Why the last background switch failed (`None` if it did not)."""
        return self._switch_error

    def producer(self, generation: int) -> LoaderConfig | None:
        """The config of the pool that ran tasks of `generation` (None: long forgotten)."""
        return self._producers.get(generation)

    def serving_for_next(self) -> Serving:
        """The pool for a consumer's `next()`: restarts a released or broken one (no lock held).

        Reads no clock: idle release goes by the delivery count (`release_if_idle`).
        """
        serving = self._state.serving
        if (serving.pool is None and not serving.config.inline) or self._state.fatal is not None:
            return self.ensure_pool()
        return serving

    def idle_seconds(self) -> float:
        """Seconds since a consumer last got a batch, opened or resumed a stream (0.25 s steps)."""
        self._note_deliveries()
        return time.monotonic() - self._last_used

    def _note_deliveries(self) -> None:
        delivered = self._stats.delivered
        if delivered != self._seen_delivered:
            self._seen_delivered = delivered
            self._last_used = time.monotonic()

    def touch(self) -> None:
        """Counts as a consumer's use (a stream opened or resumed)."""
        self._last_used = time.monotonic()

    # -- reconfiguration ---------------------------------------------------------------
    def reconfigure(self, config: LoaderConfig, *, background: bool = False) -> None:
        """Switches to `config` at a batch boundary (see `Prefetcher.reconfigure`)."""
        self._check_open()
        with self._lock:
            if self._pending is not None:  # a newer request supersedes a pending switch
                self._pending = config if config != self.config else None
                return
            old = self.config
            pool = self.pool
            if config == old:
                return
            if config.inline:  # no pool: the consumer's thread makes the batches
                self._switch_locked_to_inline(config)
            elif pool is None and not old.inline:  # released or not started yet
                self._state.serving = Serving(None, config, self._state.serving.generation)
            elif pool is not None and config.use_multiprocessing == old.use_multiprocessing:
                t0 = time.perf_counter()
                started = pool.resize(config.workers)
                seconds = time.perf_counter() - t0
                self._publish(pool, config)
                if started:
                    self._stats.add_startup(StartupRecord(config, started, seconds, t0))
            elif background:
                self._pending = config
                self._switch_error = None
                self._switcher = threading.Thread(
                    target=self._switch_in_background, name=f"{self._name}-switch", daemon=True
                )
                self._switcher.start()
                return
            else:
                self._swap_pool(self._start_pool(config), config)
        logger.debug("keras_loadtune: loader reconfigured %s -> %s", old, config)

    def wait_for_switch(self, timeout: float | None = None) -> bool:
        """Blocks until a background switch is done; True if none is pending any more."""
        thread = self._switcher
        if thread is not None:
            thread.join(timeout)
        return self._pending is None

    def release(self, timeout: float = 5.0, *, force: bool = False) -> bool:
        """Stops the pool but keeps the streams (see `Prefetcher.release_workers`)."""
        with self._lock:
            pool = self.pool
            busy = any(s.in_flight for s in self._streams.all())
            if pool is None or (busy and not force) or self._pending is not None:
                return False
            self._state.serving = Serving(None, self.config, self._state.serving.generation)
            for stream in self._streams.all():
                stream.drop_in_flight()
        pool.close(timeout)
        logger.debug("keras_loadtune: released idle workers (%s)", self.config)
        return True

    def release_if_idle(self, idle_timeout: float | None) -> None:
        """Releases the pool if no consumer asked for a batch for `idle_timeout` seconds."""
        if (
            idle_timeout is not None
            and self.pool is not None
            and self.idle_seconds() > idle_timeout
        ):
            self.release()

    def ensure_pool(self) -> Serving:
        """Starts a pool for the current config if there is none or it broke (no lock held)."""
        with self._lock:
            broken = None
            if self._state.fatal is not None:
                if any(s.in_flight for s in self._streams.all()):
                    return self._state.serving  # consumers of the failed pass still see the error
                broken = self.pool
                self._state.fatal = None
                if broken is not None:
                    self._state.serving = Serving(None, self.config, self._state.serving.generation)
            if broken is not None:
                self._retire(broken)
            serving = self._state.serving
            if serving.pool is None and not serving.config.inline:
                self._check_open()
                pool = self._start_pool(serving.config)
                self._state.fatal = None
                self._publish(pool, serving.config)
            return self._state.serving

    def source_changed(self, source: Any, *, changed: bool) -> None:
        """The source may have changed (`changed`: it did): workers get it, streams start anew.

        Every call counts as a new version of the source (a pool started later ships
        it); only a change re-sends it and makes the batches not yet delivered again.
        """
        self._source_version += 1
        if not changed:
            return
        with self._lock:
            pool = self.pool
            if isinstance(pool, ProcessPool):  # threads read the source itself
                pool.update_source(source, self._source_version)
            generation = self._new_generation(self.config)
            self._state.serving = Serving(pool, self.config, generation)
            for stream in self._streams.all():
                stream.restart(generation)

    def fail(self, exc: BaseException) -> None:
        """The pool broke: consumers waiting for its batches raise `exc`."""
        if self._state.fatal is None:
            self._state.fatal = exc
        for stream in self._streams.all():
            stream.wake()

    def close(self, timeout: float = 5.0) -> list[Any]:
        """Stops the pool and every engine thread; returns worker threads still stuck."""
        with self._lock:
            if self._state.closed:
                return []
            self._state.closed = True
            self._pending = None
            pool = self.pool
            self._state.serving = Serving(None, self.config, self._state.serving.generation)
        switcher = self._switcher
        if switcher is not None and switcher is not threading.current_thread():
            switcher.join(timeout)
        stuck = pool.close(timeout) if pool is not None else []
        for thread in self._retired:
            thread.join(timeout)
        self._retired.clear()
        return stuck

    # -- internals ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._state.closed:
            raise PrefetcherClosedError(
                "keras_loadtune: this loader was closed; wrap the dataset again to reuse it."
            )

    def _new_generation(self, config: LoaderConfig) -> int:
        generation = self._state.serving.generation + 1
        self._producers[generation] = config
        if len(self._producers) > 64:  # tasks of very old generations are long gone
            for old in sorted(self._producers)[:-32]:
                del self._producers[old]
        return generation

    def _publish(self, pool: WorkerPool | None, config: LoaderConfig) -> None:
        """Makes `pool` serve `config` in a new generation; streams move to it (lock held)."""
        self._state.serving = Serving(pool, config, self._new_generation(config))
        for stream in self._streams.all():
            stream.move_in_flight()

    def _start_pool(self, config: LoaderConfig, *, background: bool = False) -> WorkerPool:
        """Creates a pool with `config.workers` ready workers; records the start-up cost."""
        t0 = time.perf_counter()
        pool_cls = ProcessPool if config.use_multiprocessing else ThreadPool
        sink = self._sink()
        if sink is None:  # pragma: no cover - the prefetcher is being torn down
            raise PrefetcherClosedError("keras_loadtune: the prefetcher was closed.")
        pool = pool_cls(self._source, sink, self._name)
        try:
            if self._source_version and isinstance(pool, ProcessPool):
                pool.update_source(self._source, self._source_version)
            started = pool.resize(config.workers)
        except BaseException as exc:
            pool.close(timeout=1.0)
            if background:
                error = f"{type(exc).__name__}: {exc}"
                seconds = time.perf_counter() - t0
                self._stats.add_startup(StartupRecord(config, 0, seconds, t0, True, error))
            raise
        self._stats.add_startup(
            StartupRecord(config, started, time.perf_counter() - t0, t0, background)
        )
        return pool

    def _swap_pool(self, new_pool: WorkerPool, config: LoaderConfig) -> None:
        """Makes `new_pool` serve `config`; in-flight positions move to it (lock held)."""
        old_pool = self.pool
        self._state.fatal = None
        self._publish(new_pool, config)
        if old_pool is not None:
            old_pool.cancel_pending()
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
                    with self._lock:
                        self._pending = None
                    return
                with self._lock:
                    wanted = self._pending
                    if self._state.closed or wanted is None:
                        self._pending = None
                        new_pool.close(timeout=1.0)
                        return
                    other_mode = wanted.use_multiprocessing != config.use_multiprocessing
                    if wanted != config and (other_mode or wanted.inline):
                        new_pool.close(timeout=1.0)
                        if wanted.inline:  # superseded by a request for inline
                            self._pending = None
                            self._switch_locked_to_inline(wanted)
                            return
                        config = wanted  # superseded by a request for the other mode
                        continue
                    self._swap_pool(new_pool, config)
                    self._pending = None
                    if wanted != config:  # same mode, other size or queue: apply in place
                        new_pool.resize(wanted.workers)
                        self._publish(new_pool, wanted)
                logger.debug("keras_loadtune: loader switched in the background to %s", config)
                return
        finally:
            for stream in self._streams.all():
                stream.wake()

    def _switch_locked_to_inline(self, config: LoaderConfig) -> None:
        pool = self.pool
        self._state.fatal = None  # nothing in flight any more: no pool can fail a consumer
        self._publish(None, config)
        if pool is not None:
            pool.cancel_pending()
            self._retire(pool)

    def _retire(self, pool: WorkerPool) -> None:
        """Closes an old pool in the background so training does not wait for it."""
        self._retired = [t for t in self._retired if t.is_alive()]
        thread = threading.Thread(
            target=pool.close, name=f"{self._name}-retire", daemon=True, kwargs={"timeout": 5.0}
        )
        thread.start()
        self._retired.append(thread)
