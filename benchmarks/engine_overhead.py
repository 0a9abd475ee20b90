"""What the loader itself costs on the training thread: our hand-over against Keras's own.

A `PyDataset` whose `__getitem__` returns a slice of a preallocated array (instant).
Each loader is read through Keras's own adapter iterator (`_get_iterator()`, the raw
batches `fit` standardises), and between two batches the "step" sleeps `--step-us`
microseconds, releasing the GIL as an accelerator step does, so a prefetching loader
has its batch ready when the step asks for it. The figure is the time the training
thread spends inside `next()` per batch: the hand-over of a ready batch (submitting
the next position, taking the finished one, recording it). For the inline rows it is
`__getitem__` itself plus the bookkeeping, on the training thread.

Rows, side by side in one run, alternating order, median over repeats of the per-batch
mean:

- Keras `OrderedEnqueuer`, 2 threads / 2 processes (`workers=2`);
- ours, 2 threads, 4 threads, 2 processes (`klt.wrap(ds, LoaderConfig(...))`);
- Keras inline (`workers=1, use_multiprocessing=False`: no enqueuer, `__getitem__` on
  the training thread) and ours inline (the same config).

Prints us/batch and ours minus Keras for the matching row (target: <= 10 us for threads
and processes). Timings on a loaded machine are noisy: compare rows of one run only.

Run (about 1 minute on 2 cores):

    .venv/bin/python benchmarks/engine_overhead.py
    .venv/bin/python benchmarks/engine_overhead.py --batches 1000 --repeats 5 --step-us 300
    .venv/bin/python benchmarks/engine_overhead.py --profile   # cProfile of ours, 2 threads
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import numpy as np
from keras.src.trainers import data_adapters

import keras_loadtune as klt
from keras_loadtune import LoaderConfig

BATCH = 32
TARGET_US = 10.0


class TinyBatches(keras.utils.PyDataset):
    """`n` instant batches: a (32, 8) float32 slice of a preallocated array."""

    def __init__(self, n: int, **kwargs):
        super().__init__(**kwargs)
        self.n = n
        rng = np.random.default_rng(0)
        self.x = rng.random((n * BATCH, 8), dtype=np.float32)
        self.y = rng.random((n * BATCH, 1), dtype=np.float32)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        s = slice(index * BATCH, (index + 1) * BATCH)
        return self.x[s], self.y[s]


def handover_us(ds, batches: int, step_s: float) -> float:
    """Mean microseconds per batch the training thread spends inside `next()`."""
    adapter = data_adapters.get_data_adapter(ds, shuffle=False)
    adapter.on_epoch_begin()
    iterator = adapter._get_iterator()
    clock = time.perf_counter
    sleep = time.sleep
    inside = 0.0
    count = 0
    for _ in range(batches):
        t0 = clock()
        try:
            next(iterator)
        except StopIteration:
            break
        inside += clock() - t0
        count += 1
        sleep(step_s)  # the step: releases the GIL, as an accelerator step does
    iterator.close()
    adapter.on_epoch_end()
    if adapter.enqueuer is not None and hasattr(adapter.enqueuer, "stop"):
        adapter.enqueuer.stop()
    assert count == batches, count
    return inside / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=1500, help="batches per run (1500)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per row (5)")
    parser.add_argument("--step-us", type=float, default=200.0, help="sleep per step (200)")
    parser.add_argument("--no-processes", action="store_true", help="skip the process rows")
    parser.add_argument("--profile", action="store_true", help="cProfile ours, 2 threads")
    args = parser.parse_args()
    n, step_s = args.batches, args.step_us * 1e-6

    def keras_ds(workers: int, processes: bool) -> TinyBatches:
        return TinyBatches(n, workers=workers, use_multiprocessing=processes, max_queue_size=10)

    def ours(workers: int, processes: bool):
        return klt.wrap(TinyBatches(n), LoaderConfig(workers, 10, processes), idle_timeout=None)

    rows: dict[str, object] = {
        "keras OrderedEnqueuer, 2 threads": keras_ds(2, False),
        "ours, 2 threads": ours(2, False),
        "ours, 4 threads": ours(4, False),
        "keras inline (workers=1)": keras_ds(1, False),
        "ours inline (workers=1)": ours(1, False),
    }
    if not args.no_processes:
        rows["keras OrderedEnqueuer, 2 processes"] = keras_ds(2, True)
        rows["ours, 2 processes"] = ours(2, True)
    baseline = {
        "ours, 2 threads": "keras OrderedEnqueuer, 2 threads",
        "ours, 4 threads": "keras OrderedEnqueuer, 2 threads",
        "ours inline (workers=1)": "keras inline (workers=1)",
        "ours, 2 processes": "keras OrderedEnqueuer, 2 processes",
    }
    adapter = data_adapters.get_data_adapter(rows["keras inline (workers=1)"])
    assert adapter.enqueuer is None, "Keras builds no enqueuer for its default config"
    print(
        f"{n} instant batches of ({BATCH}, 8) float32 per run, a {args.step_us:g} us "
        f"GIL-free step between batches; keras {keras.__version__}, backend "
        f"{keras.backend.backend()}; {os.cpu_count()} CPUs; median of {args.repeats} runs"
    )
    results: dict[str, list[float]] = {name: [] for name in rows}
    try:
        for ds in rows.values():  # warm-up: pools, forkserver, caches
            handover_us(ds, min(n, 200), step_s)
        names = list(rows)
        for i in range(args.repeats):
            for name in names if i % 2 == 0 else names[::-1]:
                gc.collect()
                results[name].append(handover_us(rows[name], n, step_s))
        print(f"{'':<38}{'us/batch':>10}{'min':>8}{'vs keras':>10}")
        worst = 0.0
        for name, values in results.items():
            median = statistics.median(values)
            line = f"{name:<38}{median:>10.1f}{min(values):>8.1f}"
            if name in baseline:
                delta = median - statistics.median(results[baseline[name]])
                line += f"{delta:>+10.1f}"
                if "inline" not in name:
                    worst = max(worst, delta)
            print(line)
        verdict = "OK" if worst <= TARGET_US else "ABOVE TARGET"
        print(f"target: ours - keras <= {TARGET_US:g} us/batch (threads, processes): {verdict}")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            handover_us(rows["ours, 2 threads"], n, step_s)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
            print(out.getvalue())
    finally:
        for ds in rows.values():
            close = getattr(ds, "close", None)
            if close is not None:
                close()


if __name__ == "__main__":
    main()
