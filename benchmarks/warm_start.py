"""Warm start: does a second run with the same study storage skip tuning?

Runs, side by side in one process (fresh model each):

1. the compute floor: `small_cnn` on `ArrayDataset` (batches in memory, no tuner);
2. a first tuned run: `LatencyDataset` (40 ms per batch) wrapped by a `LoadTuner` with
   the default storage (in a fresh temporary cache folder): it probes and tunes;
3. a second tuned run, same workload, same storage: it starts on the stored best from
   its first batch (the warm hint) and verifies it.

`--many-fits 8` instead runs KerasTuner-style fits (a new model and tuner each, default
storage, `--steps 60 --epochs 2`) after each other, and a small static grid of plain
Keras thread configs alternating with them; it prints every tuned fit's ratio to the
best static config (target: every fit after the first <= 1.05x).

Each run is 3 epochs x 150 steps; the three runs alternate within each repeat (a fresh
storage file per repeat) and medians are shown, so a noisy machine slows all of them
alike. Prints the wall time of every `fit`, its ratio to the compute floor, and the
tuner's decision; the target is second run <= 1.10x the floor.

Usage:

```bash
python benchmarks/warm_start.py                 # ~1.5 min on 2 cores
python benchmarks/warm_start.py --steps 100 --epochs 2 --latency-ms 40
python benchmarks/warm_start.py --many-fits 8 --steps 60 --epochs 2 --latency-ms 30
```

TensorFlow/Keras are imported inside `main` (worker processes that preload `__main__`
stay light).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

TARGET = 1.10
MANY_FITS_TARGET = 1.05
STATIC_GRID = (4, 8, 16)  # plain Keras thread workers


def _fit(dataset, epochs: int, callbacks=()) -> float:
    from keras_loadtune.synthetic import small_cnn

    model = small_cnn()
    start = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="batches per epoch (150)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (3)")
    parser.add_argument("--latency-ms", type=float, default=40.0, help="per batch (40)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats, medians shown (3)")
    parser.add_argument("--verbose", action="store_true", help="show the tuner's log lines")
    parser.add_argument("--many-fits", type=int, default=0, help="KerasTuner-style fits (0: off)")
    args = parser.parse_args(argv)
    if args.many_fits:
        return _many_fits(args)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_loadtune as klt
    from keras_loadtune.synthetic import ArrayDataset, LatencyDataset

    logging.getLogger("keras_loadtune").setLevel(logging.WARNING)
    verbose = 1 if args.verbose else 0
    walls: dict[str, list[float]] = {"floor": [], "first": [], "second": []}
    reports: dict[str, list] = {"first": [], "second": []}
    _fit(ArrayDataset(20), 1)  # warm-up: TensorFlow's one-off start-up costs
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="klt-warm-") as tmp:
            os.environ["XDG_CACHE_HOME"] = tmp  # a fresh default storage per repeat
            storage = "default"
            walls["floor"].append(_fit(ArrayDataset(args.steps), args.epochs))
            for run in ("first", "second"):
                tuner = klt.LoadTuner(storage=storage, verbose=verbose)
                data = tuner.wrap(LatencyDataset(args.steps, latency_s=args.latency_ms / 1000))
                walls[run].append(_fit(data, args.epochs, [tuner]))
                data.close()
                reports[run].append(tuner.report)
        print(
            f"repeat {repeat + 1}/{args.repeats}: floor {walls['floor'][-1]:.2f} s, "
            f"first {walls['first'][-1]:.2f} s, second {walls['second'][-1]:.2f} s",
            flush=True,
        )

    floor = statistics.median(walls["floor"])
    print(
        f"\nwarm start: LatencyDataset {args.latency_ms:.0f} ms/batch, small_cnn, "
        f"{args.epochs} epochs x {args.steps} steps, median of {args.repeats} repeats; "
        "storage: the default (journal file) in a fresh cache folder per repeat"
    )
    print(f"{'run':34} {'wall s':>7} {'x floor':>8}  {'tuning':>7}  decision / config")
    labels = {
        "floor": "compute floor (ArrayDataset)",
        "first": "first tuned run",
        "second": "second tuned run (same storage)",
    }
    for run, label in labels.items():
        wall = statistics.median(walls[run])
        line = f"{label:34} {wall:7.2f} {wall / floor:7.2f}x"
        if run in reports:
            rep = reports[run][-1]
            steps = statistics.median(r.tuning_steps for r in reports[run])
            line += f"  {steps:4.0f} st  {rep.decision}: {rep.best_config}"
        print(line)
    second = reports["second"][-1]
    print(f"study: {second.study_name}, warm_start_from: {second.warm_start_from}")
    ratio = statistics.median(walls["second"]) / floor
    first_ratio = statistics.median(walls["first"]) / floor
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(
        f"second run / floor = {ratio:.3f} (target <= {TARGET:.2f}): {verdict}; "
        f"first run / floor = {first_ratio:.3f}"
    )
    return 0


def _many_fits(args: argparse.Namespace) -> int:
    """KerasTuner style: `args.many_fits` fits, a new model and tuner each, one storage."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_loadtune as klt
    from keras_loadtune.synthetic import ArrayDataset, LatencyDataset

    logging.getLogger("keras_loadtune").setLevel(logging.WARNING)
    latency = args.latency_ms / 1000
    _fit(ArrayDataset(20), 1)  # warm-up: the backend's one-off start-up costs
    static: dict[int, list[float]] = {w: [] for w in STATIC_GRID}
    tuned: list[tuple[float, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="klt-many-") as tmp:
        os.environ["XDG_CACHE_HOME"] = tmp  # one fresh default storage for all the fits
        for fit in range(args.many_fits):
            workers = STATIC_GRID[fit % len(STATIC_GRID)]
            plain = LatencyDataset(args.steps, latency_s=latency, workers=workers)
            static[workers].append(_fit(plain, args.epochs))
            tuner = klt.LoadTuner(verbose=1 if args.verbose else 0)
            data = tuner.wrap(LatencyDataset(args.steps, latency_s=latency))
            first = None
            wall = _fit(data, args.epochs, [tuner])
            records = list(data.stats)
            if records:
                first = str(records[0].config)
            data.close()
            rep = tuner.report
            tuned.append(
                (wall, f"{rep.decision}: {rep.best_config}, {rep.tuning_steps} steps", first or "?")
            )
            print(
                f"fit {fit + 1}/{args.many_fits}: tuned {wall:.2f} s (first batch on {first}), "
                f"static {workers} threads {static[workers][-1]:.2f} s",
                flush=True,
            )
    best_w, best = min(
        ((w, statistics.median(v)) for w, v in static.items() if v), key=lambda x: x[1]
    )
    print(
        f"\nmany fits: LatencyDataset {args.latency_ms:.0f} ms/batch, small_cnn, "
        f"{args.many_fits} fits of {args.epochs} x {args.steps} steps, default storage; "
        f"best static: {best_w} threads, median {best:.2f} s"
    )
    for i, (wall, decision, first) in enumerate(tuned):
        print(f"fit {i + 1}: {wall:6.2f} s  {wall / best:5.2f}x  first batch {first}; {decision}")
    later = [wall / best for wall, _, _ in tuned[1:]]
    if later:
        verdict = "PASS" if max(later) <= MANY_FITS_TARGET else "MISS"
        print(
            f"fits after the first / best static: median {statistics.median(later):.3f}, "
            f"worst {max(later):.3f} (target <= {MANY_FITS_TARGET:.2f}): {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
