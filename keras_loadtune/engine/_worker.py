"""The loop a worker *process* runs. Imports nothing heavy: start-up cost is the dataset's own."""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from typing import Any

from keras_loadtune.engine import _transfer

# Messages, parent -> worker: ("task", key, index) | ("dataset", bytes) | ("stop",)
# Messages, worker -> parent: ("ready", pid, seconds) | ("startup-error", text)
#                              | ("done", key, payload, wall_s, cpu_s, nbytes)
#                              | ("error", key, exc_or_None, type_name, message, traceback)


def _exception_payload(exc: BaseException) -> tuple[Any, str, str, str]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
        picklable: Any = exc
    except Exception:
        picklable = None
    return picklable, f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), tb


def worker_main(conn: Any, worker_id: int, dataset_blob: bytes, parent_pid: int) -> None:
    """Entry point of one worker process."""
    started = time.perf_counter()
    try:
        dataset = pickle.loads(dataset_blob)
    except BaseException as exc:  # the class may not be importable in the child
        conn.send(("startup-error", "".join(traceback.format_exception_only(type(exc), exc))))
        conn.close()
        return
    del dataset_blob
    encoder = _transfer.Encoder(_transfer.segment_prefix(parent_pid, worker_id))
    conn.send(("ready", os.getpid(), time.perf_counter() - started))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            break
        kind = msg[0]
        if kind == "task":
            _, key, index = msg
            t0 = time.perf_counter()
            c0 = time.thread_time()
            try:
                batch = dataset[index]
                wall = time.perf_counter() - t0
                cpu = time.thread_time() - c0
                nbytes = _transfer.batch_nbytes(batch)
                reply: tuple = ("done", key, encoder.encode(batch), wall, cpu, nbytes)
            except KeyboardInterrupt:
                break
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
            dataset = pickle.loads(msg[1])
        elif kind == "stop":
            break
    try:
        conn.close()
    finally:
        sys.stdout.flush()
