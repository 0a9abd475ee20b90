"""A resizable pool of worker processes, one duplex pipe each.

How a worker process starts (start method, `__main__`, the forkserver and its
preload) is `_start.py`; how the dataset gets there is `_shipping.py`, how a batch
travels back is `_transfer.py`, and what a dead worker's error says is `_death.py`.
Pools stay alive across epochs and are resized in place.

Tasks go to the workers from a sender thread: `submit` only queues the task, so
the training thread never pickles, never writes a pipe and never wakes a process
itself (on a busy machine, waking a process from the training thread cost it
hundreds of microseconds a batch). The sender writes every task in submit order.

Each worker has its own pipe, so the trainer always knows which batch a worker
holds: a worker that dies with a batch in flight is seen at once (its sentinel
fires) and reported as `WorkerDiedError` naming pid, exit code or signal and batch.
A worker that dies while idle (killed, or exited) costs nothing: it is replaced on
the next `submit`. Workers ignore SIGINT: Ctrl-C is the trainer's to handle.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from keras_loadtune.engine._sink import ResultSink
from keras_loadtune.engine.errors import DatasetNotPicklableError, WorkerDiedError
from keras_loadtune.engine.process import _shipping, _transfer
from keras_loadtune.engine.process._death import describe_exit, oom_hint
from keras_loadtune.engine.process._start import WorkerProcess, forkserver_context
from keras_loadtune.engine.process._worker import worker_main

STARTUP_TIMEOUT_S = 300.0
_WAIT_SLICE_S = 0.1
_STOP = object()
# Worker ids are unique for the life of the trainer, across pools: they name each
# worker's shared-memory segments, and a retired pool cleaning up after its workers
# must never match the segments of a newer pool's workers.
_WORKER_IDS = itertools.count()
_POOL_IDS = itertools.count()
logger = logging.getLogger("keras_loadtune")


def _free_mib() -> int:
    try:
        st = os.statvfs(_transfer.SHM_DIR)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize >> 20


@dataclass
class _Worker:
    wid: int
    process: Any
    conn: Connection
    pid: int
    generation: int  # the dataset shipment it has loaded (or was started with)
    inflight: dict[Any, int] = field(default_factory=dict)
    stopping: bool = False
    peak_rss: int = 0


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Holds a Ctrl-C back until the block is over, then raises it as usual.

    Launching a worker through the forkserver is a few system calls; a Ctrl-C landing
    between them would leave a forked worker whose pid the pool never learnt (it would
    live until its dataset has loaded). Only the main thread handles SIGINT; elsewhere
    (a background switch) nothing is deferred.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # ignored or default: nothing of Python's to defer
        yield
        return
    caught: list[tuple[int, Any]] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        previous(*caught[0])  # default_int_handler raises KeyboardInterrupt here


class ProcessPool:
    """Runs `source[index]` in worker processes and reports to a `ResultSink`.

    Args:
        source: The dataset (`source[index] -> batch`). Pickled here, before any worker
            starts: `DatasetNotPicklableError` if it cannot go to another process.
        sink: Receives results, errors and fatal failures (from the collector thread).
        name: Prefix of thread and process names.

    Example:

    ```python
    pool = ProcessPool(dataset, sink, "keras_loadtune")
    pool.resize(2)
    pool.submit(key, 0, seed=1234)
    pool.close()
    ```
    """

    def __init__(self, source: Any, sink: ResultSink, name: str):
        prefix = f"{_transfer.SHM_PREFIX}_{os.getpid()}_d{next(_POOL_IDS)}_"
        self._shipper = _shipping.SourceShipper(prefix)
        self._source = source
        try:
            self._shipment = self._shipper.ship(source)
        except BaseException:
            self._shipper.close()
            raise
        self._fingerprint = _shipping.fingerprint(source)
        self._version: int | None = None
        self._shm_fallbacks = 0
        self._sink = sink
        self._name = name
        self._ctx = forkserver_context(source)
        self._workers: dict[int, _Worker] = {}
        self._starting: dict[int, _Worker] = {}  # started by resize(), not ready yet
        self._target = 0
        self._lock = threading.RLock()
        self._closed = False
        self._failed = False
        # Wakes the collector when the set of workers changes.
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._collector = threading.Thread(
            target=self._collect, name=f"{name}-collector", daemon=True
        )
        self._collector.start()
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()  # tasks not yet sent
        self._sender = threading.Thread(target=self._send_tasks, name=f"{name}-sender", daemon=True)
        self._sender.start()

    @property
    def source_pickles(self) -> int:
        """How many times the dataset was pickled (once at start, then only when it changed)."""
        return self._shipper.pickles

    @property
    def source_bytes_copied(self) -> int:
        """Bytes of big arrays copied into shared memory (each array once)."""
        return self._shipper.bytes_copied

    @property
    def shm_fallbacks(self) -> int:
        """Arrays sent through the pipe instead of shared memory, which was full.

        Counts both a worker's batch arrays and the dataset's big arrays (copied into
        the pickle instead of a segment).
        """
        return self._shm_fallbacks + self._shipper.fallbacks

    @property
    def fallback_note(self) -> str | None:
        """One line for the report when shared memory was too small (None: it never was)."""
        if not self.shm_fallbacks:
            return None
        return (
            f"/dev/shm was too small: {self.shm_fallbacks} big array(s) went through the "
            f"pipe instead (slower; no SIGBUS). {_transfer.SHM_DIR} has "
            f"{_free_mib()} MiB free; in Docker, raise it with --shm-size."
        )

    def _note_fallback(self, count: int) -> None:
        with self._lock:
            first = not self._shm_fallbacks and not self._shipper.fallbacks
            self._shm_fallbacks += count
        if first:
            logger.info("keras_loadtune: %s", self.fallback_note)

    @property
    def pids(self) -> list[int]:
        """Pids of the active workers (not those finishing their last tasks after a resize)."""
        return [w.pid for w in self._workers.values() if not w.stopping]

    def _live(self) -> list[_Worker]:
        return [w for w in self._workers.values() if not w.stopping]

    def resize(self, workers: int) -> int:
        """Starts or stops processes to reach `workers`; returns how many were started.

        Blocks until the new workers have loaded the dataset and are ready.
        """
        with self._lock:
            self._target = workers
            live = self._live()
            surplus = len(live) - workers
            for w in sorted(live, key=lambda w: len(w.inflight))[: max(surplus, 0)]:
                w.stopping = True
                self._send(w, ("stop",))
            shipment = self._shipment
        needed = workers - len(live)
        if needed <= 0:
            return 0
        pending: list[_Worker] = []
        w: _Worker | None = None
        try:
            # A Ctrl-C (KeyboardInterrupt) anywhere in here ends the half-started workers.
            for _ in range(needed):
                with _sigint_deferred():  # a launch is listed before Ctrl-C can land
                    w = self._spawn(shipment)
                    pending.append(w)
                    with self._lock:
                        self._starting[w.wid] = w
            for w in pending:
                self._await_ready(w)
        except BaseException:
            if w is not None and all(x is not w for x in pending):
                pending.append(w)  # spawned, interrupted before it was listed
            for w in pending:  # SIGTERM all first: they end in parallel
                if w.process.is_alive():
                    w.process.terminate()
            for w in pending:
                self._kill(w)
            with self._lock:
                for w in pending:
                    self._starting.pop(w.wid, None)
            raise
        with self._lock:
            for w in pending:
                self._starting.pop(w.wid, None)
                self._workers[w.wid] = w
                if w.generation != self._shipment.generation:  # the dataset changed meanwhile
                    self._send(w, ("dataset", self._shipment))
        self._wake()
        return needed

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except OSError:
            pass

    def _spawn(self, shipment: _shipping.Shipment) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        wid = next(_WORKER_IDS)
        process = WorkerProcess(
            target=worker_main,
            args=(child_conn, wid, shipment, os.getpid()),
            name=f"{self._name}-process-{wid}",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:  # interrupted mid-launch (Ctrl-C): end what did start
            child_conn.close()
            parent_conn.close()
            if process.pid is not None:
                process.terminate()
                process.join(timeout=2)
            raise
        child_conn.close()
        return _Worker(wid, process, parent_conn, process.pid, shipment.generation)

    def _await_ready(self, w: _Worker) -> None:
        # Short slices: the calling thread gets back to Python (and to a pending Ctrl-C)
        # several times a second, whatever the platform's wait does with signals.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        ready: list[Any] = []
        while not ready and time.monotonic() < deadline:
            ready = wait([w.conn, w.process.sentinel], timeout=_WAIT_SLICE_S)
        if w.conn in ready:
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is not None and msg[0] == "ready":
                w.peak_rss = msg[3]
                return
            if msg is not None and msg[0] == "startup-error":
                raise self._startup_error(w, msg[1])
        w.process.join(timeout=1)
        raise WorkerDiedError(
            f"keras_loadtune worker process {w.pid} {describe_exit(w.process.exitcode)} "
            "while loading the dataset, before its first batch."
            + oom_hint(w.process.exitcode, w.peak_rss),
            pid=w.pid,
            exitcode=w.process.exitcode,
            index=None,
        )

    @staticmethod
    def _startup_error(w: _Worker, text: str) -> DatasetNotPicklableError:
        return DatasetNotPicklableError(
            f"Worker process {w.pid} could not load the dataset: {text.strip()} "
            "A module the dataset needs is importable in the trainer but not in a fresh "
            "process (check sys.path and the working directory), or the dataset's "
            "__setstate__ failed. Use threads (use_multiprocessing=False) meanwhile."
        )

    def submit(self, key: Any, index: int, seed: int | None = None) -> None:
        """Queues `source[index]` for the least busy worker (sent by the sender thread).

        Args:
            key: Opaque task key handed back to the sink.
            index: The dataset index.
            seed: If not None, the worker seeds Python's `random` and NumPy's global
                generator with it right before `__getitem__`, so the batch's random
                augmentation depends on the seed only, not on which worker ran it.
        """
        if self._closed:
            raise RuntimeError("keras_loadtune: process pool is closed")
        self._outbox.put((key, index, seed))

    def _send_tasks(self) -> None:
        """The sender thread: hands each queued task to a worker, in submit order."""
        outbox = self._outbox
        while True:
            task = outbox.get()
            if task is _STOP:
                return
            try:
                self._assign(*task)
            except Exception as exc:  # no worker can take it: the pass cannot go on
                if not self._closed:
                    self._fail(exc)

    def _assign(self, key: Any, index: int, seed: int | None) -> None:
        """Sends a task to the least busy worker; a dead idle worker is replaced."""
        with self._lock:
            if self._closed:
                return
            live = self._live()
            if len(live) < self._target:
                live += self._replace(self._target - len(live))
            if not live:
                raise RuntimeError("keras_loadtune: process pool has no workers (resize first)")
            w = min(live, key=lambda w: len(w.inflight))
            if not w.inflight and not w.process.is_alive():
                # Died idle, and the collector has not seen it yet (is_alive() polls the
                # sentinel): never hand it a task, replace it now.
                w.stopping = True
                live = [x for x in live if x is not w] + self._replace(1)
                w = min(live, key=lambda w: len(w.inflight))
            w.inflight[key] = index
            self._send(w, ("task", key, index, seed))

    def _replace(self, count: int) -> list[_Worker]:
        """Starts `count` workers without waiting for them (tasks queue in their pipes)."""
        fresh = [self._spawn(self._shipment) for _ in range(count)]
        for w in fresh:
            self._workers[w.wid] = w
        self._wake()
        return fresh

    def update_source(self, source: Any, version: int | None = None) -> None:
        """Sends the dataset to every worker again, only if it changed.

        Args:
            source: The dataset, possibly changed by `on_epoch_begin`/`on_epoch_end`.
            version: Bumped by the caller whenever user code may have changed the
                dataset; the same version as last time means no change (nothing is
                checked). None: always check. A changed version is confirmed by a cheap
                fingerprint before anything is pickled; big arrays already in shared
                memory are not copied again.
        """
        with self._lock:
            if self._closed:
                return
            same_object = source is self._source
            if same_object and version is not None and version == self._version:
                return
            self._version = version
            fingerprint = _shipping.fingerprint(source)
            if same_object and fingerprint is not None and fingerprint == self._fingerprint:
                return
            previous = self._shipment
            shipment = self._shipper.ship(source)
            self._source, self._fingerprint = source, fingerprint
            if (shipment.data, shipment.segments) == (previous.data, previous.segments):
                self._shipper.release_older_than(shipment.generation)
                for w in self._live():
                    w.generation = shipment.generation
                self._shipment = shipment
                return
            self._shipment = shipment
            for w in self._live():
                self._send(w, ("dataset", shipment))

    def cancel_pending(self) -> None:
        """Forgets tasks not yet sent; those sent to a process run to completion."""
        while True:
            try:
                task = self._outbox.get_nowait()
            except queue.Empty:
                return
            if task is _STOP:
                self._outbox.put(_STOP)
                return

    def _send(self, w: _Worker, msg: tuple) -> None:
        try:
            w.conn.send(msg)
        except (BrokenPipeError, OSError):
            pass  # the collector sees the death and reports it

    def _release_old_shipments(self) -> None:
        """Unlinks segments no worker needs any more (call with the lock held)."""
        workers = [*self._workers.values(), *self._starting.values()]
        generations = [w.generation for w in workers]
        self._shipper.release_older_than(min([self._shipment.generation, *generations]))

    # -- collector thread -------------------------------------------------------------
    def _collect(self) -> None:
        while not self._closed:
            with self._lock:
                workers = list(self._workers.values())
            if not workers:
                try:
                    if wait([self._wake_r], timeout=1.0):
                        self._wake_r.recv_bytes()
                except OSError:
                    pass
                continue
            by_obj: dict[Any, _Worker] = {}
            for w in workers:
                by_obj[w.conn] = w
                by_obj[w.process.sentinel] = w
            try:
                ready = wait([self._wake_r, *by_obj], timeout=1.0)
            except OSError:
                continue
            for obj in ready:
                if obj is self._wake_r:
                    try:
                        while self._wake_r.poll(0):
                            self._wake_r.recv_bytes()
                    except OSError:
                        pass
                    continue
                w = by_obj[obj]
                if w.wid not in self._workers:
                    continue
                if obj is w.conn:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        self._on_exit(w)
                        continue
                    self._handle(w, msg)
                else:
                    self._on_exit(w)

    def _handle(self, w: _Worker, msg: tuple) -> None:
        kind = msg[0]
        if kind == "done":
            _, key, payload, wall, cpu, nbytes, w.peak_rss, fallbacks = msg
            if fallbacks:
                self._note_fallback(fallbacks)
            with self._lock:
                w.inflight.pop(key, None)
            try:
                batch = _transfer.decode(payload)
            except Exception as exc:
                self._sink.on_error(key, exc)
                return
            self._sink.on_result(key, batch, wall, cpu, nbytes)
        elif kind == "error":
            _, key, exc, type_name, message, tb = msg
            with self._lock:
                index = w.inflight.pop(key, None)
            if isinstance(exc, bytes):  # cloudpickled by the worker (`_worker._by_value`)
                try:
                    exc = pickle.loads(exc)
                except Exception:
                    exc = None
            if not isinstance(exc, BaseException):
                exc = RuntimeError(f"{type_name}: {message}")
            exc.add_note(
                f"Raised in keras_loadtune worker process {w.pid} by __getitem__({index}). "
                f"Worker traceback:\n{tb}"
            )
            self._sink.on_error(key, exc)
        elif kind in ("ready", "loaded"):
            if kind == "ready":
                w.peak_rss = msg[3]
            with self._lock:
                if kind == "loaded":
                    w.generation = msg[1]
                self._release_old_shipments()
        elif kind == "startup-error":  # a replacement worker could not load the dataset
            with self._lock:
                inflight = bool(w.inflight)
                w.inflight.clear()
            if inflight:
                self._fail(self._startup_error(w, msg[1]))

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            first, self._failed = not self._failed, True
        if first:
            self._sink.on_fatal(exc)

    def _on_exit(self, w: _Worker) -> None:
        # Read what the worker sent before it went away.
        try:
            while w.conn.poll(0):
                self._handle(w, w.conn.recv())
        except (EOFError, OSError):
            pass
        w.process.join(timeout=1)
        with self._lock:
            self._workers.pop(w.wid, None)
            inflight = dict(w.inflight)
            if not self._closed:
                self._release_old_shipments()
        try:
            w.conn.close()
        except OSError:
            pass
        _transfer.unlink_prefix(_transfer.segment_prefix(os.getpid(), w.wid))
        exitcode = w.process.exitcode
        if self._closed or not inflight:
            if not (self._closed or w.stopping):
                logger.info(
                    "keras_loadtune: idle worker process %d %s; a new one replaces it on "
                    "the next batch.",
                    w.pid,
                    describe_exit(exitcode),
                )
            return
        index = next(iter(inflight.values()))
        more = f" ({len(inflight) - 1} more queued on it)" if len(inflight) > 1 else ""
        self._fail(
            WorkerDiedError(
                f"keras_loadtune worker process pid {w.pid} {describe_exit(exitcode)} "
                f"while producing batch {index}{more}. This pass cannot be completed."
                + oom_hint(exitcode, w.peak_rss),
                pid=w.pid,
                exitcode=exitcode,
                index=index,
            )
        )

    # -- shutdown ----------------------------------------------------------------------
    def _kill(self, w: _Worker) -> None:
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(timeout=2)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=2)
        try:
            w.conn.close()
        except OSError:
            pass
        _transfer.unlink_prefix(_transfer.segment_prefix(os.getpid(), w.wid))

    def close(self, timeout: float = 5.0) -> list[Any]:
        """Stops every worker (gracefully, then by force), the collector and the segments."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
        self._wake()
        self.cancel_pending()
        self._outbox.put(_STOP)
        for w in workers:
            w.stopping = True
            self._send(w, ("stop",))
        deadline = time.monotonic() + timeout
        for w in workers:
            w.process.join(max(deadline - time.monotonic(), 0))
        # The collector and the sender stop before any pipe closes: a pipe closed under
        # a thread reading it fails that read with a TypeError, and its fd number, once
        # reused, would be read by the wrong owner.
        self._collector.join(timeout=5)
        self._sender.join(timeout=5)
        for w in workers:
            self._kill(w)
        for conn in (self._wake_r, self._wake_w):
            conn.close()
        with self._lock:
            self._shipper.close()
        return []
