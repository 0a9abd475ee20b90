"""Benchmark suite: keras-loadtune against every alternative a user has, side by side.

Runs real Keras fits for each scenario (see `scenarios.py`) and strategy (see
`strategies.py`), then writes a Markdown report (`BENCHMARKS.md` by default), a bar chart
(`benchmarks.png` next to the `benchmarks/` scripts, or next to `--out` when it is written
elsewhere), prints the table, the ratios and PASS/MISS for every target.

Usage:

```bash
python benchmarks/run.py                     # full suite (< 15 min on 2 cores)
python benchmarks/run.py --quick             # CI smoke test (< 2 min)
python benchmarks/run.py --repeats 5 --scenarios latency-sleep gil-python
```

Every scenario runs in its own Python process (quick mode: one process for all), so no
scenario inherits another's memory or threads. Within a scenario the strategies alternate
inside each repeat (their order rotates from repeat to repeat) and medians are reported,
so a noisy neighbour slows every strategy alike rather than one of them.

This module imports neither TensorFlow nor Keras at top level: keras-loadtune's
forkserver preloads `__main__`, and worker processes must stay light.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:  # after PYTHONPATH: a library snapshot there wins
    sys.path.append(str(ROOT))

MiB = 1 << 20
STRATEGIES = ("keras-default", "folklore", "oracle", "tf.data", "keras-loadtune", "floor")
SCENARIO_NAMES = (
    "latency-sleep",
    "latency-http",
    "gil-python",
    "numpy",
    "compute",
    "memory",
    "seed-article",
)
KIND = {
    "latency-sleep": "latency",
    "latency-http": "latency",
    "gil-python": "gil",
    "numpy": "numpy",
    "compute": "compute",
    "memory": "memory",
    "seed-article": "seed",
}
TFDATA_NOISE = 1.05
SIM_CORES = (8, 16, 64)
SIM_PROCESS_STARTUP_S = 3.0
# The quick run is one worker for every scenario: about 2 min on an idle 2-core machine,
# 2-3x that next to two processes that each burn a core. A worker past its limit is a
# failed row (exit 1), so the quick limit is sized for a busy machine, under the smoke
# test's own 600 s.
SCENARIO_TIMEOUT_S = {"full": 420, "quick": 540}


# ============================================================================ worker side
def _worker(args: argparse.Namespace) -> int:
    """Runs the given scenarios in this process; writes raw results to `args.json`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: F401  (import cost paid once, before any timing)
    import strategies as st
    from scenarios import SCENARIOS

    out: dict[str, Any] = {"scenarios": {}}
    path = Path(args.json)

    def flush() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1, default=str))
        tmp.replace(path)

    quick = args.mode == "quick"
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        epochs, steps = scenario.size(args.mode)
        names = list(st.BASE_STRATEGIES) + list(scenario.extra)
        grid = len(st.oracle_grid(quick)) * min(steps, 12 if quick else 50)
        budget = 2 * (args.repeats * len(names) * epochs * steps + grid + 10) + 100
        t_scenario = time.perf_counter()
        record: dict[str, Any] = {
            "title": scenario.title,
            "note": scenario.note,
            "epochs": epochs,
            "steps": steps,
            "runs": [],
        }
        out["scenarios"][name] = record
        with scenario.environment(max_requests=budget) as env:
            runner = st.Runner(scenario, args.mode, env)
            # Warm-up: first fit of the process pays TF/oneDNN initialisation, untimed.
            runner.run("floor", -1)
            record["profile"] = runner.profile_loader()
            t0 = time.perf_counter()
            runner.search_oracle()
            record["oracle_search_s"] = time.perf_counter() - t0
            record["oracle_config"] = st.describe(runner.oracle or {})
            record["oracle_grid"] = runner.oracle_grid
            record["batch_nbytes"] = int(sum(a.nbytes for a in runner.floor_batches[0]))
            print(
                f"[{name}] oracle grid ({record['oracle_search_s']:.1f} s): "
                f"best {record['oracle_config']}",
                flush=True,
            )
            for r in range(args.repeats):
                k = r % len(names)
                for strategy in names[k:] + names[:k]:
                    res = runner.run(strategy, r)
                    record["runs"].append(res.to_dict())
                    flush()
                    extra = f" -> {res.config}" if strategy == "keras-loadtune" else ""
                    err = f" ERROR {res.error}" if res.error else ""
                    print(
                        f"[{name}] repeat {r + 1}/{args.repeats} {strategy:<16} "
                        f"{res.wall_s:7.2f} s  peak RSS {res.peak_rss / MiB:6.0f} MiB{extra}{err}",
                        flush=True,
                    )
        if "requests" in env:
            record["http_requests"] = env["requests"]
            record["http_request_budget"] = budget
        record["scenario_wall_s"] = time.perf_counter() - t_scenario
        flush()
    return 0


# ============================================================================ parent side
def _machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("tensorflow-cpu", "tensorflow", "keras", "optuna", "numpy", "psutil", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import psutil

        ram = psutil.virtual_memory().total
    except Exception:
        ram = 0
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    import keras_loadtune

    lib = Path(keras_loadtune.__file__).resolve().parent.parent
    library = f"keras_loadtune {keras_loadtune.__version__} from {lib}"
    try:
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "keras_loadtune"],
                               capture_output=True, text=True).stdout.splitlines()  # fmt: skip
        if lib == ROOT:
            library += f" (repository at commit {commit}"
            library += f", {len(dirty)} uncommitted file(s) in keras_loadtune/)" if dirty else ")"
        else:
            library += f" (a snapshot; repository HEAD is {commit})"
    except (OSError, subprocess.CalledProcessError):
        pass

    accelerator = "none"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        accelerator = ", ".join(smi.stdout.split("\n")[:1]).strip() or accelerator
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "accelerator": accelerator,
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "ram_gib": ram / (1 << 30),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "library": library,
        "loadavg_start": os.getloadavg(),
    }


def _run_workers(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    groups = [args.scenarios] if args.mode == "quick" else [[s] for s in args.scenarios]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [*filter(None, [env.get("PYTHONPATH")]), str(HERE), str(ROOT)]
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    merged: dict[str, Any] = {"scenarios": {}, "failures": {}}
    for i, group in enumerate(groups):
        path = tmp / f"group{i}.json"
        log = tmp / f"group{i}.log"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_worker",
            "--mode",
            args.mode,
            "--repeats",
            str(args.repeats),
            "--json",
            str(path),
            "--scenarios",
            *group,
        ]
        timeout = SCENARIO_TIMEOUT_S[args.mode] * (len(group) if args.mode == "full" else 1)
        timeout = int(timeout * max(1.0, args.repeats / 3))
        print(f"== {', '.join(group)} ({args.mode}, {args.repeats} repeat(s))", flush=True)
        with open(log, "w") as errf:
            try:
                proc = subprocess.run(cmd, env=env, stderr=errf, timeout=timeout, cwd=ROOT)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        if path.exists():
            merged["scenarios"].update(json.loads(path.read_text())["scenarios"])
        if rc != 0:
            tail = log.read_text()[-3000:]
            for name in group:
                merged["failures"][name] = f"worker exit {rc}"
            print(f"!! worker for {group} ended with {rc}; stderr tail:\n{tail}", flush=True)
    return merged


# ---------------------------------------------------------------------------- aggregation
def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def aggregate(raw: dict[str, Any]) -> dict[str, Any]:
    """Per scenario and strategy: median/min/max wall, ratios, RSS, chosen configs."""
    out: dict[str, Any] = {}
    for name, rec in raw["scenarios"].items():
        by: dict[str, list[dict]] = defaultdict(list)
        for run in rec["runs"]:
            by[run["strategy"]].append(run)
        rows: dict[str, dict[str, Any]] = {}
        for strategy, runs in by.items():
            walls = [r["wall_s"] for r in runs if r["error"] is None and math.isfinite(r["wall_s"])]
            added = [r["peak_rss"] - r["rss_before"] for r in runs if r["error"] is None]
            rows[strategy] = {
                "median": _median(walls),
                "min": min(walls) if walls else float("nan"),
                "max": max(walls) if walls else float("nan"),
                "n": len(walls),
                "errors": [r["error"] for r in runs if r["error"]],
                "peak_rss": max((r["peak_rss"] for r in runs), default=0),
                "added_rss": max(added, default=0),
                "configs": sorted({r["config"] for r in runs if r["config"]}),
                "runs": runs,
            }
        floor = rows.get("floor", {}).get("median", float("nan"))
        oracle = rows.get("oracle", {}).get("median", float("nan"))
        floor_added = rows.get("floor", {}).get("added_rss", 0)
        for row in rows.values():
            row["x_floor"] = row["median"] / floor if floor else float("nan")
            row["x_oracle"] = row["median"] / oracle if oracle else float("nan")
            row["loader_rss"] = row["added_rss"] - floor_added
        tuned = rows.get("keras-loadtune")
        if tuned:
            runs = [r for r in tuned["runs"] if r["error"] is None]
            tuned["tuning_s"] = _median([r["tuning_s"] for r in runs if r["tuning_s"] is not None])
            tuned["decisions"] = sorted({r["decision"] for r in runs if r["decision"]})
            tuned["process_repeats"] = sum(1 for r in runs if r["process_mode"])
            tuned["ram_budget"] = max((r["extra"].get("ram_budget", 0) for r in runs), default=0)
            tuned["per_repeat"] = [r["config"] for r in runs]
        out[name] = {"rows": rows, "record": rec}
    return out


def _fmt(x: float, nd: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{nd}f}"


def targets(agg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, checked on the medians: PASS / MISS with the numbers."""
    checks: list[dict[str, Any]] = []

    def add(scenario: str, target: str, ok: bool | None, measured: str) -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        checks.append({"scenario": scenario, "target": target, "verdict": verdict, "why": measured})

    for name, data in agg.items():
        rows = data["rows"]
        t = rows.get("keras-loadtune")
        if t is None or not math.isfinite(t["median"]):
            add(name, "keras-loadtune ran", False, "no successful keras-loadtune run")
            continue
        kind = KIND.get(name, "")
        d, f = rows.get("keras-default"), rows.get("floor")
        o, tf = rows.get("oracle"), rows.get("tf.data")
        if kind == "latency" and f and d:
            add(
                name,
                "<= 1.25x floor",
                t["median"] <= 1.25 * f["median"],
                f"{t['median']:.2f} s vs floor {f['median']:.2f} s = {t['x_floor']:.2f}x",
            )
            speedup = d["median"] / t["median"]
            add(
                name,
                ">= 3x faster than Keras default",
                speedup >= 3.0,
                f"default {d['median']:.2f} s / {t['median']:.2f} s = {speedup:.2f}x",
            )
        if kind == "gil" and o:
            add(
                name,
                "<= 1.15x oracle",
                t["median"] <= 1.15 * o["median"],
                f"{t['median']:.2f} s vs oracle ({', '.join(o['configs'])}) "
                f"{o['median']:.2f} s = {t['x_oracle']:.2f}x",
            )
            n = len(t["per_repeat"])
            add(
                name,
                "picks processes",
                n > 0 and t["process_repeats"] == n,
                f"processes in {t['process_repeats']}/{n} repeats: {'; '.join(t['per_repeat'])}",
            )
        if kind == "compute" and d:
            ratio = t["median"] / d["median"]
            add(
                name,
                "<= 1.05x Keras default",
                ratio <= 1.05,
                f"{t['median']:.2f} s vs default {d['median']:.2f} s = {ratio:.3f}x",
            )
        if tf and math.isfinite(tf["median"]):
            ratio = t["median"] / tf["median"]
            add(
                name,
                f"beats or ties tf.data AUTOTUNE (<= {TFDATA_NOISE:.2f}x)",
                ratio <= TFDATA_NOISE,
                f"{t['median']:.2f} s vs tf.data {tf['median']:.2f} s = {ratio:.2f}x",
            )
        budget = t.get("ram_budget") or 0
        if budget:
            add(
                name,
                "never over the RAM budget",
                t["loader_rss"] <= budget,
                f"loader-added peak RSS {t['loader_rss'] / MiB:.0f} MiB "
                f"(raw +{t['added_rss'] / MiB:.0f} MiB during fit) vs budget "
                f"{budget / MiB:.0f} MiB",
            )
    return checks


# ---------------------------------------------------------------------------- simulation
def simulate(agg: dict[str, Any], mode: str) -> list[dict[str, Any]] | None:
    """Scaling to 8/16/64 cores in the decision layer's simulated pipeline (not measured)."""
    try:
        from keras_loadtune.config import LoaderConfig
        from keras_loadtune.decision.settings import TunerSettings
        from keras_loadtune.simulation import (
            PipelineParams,
            SimulatedPipeline,
            simulate_tuning,
            static_grid,
        )
    except Exception as exc:  # the simulator is optional
        print(f"(simulated scaling skipped: {exc})")
        return None
    sim_kind = {"gil-python": "python_s"}
    rows = []
    for name, data in agg.items():
        rec, table = data["record"], data["rows"]
        floor = table.get("floor")
        prof = rec.get("profile")
        if not floor or not prof:
            continue
        steps_list = [r["extra"].get("median_step_s") for r in floor["runs"]]
        compute_s = _median([s for s in steps_list if s])
        if not math.isfinite(compute_s):
            continue
        cpu = prof["produce_cpu_s"]
        io = max(prof["produce_wall_s"] - cpu, 0.0)
        costs = {"io_s": io, sim_kind.get(name, "numpy_s"): cpu}
        total = rec["epochs"] * rec["steps"]
        for cores in SIM_CORES if mode == "full" else SIM_CORES[:1]:
            params = PipelineParams(
                compute_s=compute_s,
                cores=cores,
                batch_nbytes=int(rec.get("batch_nbytes", 1 << 20)),
                process_startup_s=SIM_PROCESS_STARTUP_S,
                seed=0,
                **costs,
            )

            def static_time(
                cfg: LoaderConfig, params: PipelineParams = params, total: int = total
            ) -> float:
                stats = static_grid(params, [cfg], steps=150)[cfg]
                startup = params.process_startup_s if cfg.use_multiprocessing else 0.0
                return total / stats.steps_per_s + startup

            default = static_time(LoaderConfig())
            folklore = static_time(LoaderConfig(cores, 10, True))
            grid = [LoaderConfig(w, q) for w in (1, 2, 4, 8, 16, 32, 64) for q in (10, 2 * w)]
            grid += [
                LoaderConfig(w, q, True)
                for w in (1, 2, 4, 8, 16, 32, 64)
                if w <= cores
                for q in (10, 2 * w)
            ]
            oracle_cfg, oracle = min(((c, static_time(c)) for c in grid), key=lambda t: t[1])
            result = simulate_tuning(
                SimulatedPipeline(params),
                TunerSettings(cores=cores, seed=0),
                baseline=LoaderConfig(),
                total_steps=total,
            )
            floor_s = total * compute_s
            rows.append(
                {
                    "scenario": name,
                    "cores": cores,
                    "floor_s": floor_s,
                    "default": default / floor_s,
                    "folklore": folklore / floor_s,
                    "oracle": oracle / floor_s,
                    "oracle_config": str(oracle_cfg),
                    "klt": result.total_time_s / floor_s,
                    "klt_config": str(result.final_config),
                }
            )
    return rows


# ---------------------------------------------------------------------------- outputs
def _strategies_of(agg: dict[str, Any]) -> list[str]:
    names = list(STRATEGIES)
    for data in agg.values():
        names += [s for s in data["rows"] if s not in names]
    return names


def markdown(
    agg: dict[str, Any],
    checks: list[dict[str, Any]],
    sim: list[dict[str, Any]] | None,
    meta: dict[str, Any],
    raw: dict[str, Any],
) -> str:
    m = meta["machine"]
    lines = [
        "# keras-loadtune benchmarks",
        "",
        "keras-loadtune against every alternative a user has, side by side: real Keras fits, "
        "the same number of epochs per strategy, wall time of `model.fit` only (model "
        "building excluded; worker start-up, tracing and tuning included).",
        "",
        f"Command: `{meta['command']}` ({meta['mode']} mode, {meta['repeats']} repeat(s), "
        f"suite wall time {meta['suite_wall_s'] / 60:.1f} min).",
        "",
        "Machine: "
        f"{m['cpu_model']}, {m['cpu_count']} logical cores"
        f" ({m['cpu_affinity']} usable), {m['ram_gib']:.0f} GiB RAM; Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; {m['platform']}. Keras backend: {m.get('keras_backend', 'tensorflow')}; "
        f"accelerator: {m.get('accelerator', 'none')}. Library: {m['library']}. Load average "
        f"{m['loadavg_start'][0]:.1f} at start, {meta['loadavg_end'][0]:.1f} at end "
        "(other jobs shared the machine: medians over alternating repeats, min-max shown).",
        "",
        "## Results",
        "",
        "Wall time: median (min-max) over repeats. `x floor` / `x oracle`: median over the "
        "compute floor's / oracle's median. Peak RSS: process tree (trainer + worker "
        "processes, psutil RSS sampled every 50 ms; forked workers count their shared pages "
        "again), max over repeats; `+RSS`: peak minus the tree's RSS just before `fit`. "
        "Tuning: seconds keras-loadtune spent in trials (included in its wall time).",
        "",
        "| scenario | strategy | wall s | x floor | x oracle | config | tuning s "
        "| peak RSS MiB | +RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in agg.items():
        for strategy in _strategies_of({name: data}):
            row = data["rows"].get(strategy)
            if row is None:
                continue
            wall = (
                f"{_fmt(row['median'])} ({_fmt(row['min'])}-{_fmt(row['max'])})"
                if row["n"]
                else "failed: " + "; ".join(row["errors"])[:80]
            )
            config = ", ".join(row["configs"])
            if strategy == "keras-loadtune" and row.get("decisions"):
                config = "; ".join(row["per_repeat"]) + f" [{', '.join(row['decisions'])}]"
            tuning = _fmt(row.get("tuning_s")) if strategy == "keras-loadtune" else ""
            bold = "**" if strategy == "keras-loadtune" else ""
            lines.append(
                f"| {name} | {bold}{strategy}{bold} | {wall} | {_fmt(row['x_floor'])} "
                f"| {_fmt(row['x_oracle'])} | {config} | {tuning} "
                f"| {row['peak_rss'] / MiB:.0f} | {row['added_rss'] / MiB:.0f} |"
            )
    lines += [
        "",
        "## Targets",
        "",
        "| scenario | target | result | measured |",
        "|---|---|---|---|",
    ]
    for c in checks:
        lines.append(f"| {c['scenario']} | {c['target']} | **{c['verdict']}** | {c['why']} |")
    missed = [c for c in checks if c["verdict"] == "MISS"]
    lines += [
        "",
        f"{len(checks) - len(missed)}/{len(checks)} targets met."
        + (
            " Missed: " + "; ".join(f"{c['scenario']}: {c['target']}" for c in missed) + "."
            if missed
            else ""
        ),
    ]
    seed = agg.get("seed-article")
    if seed:
        rows = seed["rows"]
        d = rows.get("keras-default", {}).get("median", float("nan"))
        eight = next((r for s, r in rows.items() if s.startswith("article:")), None)
        t = rows.get("keras-loadtune", {}).get("median", float("nan"))
        lines += [
            "",
            "## The seed article's experiment, scaled down",
            "",
            "The article (MissingLink, *6x Faster Data Processing With Keras fit_generator "
            "Workers*; Keras 2.2.4, MacBook Pro i7) trains the MNIST CNN on a "
            "`keras.utils.Sequence` with `time.sleep(0.5)` per batch and reports **6x** from "
            "`workers=8` over the default 1 worker.",
            f"Ours ({seed['record'].get('title', '')}): `workers=8` threads vs 1 worker = "
            f"**{_fmt(d / eight['median'] if eight else float('nan'), 1)}x**; keras-loadtune "
            f"(starting from 1 worker, tuning included) vs 1 worker = **{_fmt(d / t, 1)}x**.",
        ]
    lines += ["", "## Scenarios", ""]
    for name, data in agg.items():
        rec = data["record"]
        prof = rec.get("profile", {})
        lines.append(
            f"- **{name}**: {rec.get('title', name)}. {rec['epochs']} epoch(s) x {rec['steps']} "
            f"steps. One batch in the main thread: {prof.get('produce_wall_s', 0) * 1e3:.1f} ms "
            f"wall, {prof.get('produce_cpu_s', 0) * 1e3:.1f} ms CPU. Oracle grid "
            f"({rec.get('oracle_search_s', 0):.0f} s, short fits, steps/s): "
            + ", ".join(f"{g['config']} {g['steps_per_s']:.0f}" for g in rec.get("oracle_grid", ()))
            + (
                f". HTTP requests served: {rec['http_requests']} "
                f"(bound {rec['http_request_budget']})"
                if "http_requests" in rec
                else ""
            )
            + "."
        )
    if raw.get("failures"):
        lines += ["", "Failed scenario workers: " + json.dumps(raw["failures"]) + "."]
    if sim:
        lines += [
            "",
            "## Simulated scaling (SIMULATED, not measured)",
            "",
            "From the decision layer's discrete-event simulator "
            "(`keras_loadtune.simulation.pipeline`), fed with each scenario's costs measured "
            "above (per-batch wall and CPU time of the loader, the floor's median step time, "
            f"batch bytes) and {SIM_PROCESS_STARTUP_S:.0f} s per process-pool start (the "
            "TensorFlow import this machine pays per worker). Same number of steps as the "
            "real run; times as multiples of the simulated compute floor. keras-loadtune is "
            "the real `TuningSession` driven by `simulate_tuning`; oracle is the best static "
            "config of a thread/process x workers x queue grid.",
            "",
            "| scenario | cores | default | folklore | oracle | keras-loadtune | oracle config "
            "| keras-loadtune config |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sim:
            lines.append(
                f"| {r['scenario']} | {r['cores']} | {r['default']:.2f}x | {r['folklore']:.2f}x "
                f"| {r['oracle']:.2f}x | {r['klt']:.2f}x | {r['oracle_config']} "
                f"| {r['klt_config']} |"
            )
    lines += [
        "",
        "## Method",
        "",
        "- Strategies: **keras-default** = the plain PyDataset, `workers=1`, no tuner. "
        "**folklore** = `workers=os.cpu_count()`, `use_multiprocessing=True`, "
        "`max_queue_size=10` (Keras forks a pool per epoch). **oracle** = the best static "
        "plain-Keras config of a small exhaustive grid, chosen by a short fit of each (its "
        "search time is not counted). **tf.data** = `tf.data.Dataset.range(n).map(lambda i: "
        "tf.py_function(loader[i]), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)` over the "
        "same loader. **keras-loadtune** = `LoadTuner(seed=0, storage=None)` + `tuner.wrap(ds)` "
        "starting from "
        "Keras's default config; its probe, trials and worker start-ups (process workers import "
        "Keras/TensorFlow when they unpickle the dataset) are in its wall time. **floor** = the "
        "same model on the same batches already in memory.",
        "- Targets are checked on medians; tf.data ties count within "
        f"{(TFDATA_NOISE - 1) * 100:.0f}%. RAM budget: keras-loadtune's peak RSS added during "
        "`fit` minus what the floor's `fit` adds (the trainer's own growth), against the "
        "tuner's `ram_budget` (memory scenario: explicit; others: the default, 50% of "
        "available RAM).",
        "- Every scenario runs in a fresh Python process; in each repeat the strategies run "
        "one after another in a rotated order; every run builds a fresh model.",
        "",
        "![benchmarks](benchmarks/benchmarks.png)",
        "",
    ]
    return "\n".join(lines)


def plot(agg: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(agg)
    strategies = _strategies_of(agg)
    fig, ax = plt.subplots(figsize=(max(8, 1.9 * len(names)), 4.8))
    width = 0.8 / len(strategies)
    for j, strategy in enumerate(strategies):
        xs, ys, lo, hi = [], [], [], []
        for i, name in enumerate(names):
            row = agg[name]["rows"].get(strategy)
            floor = agg[name]["rows"].get("floor", {}).get("median", float("nan"))
            if row is None or not row["n"] or not math.isfinite(floor):
                continue
            xs.append(i + (j - (len(strategies) - 1) / 2) * width)
            ys.append(row["median"] / floor)
            lo.append((row["median"] - row["min"]) / floor)
            hi.append((row["max"] - row["median"]) / floor)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=strategy)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=15)
    ax.set_yscale("log")
    ax.set_ylabel("fit wall time / compute floor (log)")
    ax.set_title("keras-loadtune vs alternatives (median, min-max over repeats)")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(agg: dict[str, Any], checks: list[dict[str, Any]]) -> None:
    print()
    head = f"{'scenario':<14} {'strategy':<18} {'median s':>9} {'min-max':>13} {'x floor':>8}"
    print(head + f" {'x oracle':>8}  config")
    for name, data in agg.items():
        for strategy in _strategies_of({name: data}):
            row = data["rows"].get(strategy)
            if row is None:
                continue
            cfg = "; ".join(row.get("per_repeat") or row["configs"])
            print(
                f"{name:<14} {strategy:<18} {_fmt(row['median']):>9} "
                f"{_fmt(row['min']) + '-' + _fmt(row['max']):>13} {_fmt(row['x_floor']):>8} "
                f"{_fmt(row['x_oracle']):>8}  {cfg}"
            )
    print()
    for c in checks:
        print(f"{c['verdict']:<4}  {c['scenario']:<14} {c['target']:<40} {c['why']}")


KEPT_MARKER = "<!-- kept by benchmarks/run.py: sections below come from other scripts -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke test (< 2 min)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 3 (quick: 1)")
    parser.add_argument("--scenarios", nargs="+", default=None, choices=SCENARIO_NAMES)
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--png", default=None, help="default: benchmarks/benchmarks.png")
    parser.add_argument("--raw", default=None, help="also write raw results as JSON here")
    parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scenarios is None:
        args.scenarios = list(SCENARIO_NAMES)
    if args._worker:
        return _worker(args)
    args.mode = "quick" if args.quick else "full"
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    out = Path(args.out).resolve()
    if args.png:
        png = Path(args.png).resolve()
    elif out == (ROOT / "BENCHMARKS.md").resolve():
        png = HERE / "benchmarks.png"
    else:
        png = out.parent / "benchmarks.png"
    started = time.perf_counter()
    machine = _machine()
    with tempfile.TemporaryDirectory(prefix="klt-bench-") as tmp:
        raw = _run_workers(args, Path(tmp))
    agg = aggregate(raw)
    checks = targets(agg)
    sim = simulate(agg, args.mode) if args.mode == "full" else None
    cmd = " ".join(["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    if os.environ.get("PYTHONPATH"):
        cmd = f"PYTHONPATH={os.environ['PYTHONPATH']} {cmd}"
    meta = {
        "machine": machine,
        "mode": args.mode,
        "repeats": args.repeats,
        "command": cmd,
        "suite_wall_s": time.perf_counter() - started,
        "loadavg_end": os.getloadavg(),
    }
    text = markdown(agg, checks, sim, meta, raw)
    if png.parent != HERE:
        text = text.replace("(benchmarks/benchmarks.png)", f"({png.name})")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and KEPT_MARKER in out.read_text():
        # Sections measured by the other benchmark scripts are kept below the marker.
        text = text.rstrip("\n") + "\n\n" + out.read_text()[out.read_text().index(KEPT_MARKER) :]
    out.write_text(text)
    plot(agg, png)
    if args.raw:
        Path(args.raw).write_text(
            json.dumps({"meta": meta, "raw": raw, "checks": checks, "sim": sim}, default=str)
        )
    print_summary(agg, checks)
    if sim:
        print("\nSIMULATED scaling (x compute floor):")
        for r in sim:
            print(
                f"  {r['scenario']:<14} {r['cores']:>3} cores: default {r['default']:.2f}x  "
                f"folklore {r['folklore']:.2f}x  oracle {r['oracle']:.2f}x  "
                f"keras-loadtune {r['klt']:.2f}x ({r['klt_config']})"
            )
    print(f"\nwrote {out} and {png} in {meta['suite_wall_s']:.0f} s")
    return 1 if raw.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
