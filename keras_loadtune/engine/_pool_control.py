"""Which worker pool serves a `Prefetcher`: start, resize, switch, retire, release.

Owns the pool's lifecycle, as `PoolControl`, a base class of `Prefetcher`: starting a
pool for the active config (and restarting a released or broken one), resizing it in
place, switching to a pool of the other mode now or in the background (the pending
config, the background thread and its error), retiring an old pool off the consumer's
thread, and releasing idle workers. Every change of pool or size starts a new
*generation* (`Prefetcher._new_generation`), and in-flight positions move to the new
pool, so the data path's exactly-once invariant (`prefetcher.py`) holds across all of it.

The state it works on is the prefetcher's (set in `Prefetcher.__init__`, declared
below) and guarded by the same locks: `_reconfigure_lock` serialises pool changes,
`_cond` guards the streams and the pool reference. From the data path it calls
`_new_generation`, `_submit`, `_top_up_all`, `_check_open`, `_reap_closing` and
`idle_seconds`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine._pool import WorkerPool
from keras_loadtune.engine._processes import ProcessPool
from keras_loadtune.engine._threads import ThreadPool
from keras_loadtune.engine.records import LoaderStats, StartupRecord

if TYPE_CHECKING:
    from keras_loadtune.engine.stream import Stream

logger = logging.getLogger("keras_loadtune")


class PoolControl:
    """The pool-lifecycle half of `Prefetcher` (see the module docstring).

    Example:

    ```python
    with Prefetcher(my_dataset, LoaderConfig(workers=2)) as pf:
        pf.reconfigure(LoaderConfig(workers=2, use_multiprocessing=True), background=True)
        pf.wait_for_switch(timeout=60)
        assert pf.switch_error is None and pf.pending_config is None
    ```
    """

    # Set by `Prefetcher.__init__`.
    _source: Any
    _config: LoaderConfig
    _name: str
    _idle_timeout: float | None
    _cond: threading.Condition
    _reconfigure_lock: threading.Lock
    _pool: WorkerPool | None
    _pending: LoaderConfig | None
    _switch_error: BaseException | None
    _switcher: threading.Thread | None
    _retired: list[threading.Thread]
    _streams: dict[int, Stream]
    _closing: collections.deque[Stream]
    _source_version: int
    _fatal: BaseException | None
    _closed: bool
    stats: LoaderStats

    @property
    def pending_config(self) -> LoaderConfig | None:
        """The config a background switch is starting, or `None`."""
        return self._pending

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

    def _ensure_pool(self) -> WorkerPool:
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

    def _start_pool(self, config: LoaderConfig, *, background: bool = False) -> WorkerPool:
        """Creates a pool with `config.workers` ready workers; records the start-up cost."""
        t0 = time.perf_counter()
        pool_cls = ProcessPool if config.use_multiprocessing else ThreadPool
        pool = pool_cls(self._source, self, self._name)
        try:
            if self._source_version and isinstance(pool, ProcessPool):
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

    def _swap_pool(self, new_pool: WorkerPool, config: LoaderConfig) -> None:
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

    def _reap_closing(self) -> None:  # pragma: no cover - defined by Prefetcher
        raise NotImplementedError

    def _release_if_idle(self) -> None:
        if self._closing:  # streams closed by a finalizer while the lock was held
            with self._cond:
                self._reap_closing()
        if (
            self._idle_timeout is not None
            and self._pool is not None
            and self.idle_seconds() > self._idle_timeout
        ):
            self.release_workers()

    def _retire(self, pool: WorkerPool) -> None:
        """Closes an old pool in the background so training does not wait for it."""
        self._retired = [t for t in self._retired if t.is_alive()]
        thread = threading.Thread(
            target=pool.close, name=f"{self._name}-retire", daemon=True, kwargs={"timeout": 5.0}
        )
        thread.start()
        self._retired.append(thread)
