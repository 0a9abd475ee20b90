"""The largest step-to-step gap when the loader switches threads -> processes mid-fit.

A GIL-bound loader (`PythonDataset`, `--cpu-ms` of pure-Python work per batch) feeds a
tiny CNN for one epoch. Rows, side by side in one process (order rotating per repeat):

- plain Keras, `workers=2` threads: its steady state, the reference gap;
- keras-loadtune (`klt.wrap`), 2 threads, no switch;
- keras-loadtune (`klt.wrap`), 2 threads, and a callback that calls
  `dataset.reconfigure(LoaderConfig(2, 10, use_multiprocessing=True), background=True)` at
  step `--switch-at`, as `LoadTuner` switches (`--blocking`: the old blocking switch).

For each fit: the median step (step end to step end) and the largest gap, after the
first `--skip` steps (tracing); for the switch row, the largest gap from the switch on,
and at which step it happened. Gaps are printed in ms and as multiples of the median
step. Issue #11's target: the switch gap stays at step scale. The first switch of the
process also starts the process machinery (e.g. a forkserver); the per-repeat lines show
whether later switches pay less.

Usage:

```bash
python benchmarks/switch_gap.py                 # 200 steps, switch at 60, 3 repeats
python benchmarks/switch_gap.py --quick         # smoke run, < 60 s
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

WORKERS = 2


def gap_figures(run, skip: int, switch_at: int | None) -> dict[str, float]:
    """Median step, largest gap (after `skip` steps), and the largest gap from the switch
    on with the step it ended (seconds; NaN for a failed fit). `gaps[i]` runs from the end
    of step `i` to the end of step `i + 1` (0-based, as Keras numbers batches)."""
    import side_by_side as sbs

    clock = run.info.get("clock")
    nan = float("nan")
    if clock is None or not clock.batch_ends or len(clock.batch_ends[0]) < skip + 2:
        return {"median": nan, "max": nan, "switch_max": nan, "switch_step": nan}
    ends = clock.batch_ends[0]
    gaps = [b - a for a, b in itertools.pairwise(ends)]  # gaps[i]: step i -> step i + 1
    steady = gaps[skip:]
    out = {"median": sbs.median(steady), "max": max(steady), "switch_max": nan}
    out["switch_step"] = nan
    if switch_at is not None and switch_at < len(gaps):
        # The switch is called in a callback at the end of step `switch_at`, before this
        # benchmark's clock reads that step's end: a blocking call lands in gaps[switch_at - 1].
        after = gaps[switch_at - 1 :]
        worst = max(range(len(after)), key=after.__getitem__)
        out["switch_max"] = after[worst]
        out["switch_step"] = switch_at + worst
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="steps of the epoch (200)")
    parser.add_argument("--switch-at", type=int, default=None, help="switch after step (60)")
    parser.add_argument("--cpu-ms", type=float, default=8.0, help="Python work per batch (8)")
    parser.add_argument("--skip", type=int, default=3, help="first steps left out (3)")
    parser.add_argument(
        "--blocking", action="store_true", help="switch without background start (old behaviour)"
    )
    import side_by_side as sbs

    sbs.add_common_args(parser, repeats=3)
    args = parser.parse_args(argv)
    steps = args.steps or (40 if args.quick else 200)
    switch_at = args.switch_at if args.switch_at is not None else (15 if args.quick else 60)
    repeats = args.repeats or (1 if args.quick else 3)
    if not args.skip <= switch_at < steps - 1:
        parser.error("need --skip <= --switch-at < --steps - 1")

    import keras

    import keras_loadtune as klt
    from keras_loadtune.synthetic import PythonDataset, small_cnn

    sbs.print_header(
        "switch_gap.py",
        argv,
        f"switch gap: PythonDataset {args.cpu_ms:.0f} ms/batch, {WORKERS} threads -> "
        f"{WORKERS} processes at step {switch_at} of {steps}, median of {repeats}",
    )

    class SwitchAt(keras.callbacks.Callback):
        def __init__(self, data: klt.TunedPyDataset, step: int, config: klt.LoaderConfig):
            super().__init__()
            self.data, self.step, self.config = data, step, config

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if batch == self.step:
                # As LoadTuner does: the process pool starts while the threads serve.
                self.data.reconfigure(self.config, background=not args.blocking)

    def dataset() -> PythonDataset:
        return PythonDataset(steps, cpu_s=args.cpu_ms / 1000, workers=WORKERS)

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        return small_cnn(width=4)

    def wrapped(switch: bool):
        def run(r: int):
            with klt.wrap(dataset()) as data:
                target = klt.LoaderConfig(WORKERS, 10, use_multiprocessing=True)
                callbacks = [SwitchAt(data, switch_at, target)] if switch else []
                result = sbs.timed_fit(model(), data, 1, callbacks=callbacks)
                result.info["config"] = str(data.config)
                try:
                    startups = [round(s.seconds, 2) for s in data.stats.startups]
                except AttributeError:  # the engine's records changed shape
                    startups = []
                result.info["startups"] = startups
            return result

        return run

    sbs.timed_fit(model(), PythonDataset(8, cpu_s=0.001), 1)  # warm-up, untimed
    plain = f"plain Keras, {WORKERS} threads"
    steady = f"keras-loadtune, {WORKERS} threads"
    how = "blocking" if args.blocking else "background"
    switch = f"keras-loadtune, threads -> processes ({how}) at {switch_at}"
    rows = {
        plain: lambda r: sbs.timed_fit(model(), dataset(), 1),
        steady: wrapped(False),
        switch: wrapped(True),
    }
    results = sbs.alternate(rows, repeats)
    sbs.print_table(f"1 epoch x {steps} steps (wall s of fit)", results, {k: plain for k in rows})
    print(
        f"\n{'row':<42} {'median step ms':>14} {'max gap ms':>11} {'x step':>7}"
        f"  {'switch gap ms':>13} {'x step':>7}  at step"
    )
    for label, runs in results.items():
        for r, run in enumerate(runs):
            f = gap_figures(run, args.skip, switch_at if label == switch else None)
            line = (
                f"{label if r == 0 else '':<42} {f['median'] * 1e3:14.1f} {f['max'] * 1e3:11.1f} "
                f"{f['max'] / f['median']:7.1f}"
            )
            if label == switch:
                line += (
                    f"  {f['switch_max'] * 1e3:13.1f} {f['switch_max'] / f['median']:7.1f}  "
                    f"{f['switch_step']:.0f}; worker start-ups {run.info.get('startups')} s"
                )
            print(line)
    med = {
        label: {
            key: sbs.median([gap_figures(run, args.skip, switch_at)[key] for run in runs])
            for key in ("median", "max", "switch_max")
        }
        for label, runs in results.items()
    }
    base = med[plain]
    sw = med[switch]
    print(
        f"\nmedians over repeats: plain Keras steady largest gap {base['max'] * 1e3:.0f} ms "
        f"({base['max'] / base['median']:.1f}x its median step); switch gap "
        f"{sw['switch_max'] * 1e3:.0f} ms ({sw['switch_max'] / sw['median']:.1f}x the median step, "
        f"{sw['switch_max'] / base['max']:.1f}x plain Keras's largest gap)"
    )
    switch_runs = [gap_figures(run, args.skip, switch_at) for run in results[switch]]
    text = (
        "first switch in this process (cold process start): "
        f"{switch_runs[0]['switch_max'] * 1e3:.0f} ms"
    )
    if len(switch_runs) > 1:
        later = sbs.median([f["switch_max"] for f in switch_runs[1:]])
        text += f"; later switches: median {later * 1e3:.0f} ms"
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
