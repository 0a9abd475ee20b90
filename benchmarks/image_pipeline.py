"""A real image job: JPEG files decoded with Pillow, augmented in NumPy, a small CNN, 10 epochs.

Compares, side by side in one process (fresh model per fit, row order rotating from
repeat to repeat, medians shown):

- plain Keras with two user configs: `JpegDataset(workers=1)` (Keras's default) and
  `JpegDataset(workers=4)` (threads);
- keras-loadtune (`LoadTuner` + `tuner.wrap`) on each of those user configs, tuning
  included in its time;
- the best static config of a small grid (threads 1/2/4/8, processes 2/4), chosen by a
  one-epoch fit of each before the repeats (the search is not counted in its time).

Prints wall time per row, its ratio to plain Keras with the same user config, and for
each keras-loadtune row the speedup its report claims against the measured wall ratio.
The target (issue #13): keras-loadtune <= 1.02x plain Keras with the same user config,
never worse; the report's claim within 10% of the wall clock.

The JPEGs are written once to `$XDG_CACHE_HOME/keras_loadtune/bench_jpegs` (or
`--cache-dir`) and reused.

Usage:

```bash
python benchmarks/image_pipeline.py                 # 10 epochs x 32 steps, 3 repeats, ~5-9 min
python benchmarks/image_pipeline.py --quick         # smoke run, < 60 s
KERAS_BACKEND=jax python benchmarks/image_pipeline.py --repeats 5 --epochs 5
```
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USER_CONFIGS = {"workers=1": 1, "workers=4": 4}
GRID = [(1, False), (2, False), (4, False), (8, False), (2, True), (4, True)]
QUICK_GRID = [(1, False), (4, False)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (10)")
    parser.add_argument("--images", type=int, default=None, help="images per epoch (1024)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", default=None, help="where the JPEGs are kept")
    import side_by_side as sbs

    sbs.add_common_args(parser, repeats=3)
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 10)
    count = args.images or (128 if args.quick else 1024)
    repeats = args.repeats or (1 if args.quick else 3)

    import keras
    from jpeg_images import JpegDataset, ensure_jpegs, image_cnn

    import keras_loadtune as klt

    sbs.print_header(
        "image_pipeline.py",
        argv,
        f"JPEG pipeline: {count} images/epoch, batch {args.batch_size}, {epochs} epochs, "
        f"median of {repeats}",
    )
    t0 = time.perf_counter()
    paths, labels = ensure_jpegs(count, args.cache_dir)
    print(
        f"# {len(paths)} JPEGs ready in {time.perf_counter() - t0:.1f} s ({Path(paths[0]).parent})"
    )

    def dataset(workers: int, processes: bool = False) -> keras.utils.PyDataset:
        return JpegDataset(
            paths, labels, args.batch_size, workers=workers, use_multiprocessing=processes
        )

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        return image_cnn(width=8)

    sbs.timed_fit(model(), dataset(1), 1)  # warm-up: one-off backend start-up, untimed

    grid = QUICK_GRID if args.quick else GRID
    trial_model = model()
    grid_walls = {}
    for workers, processes in grid:
        cfg = klt.LoaderConfig(workers, 10, processes)
        grid_walls[(workers, processes)] = sbs.timed_fit(
            trial_model, dataset(workers, processes), 1
        ).wall_s
        print(f"  grid {cfg!s:<22} {grid_walls[(workers, processes)]:6.2f} s / epoch")
    best = min(grid_walls, key=grid_walls.__getitem__)
    best_label = f"best static ({klt.LoaderConfig(best[0], 10, best[1])})"

    rows = {}
    reference = {}
    for name, workers in USER_CONFIGS.items():
        plain, tuned = f"plain Keras {name}", f"keras-loadtune from {name}"
        rows[plain] = lambda r, w=workers: sbs.timed_fit(model(), dataset(w), epochs)
        rows[tuned] = lambda r, w=workers: sbs.tuned_fit(model(), dataset(w), epochs)
        reference[plain] = reference[tuned] = plain
    rows[best_label] = lambda r: sbs.timed_fit(model(), dataset(*best), epochs)
    reference[best_label] = "plain Keras workers=1"

    results = sbs.alternate(rows, repeats)
    ratios = sbs.print_table(
        f"image pipeline, {epochs} epochs x {len(dataset(1))} steps (wall s of fit)",
        results,
        reference,
    )
    for name in USER_CONFIGS:
        plain, tuned = f"plain Keras {name}", f"keras-loadtune from {name}"
        verdict = "PASS" if ratios[tuned] <= 1.02 else "MISS"
        print(f"\n{tuned}: {ratios[tuned]:.3f}x {plain} (target <= 1.02x): {verdict}")
        print(sbs.tuned_summary(results[tuned], results[plain]))
    best_s = sbs.median_wall(results[best_label])
    for name in USER_CONFIGS:
        tuned = f"keras-loadtune from {name}"
        print(f"{tuned} / best static: {sbs.median_wall(results[tuned]) / best_s:.3f}x")
    print(f"\nlast report ({'keras-loadtune from workers=1'}):")
    print(results["keras-loadtune from workers=1"][-1].info["report"].summary_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
