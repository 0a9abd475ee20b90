"""Epoch-start overhead with a large in-memory dataset and process workers (target <= 1.1x).

The dataset (`scenarios.ArraySliceDataset`) holds a `--mb` MiB float32 NumPy array (256 by
default) and serves a few batches per epoch, with `use_multiprocessing=True` and the same
worker count in both rows:

- plain Keras: the `PyDataset` with `workers=2, use_multiprocessing=True` (Keras forks a
  pool at every epoch start: the array is inherited, never pickled);
- keras-loadtune: the same dataset through `klt.wrap` (no tuner, so the config stays the
  same); whatever the engine does to get the dataset to its workers is paid here.

Many epochs of few steps make the per-epoch start cost visible. Per fit, after the first
epoch (which pays the pool start in both rows):

- epoch period: from the last step of one epoch to the last step of the next;
- epoch start gap: from the last step of one epoch to the end of the first step of the
  next (one step plus everything done between epochs).

Rows alternate within each repeat (order rotating); medians are shown with the ratio
keras-loadtune / plain Keras and a verdict on the epoch period against 1.1x.

Usage:

```bash
python benchmarks/epoch_start.py                # 256 MiB, 8 epochs x 4 steps, 3 repeats
python benchmarks/epoch_start.py --quick        # smoke run, < 60 s
python benchmarks/epoch_start.py --mb 1024 --workers 4
```
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET = 1.10
BATCH = 32
SHAPE = (32, 32, 3)


def epoch_figures(run) -> dict[str, float]:
    """Medians over epochs 2.. of one fit: epoch period, start gap, steady step; and the
    first epoch's time (seconds)."""
    import side_by_side as sbs

    clock = run.info.get("clock")
    if clock is None:  # the fit failed
        return dict.fromkeys(("period", "gap", "step", "first_epoch"), float("nan"))
    last = [ends[-1] for ends in clock.batch_ends]
    first = [ends[0] for ends in clock.batch_ends]
    periods = [b - a for a, b in itertools.pairwise(last)]
    gaps = [f - prev for prev, f in zip(last, first[1:])]
    return {
        "period": sbs.median(periods),
        "gap": sbs.median(gaps),
        "step": sbs.median(clock.intervals(skip=1) or clock.intervals(skip=0)),
        "first_epoch": last[0] - clock.epoch_begins[0],
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="MiB of array the dataset holds")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (8)")
    parser.add_argument("--steps", type=int, default=4, help="batches per epoch (4)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    import side_by_side as sbs

    sbs.add_common_args(parser, repeats=3)
    args = parser.parse_args(argv)
    epochs = args.epochs or (3 if args.quick else 8)
    repeats = args.repeats or (1 if args.quick else 3)
    if epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch pays the pool start)")

    import keras
    import numpy as np
    from scenarios import ArraySliceDataset

    import keras_loadtune as klt

    sbs.print_header(
        "epoch_start.py",
        argv,
        f"epoch start: {args.mb} MiB in-memory array, {args.workers} worker processes, "
        f"{epochs} epochs x {args.steps} steps, median of {repeats}",
    )
    rows_needed = (args.mb << 20) // (int(np.prod(SHAPE)) * 4)
    x = np.random.default_rng(0).random((rows_needed, *SHAPE), dtype=np.float32)
    y = (np.arange(rows_needed) % 10).astype(np.int32)
    print(f"# array {x.shape} float32, {x.nbytes / (1 << 20):.0f} MiB")

    def dataset() -> ArraySliceDataset:
        return ArraySliceDataset(
            x, y, BATCH, args.steps, workers=args.workers, use_multiprocessing=True
        )

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(10)])
        m.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return m

    def wrapped(r: int):
        with klt.wrap(dataset()) as data:
            return sbs.timed_fit(model(), data, epochs)

    sbs.timed_fit(model(), ArraySliceDataset(x, y, BATCH, 2), 1)  # warm-up, untimed
    plain, tuned = "plain Keras", "keras-loadtune (klt.wrap)"
    rows = {plain: lambda r: sbs.timed_fit(model(), dataset(), epochs), tuned: wrapped}
    results = sbs.alternate(rows, repeats)
    sbs.print_table(
        f"{epochs} epochs x {args.steps} steps, {args.workers} processes (wall s of fit)",
        results,
        {plain: plain, tuned: plain},
    )
    figures = {
        label: {
            key: sbs.median([epoch_figures(run)[key] for run in runs])
            for key in ("period", "gap", "step", "first_epoch")
        }
        for label, runs in results.items()
    }
    print(f"\n{'row':<28} {'epoch s':>8} {'start gap s':>12} {'step ms':>8} {'epoch 1 s':>10}")
    for label, f in figures.items():
        print(
            f"{label:<28} {f['period']:8.3f} {f['gap']:12.3f} {f['step'] * 1e3:8.1f} "
            f"{f['first_epoch']:10.3f}"
        )
    period = figures[tuned]["period"] / figures[plain]["period"]
    gap = figures[tuned]["gap"] / figures[plain]["gap"]
    verdict = "PASS" if period <= TARGET else "MISS"
    print(
        f"\nepochs 2..{epochs}, keras-loadtune / plain Keras: epoch time {period:.2f}x "
        f"(target <= {TARGET}): {verdict}; epoch start gap {gap:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
