"""Simulator fidelity: the simulated pipeline, fed costs measured here, against real fits.

For each scenario (see `scenarios.py`) a worker process measures, on this machine:

- the loader's costs: wall and thread-CPU seconds of `__getitem__` in one thread (median
  of `--samples` batches), their jitter (CV of the wall times) and the batch size;
- the trainer: the median step of a fit on in-memory batches (`compute_s`), the process
  CPU seconds per wall second during that fit (`trainer_cores`), and the share of it
  the training thread spends on its own CPU, running Python with the GIL held
  (`trainer_gil_share`);
- the engine's process start-up: the first process pool (forkserver + 2 workers) and
  the cost per added worker process (`Prefetcher.stats.startups`); the forkserver then
  runs for the real fits, so the simulated runs get `process_startup_s=0` too;
- three real fits of `epochs x steps`: Keras's default config, the oracle (the fastest
  config of `strategies.oracle_grid`, its search not counted) and keras-loadtune (tuning
  included, from the default config);
- the fixed cost of a fit (tracing, epoch ends): the in-memory fit's wall time minus its
  steps x `compute_s`, added to every simulated time.

The parent process (no Keras) then simulates the same three strategies with
`keras_loadtune.simulation.pipeline` and prints real vs simulated seconds.

Usage:

```bash
python benchmarks/simulator_fidelity.py                                  # 3 scenarios
python benchmarks/simulator_fidelity.py --scenarios latency-sleep --epochs 1 --steps 100
python benchmarks/simulator_fidelity.py --record tests/data/machine_recording.json  # quiet machine
```

`--record` measures only the costs and, per scenario, the steady steps/s of a small
grid of configs (`GRID`: inline, 2/4/8 threads, 2 processes) through the engine, and
stores them: `tests/test_decision_simulator_fidelity.py` checks that the simulator,
fed those costs, predicts each config's steps/s.

This module imports neither TensorFlow nor Keras at top level (the forkserver preloads
`__main__`); only the per-scenario worker processes do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

DEFAULT_SCENARIOS = ("latency-sleep", "numpy", "gil-python")
GIL_HOLDING = ("gil-python",)  # the CPU part of their batches holds the GIL
RECORD_SCENARIOS = ("latency-sleep", "gil-python", "numpy", "jpeg", "compute")


# ------------------------------------------------------------------- worker (Keras here)
def _measure(
    name: str, epochs: int, steps: int, samples: int, *, grid_only: bool = False
) -> dict[str, Any]:
    import keras  # noqa: F401  (imported here, never in the parent)
    from scenarios import SCENARIOS
    from strategies import DEFAULT_CONFIG, Runner, oracle_grid

    scenario = SCENARIOS[name]
    out: dict[str, Any] = {"scenario": name, "epochs": epochs, "steps": steps}
    with scenario.environment(max_requests=100_000) as env:
        runner = Runner(scenario, "full", env)
        runner.epochs, runner.steps = epochs, steps
        _costs(out, scenario, runner, env, samples)
        if grid_only:
            out["engine_grid"] = _engine_grid(scenario, env, steps)
            return out

        # Real fits.
        runner.search_oracle()
        out["oracle_config"] = dict(runner.oracle or DEFAULT_CONFIG)
        out["oracle_grid"] = oracle_grid(False)
        for strategy in ("keras-default", "oracle", "keras-loadtune"):
            result = runner.run(strategy, 0)
            out[strategy] = {
                "wall_s": result.wall_s,
                "config": result.config,
                "error": result.error,
                "tuning_s": result.tuning_s,
            }
    return out


# Configs whose steady-state steps/s `--record` measures through the engine, each
# `REPEATS` times (alternating; the median run is stored with all rates).
GRID = ((1, 10, False), (2, 4, False), (4, 6, False), (8, 10, False), (2, 4, True))
REPEATS = 3


def _engine_grid(scenario: Any, env: dict, steps: int) -> list[dict[str, Any]]:
    """Steady-state steps/s of each `GRID` config through keras-loadtune's engine (a
    wrapped dataset, no tuner): one epoch of `steps`, timed between batch begins after
    the refill (one traced model for all)."""
    import keras

    import keras_loadtune as klt
    from keras_loadtune import LoaderConfig
    from keras_loadtune.engine import in_flight

    model = scenario.make_model()
    stamps: list[float] = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            stamps.append(time.perf_counter())

    rates: list[dict[str, Any]] = []
    # A first fit warms the model (tracing, allocations) so that the grid's first config
    # is not measured on a model still warming up.
    with klt.wrap(scenario.make_dataset(min(steps, 60), env), config=LoaderConfig()) as data:
        model.fit(data, epochs=1, verbose=0)
    runs: dict[LoaderConfig, list[dict[str, float]]] = {}
    for _ in range(REPEATS):  # configs alternate; each config's median run is kept
        for workers, queue, processes in GRID:
            config = LoaderConfig(workers, queue, processes)
            with klt.wrap(scenario.make_dataset(steps, env), config=config) as data:
                stamps.clear()
                model.fit(data, epochs=1, verbose=0, callbacks=[Stamp()])
                records = list(data.stats)
            skip = min(len(stamps) // 3, 10 + in_flight(config))
            span = stamps[-1] - stamps[skip]
            rate = (len(stamps) - 1 - skip) / span if span > 0 else float("nan")
            steady = records[skip:] or records
            runs.setdefault(config, []).append(
                {
                    "steps_per_s": rate,
                    # What the engine recorded in the fit (the tuner's own evidence).
                    "produce_wall_s": statistics.median(r.produce_wall_s for r in steady),
                    "produce_cpu_s": statistics.median(r.produce_cpu_s for r in steady),
                    "wait_s": statistics.fmean(r.wait_s for r in steady),
                }
            )
            print(f"  {scenario.name}: {config}: {rate:.1f} steps/s", flush=True)
    for config, done in runs.items():
        done.sort(key=lambda run: run["steps_per_s"])
        median = done[len(done) // 2]
        rates.append(
            {
                "config": config.to_dict(),
                **median,
                "steps_per_s_runs": [run["steps_per_s"] for run in done],
            }
        )
    return rates


def _costs(out: dict[str, Any], scenario: Any, runner: Any, env: dict, samples: int) -> None:
    """Measures the loader's and the trainer's costs into `out`."""
    import numpy as np
    from scenarios import InMemoryDataset
    from strategies import _fresh_model

    from keras_loadtune import LoaderConfig
    from keras_loadtune.engine import Prefetcher

    epochs, steps = out["epochs"], out["steps"]
    ds = scenario.make_dataset(steps, env)
    walls, cpus = [], []
    for i in range(samples):
        w0, c0 = time.perf_counter(), time.thread_time()
        batch = ds[i]
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - w0)
    out["produce_wall_s"] = statistics.median(walls)
    out["produce_cpu_s"] = statistics.median(cpus)
    out["jitter_cv"] = statistics.pstdev(walls) / max(statistics.mean(walls), 1e-12)
    out["batch_nbytes"] = int(sum(np.asarray(a).nbytes for a in batch))
    out["loader_gil_share"] = _loader_gil_share(ds, samples)

    # The trainer on in-memory batches: step time, cores, GIL sensitivity.
    floor_data = InMemoryDataset(runner.floor_batches, steps)
    model = _fresh_model(scenario)
    model.fit(InMemoryDataset(runner.floor_batches, 3), epochs=1, verbose=0)  # trace
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    model.fit(floor_data, epochs=epochs, verbose=0)
    wall = time.perf_counter() - t0
    cpu, main_cpu = time.process_time() - c0, time.thread_time() - m0
    floor = runner.run("floor", 0)
    # The mean steady step (a CPU step's times are skewed: the median understates it),
    # through the engine as the grid's fits run (on TensorFlow, plain Keras feeds a
    # PyDataset through tf.data, which costs a big batch milliseconds per step).
    import keras_loadtune as klt

    with klt.wrap(floor_data, config=LoaderConfig()) as wrapped:
        out["compute_s"] = _steady_step_s(model, wrapped, epochs)
    out["median_step_s"] = floor.extra["median_step_s"]
    out["floor_wall_s"] = floor.wall_s
    out["trainer_cores"] = cpu / wall
    # The share of the step the training thread runs Python (holding the GIL): its own
    # CPU time over the wall time; the framework's kernels run on its own threads.
    out["trainer_gil_share"] = min(max(main_cpu / wall, 0.0), 1.0)

    # The engine's process start-up: forkserver + 2 workers, then 2 more workers.
    with Prefetcher(ds, LoaderConfig(2, 4, True)) as pf:
        pf.begin_pass(range(8))
        pf.next()
        pf.reconfigure(LoaderConfig(4, 4, True))
        pf.next()
        startups = [(r.workers_started, r.seconds) for r in pf.stats.startups]
    first, more = startups[0], startups[-1]
    out["process_worker_s"] = more[1] / max(more[0], 1)
    out["process_startup_s"] = max(first[1] - 2 * out["process_worker_s"], 0.0)


def _steady_step_s(model: Any, data: Any, epochs: int) -> float:
    """Mean seconds per step between batch begins, after the first few steps."""
    import keras

    stamps: list[float] = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            stamps.append(time.perf_counter())

    model.fit(data, epochs=1, verbose=0, callbacks=[Stamp()])
    skip = min(len(stamps) // 3, 10)
    return (stamps[-1] - stamps[skip]) / max(len(stamps) - 1 - skip, 1)


def _loader_gil_share(ds: Any, samples: int) -> float:
    """Share of the loader's CPU time that holds the GIL, from its 1- vs 2-thread speed.

    Two threads making batches take `t2` where one takes `t1` for the same batches; with
    a share `h` of the CPU holding the GIL (and the rest running on a second core),
    `t2 / t1 = (1 + h) / 2`, so `h = 2 t2 / t1 - 1` (latency in the batch halves too,
    so a latency-bound loader reads as 0: it does not matter for it).
    """
    from concurrent.futures import ThreadPoolExecutor

    n = max(2 * (samples // 2), 8)
    indices = [i % max(len(ds), 1) for i in range(n)]
    t0 = time.perf_counter()
    for i in indices:
        ds[i]
    t1 = time.perf_counter() - t0
    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        list(pool.map(ds.__getitem__, indices))
        t2 = time.perf_counter() - t0
    return min(max(2.0 * t2 / t1 - 1.0, 0.0), 1.0) if t1 > 0 else 0.0


# ---------------------------------------------------------------- parent (no Keras here)
def _simulate(m: dict[str, Any], cores: int) -> dict[str, Any]:
    from keras_loadtune import LoaderConfig
    from keras_loadtune.decision.settings import TunerSettings
    from keras_loadtune.simulation import (
        SimulatedPipeline,
        params_from_measurement,
        simulate_tuning,
    )

    total = m["epochs"] * m["steps"]
    # The forkserver was started by the start-up measurement, before the real fits: they
    # did not pay for it, so the simulated runs do not either.
    params = params_from_measurement(
        m,
        cores,
        gil_holding=m["scenario"] in GIL_HOLDING,
        process_startup_s=0.0,
        process_worker_s=m["process_worker_s"],
    )
    overhead = max(m["floor_wall_s"] - total * m["compute_s"], 0.0)

    def static(config: LoaderConfig) -> float:
        pipe = SimulatedPipeline(params)
        pipe.run_steps(config, total)
        return pipe.now + overhead

    oracle_cfg = LoaderConfig.from_dict(m["oracle_config"])
    grid = [LoaderConfig.from_dict(c) for c in m["oracle_grid"]]
    sim_oracle_cfg, sim_oracle = min(((c, static(c)) for c in grid), key=lambda t: t[1])
    tuned = simulate_tuning(
        SimulatedPipeline(params),
        TunerSettings(cores=cores, seed=0),
        baseline=LoaderConfig(),
        total_steps=total,
    )
    return {
        "params": {k: getattr(params, k) for k in params.__dataclass_fields__},
        "overhead_s": overhead,
        "keras-default": static(LoaderConfig()),
        "oracle": static(oracle_cfg),
        "oracle_config": str(oracle_cfg),
        "sim_oracle": sim_oracle,
        "sim_oracle_config": str(sim_oracle_cfg),
        "keras-loadtune": tuned.total_time_s + overhead,
        "tuned_config": str(tuned.session.best_config),
    }


def _row(name: str, strategy: str, real: float, sim: float, note: str) -> str:
    err = (sim / real - 1.0) * 100 if real and math.isfinite(real) else float("nan")
    return f"| {name} | {strategy} | {real:.2f} | {sim:.2f} | {err:+.0f}% | {note} |"


def _run_worker(name: str, args: argparse.Namespace, *, grid_only: bool = False) -> dict:
    """Measures one scenario in a fresh interpreter (Keras there, never here)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_scenario",
            name,
            "--_json",
            str(path),
            "--epochs",
            str(args.epochs),
            "--steps",
            str(args.steps),
            "--samples",
            str(args.samples),
        ]
        if grid_only:
            cmd.append("--_grid_only")
        print(f"measuring {name} ...", flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios", nargs="+", default=None, help="default: 3 (with --record: 4) scenarios"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        help="record each scenario's costs and the engine's steady steps/s of a small grid "
        "of configs (no tuner) into this JSON (tests/data/machine_recording.json is what "
        "tests/test_decision_simulator_fidelity.py checks the simulator against)",
    )
    parser.add_argument("--_scenario", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_json", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_grid_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._scenario is not None:
        data = _measure(
            args._scenario, args.epochs, args.steps, args.samples, grid_only=args._grid_only
        )
        args._json.write_text(json.dumps(data), encoding="utf-8")
        return 0

    cores = os.cpu_count() or 1
    if args.record is not None:
        scenarios = args.scenarios or RECORD_SCENARIOS
        recorded = [_run_worker(name, args, grid_only=True) for name in scenarios]
        payload = {"cores": cores, "platform": sys.platform, "scenarios": recorded}
        args.record.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"recorded {len(recorded)} scenarios into {args.record}")
        return 0
    results = []
    for name in args.scenarios or DEFAULT_SCENARIOS:
        measured = _run_worker(name, args)
        results.append({"measured": measured, "simulated": _simulate(measured, cores)})

    print(f"\n{cores} cores; seconds for the whole fit (tuning included for keras-loadtune)\n")
    print("| scenario | strategy | real s | simulated s | error | configs (real / simulated) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        m, s = r["measured"], r["simulated"]
        name = m["scenario"]
        print(_row(name, "keras-default", m["keras-default"]["wall_s"], s["keras-default"], ""))
        print(
            _row(
                name,
                "oracle",
                m["oracle"]["wall_s"],
                s["oracle"],
                f"{m['oracle']['config']}; simulated best of the grid: "
                f"{s['sim_oracle_config']} {s['sim_oracle']:.2f} s",
            )
        )
        print(
            _row(
                name,
                "keras-loadtune",
                m["keras-loadtune"]["wall_s"],
                s["keras-loadtune"],
                f"{m['keras-loadtune']['config']} / {s['tuned_config']}",
            )
        )
    print("\nmeasured costs:")
    for r in results:
        m = r["measured"]
        keys = (
            "produce_wall_s",
            "produce_cpu_s",
            "jitter_cv",
            "compute_s",
            "trainer_cores",
            "trainer_gil_share",
            "process_startup_s",
            "process_worker_s",
        )
        print(f"  {m['scenario']}: " + ", ".join(f"{k}={m[k]:.4g}" for k in keys))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
