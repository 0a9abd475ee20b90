"""Every line of a report agrees with the others (issue #23, target 1), checked on
recorded tuning runs (`tests/data/reports/`: simulated runs and real Keras fits, see
`tests/report_runs.py`) and on simulated runs built live the way `LoadTuner` builds
its report (`lifecycle.report_build.build_report`).

For every report: the limit against the Profile's step and the measured rates, the
advice's ms against the limit, "cannot make this fit faster" only when measured, no
advice for a config measured no faster, the summary's speedup against Net, the Wait
arrows against the epochs, the trial counts of the report, its summary and the CLI's
study list, and the Cost parts against Cost."""

from __future__ import annotations

import re

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from report_runs import SIMULATED, load_all, simulated_report
from test_report import populate

from keras_loadtune import LoaderConfig
from keras_loadtune.report import TuningReport, list_studies, load_report
from keras_loadtune.report import _format as fmt

optuna.logging.set_verbosity(optuna.logging.ERROR)

RECORDED = load_all()
#: Two measured rates within this share are the same (the report's own noise margin).
NOISE = 0.05


def _line(text: str, label: str) -> str | None:
    """A report field's value, its wrapped continuation lines joined."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"  {label}:"):
            value = [line.split(":", 1)[1].strip()]
            for more in lines[i + 1 :]:
                if not more.startswith("   " * 3) or more.strip().startswith("-"):
                    break
                value.append(more.strip())
            return " ".join(value)
    return None


def _measured(rep: TuningReport) -> list:
    return [t for t in rep.trials if t.state == "complete" and fmt.is_number(t.steps_per_s)]


def inconsistencies(rep: TuningReport) -> list[str]:
    """What in `rep`'s text, summary line, advice and JSON disagrees (empty: none)."""
    bad: list[str] = []
    text, summary, advice = str(rep), rep.summary_line(), rep.advice
    flat_advice = [" ".join(a.split()) for a in advice]
    limit, step = rep.limit, rep.profile.get("step_compute_s")
    measured = _measured(rep)
    in_use = rep.in_use_steps_per_s
    # The limit against the Profile's step and the rates measured.
    checked = limit is not None and fmt.is_number(step) and rep.decision != "not-wrapped"
    if checked and limit.steps_per_s > 1.0 / step * 1.01:  # type: ignore[union-attr]
        bad.append(f"limit {limit.steps_per_s:.1f} > 1 / compute {1000 * step:.1f} ms")  # type: ignore[union-attr]
    if limit is not None and measured:
        fastest = max(float(t.steps_per_s) for t in measured)
        if fastest > limit.steps_per_s * 1.001:
            bad.append(f"a trial measured {fastest:.1f} steps/s, over the limit")
    # One limit figure everywhere it is quoted.
    if limit is not None:
        shown = fmt.num(limit.steps_per_s)
        if shown not in (_line(text, "Limit") or "") or f"limit {shown} steps/s" not in summary:
            bad.append("the Limit line or the summary quote another limit")
        for item in flat_advice:
            for ms in re.findall(r"\((\d+) ms per step\)", item):
                if int(ms) != round(1000.0 / limit.steps_per_s):
                    bad.append(f"advice quotes {ms} ms per step, the limit {shown} steps/s")
    # "Reached" only when measured.
    if any("cannot make this fit faster" in a for a in flat_advice):
        wait = rep.in_use_wait_fraction
        if wait is None or wait >= rep.wait_threshold:
            bad.append(f"'limit reached' with a wait of {wait}")
        if measured and in_use and max(float(t.steps_per_s) for t in measured) > in_use * 1.05:
            bad.append("'limit reached' although a measured config was faster")
    # No advice for a config measured no faster.
    for item in flat_advice:
        if "could be up to" not in item:
            continue
        found = re.search(r"`workers=(\d+)(, use_multiprocessing=True)?`", item)
        assert found, item
        workers, procs = int(found.group(1)), bool(found.group(2))
        for t in measured:
            same = t.config.use_multiprocessing == procs and t.config.workers >= workers
            if same and in_use and float(t.steps_per_s) <= in_use * (1 + NOISE):
                bad.append(f"advice proposes {workers} workers; #{t.number} was no faster")
        if "estimated" not in item:
            bad.append("an untried config's gain is not marked estimated")
    # The summary's speedup is Net's, or says which it is.
    net_line = _line(text, "Net")
    for figure in re.findall(r"(\d+(?:\.\d+)?)x faster(?! in steady state| net)", summary):
        bad.append(f"summary says {figure}x faster without saying which")
    steady = f"{fmt.speedup(rep.speedup)} faster in steady state"
    if rep.speedup is not None and "in steady state" in summary and steady not in summary:
        bad.append("summary's steady-state speedup is not the Speedup line's")
    net = re.search(r"(\d+\.\d+)x (faster|slower) net", summary)
    said = f"{net.group(1)}x {net.group(2)}" if net is not None else None
    if said is not None and (net_line is None or not net_line.startswith(said)):
        bad.append(f"summary's net {said!r} against Net {net_line!r}")
    # Wait arrows against the epochs.
    wait_line = _line(text, "Wait") or ""
    switched = rep.best_config is not None and rep.best_config != rep.baseline_config
    if "->" in wait_line:
        if not switched:
            bad.append(f"a Wait arrow on a config that never changed: {wait_line!r}")
        before, after = re.match(r"(\S+) -> (\S+)", wait_line).groups()  # type: ignore[union-attr]
        waits = rep.epoch_wait_fractions
        if waits and after != fmt.pct(waits[-1]):
            bad.append(f"Wait ends at {after}, the last epoch at {fmt.pct(waits[-1])}")
        value = {"<1%": 0.5}
        rose = value.get(after) or float(after.rstrip("%"))
        if rose > (value.get(before) or float(before.rstrip("%"))) and "(" not in wait_line:
            bad.append(f"the wait rose without a word: {wait_line!r}")
    if not switched and "(after tuning)" in wait_line:
        bad.append("'after tuning' on a config that never changed")
    # Trial counts: table, Tuning line, summary; no "0 trials in".
    n = len(rep.trials)
    tuning = _line(text, "Tuning")
    if tuning is not None and n and not tuning.startswith(f"{n} trial"):
        bad.append(f"Tuning line {tuning!r} for {n} trials")
    counts = re.findall(r"(\d+) trials? in", summary)
    if counts and int(counts[0]) != n:
        bad.append(f"summary counts {counts[0]} trials, the report {n}")
    if "0 trials in" in summary or "0 trials in" in text:
        bad.append("'0 trials in ...'")
    # A final report is never "in progress".
    if not rep.fit_running and rep.fit_all_steps and "in progress" in text + summary:
        bad.append("a final report says 'in progress'")
    # Cost parts add up to Cost.
    data = rep.to_dict()
    total = data["tuning_cost_seconds"] or 0.0
    if data["cost"] and abs(sum(data["cost"].values()) - total) > 1e-9:
        bad.append(f"cost parts {data['cost']} do not sum to Cost")
    cost_line = _line(text, "Cost") or ""
    shown = fmt.seconds(rep.tuning_cost_seconds)
    if fmt.is_number(rep.tuning_cost_seconds) and not cost_line.startswith(shown):
        bad.append(f"Cost line {cost_line!r} against {rep.tuning_cost_seconds}")
    return bad


def test_the_recorded_runs_cover_simulated_and_real_fits():
    assert {f"{name}" for name in SIMULATED} <= set(RECORDED)
    assert any(name.startswith("real_") for name in RECORDED)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_every_line_of_a_recorded_report_agrees(name):
    rep = TuningReport.from_dict(RECORDED[name])
    assert inconsistencies(rep) == [], str(rep)
    back = TuningReport.from_dict(rep.to_dict())
    assert str(back) == str(rep) and back.advice == rep.advice


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_the_cli_counts_the_trials_the_report_shows(name):
    rep = TuningReport.from_dict(RECORDED[name])
    storage = optuna.storages.InMemoryStorage()
    populate(optuna.create_study(study_name=name, storage=storage, direction="maximize"), rep)
    (row,) = list_studies(storage)
    stored = load_report(storage, name)
    assert row["n_trials"] == len(stored.trials) == len(rep.trials)
    assert _line(str(stored), "Tuning") == _line(str(rep), "Tuning")


@pytest.mark.parametrize("name", sorted(SIMULATED))
def test_the_simulated_runs_build_consistent_reports_now(name):
    # The fixtures are reports; this rebuilds them from the simulated sessions with
    # today's build_report, so a change in how the report is built is checked too.
    params, baseline, steps = SIMULATED[name]
    assert inconsistencies(simulated_report(params, baseline, steps)) == []


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    io_ms=st.sampled_from([0, 5, 30, 80]),
    python_ms=st.sampled_from([0, 4, 15]),
    numpy_ms=st.sampled_from([0, 10, 40]),
    compute_ms=st.sampled_from([2, 8, 30]),
    cores=st.sampled_from([2, 4, 16]),
    steps=st.sampled_from([80, 300, 900]),
    workers=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 3),
)
def test_any_simulated_run_builds_a_consistent_report(
    io_ms, python_ms, numpy_ms, compute_ms, cores, steps, workers, seed
):
    params = dict(
        io_s=io_ms / 1000, python_s=python_ms / 1000, numpy_s=numpy_ms / 1000,
        compute_s=compute_ms / 1000, cores=cores, noise_cv=0.1, seed=seed,
    )  # fmt: skip
    rep = simulated_report(params, LoaderConfig(workers, 2 * workers), steps, seed=seed)
    assert inconsistencies(rep) == [], str(rep)


def test_the_checker_catches_the_contradictions_of_issue_23():
    # Figures that contradicted each other in users' reports, planted into a consistent
    # recorded report, are caught (the checker can fail).
    base = TuningReport.from_dict(RECORDED["sim_io_latency"])
    assert inconsistencies(base) == []
    fastest = max(float(t.steps_per_s) for t in _measured(base))
    planted = {
        "limit over the Profile's step": {"profile": {**base.profile, "step_compute_s": 0.047}},
        "a trial over the limit": {
            "limit": {**base.to_dict()["limit"], "steps_per_s": fastest / 2}
        },
        "cost parts": {"cost": {"probe and trials": 99.0}},
    }
    for what, change in planted.items():
        rep = TuningReport.from_dict({**base.to_dict(), **change})
        assert inconsistencies(rep), what
