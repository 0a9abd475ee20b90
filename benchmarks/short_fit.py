"""A fit too short to tune: does adding keras-loadtune cost anything? (target <= 1.02x)

A 30-step fit (one epoch, fresh model, so tracing is included as in a real short job)
on three loaders, each with plain Keras (`workers=1`, Keras's default) and with
keras-loadtune (`LoadTuner` + `tuner.wrap`) from the same config:

- `latency`: `LatencyDataset`, 40 ms sleep per batch (input-bound);
- `jpeg`: the real JPEG pipeline of `image_pipeline.py` (Pillow decode, NumPy augment);
- `in-memory`: `ArrayDataset`, batches already in memory (compute-bound).

Rows alternate within each repeat (order rotating), medians are shown, and for each
loader the ratio keras-loadtune / plain Keras with its verdict against 1.02x.

Usage:

```bash
python benchmarks/short_fit.py                  # 30 steps, 5 repeats
python benchmarks/short_fit.py --quick          # smoke run, < 60 s
python benchmarks/short_fit.py --steps 50 --repeats 9
```
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET = 1.02


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="steps of the fit (30)")
    parser.add_argument("--cache-dir", default=None, help="where the JPEGs are kept")
    import side_by_side as sbs

    sbs.add_common_args(parser, repeats=5)
    args = parser.parse_args(argv)
    steps = args.steps
    repeats = args.repeats or (1 if args.quick else 5)

    import keras
    from jpeg_images import JpegDataset, ensure_jpegs, image_cnn

    from keras_loadtune.synthetic import ArrayDataset, LatencyDataset, small_cnn

    sbs.print_header(
        "short_fit.py",
        argv,
        f"too short to tune: 1 epoch x {steps} steps, fresh model per fit, median of {repeats}",
    )
    paths, labels = ensure_jpegs(steps * 32, args.cache_dir)
    loaders = {
        "latency": (lambda: LatencyDataset(steps, latency_s=0.040), small_cnn),
        "jpeg": (lambda: JpegDataset(paths, labels, 32), lambda: image_cnn(width=8)),
        "in-memory": (lambda: ArrayDataset(steps), small_cnn),
    }

    def fresh(make_model):
        keras.utils.set_random_seed(0)
        return make_model()

    for make_ds, make_model in loaders.values():  # warm-up: one-off start-up costs, untimed
        sbs.timed_fit(fresh(make_model), make_ds(), 1)

    rows, reference = {}, {}
    for name, (make_ds, make_model) in loaders.items():
        plain, tuned = f"{name}: plain Keras", f"{name}: keras-loadtune"
        rows[plain] = lambda r, d=make_ds, m=make_model: sbs.timed_fit(fresh(m), d(), 1)
        rows[tuned] = lambda r, d=make_ds, m=make_model: sbs.tuned_fit(fresh(m), d(), 1)
        reference[plain] = reference[tuned] = plain
    results = sbs.alternate(rows, repeats)
    ratios = sbs.print_table(f"{steps}-step fits (wall s of fit)", results, reference)
    print()
    for name in loaders:
        plain, tuned = f"{name}: plain Keras", f"{name}: keras-loadtune"
        pair = [t.wall_s / p.wall_s for t, p in zip(results[tuned], results[plain])]
        verdict = "PASS" if ratios[tuned] <= TARGET else "MISS"
        print(
            f"{name:<10} keras-loadtune / plain Keras = {ratios[tuned]:.3f} "
            f"(target <= {TARGET}): {verdict}; per repeat "
            f"{', '.join(f'{x:.3f}' for x in pair)}"
        )
        print(sbs.tuned_summary(results[tuned], results[plain]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
