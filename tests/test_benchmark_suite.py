"""Smoke tests of the benchmarks (real Keras fits, in subprocesses).

- `benchmarks/run.py --quick` end to end: the report has a row for every scenario and
  strategy with finite numbers, and the targets section and the chart were written.
- Each real-job script (`image_pipeline.py`, `remote_fetch.py`, `short_fit.py`,
  `epoch_start.py`, `switch_gap.py`) with `--quick` and its smallest sizes: it exits 0,
  prints the command to reproduce first, no row failed, and its summary ratio is finite.
- The shared side-by-side runner (`benchmarks/side_by_side.py`): rows alternate and a
  failing row is reported without stopping the others.

None asserts PASS: quick runs are far too short for tuning to pay off, and the numbers
are noisy on shared CI machines.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
SCENARIOS = (
    "latency-sleep",
    "latency-http",
    "gil-python",
    "numpy",
    "compute",
    "memory",
    "seed-article",
)
STRATEGIES = ("keras-default", "folklore", "oracle", "tf.data", "keras-loadtune", "floor")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 3 min on an idle 2-core machine; over 5 min when busy
def test_quick_benchmark_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = out.read_text()
    assert (tmp_path / "benchmarks.png").stat().st_size > 0
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] in SCENARIOS:
            rows[(cells[0], cells[1].strip("*"))] = cells
    for scenario in SCENARIOS:
        for strategy in STRATEGIES:
            cells = rows.get((scenario, strategy))
            assert cells is not None, f"no row for {scenario} / {strategy}"
            median = re.match(r"([0-9.]+) \(([0-9.]+)-([0-9.]+)\)", cells[2])
            assert median, f"{scenario} / {strategy}: wall time {cells[2]!r}"
            values = [float(v) for v in median.groups()] + [float(cells[3]), float(cells[4])]
            assert all(math.isfinite(v) and v > 0 for v in values), cells
    assert "## Targets" in text
    assert re.search(r"\*\*(PASS|MISS)\*\*", text)
    assert "PASS" in proc.stdout or "MISS" in proc.stdout


# ------------------------------------------------------------------ real-job benchmarks
BENCHMARKS = ROOT / "benchmarks"
# Smallest arguments that still run every row of each script once; `nan` in the output
# means a row failed (`side_by_side` reports a failing fit as NaN instead of stopping).
REAL_JOBS = {
    "image_pipeline.py": (
        ["--epochs", "1", "--images", "64"],
        r"keras-loadtune from workers=1: ([0-9.]+)x plain Keras workers=1",
    ),
    "remote_fetch.py": (
        ["--steps", "8"],
        r"keras-loadtune from workers=1: ([0-9.]+)x plain Keras",
    ),
    "short_fit.py": (["--steps", "10"], r"latency\s+keras-loadtune / plain Keras = ([0-9.]+)"),
    "epoch_start.py": (
        ["--mb", "16", "--epochs", "2", "--steps", "2"],
        r"keras-loadtune / plain Keras: epoch time ([0-9.]+)x",
    ),
    "switch_gap.py": (["--steps", "16", "--switch-at", "6"], r"switch gap ([0-9.]+) ms"),
}


@pytest.mark.slow
@pytest.mark.keras
@pytest.mark.parametrize("script", sorted(REAL_JOBS))
def test_real_job_benchmark_quick_run(script: str, tmp_path: Path) -> None:
    args, summary = REAL_JOBS[script]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    first = out.splitlines()[0]
    assert first.startswith(f"$ KERAS_BACKEND={backend} python benchmarks/{script} --quick"), first
    assert "ERROR" not in out and "nan" not in out, out[-4000:]
    found = re.search(summary, out)
    assert found, f"no summary line /{summary}/ in:\n{out[-4000:]}"
    assert math.isfinite(float(found.group(1))) and float(found.group(1)) > 0


def _side_by_side():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import side_by_side
    finally:
        sys.path.remove(str(BENCHMARKS))
    return side_by_side


@settings(max_examples=30, deadline=None)
@given(n_rows=st.integers(1, 5), repeats=st.integers(1, 6))
def test_side_by_side_runs_each_row_once_per_repeat_in_rotating_order(
    n_rows: int, repeats: int
) -> None:
    sbs = _side_by_side()
    labels = [f"row{i}" for i in range(n_rows)]
    calls: list[tuple[str, int]] = []

    def row(label: str):
        def run(repeat: int) -> sbs.Run:
            calls.append((label, repeat))
            return sbs.Run(wall_s=float(len(calls)), steps=1)

        return run

    results = sbs.alternate({label: row(label) for label in labels}, repeats, log=False)
    assert sorted(calls) == sorted((label, r) for label in labels for r in range(repeats))
    for r in range(repeats):
        in_repeat = [label for label, rep in calls if rep == r]
        k = r % n_rows
        assert in_repeat == labels[k:] + labels[:k]
    assert all(len(results[label]) == repeats for label in labels)


def test_side_by_side_alternates_rows_and_survives_a_failing_row() -> None:
    sbs = _side_by_side()

    calls: list[tuple[str, int]] = []

    def row(label: str, fail: bool = False):
        def run(repeat: int) -> sbs.Run:
            calls.append((label, repeat))
            if fail:
                raise RuntimeError("loader broke\nsecond line")
            return sbs.Run(wall_s=1.0 + repeat, steps=1)

        return run

    rows = {"a": row("a"), "b": row("b", fail=True), "c": row("c")}
    results = sbs.alternate(rows, repeats=4, log=False)
    firsts = [calls[3 * r][0] for r in range(4)]
    assert firsts == ["a", "b", "c", "a"]  # the order rotates by one each repeat
    assert sorted(calls) == sorted((k, r) for k in "abc" for r in range(4))
    assert [r.wall_s for r in results["a"]] == [1.0, 2.0, 3.0, 4.0]
    assert all(math.isnan(r.wall_s) for r in results["b"])
    assert results["b"][0].info["error"] == "RuntimeError: loader broke"
    assert sbs.median_wall(results["a"]) == 2.5
    assert math.isnan(sbs.median_wall(results["b"]))
    ratios = sbs.print_table("t", results, {"a": "a", "b": "a", "c": "a"})
    assert ratios["a"] == 1.0 and ratios["c"] == 1.0 and math.isnan(ratios["b"])
