"""Golden trace: every trial, switch and note of ~15 simulated tuning scenarios.

A refactor of the decision layer should change no decision unless it means to. Run
this before and after, and diff the two outputs: each line is deterministic (the
simulator has a fake clock and seeded noise), so any difference is a behaviour change
to explain.

Usage:

```bash
python benchmarks/golden_trace.py > /tmp/before.txt
# ... change the decision layer ...
python benchmarks/golden_trace.py > /tmp/after.txt
diff /tmp/before.txt /tmp/after.txt
python benchmarks/golden_trace.py --only gil-2c-300   # one scenario
python benchmarks/golden_trace.py > tests/data/golden_trace.txt  # accept a change
```

`tests/test_decision_golden_trace.py` compares this output with
`tests/data/golden_trace.txt`: a changed decision fails that test and shows as a diff of
that file in review, to be explained in the commit that accepts it.

No TensorFlow, no Keras: it runs anywhere the package imports (a few seconds).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from keras_loadtune import LoaderConfig  # noqa: E402
from keras_loadtune.decision import TunerSettings  # noqa: E402
from keras_loadtune.simulation import (  # noqa: E402
    PipelineParams,
    SimulatedPipeline,
    simulate_tuning,
    static_fit_seconds,
)

GIB = 1 << 30

# name -> (cores, steps, baseline, pipeline params, simulate_tuning keywords)
SCENARIOS: dict[str, tuple[int, int, LoaderConfig, dict[str, Any], dict[str, Any]]] = {
    "latency-8c": (8, 800, LoaderConfig(), {"io_s": 0.040, "compute_s": 0.010}, {}),
    "latency-16c-fast": (
        16,
        3000,
        LoaderConfig(),
        {"io_s": 0.040, "numpy_s": 0.0005, "compute_s": 0.0066},
        {},
    ),
    "remote-100ms-8c": (8, 2000, LoaderConfig(), {"io_s": 0.1, "compute_s": 0.01}, {}),
    "numpy-2c": (2, 1500, LoaderConfig(), {"numpy_s": 0.02, "compute_s": 0.005}, {}),
    "numpy-8c": (8, 2000, LoaderConfig(), {"numpy_s": 0.02, "compute_s": 0.005}, {}),
    "gil-16c": (16, 1000, LoaderConfig(), {"python_s": 0.02, "compute_s": 0.005}, {}),
    "gil-2c-300": (
        2,
        300,
        LoaderConfig(),
        {"python_s": 0.015, "compute_s": 0.004, "trainer_gil_share": 0.5},
        {},
    ),
    "gil-8c-300": (
        8,
        300,
        LoaderConfig(),
        {"python_s": 0.015, "compute_s": 0.004, "trainer_gil_share": 0.5},
        {},
    ),
    "gil-share-8c": (
        8,
        2000,
        LoaderConfig(),
        {"python_s": 0.02, "compute_s": 0.005, "trainer_gil_share": 0.3},
        {},
    ),
    "latency-16c-hidden-cost": (
        16,
        3000,
        LoaderConfig(),
        {
            "io_s": 0.040,
            "numpy_s": 0.0005,
            "compute_s": 0.0066,
            "thread_wakeup_s": 0.005,
            "noise_cv": 0.15,
        },
        {},
    ),
    "gil-short-2c-300": (
        2,
        300,
        LoaderConfig(),
        {
            "python_s": 0.015,
            "compute_s": 0.014,
            "trainer_gil_share": 0.7,
            "trainer_cores": 2.0,
            "batch_nbytes": 1 << 16,
            "process_startup_s": 0.75,
        },
        {},
    ),
    "compute-bound": (8, 600, LoaderConfig(), {"io_s": 0.001, "compute_s": 0.02}, {}),
    "accel-20ms-16c": (
        16,
        3000,
        LoaderConfig(),
        {"io_s": 0.017, "numpy_s": 0.003, "compute_s": 0.002},
        {},
    ),
    "user-processes-2c": (
        2,
        600,
        LoaderConfig(2, 10, True),
        {"python_s": 0.015, "compute_s": 0.004},
        {},
    ),
    "not-picklable-8c": (
        8,
        1000,
        LoaderConfig(),
        {"python_s": 0.02, "compute_s": 0.005, "picklable": False},
        {},
    ),
    "drift-8c": (
        8,
        3000,
        LoaderConfig(),
        {"io_s": 0.01, "compute_s": 0.01},
        {"changes": {1500: {"io_s": 0.06}}},
    ),
    "noisy-latency-8c": (
        8,
        1500,
        LoaderConfig(),
        {"io_s": 0.03, "compute_s": 0.01, "noise_cv": 0.15, "seed": 3},
        {},
    ),
    # The real fits of issue #22 on 2 cores (3 epochs of 150 and 100 steps), with the
    # dataset's process pool start known to the tuner (a NumPy-only dataset) and 0.5 s
    # for Optuna's import and the study's storage.
    "fit-latency-2c-450": (
        2,
        450,
        LoaderConfig(),
        {"io_s": 0.040, "compute_s": 0.005, "noise_cv": 0.05},
        {"steps_per_epoch": 150, "study_open_s": 0.5},
    ),
    "fit-gil-2c-300-light-pool": (
        2,
        300,
        LoaderConfig(),
        {
            "python_s": 0.015,
            "compute_s": 0.010,
            "trainer_gil_share": 0.5,
            "process_startup_s": 0.4,
            "known_pool_start_s": 0.5,
            "noise_cv": 0.05,
        },
        {"steps_per_epoch": 100, "study_open_s": 0.5},
    ),
    "unknown-length-8c": (
        8,
        1500,
        LoaderConfig(),
        {"numpy_s": 0.02, "compute_s": 0.005},
        {"steps_known": False},
    ),
}


def static_grid_configs(cores: int, picklable: bool) -> list[LoaderConfig]:
    """A small grid a user could try by hand: threads and (if possible) processes."""
    threads = [LoaderConfig(w, w + 2) for w in (1, 2, 4, 8, 16, 32)]
    procs = [LoaderConfig(w, w + 2, True) for w in (1, 2, 4, 8, 16) if w <= cores]
    return threads + (procs if picklable else [])


def trace(name: str) -> list[str]:
    """The trace lines of one scenario."""
    cores, steps, baseline, params, kwargs = SCENARIOS[name]
    pipe = SimulatedPipeline(cores=cores, **params)
    settings = TunerSettings(cores=cores, seed=0, ram_budget_bytes=8 * GIB)
    logged: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("keras_loadtune")
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        res = simulate_tuning(pipe, settings, baseline=baseline, total_steps=steps, **kwargs)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    lines = [f"== {name}: {cores} cores, {steps} steps, baseline {baseline}"]
    lines += [f"  log: {message}" for message in logged]
    for r in res.session.trials:
        rate = f"{r.steps_per_s:.2f}" if r.steps_per_s is not None else "-"
        wait = f"{r.wait_fraction:.3f}" if r.wait_fraction is not None else "-"
        lines.append(
            f"  trial {r.number} {r.config} {r.state} {r.source} rate={rate} wait={wait} "
            f"steps={r.steps} {r.reason}".rstrip()
        )
    for step, config in res.switches:
        lines.append(f"  switch @{step} -> {config}")
    for note in res.session.notes:
        lines.append(f"  note: {note}")
    final = f"{res.final_steps_per_s:.2f}" if res.final_steps_per_s is not None else "-"
    phase = res.session.phase.name if res.session is not None else "-"
    lines.append(
        f"  final {res.final_config} total={res.total_time_s:.3f}s steady={final} phase={phase}"
    )
    lines.append(f"  epochs wait {' '.join(f'{f:.3f}' for f in res.epoch_fractions)}")
    lines.append(f"  report: {res.report.summary_line()}")
    # The map: the same fit at each config of a small static grid, no tuner.
    fit_kw = {k: v for k, v in kwargs.items() if k in ("steps_per_epoch",)}
    static = {
        config: static_fit_seconds(PipelineParams(cores=cores, **params), config, steps, **fit_kw)
        for config in static_grid_configs(cores, params.get("picklable", True))
        if "changes" not in kwargs
    }
    if static:
        best = min(static, key=static.get)
        lines.append(
            f"  vs best static {best} {static[best]:.3f}s: {res.total_time_s / static[best]:.3f}x"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    args = parser.parse_args(argv)
    for name in args.only:
        print("\n".join(trace(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
