"""A resizable pool of worker processes, one duplex pipe each.

Start method: `forkserver` (falling back to `spawn` where the platform lacks it).
`fork` is never used: forking a trainer whose TensorFlow runtime already runs
threads can copy a held lock into the child and deadlock it (CPython 3.12+ warns
about exactly this). The forkserver is a separate process started once, that
never runs a training step; every worker is forked from it.

Cost: a worker must import whatever unpickling the dataset imports; for a
`keras.utils.PyDataset` that is Keras and TensorFlow, about 3 s per worker on a
2-core machine (over 10 s when the cores are busy). So, like Python's own default
for the forkserver (which preloads `__main__`), we also preload the module that
defines the dataset's class: the forkserver imports it (and Keras) once, and each
worker then starts in tens of milliseconds. The forkserver only imports; it never
builds a model or runs an op. Set `KERAS_LOADTUNE_PRELOAD=0` to turn the extra
preload off (each worker then imports on its own). Start-up is measured per start
and exposed as `StartupRecord`s so the tuner can weigh it; pools stay alive
across epochs and are resized in place rather than restarted.

Each worker has its own pipe, so the trainer always knows which batch a worker
holds: a worker killed by a signal is seen at once (its sentinel fires) and
reported as `WorkerDiedError` naming pid, signal and batch, instead of the hang
`multiprocessing.Pool` gives.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from keras_loadtune.engine import _forkserver_path, _transfer
from keras_loadtune.engine._sink import ResultSink
from keras_loadtune.engine._worker import worker_main
from keras_loadtune.engine.errors import DatasetNotPicklableError, WorkerDiedError

START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
STARTUP_TIMEOUT_S = 300.0
_PER_WORKER_INFLIGHT = 2
# Worker ids are unique for the life of the trainer, across pools: they name each
# worker's shared-memory segments, and a retired pool cleaning up after its workers
# must never match the segments of a newer pool's workers.
_WORKER_IDS = itertools.count()
_preload_done = False


def _preload_modules(source: Any) -> list[str]:
    """Modules the forkserver imports once, before it forks any worker (in this order)."""
    modules = [
        "keras_loadtune.engine._forkserver_path",
        "__main__",
        "keras_loadtune.engine._worker",
    ]
    if os.environ.get("KERAS_LOADTUNE_PRELOAD", "1") == "0":
        return modules
    owner = getattr(source, "factory", source)  # GeneratorFactorySource wraps a callable
    module = getattr(owner, "__module__", None) or type(owner).__module__
    if module and module not in ("__main__", "builtins") and module in sys.modules:
        modules.append(module)
    return modules


def _context(source: Any) -> multiprocessing.context.BaseContext:
    global _preload_done
    ctx = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver" and not _preload_done:
        # Takes effect when the forkserver starts (first worker of the program); the
        # forkserver inherits the environment, which carries our sys.path to it.
        os.environ[_forkserver_path.ENV_VAR] = json.dumps(sys.path)
        ctx.set_forkserver_preload(_preload_modules(source))
        _preload_done = True
    return ctx


def prewarm(source: Any) -> bool:
    """Starts the forkserver (and its one-time imports) now, in the background.

    The first process-mode start then costs milliseconds instead of the seconds the
    forkserver spends importing the dataset's module. Returns False when the start
    method is not forkserver (nothing to warm).
    """
    if START_METHOD != "forkserver":
        return False
    _context(source)
    from multiprocessing import forkserver

    threading.Thread(
        target=forkserver.ensure_running, name="keras_loadtune-prewarm", daemon=True
    ).start()
    return True


def pickle_source(source: Any) -> bytes:
    """Pickles the dataset for the workers, or explains why it cannot run in processes."""
    try:
        return pickle.dumps(source, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise DatasetNotPicklableError(
            f"{type(source).__name__} cannot be pickled, so it cannot run in worker processes "
            f"({type(exc).__name__}: {exc}). Use threads (use_multiprocessing=False), or make "
            "it picklable: module-level class, no open files/locks/clients in its attributes."
        ) from exc


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name} ({-exitcode})"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@dataclass
class _Worker:
    wid: int
    process: Any
    conn: Connection
    pid: int
    inflight: dict[Any, int] = field(default_factory=dict)
    stopping: bool = False


class ProcessPool:
    """Runs `source[index]` in worker processes and reports to a `ResultSink`."""

    mode = "process"

    def __init__(self, source: Any, sink: ResultSink, name: str):
        self._blob = pickle_source(source)
        self._sink = sink
        self._name = name
        self._ctx = _context(source)
        self._workers: dict[int, _Worker] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._failed = False
        # Wakes the collector when the set of workers changes.
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._collector = threading.Thread(
            target=self._collect, name=f"{name}-collector", daemon=True
        )
        self._collector.start()

    @property
    def workers(self) -> int:
        return sum(1 for w in self._workers.values() if not w.stopping)

    @property
    def pids(self) -> list[int]:
        """Pids of the active workers (not those finishing their last tasks after a resize)."""
        return [w.pid for w in self._workers.values() if not w.stopping]

    def resize(self, workers: int) -> int:
        """Starts or stops processes to reach `workers`; returns how many were started.

        Blocks until the new workers have unpickled the dataset and are ready.
        """
        with self._lock:
            live = [w for w in self._workers.values() if not w.stopping]
            surplus = len(live) - workers
            for w in sorted(live, key=lambda w: len(w.inflight))[: max(surplus, 0)]:
                w.stopping = True
                self._send(w, ("stop",))
        needed = workers - len(live)
        if needed <= 0:
            return 0
        pending = [self._spawn() for _ in range(needed)]
        try:
            for w in pending:
                self._await_ready(w)
        except BaseException:
            for w in pending:
                self._kill(w)
            raise
        with self._lock:
            for w in pending:
                self._workers[w.wid] = w
        self._wake()
        return needed

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except OSError:
            pass

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        wid = next(_WORKER_IDS)
        process = self._ctx.Process(
            target=worker_main,
            args=(child_conn, wid, self._blob, os.getpid()),
            name=f"{self._name}-process-{wid}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return _Worker(wid, process, parent_conn, process.pid)

    def _await_ready(self, w: _Worker) -> None:
        ready = wait([w.conn, w.process.sentinel], timeout=STARTUP_TIMEOUT_S)
        if w.conn in ready:
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is not None and msg[0] == "ready":
                return
            if msg is not None and msg[0] == "startup-error":
                raise DatasetNotPicklableError(
                    f"Worker process {w.pid} could not unpickle the dataset: {msg[1].strip()} "
                    "Process mode needs the dataset's class importable from a module file "
                    "(not defined in a notebook or interactive session). Use threads, or move "
                    "the class into a .py module."
                )
        w.process.join(timeout=1)
        raise WorkerDiedError(
            f"keras_loadtune worker process {w.pid} {_describe_exit(w.process.exitcode)} "
            "while starting up. If the script that runs training has no "
            "`if __name__ == '__main__':` guard, worker processes re-run it and fail; add "
            "the guard, or use threads.",
            pid=w.pid,
            exitcode=w.process.exitcode,
            index=None,
        )

    def submit(self, key: Any, index: int) -> None:
        with self._lock:
            live = [w for w in self._workers.values() if not w.stopping]
            if not live:
                raise RuntimeError("keras_loadtune: process pool has no live workers")
            w = min(live, key=lambda w: len(w.inflight))
            w.inflight[key] = index
            self._send(w, ("task", key, index))

    def update_source(self, source: Any) -> None:
        """Sends the (possibly changed) dataset to every worker, if its pickle changed."""
        blob = pickle_source(source)
        if blob == self._blob:
            return
        self._blob = blob
        with self._lock:
            for w in self._workers.values():
                if not w.stopping:
                    self._send(w, ("dataset", blob))

    def cancel_pending(self) -> None:
        """Tasks already sent to a process run to completion; nothing to cancel."""

    def check_health(self) -> None:
        """Errors are pushed by the collector thread; nothing to poll."""

    def _send(self, w: _Worker, msg: tuple) -> None:
        try:
            w.conn.send(msg)
        except (BrokenPipeError, OSError):
            pass  # the collector sees the death and reports it

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
                    while self._wake_r.poll(0):
                        self._wake_r.recv_bytes()
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
            _, key, payload, wall, cpu, nbytes = msg
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
            if exc is None:
                exc = RuntimeError(f"{type_name}: {message}")
            exc.add_note(
                f"Raised in keras_loadtune worker process {w.pid} by __getitem__({index}). "
                f"Worker traceback:\n{tb}"
            )
            self._sink.on_error(key, exc)

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
            expected = w.stopping or self._closed
            inflight = dict(w.inflight)
        try:
            w.conn.close()
        except OSError:
            pass
        _transfer.unlink_prefix(_transfer.segment_prefix(os.getpid(), w.wid))
        if self._closed or (expected and not inflight):
            return
        index = next(iter(inflight.values()), None)
        where = f"while producing batch {index}" if index is not None else "while idle"
        self._failed = True
        self._sink.on_fatal(
            WorkerDiedError(
                f"keras_loadtune worker process pid {w.pid} {_describe_exit(w.process.exitcode)} "
                f"{where}. Training cannot trust this loader any more; check the worker's "
                "memory use (the OOM killer sends SIGKILL) or what killed it.",
                pid=w.pid,
                exitcode=w.process.exitcode,
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
        """Stops every worker (gracefully, then by force) and the collector thread."""
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
        self._wake()
        for w in workers:
            w.stopping = True
            self._send(w, ("stop",))
        deadline = time.monotonic() + timeout
        for w in workers:
            w.process.join(max(deadline - time.monotonic(), 0))
        for w in workers:
            self._kill(w)
        self._collector.join(timeout=2)
        for conn in (self._wake_r, self._wake_w):
            conn.close()
        return []
