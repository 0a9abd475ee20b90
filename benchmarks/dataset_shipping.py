"""Epoch-start cost of keeping worker processes' copy of a 256 MB in-memory dataset current.

At every pass start the prefetcher calls `pool.update_source(dataset, version)`. This
measures, for a pool of 2 worker processes and a dataset holding a 256 MB array, the
median seconds of that call (until the workers have loaded the new copy, when one is
sent) in four cases, next to what the engine did before (pickle the whole dataset every
epoch and send it to every worker):

- version unchanged (no epoch hook ran): nothing is looked at;
- version bumped, nothing changed: a cheap fingerprint, no pickle;
- version bumped, a small field changed: pickled again, the 256 MB array is *not* copied;
- full pickle + send to 2 workers (the old behaviour, for comparison).

    python benchmarks/dataset_shipping.py
"""

from __future__ import annotations

import pickle
import queue
import statistics
import time

import numpy as np

from keras_loadtune.engine.process import ProcessPool

MB = 2**20
REPEATS = 5


class InMemory:
    def __init__(self) -> None:
        self.x = np.ones(256 * MB // 8, dtype=np.float64)
        self.epoch = 0

    def __getitem__(self, index: int):
        return self.epoch, float(self.x[index])


class Sink:
    def __init__(self) -> None:
        self.results: queue.Queue = queue.Queue()

    def on_result(self, key, batch, wall_s, cpu_s, nbytes) -> None:
        self.results.put((key, batch))

    def on_error(self, key, exc) -> None:
        self.results.put((key, exc))

    def on_fatal(self, exc) -> None:
        self.results.put(("fatal", exc))


def timed_update(pool: ProcessPool, sink: Sink, ds: InMemory, version: int) -> float:
    """Seconds until both workers answer a batch made from the updated dataset."""
    t0 = time.perf_counter()
    pool.update_source(ds, version)
    for worker in range(2):
        pool.submit(("k", version, worker), 0)
    got = [sink.results.get(timeout=120) for _ in range(2)]
    assert all(batch == (ds.epoch, 1.0) for _, batch in got), got
    return time.perf_counter() - t0


def main() -> None:
    ds, sink = InMemory(), Sink()
    t0 = time.perf_counter()
    pool = ProcessPool(ds, sink, "keras_loadtune-bench")
    pool.resize(2)
    start = time.perf_counter() - t0
    rows = {"unchanged version": [], "bumped, unchanged": [], "bumped, small field changed": []}
    version = 0
    try:
        for _ in range(REPEATS):
            rows["unchanged version"].append(timed_update(pool, sink, ds, version))
            version += 1
            rows["bumped, unchanged"].append(timed_update(pool, sink, ds, version))
            version += 1
            ds.epoch += 1
            rows["bumped, small field changed"].append(timed_update(pool, sink, ds, version))
        pickles = pool.source_pickles
        copied = pool.source_bytes_copied
    finally:
        pool.close()
    old = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        blob = pickle.dumps(ds, protocol=pickle.HIGHEST_PROTOCOL)
        for _worker in range(2):
            pickle.loads(blob)  # each worker unpickled its own copy (pipe time not counted)
        old.append(time.perf_counter() - t)
        del blob
    print(f"pool start (2 workers, 256 MB copied to shared memory once): {start:.3f} s")
    print(f"{'epoch start, median of ' + str(REPEATS):<42}{'seconds':>10}")
    for name, values in rows.items():
        print(f"{name:<42}{statistics.median(values):>10.4f}")
    print(f"{'before, lower bound: pickle + 2 unpickles':<42}{statistics.median(old):>10.4f}")
    print(f"dataset pickled {pickles} times, {copied / MB:.0f} MB copied to shared memory")


if __name__ == "__main__":
    main()
