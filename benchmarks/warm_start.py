"""Warm start: does a second run with the same study storage skip tuning?

Runs, side by side in one process (fresh model each):

1. the compute floor: `small_cnn` on `ArrayDataset` (batches in memory, no tuner);
2. a first tuned run: `LatencyDataset` (40 ms per batch) wrapped by a `LoadTuner` whose
   storage is a fresh temporary SQLite file: it probes and tunes;
3. a second tuned run, same workload, same storage: it warm-starts from the stored best.

Each run is 3 epochs x 150 steps. Prints the wall time of every `fit`, its ratio to
the compute floor, and the tuner's summary; the target is second run <= 1.10x the floor.

Usage:

```bash
python benchmarks/warm_start.py                 # ~1 min on 2 cores
python benchmarks/warm_start.py --steps 100 --epochs 2 --latency-ms 40
```

TensorFlow/Keras are imported inside `main` (worker processes that preload `__main__`
stay light).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

TARGET = 1.10


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
    parser.add_argument("--verbose", action="store_true", help="show the tuner's log lines")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_loadtune as klt
    from keras_loadtune.synthetic import ArrayDataset, LatencyDataset

    logging.getLogger("keras_loadtune").setLevel(logging.WARNING)
    verbose = 1 if args.verbose else 0
    with tempfile.TemporaryDirectory(prefix="klt-warm-") as tmp:
        storage = f"sqlite:///{Path(tmp) / 'studies.db'}"
        floor = _fit(ArrayDataset(args.steps), args.epochs)
        rows = [("compute floor (ArrayDataset)", floor, None)]
        for label in ("first tuned run", "second tuned run (same storage)"):
            tuner = klt.LoadTuner(storage=storage, verbose=verbose)
            data = tuner.wrap(LatencyDataset(args.steps, latency_s=args.latency_ms / 1000))
            wall = _fit(data, args.epochs, [tuner])
            data.close()
            rows.append((label, wall, tuner.report))
        # The floor again, last: the machine's speed may drift during the runs.
        floor2 = _fit(ArrayDataset(args.steps), args.epochs)
        floor = min(floor, floor2)

    print(
        f"\nwarm start: LatencyDataset {args.latency_ms:.0f} ms/batch, small_cnn, "
        f"{args.epochs} epochs x {args.steps} steps; storage: a temporary SQLite file"
    )
    print(f"{'run':34} {'wall s':>7} {'x floor':>8}  tuning  decision / config")
    for label, wall, report in rows:
        if report is None:
            print(f"{label:34} {wall:7.2f} {wall / floor:8.2f}x")
            continue
        print(
            f"{label:34} {wall:7.2f} {wall / floor:8.2f}x  {report.tuning_steps:4d} st  "
            f"{report.decision}: {report.best_config}"
        )
    print(f"(floor = min of two floor runs: {min(rows[0][1], floor2):.2f} / {floor2:.2f} s)")
    first, second = rows[1], rows[2]
    print(f"study: {second[2].study_name}, warm_start_from: {second[2].warm_start_from}")
    ratio = second[1] / floor
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(
        f"second run / floor = {ratio:.3f} (target <= {TARGET:.2f}): {verdict}; "
        f"first run / floor = {first[1] / floor:.3f}; "
        f"tuning steps {first[2].tuning_steps} -> {second[2].tuning_steps}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
