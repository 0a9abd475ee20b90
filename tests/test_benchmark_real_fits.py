"""Smoke test of the real-fit benchmark (`benchmarks/real_fits.py`) and its row specs.

- `--quick` on the `gil-main` scenario, in a subprocess (Keras is imported only there):
  it exits 0, prints the command to reproduce first, a table row for every row of the
  scenario with a finite median and worst, the ratio lines to the best static config, to
  `workers=16` and to your config, keras-loadtune's config/decision, `Limit` and `Net`
  lines, and PASS/MISS targets; the `--json` file holds the same rows, and `--replay`
  of it prints the same rows and verdicts without running a fit.
- The parent's pure logic: row specs survive their JSON form (what a child gets), the
  best static config and paired worst ratio, and a failing child is reported, not fatal.

None asserts a speed: a quick run is far too short for tuning to pay off, and the
machine may be busy.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "real_fits.py"
NUMBER = r"([0-9]+\.[0-9]+|nan)"


def _modules():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _fit_rows
        import real_fits
    finally:
        sys.path.remove(str(BENCHMARKS))
    return _fit_rows, real_fits


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 7 fresh interpreters with Keras: 1.5 min idle, more when busy
def test_quick_run_prints_every_row_and_ratio(tmp_path: Path, capsys) -> None:
    _, real_fits = _modules()
    out = tmp_path / "real_fits.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--scenario", "gil-main", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    text = proc.stdout
    assert proc.returncode == 0, text[-4000:] + proc.stderr[-4000:]
    assert text.splitlines()[0].startswith("$ KERAS_BACKEND="), text[:300]
    assert "python benchmarks/real_fits.py --quick --scenario gil-main" in text.splitlines()[0]
    labels = [row.label for row in real_fits._quick(real_fits.scenarios()["gil-main"]).rows()]
    assert {real_fits.USER, real_fits.W16, real_fits.TUNER, real_fits.TUNER_NO_STORAGE} <= set(
        labels
    )
    for label in labels:
        found = re.search(rf"^{re.escape(label)}\s+{NUMBER}\s+{NUMBER}\s", text, re.M)
        assert found, f"no table row for {label!r} in:\n{text[-4000:]}"
        assert all(math.isfinite(float(v)) and float(v) > 0 for v in found.groups()), found[0]
    for tuner in (real_fits.TUNER, real_fits.TUNER_NO_STORAGE):
        best = re.search(
            rf"^{re.escape(tuner)} / best static \((.+)\): median {NUMBER}x, worst {NUMBER}x",
            text,
            re.M,
        )
        assert best and best.group(1) in labels, text[-4000:]
        assert all(float(v) > 0 for v in best.groups()[1:])
        for other in ("workers=16", "your config"):
            line = re.search(rf"^{re.escape(tuner)} / {other}: {NUMBER}x", text, re.M)
            assert line and float(line.group(1)) > 0, (other, text[-4000:])
    per_epoch = text.split("per epoch of the last fit", 1)[1]
    epochs = real_fits._quick(real_fits.scenarios()["gil-main"]).variants[0].workload.epochs
    for label in labels:
        found = re.search(rf"^  {re.escape(label)}\s+([0-9. ]+)$", per_epoch, re.M)
        assert found, (label, per_epoch[:2000])
        seconds = [float(v) for v in found.group(1).split()]
        assert len(seconds) == epochs and all(v > 0 for v in seconds), found[0]
    assert re.search(r"^  repeat 1: ended with .+ \(([a-z-]+)\)", text, re.M), text[-4000:]
    assert re.search(r"^    Limit: ", text, re.M) and re.search(r"^    Net: ", text, re.M)
    assert re.search(r"plain Keras your config / keras-loadtune = [0-9.]+x", text)
    assert re.search(r"^  \[(PASS|MISS)\] 2\. keras-loadtune / best static", text, re.M)
    saved = json.loads(out.read_text())
    rows = saved["scenarios"]["gil-main"]["15 ms"]["rows"]
    assert sorted(rows) == sorted(labels)
    assert all(len(r["walls"]) == 1 and r["walls"][0] for r in rows.values())
    assert rows[real_fits.TUNER]["reports"][0][0]["decision"]
    capsys.readouterr()
    assert real_fits.main(["--replay", str(out)]) == 0  # the saved results, judged again
    replayed = capsys.readouterr().out
    for label in labels:
        assert re.search(rf"^{re.escape(label)}\s+{NUMBER}\s+{NUMBER}\s", replayed, re.M), label
    assert re.findall(r"^  \[(?:PASS|MISS)\] .*$", replayed, re.M) == re.findall(
        r"^  \[(?:PASS|MISS)\] .*$", text, re.M
    )


def test_row_spec_round_trips_through_json() -> None:
    fit_rows, real_fits = _modules()
    for scenario in real_fits.scenarios().values():
        for variant in scenario.variants:
            for row in scenario.rows():
                spec = fit_rows.RowSpec(variant.workload, row)
                assert fit_rows.RowSpec.from_json(spec.to_json()) == spec


def _runs(real_fits, fit_rows, table: dict[str, tuple[object, list[float]]]):
    runs = {}
    for label, (kind, totals) in table.items():
        rr = real_fits.RowRuns(fit_rows.Row(label, kind))
        rr.walls = [[t] if math.isfinite(t) else None for t in totals]
        rr.reports = [[] for _ in totals]
        runs[label] = rr
    return runs


@settings(max_examples=40, deadline=None)
@given(
    walls=st.lists(st.lists(st.floats(0.5, 50.0), min_size=3, max_size=3), min_size=4, max_size=4)
)
def test_best_static_is_the_fastest_plain_row_and_worst_is_paired(walls) -> None:
    fit_rows, real_fits = _modules()
    kind = fit_rows.RowKind
    names = ["user", "static a", "floor", "tuner"]
    kinds = [kind.USER, kind.STATIC, kind.FLOOR, kind.TUNER]
    runs = _runs(real_fits, fit_rows, {n: (k, w) for n, k, w in zip(names, kinds, walls)})
    best = real_fits.best_static(runs)
    medians = {n: sorted(w)[1] for n, w in zip(names, walls)}
    assert best in ("user", "static a")  # never the floor, never a tuner row
    assert medians[best] == min(medians["user"], medians["static a"])
    worst = real_fits.worst_paired(runs, "tuner", best)
    assert worst == max(t / b for t, b in zip(walls[3], runs[best].totals()))
    assert real_fits.ratio(runs, "tuner", best) == pytest.approx(medians["tuner"] / medians[best])


def test_a_failing_row_is_reported_and_the_others_still_run() -> None:
    fit_rows, real_fits = _modules()
    scenario = real_fits._quick(real_fits.scenarios()["gil-main"])
    seen: list[str] = []

    def runner(spec, cache: str):
        seen.append(spec.row.label)
        if spec.row.kind is fit_rows.RowKind.FLOOR:
            raise RuntimeError("exit 1: boom")
        return {"walls": [1.0], "reports": []}

    runs = real_fits.run_variant(scenario, scenario.variants[0].workload, 2, runner, log=False)
    labels = [row.label for row in scenario.rows()]
    assert sorted(seen) == sorted(labels * 2)
    assert seen[: len(labels)] == labels and seen[len(labels)] == labels[1]  # rotates
    floor = next(rr for rr in runs.values() if rr.row.kind is fit_rows.RowKind.FLOOR)
    assert floor.walls == [None, None] and len(floor.errors) == 2
    assert "boom" in floor.errors[0]
    assert all(rr.walls == [[1.0], [1.0]] for rr in runs.values() if rr is not floor)


def test_a_warm_row_reuses_the_cache_of_the_run_before_it() -> None:
    _, real_fits = _modules()
    scenario = real_fits._quick(real_fits.scenarios()["warm"])
    caches: dict[str, str] = {}

    def runner(spec, cache: str):
        caches[spec.row.label] = cache
        return {"walls": [1.0], "reports": []}

    real_fits.run_variant(scenario, scenario.variants[0].workload, 1, runner, log=False)
    assert caches[real_fits.WARM] == caches[real_fits.TUNER]
    others = [c for label, c in caches.items() if label not in (real_fits.WARM, real_fits.TUNER)]
    assert len(set(others)) == len(others) and caches[real_fits.TUNER] not in others


@pytest.mark.parametrize("tuner_s", [10.0, 11.5, 13.0])
@pytest.mark.parametrize(
    ("advice", "reached"), [("loader tuning cannot make this fit faster", None), ("", 0.95)]
)
def test_target_4_counts_limit_claims_only_when_a_grid_config_is_10_percent_faster(
    tuner_s: float, advice: str, reached: float | None
) -> None:
    fit_rows, real_fits = _modules()
    kind = fit_rows.RowKind
    scenario = real_fits.scenarios()["latency"]
    rows = {
        real_fits.USER: (kind.USER, [20.0]),
        real_fits.W16: (kind.STATIC, [10.0]),
        real_fits.TUNER: (kind.TUNER, [tuner_s]),
    }
    runs = _runs(real_fits, fit_rows, rows)
    runs[real_fits.TUNER].reports = [[{"advice": [advice], "limit_reached": reached}]]
    found = {t.name: t.value for t in real_fits.targets(scenario, runs) if t.name.startswith("4.")}
    assert len(found) == 2
    contradicted = tuner_s >= 1.10 * 10.0
    cannot = next(v for name, v in found.items() if "cannot" in name)
    at_limit = next(v for name, v in found.items() if "90%" in name)
    assert cannot == (1.0 if contradicted and advice else 0.0)
    assert at_limit == (1.0 if contradicted and reached else 0.0)


def test_target_4_judges_each_claim_by_its_own_fit_and_the_grid_of_its_repeat() -> None:
    """A claim is checked against the fit it describes (not the last fit) and the grid
    measured in the same repeat (not the median over repeats): a repeat where the host
    ran every row slower contradicts nothing, a fit slower than its repeat's grid does."""
    fit_rows, real_fits = _modules()
    kind = fit_rows.RowKind
    scenario = real_fits.scenarios()["many-fits"]
    claim = {"advice": ["loader tuning cannot make this fit faster"], "limit_reached": 0.95}
    silent = {"advice": [], "limit_reached": None}
    best = fit_rows.Row(real_fits.W16, kind.STATIC)
    tuner = fit_rows.Row(real_fits.TUNER, kind.TUNER)
    runs = {best.label: real_fits.RowRuns(best), tuner.label: real_fits.RowRuns(tuner)}
    # Repeat 1 quiet, repeat 2 with every row 30% slower; two fits of 2 epochs each.
    for r, slow in enumerate((1.0, 1.3)):
        runs[best.label].walls.append([2.0 * slow, 2.0 * slow])
        runs[best.label].fit_epochs.append([[1.0 * slow, 1.0 * slow]] * 2)
        runs[best.label].reports.append([])
        # Fit 1 (the claim) runs its second epoch as fast as the grid; fit 2 (silent)
        # runs it 1.5x slower (in repeat 1 only).
        second = 1.5 * slow if r == 0 else 1.0 * slow
        runs[tuner.label].walls.append([2.2 * slow, 1.0 * slow + second])
        runs[tuner.label].fit_epochs.append([[1.2 * slow, 1.0 * slow], [1.0 * slow, second]])
        runs[tuner.label].reports.append([claim, silent])
    found = {t.name: t.value for t in real_fits.targets(scenario, runs) if t.name.startswith("4.")}
    assert list(found.values()) == [0.0, 0.0]  # the slow fit made no claim
    runs[tuner.label].reports = [[silent, claim], [silent, claim]]
    found = {t.name: t.value for t in real_fits.targets(scenario, runs) if t.name.startswith("4.")}
    assert list(found.values()) == [1.0, 1.0]  # repeat 1's fit 2 only, not repeat 2's
