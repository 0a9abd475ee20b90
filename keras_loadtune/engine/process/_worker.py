"""The loop a worker *process* runs. Imports nothing heavy: start-up cost is the dataset's own."""

from __future__ import annotations

import os
import pickle
import random
import signal
import sys
import time
import traceback
from typing import Any

import numpy as np

from keras_loadtune.engine.process import _shipping, _transfer
from keras_loadtune.engine.records import batch_nbytes

# Messages, parent -> worker: ("task", key, index, seed_or_None) | ("dataset", Shipment)
#                              | ("stop",)
# Messages, worker -> parent: ("ready", pid, seconds, peak_rss) | ("startup-error", text)
#                              | ("loaded", generation)
#                              | ("done", key, payload, wall_s, cpu_s, nbytes, peak_rss,
#                                 arrays_sent_in_band_because_shared_memory_was_full)
#                              | ("error", key, exc_or_None, type_name, message, traceback)


def _exception_payload(exc: BaseException) -> tuple[Any, str, str, str]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
        picklable: Any = exc
    except Exception:
        picklable = _by_value(exc)
    return picklable, f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), tb


def _by_value(exc: BaseException) -> bytes | None:
    """`exc` cloudpickled, for an exception class that came by value with the dataset
    (defined in `__main__` or a module the worker never imports): the parent's
    cloudpickle maps it back to the original class. `None` if that fails too."""
    try:
        import cloudpickle

        return cloudpickle.dumps(exc)
    except Exception:
        return None


def peak_rss() -> int:
    """This process's peak resident memory in bytes (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def seed_globals(seed: int) -> None:
    """Seeds Python's `random` and NumPy's legacy global generator from `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)


def worker_main(conn: Any, worker_id: int, shipment: _shipping.Shipment, parent_pid: int) -> None:
    """Entry point of one worker process."""
    # The trainer handles Ctrl-C; a terminal's SIGINT reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = time.perf_counter()
    try:
        dataset = _shipping.load(shipment)
    except BaseException as exc:  # a module only the trainer can import, a failing __setstate__
        conn.send(("startup-error", "".join(traceback.format_exception_only(type(exc), exc))))
        conn.close()
        return
    del shipment
    encoder = _transfer.Encoder(_transfer.segment_prefix(parent_pid, worker_id))
    try:
        conn.send(("ready", os.getpid(), time.perf_counter() - started, peak_rss()))
    except OSError:  # the trainer gave up on this start (Ctrl-C, close): nothing to serve
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        kind = msg[0]
        if kind == "task":
            _, key, index, seed = msg
            if seed is not None:
                seed_globals(seed)
            t0 = time.perf_counter()
            c0 = time.thread_time()
            try:
                batch = dataset[index]
                wall = time.perf_counter() - t0
                cpu = time.thread_time() - c0
                nbytes = batch_nbytes(batch)
                before = encoder.fallbacks
                payload = encoder.encode(batch)
                reply: tuple = (
                    "done",
                    key,
                    payload,
                    wall,
                    cpu,
                    nbytes,
                    peak_rss(),
                    encoder.fallbacks - before,
                )
            except BaseException as exc:
                reply = ("error", key, *_exception_payload(exc))
            try:
                conn.send(reply)
            except (BrokenPipeError, OSError):
                if reply[0] == "done":
                    _transfer.discard(reply[2])
                break
            except Exception as exc:  # the batch itself cannot be pickled
                if reply[0] == "done":
                    _transfer.discard(reply[2])
                conn.send(("error", key, *_exception_payload(exc)))
        elif kind == "dataset":
            dataset = None  # drop the old copy (and its mappings) before loading the new one
            dataset = _shipping.load(msg[1])
            conn.send(("loaded", msg[1].generation))
        elif kind == "stop":
            break
    try:
        conn.close()
    finally:
        sys.stdout.flush()
