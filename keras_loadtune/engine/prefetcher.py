"""`Prefetcher`: the restartable, exactly-once prefetching enqueuer.

Data path, top to bottom:

1. A *stream* is one consumer's pass: an ordered list of dataset indices (one epoch:
   `range(n)` or a permutation) or, for infinite datasets, an endless run of indices
   from a start index. Any number of streams can be open at once (training, validation,
   a nested `evaluate` from a callback); each has its own order, cursor and reorder
   buffer, and all of them share one worker pool and its config.
2. Positions of a stream are submitted to the pool (threads or processes), at most
   `held_batches(config)` (`engine/arithmetic.py`) ahead of that stream's cursor.
3. Results land in the stream's reorder buffer keyed by position (`Stream.offer`);
   `Stream.next()` hands out the position at the cursor, and only that one, then
   advances the cursor.

Exactly-once delivery follows from (3): a position is delivered only by moving the
cursor past it, and a result for a position the cursor has passed, for a closed stream,
or already buffered is dropped (`Stream.offer`). `reconfigure()` can therefore swap or
resize the pool at any moment: finished batches stay in the buffers and are served;
positions that were in flight are submitted again to the new pool, and whichever copy
arrives first wins. Nothing is lost, nothing is delivered twice, the order never changes.
An inline batch (below) is made for the position at the cursor and delivered by moving
the cursor past it, so the same holds for it and for any copy a pool makes meanwhile.
The locks and their order are written down once, in `stream.py`.

A switch to another mode (threads <-> processes) can start the new pool in the
background (`reconfigure(config, background=True)`): the current pool keeps serving
until the new one is ready, and the switch then happens between two batches, so
starting processes never stalls the consumer. Every task carries the *generation* of
the pool it was submitted to, so each `BatchRecord` says which config produced it.

The engine knows nothing about Optuna, and of Keras only what shipping a dataset to
worker processes needs, in one module (`process/_keras.py`); it runs any object with
`__getitem__` (and, for processes, a picklable one).

An inline config (`LoaderConfig.inline`: one worker, no processes, Keras's default)
runs no pool: `Stream.next()` calls the dataset on the consumer's thread, as Keras 3
does, with the same cursor, records and switches. A switch from a pool to inline
keeps the finished batches (served first) and drops the positions in flight: the
consumer makes them itself, and a late result for a position already passed is dropped
as above.

This module wires the parts together and routes results: `stream.py` (a stream's
cursor, reorder buffer and in-flight set, the hand-over, and the lock order),
`_pool_control.py` (`PoolControl`, a component: starting, resizing, switching,
retiring and releasing the pool), `_janitor.py` (releasing idle workers),
`records.py` (what each delivery records), and `_threads.py` / the `process` package
(the two pools).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine._janitor import janitor
from keras_loadtune.engine._pool import PoolState, Serving
from keras_loadtune.engine._pool_control import PoolControl
from keras_loadtune.engine.errors import PrefetcherClosedError
from keras_loadtune.engine.process import ProcessPool, fingerprint
from keras_loadtune.engine.records import LoaderStats
from keras_loadtune.engine.stream import (
    ERR,
    OK,
    EndOfPass,
    Stream,
    StreamRegistry,
    check_order,
)

logger = logging.getLogger("keras_loadtune")

__all__ = ["EndOfPass", "Prefetcher", "check_seconds"]


def check_seconds(arg: str, value: Any) -> None:
    """Raises ValueError unless `value` is None or a positive number of seconds."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
    ):
        raise ValueError(f"{arg} must be a positive number of seconds or None; got {value!r}.")


class Prefetcher:
    """Prefetches `source[index]` with a live-reconfigurable worker pool, exactly once.

    Args:
        source: Any object with `__getitem__(index)`; must be picklable for process mode.
        config: Initial `LoaderConfig`. An inline one (1 worker, threads) makes each
            batch on the consumer's thread when it is asked for, as Keras does.
        timeout: Optional per-batch timeout in seconds: if the consumer waits longer than
            this for one batch, `next()` raises `BatchTimeoutError` naming the index
            (pool configs only: an inline batch is made by the consumer itself).
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
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self.stats = stats if stats is not None else LoaderStats()
        self._streams = StreamRegistry()
        self._control = PoolControl(
            source, config, sink=self, streams=self._streams, stats=self.stats, name=name
        )
        self._state = self._control.state
        self._producer = self._control.producer
        self._add_record = self.stats.add
        self._stream_ids = itertools.count(1)
        self._sequence = itertools.count()
        self._default: Stream | None = None  # the stream behind begin_pass()/next()
        self._stream_next = 0  # infinite default streams continue across passes
        self._source_fingerprint = fingerprint(source)
        self._closed = False
        self._shm_note: str | None = None
        if idle_timeout is not None:
            janitor.watch(self)

    # -- properties --------------------------------------------------------------------
    @property
    def config(self) -> LoaderConfig:
        """The active `LoaderConfig` (the one serving now)."""
        return self._control.config

    @property
    def source(self) -> Any:
        """The indexable dataset the workers read from."""
        return self._source

    @property
    def timeout(self) -> float | None:
        """Seconds a consumer waits for one batch before `BatchTimeoutError` (None: forever)."""
        return self._timeout

    @property
    def serving(self) -> Serving:
        """The pool serving now, with its config and generation (never starts one)."""
        return self._control.serving

    @property
    def sequence(self) -> Iterator[int]:
        """Delivery numbers (`BatchRecord.sequence`), shared by every stream."""
        return self._sequence

    @property
    def state(self) -> PoolState:
        """The cell streams read on every batch (written by the pool controller only)."""
        return self._control.state

    @property
    def fatal(self) -> BaseException | None:
        """Why the pool broke (a worker process died), or None."""
        return self._control.fatal

    @property
    def pending_config(self) -> LoaderConfig | None:
        """The config a background switch is starting, or `None`."""
        return self._control.pending_config

    @property
    def switch_error(self) -> BaseException | None:
        """Why the last background switch failed (`None` if it did not)."""
        return self._control.switch_error

    @property
    def pass_id(self) -> int:
        """Id of the stream behind `begin_pass`/`next` (0 before the first pass)."""
        stream = self._default
        return stream.id if stream is not None else 0

    @property
    def pass_finished(self) -> bool:
        """True when no pass is open or every position of the finite pass was delivered."""
        stream = self._default
        return stream is None or stream.finished

    @property
    def open_streams(self) -> int:
        """How many streams are open."""
        return len(self._streams)

    @property
    def closed(self) -> bool:
        """True once `close()` ran; a closed prefetcher cannot be restarted."""
        return self._closed

    @property
    def has_pool(self) -> bool:
        """True while a worker pool runs (False: inline, released, or not started)."""
        return self._control.pool is not None

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of live worker processes (empty in thread mode)."""
        pool = self._control.pool
        return list(pool.pids) if isinstance(pool, ProcessPool) else []

    @property
    def shm_fallback_note(self) -> str | None:
        """One line for the report if `/dev/shm` was too small for some arrays, else None.

        Those arrays went through the pipe instead (slower, never a SIGBUS); the note
        stays after the process pool is retired.
        """
        pool = self._control.pool
        if isinstance(pool, ProcessPool):
            note = pool.fallback_note
            if note is not None:
                self._shm_note = note
        return self._shm_note

    @property
    def outstanding(self) -> int:
        """Positions submitted to the workers whose batch has not arrived yet (all streams)."""
        return sum(s.in_flight for s in self._streams.all())

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
        self._control.touch()
        self._control.serving_for_next()
        stream = Stream(self, next(self._stream_ids), order, start, seed, consumer)
        self._streams.add(stream)
        stream.top_up()
        return stream

    def source_changed(self) -> None:
        """Tells the engine the source's state may have changed (e.g. an epoch hook ran).

        If a cheap fingerprint of the source shows a change, batches prefetched but not
        yet delivered are produced again from the new state (threads and processes), and
        worker processes get a fresh copy; so every batch delivered after the change sees
        it, as with a dataset read without prefetching. Nothing changed: nothing is done.
        """
        now = fingerprint(self._source)
        changed = now is None or now != self._source_fingerprint
        self._source_fingerprint = now
        self._control.source_changed(self._source, changed=changed)

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
            if previous.infinite:
                self._stream_next = previous.index_at(previous.delivered)
            previous.close()
        self._default = self.open_stream(order, start=self._stream_next)

    def pause(self) -> None:
        """Stops submitting new work for the current pass; finished batches are kept."""
        if self._default is not None:
            self._default.pause()

    def resume(self) -> None:
        """Resumes submitting work for the current pass."""
        if self._default is not None:
            self._check_open()
            self._control.touch()
            self._default.resume()

    def next(self) -> Any:
        """Returns the next batch of the current pass (see `Stream.next`)."""
        if self._default is None:
            self._check_open()
            raise RuntimeError("keras_loadtune: next() called before begin_pass().")
        return self._default.next()

    # -- the pool (delegated to PoolControl) -------------------------------------------
    def reconfigure(self, config: LoaderConfig, *, background: bool = False) -> None:
        """Switches to `config` at a batch boundary, losing and repeating nothing.

        Same mode: the pool is resized in place (only added workers pay start-up).
        Other mode: a new pool starts (its start-up cost is recorded in `stats.startups`),
        in-flight positions move to it, and the old pool is retired in the background.
        To an inline config: the pool is retired; finished batches are still served,
        and the consumer makes the others itself.

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
        self._control.reconfigure(config, background=background)

    def wait_for_switch(self, timeout: float | None = None) -> bool:
        """Blocks until a background switch is done; True if none is pending any more."""
        return self._control.wait_for_switch(timeout)

    def release_workers(self, timeout: float = 5.0, *, force: bool = False) -> bool:
        """Stops the worker pool but keeps the streams; workers restart on the next use.

        Only acts when no work is in flight, so nothing needs to be submitted again, unless
        `force`: then positions in flight are dropped and submitted again on restart (used
        after a failed pass, whose remaining batches nobody will ask for).
        Returns True if a pool was released.
        """
        return self._control.release(timeout, force=force)

    def release_if_idle(self) -> None:
        """Releases the workers if no consumer asked for a batch for `idle_timeout` s (janitor)."""
        self._control.release_if_idle(self._idle_timeout)

    def serving_for_next(self) -> Serving:
        """The pool for a consumer's `next()`; restarts released or broken workers."""
        if self._closed:
            self._check_open()
        return self._control.serving_for_next()

    # -- lifecycle ---------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Stops every worker and joins every engine thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for stream in self._streams.all():
            stream.shut()
            self._streams.remove(stream)
        stuck = self._control.close(timeout)
        if stuck:
            logger.warning(
                "keras_loadtune: %d worker thread(s) still inside __getitem__ after close; "
                "they are daemon threads and end with the interpreter.",
                len(stuck),
            )

    def idle_seconds(self) -> float:
        """Seconds since a consumer last asked for a batch."""
        return self._control.idle_seconds()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter teardown
        try:
            self.close(timeout=1.0)
        except Exception:
            pass

    # -- StreamHost (called by streams) ------------------------------------------------
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
        wall, cpu, nbytes, generation = produced
        self._add_record(
            (
                next(self._sequence),
                index,
                wait_s,
                wall,
                cpu,
                depth,
                nbytes,
                self._state.serving.config,
                delivered_at,
                tail,
                stream.id,
                self._producer(generation),
                stream.consumer,
            )
        )

    def forget(self, stream: Stream) -> None:
        """Drops a closed stream from the open set (lock-free: safe from a finalizer)."""
        self._streams.remove(stream)
        if self._default is stream:
            self._default = None

    # -- ResultSink (called from worker threads / the collector thread) ---------------
    def on_result(self, key: Any, batch: Any, wall_s: float, cpu_s: float, nbytes: int) -> None:
        """Pool callback: a batch for `key` = (stream, position, generation) is ready."""
        stream = self._streams.get(key[0])
        if stream is not None:
            stream.offer(key[1], key[2], (OK, batch, wall_s, cpu_s, nbytes, key[2]))

    def on_error(self, key: Any, exc: BaseException) -> None:
        """Pool callback: `__getitem__` raised for `key`; it is raised in order by `next()`."""
        stream = self._streams.get(key[0])
        if stream is None:
            return
        index = stream.index_at(key[1])
        producer = self._control.producer(key[2]) or self._control.config
        exc.add_note(
            f"keras_loadtune: raised by {type(self._source).__name__}.__getitem__({index}) "
            f"in a {producer.mode} worker."
        )
        stream.offer(key[1], key[2], (ERR, exc))

    def on_fatal(self, exc: BaseException) -> None:
        """Pool callback: the pool is broken (a worker died); waiting consumers raise `exc`.

        The broken pool is replaced when the next stream opens or resumes.
        """
        self._control.fail(exc)

    def _check_open(self) -> None:
        if self._closed:
            raise PrefetcherClosedError(
                "keras_loadtune: this loader was closed; wrap the dataset again to reuse it."
            )
