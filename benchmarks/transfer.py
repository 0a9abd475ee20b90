"""How fast a big batch gets from a worker process to the trainer: pickle through a pipe vs shm.

A 64x224x224x3 float32 batch (38.5 MB, an ImageNet-sized image batch) is moved from a
worker process to this process, ~20 times each way:

(a) pipe:  `conn.send(array)` in the worker, `conn.recv()` here (what a process pool that
           pickles results does: pickle, pipe write, pipe read, unpickle).
(b) shm:   `keras_loadtune.engine.process._transfer.Encoder.encode` in the worker (one copy into
           a POSIX shared-memory segment; a tiny placeholder goes through the pipe), then
           `_transfer.decode` here (maps the segment: a zero-copy view).

Both are timed from just before the worker starts sending to the moment the trainer holds
the array ("delivered"), and again after the trainer has read every byte once ("+ read",
which charges the shm path its page faults). `time.perf_counter` is CLOCK_MONOTONIC, so
worker and trainer timestamps compare directly.

End to end, a `Prefetcher` in process mode (1 worker, queue 2) then delivers such batches
with the shared-memory path on and off (off: the benchmark's dataset raises the worker's
shm threshold when it is unpickled; no engine knob needed).

Run (about 30-60 s on 2 cores):

    .venv/bin/python benchmarks/transfer.py
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import START_METHOD, Prefetcher
from keras_loadtune.engine.process import _transfer

SHAPE = (64, 224, 224, 3)
NBYTES = int(np.prod(SHAPE)) * 4


def _worker(conn, mode: str, repeats: int) -> None:
    batch = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    encoder = _transfer.Encoder(_transfer.segment_prefix(os.getppid(), 10_000 + os.getpid()))
    for _ in range(repeats):
        conn.recv()  # "go"
        t0 = time.perf_counter()
        if mode == "pipe":
            conn.send(batch)
        else:
            conn.send(encoder.encode(batch))
        conn.send(t0)
    conn.close()


def primitive(mode: str, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per batch, delivered and delivered + read once, for `repeats` batches."""
    ctx = multiprocessing.get_context(START_METHOD)
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(child, mode, repeats + 2), daemon=True)
    proc.start()
    child.close()
    delivered, read = [], []
    checksum = None
    for i in range(repeats + 2):  # two warm-up rounds
        parent.send("go")
        payload = parent.recv()
        array = payload if mode == "pipe" else _transfer.decode(payload)
        t1 = time.perf_counter()
        total = float(np.add.reduce(array, axis=None, dtype=np.float64))
        t2 = time.perf_counter()
        t0 = parent.recv()
        checksum = total if checksum is None else checksum
        assert total == checksum and array.shape == SHAPE and array.dtype == np.float32
        if i >= 2:
            delivered.append(t1 - t0)
            read.append(t2 - t0)
        del array, payload
    proc.join(10)
    return delivered, read


class BigBatches:
    """`ds[i]` is one big batch (the same array each time: production cost is not measured)."""

    def __init__(self, shm: bool):
        self.shm = shm
        self._batch = None

    def __getitem__(self, index: int):
        if self._batch is None:
            self._batch = np.random.default_rng(index).random(SHAPE, dtype=np.float32)
        return self._batch

    def __getstate__(self):
        return {"shm": self.shm}

    def __setstate__(self, state):
        self.shm = state["shm"]
        self._batch = None
        if not self.shm:  # runs in the worker process: make every array go through the pipe
            _transfer.Encoder.__init__.__defaults__ = (1 << 62,)


def end_to_end(shm: bool, batches: int) -> tuple[float, float]:
    """(seconds per delivered batch, start-up seconds) for a 1-process prefetcher."""
    config = LoaderConfig(workers=1, max_queue_size=2, use_multiprocessing=True)
    with Prefetcher(BigBatches(shm), config, idle_timeout=None) as pf:
        pf.begin_pass(None)
        first = pf.next()
        assert isinstance(first.base, __import__("mmap").mmap) == shm, "wrong transfer path"
        del first
        t0 = time.perf_counter()
        for _ in range(batches):
            batch = pf.next()
            del batch
        seconds = (time.perf_counter() - t0) / batches
        startup = pf.stats.startups[0].seconds
    return seconds, startup


def _fmt(seconds: list[float] | float) -> tuple[float, float]:
    med = statistics.median(seconds) if isinstance(seconds, list) else seconds
    return med * 1e3, NBYTES / med / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()

    print(
        f"batch {SHAPE} float32 = {NBYTES / 1e6:.1f} MB; start method {START_METHOD}; "
        f"{os.cpu_count()} CPUs; median of {args.repeats}"
    )
    results = {}
    for mode in ("pipe", "shm", "pipe", "shm"):  # alternate, keep the second round
        results[mode] = primitive(mode, args.repeats)
    print("\nprimitive: worker -> trainer, one batch")
    print(f"{'path':<26}{'delivered ms':>14}{'MB/s':>9}{'+ read ms':>12}{'MB/s':>9}")
    for mode, label in (("pipe", "(a) pickle through Pipe"), ("shm", "(b) shared memory")):
        d_ms, d_mbs = _fmt(results[mode][0])
        r_ms, r_mbs = _fmt(results[mode][1])
        print(f"{label:<26}{d_ms:>14.2f}{d_mbs:>9.0f}{r_ms:>12.2f}{r_mbs:>9.0f}")
    pipe_d, shm_d = (statistics.median(results[m][0]) for m in ("pipe", "shm"))
    pipe_r, shm_r = (statistics.median(results[m][1]) for m in ("pipe", "shm"))
    print(
        f"ratio pipe/shm: delivered {pipe_d / shm_d:.1f}x, "
        f"delivered + read {pipe_r / shm_r:.1f}x (higher = shm faster)"
    )

    print(f"\nend to end: Prefetcher, 1 worker process, queue 2, {args.batches} batches")
    e2e = {}
    for shm in (False, True, False, True):
        e2e[shm] = end_to_end(shm, args.batches)
    print(f"{'path':<26}{'ms/batch':>14}{'MB/s':>9}{'start-up s':>12}")
    for shm, label in ((False, "pickle through pipe"), (True, "shared memory (default)")):
        ms, mbs = _fmt(e2e[shm][0])
        print(f"{label:<26}{ms:>14.2f}{mbs:>9.0f}{e2e[shm][1]:>12.3f}")
    print(f"ratio pipe/shm: {e2e[False][0] / e2e[True][0]:.1f}x (higher = shm faster)")


if __name__ == "__main__":
    main()
