"""Side-by-side runs for the real-job benchmarks: alternate rows, time fits, print medians.

The real-job scripts (`image_pipeline.py`, `remote_fetch.py`, `short_fit.py`,
`epoch_start.py`, `switch_gap.py`) each compare a few "rows" (plain Keras with the user's
config, keras-loadtune, a floor or a best static config) in one process. This module is
what they share:

- `reproduce_command`: the exact command line, backend included, printed first;
- `alternate`: runs every row once per repeat, rotating the order from repeat to repeat,
  so a noisy neighbour slows every row alike;
- `StepTimes` / `timed_fit`: wall time of `model.fit` and the time of every step end;
- `tuned_fit`: the keras-loadtune row (public API only: `LoadTuner`, `tuner.wrap`,
  `tuner.report`), with what the report claims next to what the fit measured;
- `print_table`: medians, ranges and ratios to a reference row.

Importing this module imports Keras: the scripts import it inside `main()`, so that a
worker process that imports a script's `__main__` stays light.

Example:

```python
rows = {"plain": lambda r: timed_fit(make_model(), make_ds(), 3)}
results = alternate(rows, repeats=3)
print_table("my job", results, reference={"plain": "plain"})
```
"""

from __future__ import annotations

import functools
import gc
import itertools
import math
import os
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

import keras_loadtune as klt


def reproduce_command(script: str, argv: Sequence[str]) -> str:
    """The command that reruns this benchmark, with the Keras backend that ran it.

    Args:
        script: File name under `benchmarks/`, e.g. `"image_pipeline.py"`.
        argv: The arguments given (`sys.argv[1:]`).

    Returns:
        e.g. `KERAS_BACKEND=jax python benchmarks/image_pipeline.py --quick`.
    """
    backend = os.environ.get("KERAS_BACKEND") or keras.backend.backend()
    args = " ".join(shlex.quote(a) for a in argv)
    return f"KERAS_BACKEND={backend} python benchmarks/{script} {args}".rstrip()


def library_version() -> str:
    """Where keras_loadtune was imported from and, in a git checkout, its commit and how
    many files under `keras_loadtune/` differ from it."""
    lib = Path(klt.__file__).resolve().parent
    text = f"keras_loadtune {klt.__version__} ({lib.parent}"
    try:
        git = ["git", "-C", str(lib.parent)]
        run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=10)
        commit = run([*git, "rev-parse", "--short", "HEAD"], check=True).stdout.strip()
        dirty = run([*git, "status", "--porcelain", "--", "keras_loadtune"]).stdout.splitlines()
        text += f", commit {commit}" + (f", {len(dirty)} uncommitted file(s)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return text + ")"


def print_header(script: str, argv: Sequence[str], what: str) -> None:
    """Prints the reproduce command, the machine, the library version and what is compared."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"$ {reproduce_command(script, argv)}")
    print(
        f"# {what}\n# keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{cores} core(s), load average {os.getloadavg()[0]:.2f}\n# {library_version()}",
        flush=True,
    )


@dataclass
class Run:
    """One timed fit of one row.

    Args:
        wall_s: Wall seconds of `model.fit`.
        steps: Training steps the fit ran.
        info: Anything the row wants shown or aggregated (claimed speedup, gaps, config).
    """

    wall_s: float
    steps: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class StepTimes(keras.callbacks.Callback):
    """Records `perf_counter()` at every epoch begin and at every train-batch end.

    Example:

    ```python
    clock = StepTimes()
    model.fit(ds, epochs=2, callbacks=[clock])
    clock.intervals(skip=2)   # step-to-step seconds, first 2 of each epoch left out
    ```
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch_begins: list[float] = []
        self.batch_ends: list[list[float]] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_begins.append(time.perf_counter())
        self.batch_ends.append([])

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.batch_ends[-1].append(time.perf_counter())

    def intervals(self, skip: int = 1) -> list[float]:
        """Seconds between consecutive step ends within each epoch; the first `skip`
        intervals of every epoch (tracing, queue filling) are left out."""
        out: list[float] = []
        for ends in self.batch_ends:
            gaps = [b - a for a, b in itertools.pairwise(ends)]
            out.extend(gaps[skip:])
        return out

    def first_step_s(self) -> list[float]:
        """Per epoch: seconds from `on_epoch_begin` to the end of its first step."""
        return [ends[0] - t0 for t0, ends in zip(self.epoch_begins, self.batch_ends) if ends]


def timed_fit(
    model: keras.Model,
    data: Any,
    epochs: int,
    callbacks: Sequence[Any] = (),
    *,
    collect: bool = True,
) -> Run:
    """Times `model.fit(data, epochs=epochs, verbose=0)`; `info["clock"]` is its `StepTimes`.

    Args:
        model: A compiled model (build a fresh one per run so every row pays tracing).
        data: What `fit` gets.
        epochs: Epochs to run.
        callbacks: Extra callbacks (the tuner), called before the clock.
        collect: Run `gc.collect()` first (0.2 s with TensorFlow loaded: outside the
            clock). A caller timing more than the fit collects before its own clock
            and passes `False`.

    Returns:
        A `Run` with the wall time, the number of steps and the step clock.
    """
    if collect:
        gc.collect()
    clock = StepTimes()
    start = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0, callbacks=[*callbacks, clock])
    wall = time.perf_counter() - start
    steps = sum(len(ends) for ends in clock.batch_ends)
    return Run(wall, steps, {"clock": clock})


def tuned_fit(
    model: keras.Model,
    dataset: keras.utils.PyDataset,
    epochs: int,
    **tuner_kwargs: Any,
) -> Run:
    """The keras-loadtune row: `LoadTuner` + `tuner.wrap(dataset)`, tuning from scratch.

    `storage=None` (every repeat tunes cold; warm starts are `warm_start.py`'s subject),
    `verbose=0`, `seed=0` unless given. `info` holds the report, the chosen config, the
    report's claimed steady-state speedup, and the fit time the report implies for the
    user's own config (steps / the baseline rate it measured).

    Args:
        model: A fresh compiled model.
        dataset: The user's dataset, with the user's config on it.
        epochs: Epochs to run.
        **tuner_kwargs: Passed to `LoadTuner`.

    Returns:
        A `Run` (see above).
    """
    kwargs: dict[str, Any] = {"seed": 0, "verbose": 0, "storage": None, **tuner_kwargs}
    tuner = klt.LoadTuner(**kwargs)
    with tuner.wrap(dataset) as train:
        run = timed_fit(model, train, epochs, callbacks=[tuner])
    report = tuner.report
    base_rate = report.baseline_steps_per_s
    run.info.update(
        report=report,
        config=str(tuner.best_config) if tuner.best_config is not None else "(none)",
        decision=report.decision,
        claimed=report.speedup,
        tuning_s=report.tuning_seconds,
        tuning_steps=report.tuning_steps,
        implied_baseline_s=(run.steps / base_rate) if base_rate else None,
    )
    return run


def alternate(
    rows: dict[str, Callable[[int], Run]], repeats: int, *, log: bool = True
) -> dict[str, list[Run]]:
    """Runs every row once per repeat, rotating the order by one each repeat.

    Args:
        rows: Row label -> `run(repeat) -> Run`.
        repeats: Repeats (>= 1).
        log: Print one line per run.

    Returns:
        Row label -> its runs, in repeat order.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}.")
    labels = list(rows)
    results: dict[str, list[Run]] = {label: [] for label in labels}
    for r in range(repeats):
        k = r % len(labels)
        for label in labels[k:] + labels[:k]:
            try:
                run = rows[label](r)
            except Exception as exc:  # a failing row is reported, not fatal
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                run = Run(float("nan"), 0, {"error": f"{type(exc).__name__}: {first}"[:300]})
                if log:
                    print(f"  repeat {r + 1}/{repeats}  {label:<36} ERROR {run.info['error']}")
                results[label].append(run)
                continue
            results[label].append(run)
            if log:
                extra = f"  -> {run.info['config']}" if "config" in run.info else ""
                print(
                    f"  repeat {r + 1}/{repeats}  {label:<36} {run.wall_s:7.2f} s{extra}",
                    flush=True,
                )
    return results


def median(xs: Sequence[float | None]) -> float:
    """Median of the finite values, NaN when there are none (failed runs are NaN)."""
    finite = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(finite) if finite else float("nan")


def median_wall(runs: Sequence[Run]) -> float:
    """Median wall seconds of `runs`."""
    return median([r.wall_s for r in runs])


def print_table(
    title: str,
    results: dict[str, list[Run]],
    reference: dict[str, str],
    notes: dict[str, str] | None = None,
) -> dict[str, float]:
    """Prints medians (min-max) per row and the ratio to each row's reference row.

    Args:
        title: Heading line.
        results: From `alternate`.
        reference: Row label -> label of the row it is compared with (itself for 1.00x).
        notes: Row label -> text shown at the end of its line.

    Returns:
        Row label -> ratio of its median to its reference's median.
    """
    notes = notes or {}
    width = max(len(label) for label in results) + 2
    print(f"\n{title}")
    print(f"{'row':<{width}} {'median s':>9} {'(min-max)':>15} {'ratio':>7}  vs / notes")
    ratios: dict[str, float] = {}
    for label, runs in results.items():
        walls = [r.wall_s for r in runs if math.isfinite(r.wall_s)]
        ref = reference.get(label)
        ratio = median(walls) / median_wall(results[ref]) if ref else float("nan")
        ratios[label] = ratio
        span = f"({min(walls):.2f}-{max(walls):.2f})" if walls else "(no run)"
        vs = f"x {ref}" if ref and ref != label else ""
        errors = [r.info["error"] for r in runs if "error" in r.info]
        failed = f"{len(errors)} failed: {'; '.join(sorted(set(errors)))}" if errors else ""
        text = "  ".join(t for t in (vs, notes.get(label, ""), failed) if t)
        print(f"{label:<{width}} {median(walls):9.2f} {span:>15} {ratio:7.3f}  {text}")
    return ratios


def tuned_summary(tuned: Sequence[Run], plain: Sequence[Run]) -> str:
    """What the report claimed against what the wall clock measured, for one tuned row.

    Args:
        tuned: Runs of a keras-loadtune row.
        plain: Runs of plain Keras with the same user config.

    Returns:
        Lines: configs chosen, decision, tuning cost, the report's claimed steady-state
        speedup, the measured wall speedup (plain / tuned medians), and the report's
        implied fit time at the user's config against plain Keras's measured time.
    """
    plain_s = median_wall(plain)
    tuned_s = median_wall(tuned)
    measured = plain_s / tuned_s
    claimed = [r.info["claimed"] for r in tuned if r.info.get("claimed")]
    implied = [r.info["implied_baseline_s"] for r in tuned if r.info.get("implied_baseline_s")]
    configs = sorted({r.info.get("config", "?") for r in tuned})
    decisions = sorted({r.info.get("decision", "?") for r in tuned})
    lines = [
        f"    chose {'; '.join(configs)} ({', '.join(decisions)}); tuning "
        f"{median([r.info.get('tuning_s') or 0.0 for r in tuned]):.2f} s, "
        f"{median([r.info.get('tuning_steps') or 0 for r in tuned]):.0f} steps (medians)",
    ]
    if claimed:
        c = median(claimed)
        lines.append(
            f"    report claims {c:.2f}x (steady state over your config); measured wall "
            f"speedup {measured:.2f}x; claim / measured = {c / measured:.2f}"
        )
    else:
        lines.append(f"    report claims no speedup; measured wall speedup {measured:.2f}x")
    if implied:
        i = median(implied)
        lines.append(
            f"    report's rate for your config implies {i:.2f} s for these steps (the rate "
            f"leaves out tracing and epoch starts); "
            f"plain Keras measured {plain_s:.2f} s ({i / plain_s:.2f}x); implied net "
            f"effect {i / tuned_s:.2f}x vs measured {measured:.2f}x"
        )
    return "\n".join(lines)


def add_common_args(parser: Any, repeats: int) -> None:
    """`--quick` and `--repeats` (every real-job script has both)."""
    parser.add_argument("--quick", action="store_true", help="smoke run (< 60 s)")
    parser.add_argument(
        "--repeats", type=int, default=None, help=f"repeats, medians shown (default {repeats})"
    )
