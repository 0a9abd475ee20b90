"""Smoke test of the benchmark suite: `benchmarks/run.py --quick` end to end (real Keras fits).

Checks that the report has a row for every scenario and strategy with finite numbers, and
that the targets section and the chart were written. It does not assert PASS: quick mode is
far too short for tuning to pay off, and the numbers are noisy on shared CI machines.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
def test_quick_benchmark_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
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
