"""How close is the report's machine limit to the best static config a grid measures?

For each scenario (from `scenarios.py`: latency-sleep, gil-python, numpy, compute; plus
the real JPEG pipeline of `jpeg_images.py`), in one process and one run:

1. a short grid of static loader configs (threads 1, 2, 4, 8; processes 2), each run on
   keras-loadtune's loader with that fixed config (`klt.wrap(ds, config)`, no tuner)
   for `--steps` steps; the steady-state rate is taken after `--skip` steps (so
   start-ups and the queue's fill are left out);
2. a keras-loadtune fit (`LoadTuner(storage=None)`) long enough for the probe and a
   few trials; its `report.limit` gives `steps_per_s` and `bound`.

It prints, per scenario, the limit, the best grid rate and config, the ratio
limit / best grid (target: 0.90 to 1.25) and the bound. The model is built once per
scenario, so the grid's runs and the tuned fit share its traced, warm step.

Usage:

```bash
python benchmarks/limit_accuracy.py                       # every scenario, ~3-5 min on 2 cores
python benchmarks/limit_accuracy.py --scenarios jpeg gil-python --steps 30
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

LOW, HIGH = 0.90, 1.25
GRID = ((1, False), (2, False), (4, False), (8, False), (2, True))
SCENARIO_NAMES = ("latency-sleep", "gil-python", "numpy", "compute", "jpeg")
EXPECTED_BOUND = {
    "latency-sleep": "model-step",
    "gil-python": "loader-cpu",
    "numpy": "loader-cpu",
    "compute": "model-step",
    "jpeg": "loader-cpu",
}


def _rate_callback(skip: int):  # type: ignore[no-untyped-def]
    import keras

    class Rate(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
            self.times.append(time.perf_counter())

        def rate(self) -> float:
            t = self.times[skip:]
            return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    return Rate()


def _scenario(name: str):  # type: ignore[no-untyped-def]
    """`(make_dataset(n, **kw), make_model(), steps scale)` of a scenario."""
    if name == "jpeg":
        import jpeg_images

        paths, labels = jpeg_images.ensure_jpegs(count=32 * 16)

        def make(n: int, **kw):  # type: ignore[no-untyped-def]
            reps = -(-n // 16)
            return jpeg_images.JpegDataset(paths * reps, list(labels) * reps, batch_size=32, **kw)

        return make, lambda: jpeg_images.image_cnn(), 1.0
    import scenarios

    sc = scenarios.SCENARIOS[name]
    scale = 0.25 if name == "compute" else 1.0
    return (lambda n, **kw: sc.make_dataset(n, {}, **kw)), sc.make_model, scale


def measure(name: str, steps: int, skip: int, fit_steps: int) -> dict:
    import keras

    import keras_loadtune as klt
    from keras_loadtune import LoaderConfig

    make, make_model, scale = _scenario(name)
    steps = max(int(steps * scale), skip + 4)
    model = make_model()
    grid: dict[str, float] = {}
    for workers, processes in GRID:
        cfg = LoaderConfig(workers, max(2 * workers, 4), processes)
        rate = _rate_callback(skip)
        with klt.wrap(make(steps), cfg) as ds:
            model.fit(ds, epochs=1, verbose=0, callbacks=[rate])
        grid[str(cfg)] = rate.rate()
    keras.utils.set_random_seed(0)
    tuned_model = model  # the grid's model: its step is traced and warm, as the grid's was
    tuner = klt.LoadTuner(storage=None, seed=0, verbose=0)
    n_fit = max(int(fit_steps * scale), 70)  # the probe needs its steps after the stock
    with tuner.wrap(make(n_fit)) as ds:
        tuned_model.fit(ds, epochs=1, verbose=0, callbacks=[tuner])
    report = tuner.report
    best_cfg = max(grid, key=grid.__getitem__)
    return {
        "name": name,
        "limit": report.limit,
        "grid": grid,
        "best_cfg": best_cfg,
        "best": grid[best_cfg],
        "decision": report.decision,
        "profile": report.profile,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIO_NAMES))
    parser.add_argument("--steps", type=int, default=40, help="steps per grid config")
    parser.add_argument("--skip", type=int, default=8, help="steps left out of each rate")
    parser.add_argument("--fit-steps", type=int, default=120, help="steps of the tuned fit")
    args = parser.parse_args(argv)
    import keras

    print(
        f"backend {keras.backend.backend()}, {os.cpu_count()} CPUs; target ratio "
        f"{LOW:.2f}-{HIGH:.2f} (limit / best grid)"
    )
    rows = []
    for name in args.scenarios:
        started = time.perf_counter()
        row = measure(name, args.steps, args.skip, args.fit_steps)
        rows.append(row)
        grid = ", ".join(f"{k}: {v:.1f}" for k, v in row["grid"].items())
        print(f"\n[{name}] {time.perf_counter() - started:.0f} s; grid steps/s: {grid}")
        print(f"  profile: {row['profile']}; decision {row['decision']}")
    print(
        f"\n{'scenario':<14} {'limit':>7} {'best grid':>9} {'ratio':>6}  {'bound':<15} "
        f"{'expected':<11} best config"
    )
    for row in rows:
        lim = row["limit"]
        ratio = lim.steps_per_s / row["best"] if lim is not None and row["best"] else None
        ok = ratio is not None and LOW <= ratio <= HIGH
        bound = lim.bound.value if lim is not None else "-"
        print(
            f"{row['name']:<14} {lim.steps_per_s if lim else float('nan'):>7.1f} "
            f"{row['best']:>9.1f} {ratio if ratio else float('nan'):>6.2f}  {bound:<15} "
            f"{EXPECTED_BOUND.get(row['name'], '?'):<11} {row['best_cfg']}"
            f"{'' if ok else '  <- outside target'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
