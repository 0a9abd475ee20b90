"""What the loader itself costs: TunedPyDataset vs Keras's own PyDataset enqueuer.

One epoch of 2000 tiny, instant batches (a (32, 8) float32 slice of a preallocated array):
all the time goes to the loader (submit, hand over, reorder, deliver), none to the data.
Both run at the same config (2 worker threads, queue 10), alternating, median of several
repeats, measured two ways:

- raw: Keras's adapter iterator alone, `get_data_adapter(ds).get_numpy_iterator()`
  between `on_epoch_begin()` and `on_epoch_end()` (as `fit` drives it), no model: this
  isolates the loader;
- fit: `model.fit(ds, epochs=1, verbose=0)` of a tiny Dense model (the whole data path
  Keras uses: tf.data.from_generator, the step function).

Prints ms/epoch for each and the ratio ours/keras (target <= 1.05).

Run (about 1 minute on 2 cores):

    .venv/bin/python benchmarks/engine_overhead.py
    .venv/bin/python benchmarks/engine_overhead.py --profile   # cProfile of our raw epoch
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
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import numpy as np
from keras.src.trainers import data_adapters

import keras_loadtune as klt
from keras_loadtune import LoaderConfig

BATCHES = 2000
BATCH = 32
CONFIG = LoaderConfig(workers=2, max_queue_size=10, use_multiprocessing=False)


class TinyBatches(keras.utils.PyDataset):
    def __init__(self, n: int = BATCHES, **kwargs):
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


def raw_epoch(ds) -> float:
    """Seconds for one epoch through Keras's adapter iterator, no model."""
    adapter = data_adapters.get_data_adapter(ds, shuffle=False)
    t0 = time.perf_counter()
    adapter.on_epoch_begin()
    count = 0
    for _ in adapter.get_numpy_iterator():
        count += 1
    adapter.on_epoch_end()
    seconds = time.perf_counter() - t0
    assert count == BATCHES, count
    return seconds


def fit_epoch(model, ds) -> float:
    t0 = time.perf_counter()
    history = model.fit(ds, epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - t0
    assert len(history.history["loss"]) == 1
    return seconds


def alternate(measure, keras_ds, ours, repeats: int) -> tuple[list[float], list[float]]:
    measure(keras_ds), measure(ours)  # warm-up (threads, tracing, caches)
    k, o = [], []
    for i in range(repeats):
        pair = [(keras_ds, k), (ours, o)]
        for ds, out in pair if i % 2 == 0 else pair[::-1]:
            gc.collect()
            out.append(measure(ds))
    return k, o


def report(name: str, k: list[float], o: list[float]) -> float:
    km, om = statistics.median(k) * 1e3, statistics.median(o) * 1e3
    ratio = om / km
    print(
        f"{name:<6}{km:>12.1f}{om:>12.1f}{ratio:>12.3f}   "
        f"(keras min {min(k) * 1e3:.1f}, ours min {min(o) * 1e3:.1f}; "
        f"{km * 1e3 / BATCHES:.1f} vs {om * 1e3 / BATCHES:.1f} us/batch)"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw-repeats", type=int, default=9)
    parser.add_argument("--fit-repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one raw epoch of ours")
    args = parser.parse_args()

    keras_ds = TinyBatches(
        workers=CONFIG.workers,
        max_queue_size=CONFIG.max_queue_size,
        use_multiprocessing=CONFIG.use_multiprocessing,
    )
    ours = klt.wrap(TinyBatches(), CONFIG, idle_timeout=None)
    assert type(data_adapters.get_data_adapter(ours)).__name__ == "TunedPyDatasetAdapter"
    assert type(data_adapters.get_data_adapter(keras_ds).enqueuer).__name__ == "OrderedEnqueuer"

    print(
        f"{BATCHES} batches of ({BATCH}, 8) float32 per epoch; {CONFIG}; keras "
        f"{keras.__version__}, backend {keras.backend.backend()}; {os.cpu_count()} CPUs"
    )
    print(f"{'':<6}{'keras ms':>12}{'ours ms':>12}{'ours/keras':>12}")
    try:
        k, o = alternate(raw_epoch, keras_ds, ours, args.raw_repeats)
        raw_ratio = report("raw", k, o)

        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        k, o = alternate(lambda ds: fit_epoch(model, ds), keras_ds, ours, args.fit_repeats)
        fit_ratio = report("fit", k, o)
        verdict = "OK" if max(raw_ratio, fit_ratio) <= 1.05 else "ABOVE TARGET"
        print(f"target ours/keras <= 1.05: {verdict}")

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            raw_epoch(ours)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
            print(out.getvalue())
    finally:
        ours.close()


if __name__ == "__main__":
    main()
