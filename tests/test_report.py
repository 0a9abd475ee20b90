"""Tests for `keras_loadtune.report`: rendering, serialisation, HTML, plot, Optuna round trip.

No TensorFlow here: everything runs on hand-built `TrialRecord`s and real Optuna studies.
"""

from __future__ import annotations

import html
import json
import os
import sqlite3
import subprocess
import sys

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_loadtune as klt
from keras_loadtune import LoaderConfig
from keras_loadtune.report import (
    DECISIONS,
    REPORT_FORMAT_VERSION,
    STUDY_ATTR_REPORT,
    StorageError,
    StudyNotFoundError,
    TuningReport,
    list_studies,
    load_report,
    open_storage,
)
from keras_loadtune.trial import TrialRecord

optuna.logging.set_verbosity(optuna.logging.ERROR)

MiB = 2**20
BASE = LoaderConfig(1, 10, False)
BEST = LoaderConfig(4, 8, False)


def make_trials() -> list[TrialRecord]:
    return [
        TrialRecord(0, BASE, "complete", "baseline", 18.2, 0.61, 512 * MiB, 0.0, 40),
        TrialRecord(1, BEST, "complete", "analytical", 52.3, 0.031, 540 * MiB, 0.2, 40),
        TrialRecord(
            2, LoaderConfig(8, 16, True), "pruned", "sampler", 30.0, 0.2, 4096 * MiB, 1.5, 10,
            "over RAM budget (4.0 GiB > 3.0 GiB)",
        ),
        TrialRecord(
            3, LoaderConfig(16, 32, True), "skipped", "sampler", reason="predicted over RAM budget"
        ),
        TrialRecord(
            12, LoaderConfig(2, 4, True), "failed", "sampler", reason="dataset not picklable"
        ),
    ]  # fmt: skip


def make_report(decision: str = "tuned", **overrides) -> TuningReport:
    kwargs = dict(
        decision=decision,
        baseline_config=BASE,
        best_config=BEST,
        trials=make_trials(),
        probe_wait_fraction=0.61,
        final_wait_fraction=0.03,
        baseline_steps_per_s=18.2,
        best_steps_per_s=52.3,
        tuning_seconds=4.13,
        tuning_steps=130,
        epoch_wait_fractions=[0.61, 0.2, 0.03],
        notes=["process mode skipped: dataset not picklable"],
        reopen_reasons=[],
        profile={"produce_wall_s": 0.012, "step_compute_s": 0.008, "cores": 16},
        study_name="run1",
    )
    kwargs.update(overrides)
    return TuningReport(**kwargs)


def table_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "steps/s" in line and "config" in line)
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


# ---------------------------------------------------------------------------- import hygiene


def test_import_report_does_not_import_tensorflow_optuna_or_matplotlib():
    code = (
        "import sys, keras_loadtune.report, keras_loadtune as k;"
        "assert k.TuningReport is keras_loadtune.report.TuningReport;"
        "assert k.TrialRecord is keras_loadtune.report.TrialRecord;"
        "bad = [m for m in ('tensorflow', 'keras', 'optuna', 'matplotlib') if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_lazy_package_exports():
    assert klt.TuningReport is TuningReport
    assert klt.TrialRecord is TrialRecord


# ------------------------------------------------------------------------------- rendering


def test_tuned_report_names_winner_speedup_reasons_and_notes():
    text = str(make_report())
    assert text.startswith("keras_loadtune tuning report: tuned\n")
    assert "Winner:   4 threads, queue 8 (trial #1)" in text
    assert f"2.9x over your config ({LoaderConfig()}): 18.2 -> 52.3 steps/s" in text
    assert "61% -> 3% of step time" in text
    assert "5 trials, 130 steps, 4.1 s" in text
    assert "pruned: over RAM budget (4.0 GiB > 3.0 GiB)" in text
    assert "skipped: predicted over RAM budget" in text
    assert "failed: dataset not picklable" in text
    assert "- process mode skipped: dataset not picklable" in text
    assert "wait 61%, 20%, 3%" in text
    assert "produce 12.0 ms/batch" in text and "compute 8.0 ms/step" in text
    assert "Study:    run1" in text


def test_table_columns_align_and_mark_only_the_best_row():
    lines = table_lines(str(make_report()))
    header, rows = lines[0], lines[1:]
    assert len(rows) == 5
    for col in ("#", "steps/s", "wait %", "RSS MiB"):  # right-aligned: common right edge
        end = header.index(col) + len(col)
        for row in rows:
            assert row[end - 1] != " ", (col, row)
            assert row[end : end + 2] == "  ", (col, row)
    for col in ("config", "source", "state"):  # left-aligned: common left edge
        start = header.index(col)
        for row in rows:
            assert row[start - 1] == " " and row[start] != " ", (col, row)
    assert [r for r in rows if "<- best" in r] == [rows[1]]
    assert " 52.3 " in rows[1] and " 3.1 " in rows[1] and " 540 " in rows[1]
    numbers = rows[3][header.index("source") : header.index("state")].split()
    assert numbers == ["sampler", "-", "-", "-"]  # skipped: no throughput, wait or RSS


def test_reasons_with_newlines_cannot_break_the_table():
    trials = make_trials()
    trials[2] = TrialRecord(2, LoaderConfig(3, 3), "failed", "sampler", reason="boom\nsecond\tline")
    lines = table_lines(str(make_report(trials=trials)))
    assert len(lines) == 6
    assert lines[3].endswith("failed: boom second line")


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        ("tuned", ["tuning report: tuned", "Winner:", "2.9x"]),
        ("kept-baseline", ["kept your config", f"Kept:     {LoaderConfig()} (your config)"]),
        ("tuning-failed", ["tuning failed", "Using:    4 threads, queue 8", "why tuning failed"]),
        ("in-progress", ["tuning in progress", "Best yet: 4 threads, queue 8 (trial #1)"]),
        ("warm-start", ["warm-started", "Using:    4 threads, queue 8 from study 'old-run'"]),
    ],
)
def test_each_tuning_decision_has_its_own_outcome(decision, expected):
    rep = make_report(decision, warm_start_from="old-run")
    text = str(rep)
    for fragment in expected:
        assert fragment in text
    assert len(table_lines(text)) == 6
    line = rep.summary_line()
    assert "\n" not in line and line.startswith("keras_loadtune: ")


def test_compute_bound_is_a_short_paragraph():
    rep = make_report(
        "compute-bound", trials=[], best_config=BASE, probe_wait_fraction=0.02,
        final_wait_fraction=None, best_steps_per_s=None, epoch_wait_fractions=[], profile={},
        notes=[], study_name=None,
    )  # fmt: skip
    text = str(rep)
    assert "keeps up" in text and "2% of step time" in text and "nothing to tune" in text
    assert "steps/s" not in text  # no trial table
    assert len(text.splitlines()) <= 6
    assert rep.summary_line() == (
        "keras_loadtune: compute-bound (wait 2%); the loader keeps up, nothing to tune"
    )


def test_not_wrapped_shows_wait_and_how_to_wrap():
    rep = make_report(
        "not-wrapped", trials=[], best_config=None, final_wait_fraction=None,
        best_steps_per_s=None, tuning_seconds=0.0, tuning_steps=0,
    )  # fmt: skip
    text = str(rep)
    assert "61% of step time" in text
    assert "model.fit(tuner.wrap(dataset)" in text
    assert "tuner.wrap(dataset)" in rep.summary_line() and "61%" in rep.summary_line()
    assert max(len(line) for line in text.splitlines()) <= 100


def test_summary_line_for_tuned_matches_the_contract_format():
    assert make_report().summary_line() == (
        "keras_loadtune: tuned 4 threads, queue 8: 2.9x faster in steady state "
        "(wait 61% -> 3%), 5 trials in 4.1 s"
    )
    rep = make_report(reopen_reasons=["batch time rose 2.3x"])
    assert rep.summary_line().endswith("; re-tuned 1x after drift")
    assert "Re-tuned 1 time after input drift:\n    - batch time rose 2.3x" in str(rep)


def test_speedup_property():
    assert make_report().speedup == pytest.approx(52.3 / 18.2)
    assert make_report(baseline_steps_per_s=None).speedup is None
    assert make_report(best_steps_per_s=None).speedup is None
    assert make_report(baseline_steps_per_s=0.0).speedup is None
    assert "Speedup" not in str(make_report(baseline_steps_per_s=None))


def test_unknown_decision_is_rejected():
    with pytest.raises(ValueError, match="decision"):
        make_report("done")


def test_storage_password_is_never_shown_or_serialised():
    rep = make_report(storage_url="postgresql://me:hunter2@db.example/klt")
    assert "hunter2" not in str(rep)
    assert "hunter2" not in rep._repr_html_()
    assert "hunter2" not in rep.to_json()
    assert "postgresql://me:***@db.example/klt" in str(rep)


# --------------------------------------------------------------------------- serialisation


def test_dict_json_round_trip(tmp_path):
    rep = make_report(reopen_reasons=["drift"], storage_url="sqlite:///k.db", warm_start_from="a")
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["format_version"] == REPORT_FORMAT_VERSION
    assert TuningReport.from_dict(data) == rep
    path = tmp_path / "rep.json"
    text = rep.to_json(path)
    assert json.loads(path.read_text()) == json.loads(text) == data


def test_to_dict_makes_numpy_scalars_json_ready():
    np = pytest.importorskip("numpy")
    trials = [TrialRecord(0, BASE, "complete", "baseline", np.float32(2.5), rss_bytes=np.int64(7))]
    rep = make_report(trials=trials, profile={"cores": np.int64(8)}, tuning_steps=np.int64(3))
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["profile"] == {"cores": 8}
    assert data["trials"][0]["rss_bytes"] == 7
    assert data["tuning_steps"] == 3


def test_from_dict_tolerates_missing_and_unknown_keys():
    rep = make_report()
    data = rep.to_dict()
    del data["trials"], data["notes"]
    data["added_in_a_later_version"] = 1
    back = TuningReport.from_dict(data)
    assert back.trials == [] and back.notes == [] and back.best_config == BEST
    with pytest.raises(ValueError, match="decision"):
        TuningReport.from_dict({"best_config": None})


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
opt_finite = st.none() | finite
configs = st.builds(
    LoaderConfig, st.integers(1, 64), st.integers(1, 256), st.booleans()
)  # fmt: skip
records = st.builds(
    TrialRecord,
    number=st.integers(0, 10_000),
    config=configs,
    state=st.sampled_from(["complete", "pruned", "failed", "skipped"]),
    source=st.sampled_from(["baseline", "analytical", "sampler", "warm-start", "verify"]),
    steps_per_s=opt_finite,
    wait_fraction=st.none() | st.floats(0, 1),
    rss_bytes=st.none() | st.integers(0, 2**40),
    startup_s=opt_finite,
    steps=st.integers(0, 10**6),
    reason=st.text(max_size=30),
    extra=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
reports = st.builds(
    TuningReport,
    decision=st.sampled_from(DECISIONS),
    baseline_config=st.none() | configs,
    best_config=st.none() | configs,
    trials=st.lists(records, max_size=8),
    probe_wait_fraction=st.none() | st.floats(0, 1),
    final_wait_fraction=st.none() | st.floats(0, 1),
    baseline_steps_per_s=opt_finite,
    best_steps_per_s=opt_finite,
    tuning_seconds=st.floats(0, 1e6),
    tuning_steps=st.integers(0, 10**7),
    epoch_wait_fractions=st.lists(st.floats(0, 1), max_size=5),
    notes=st.lists(st.text(max_size=40), max_size=3),
    reopen_reasons=st.lists(st.text(max_size=40), max_size=2),
    profile=st.dictionaries(st.text(min_size=1, max_size=12), finite, max_size=4),
    study_name=st.none() | st.text(max_size=20),
    storage_url=st.none() | st.sampled_from(["sqlite:///a.db", "postgresql://u@h/db"]),
    warm_start_from=st.none() | st.text(max_size=20),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reports)
def test_round_trip_and_rendering_hold_for_any_report(rep):
    assert TuningReport.from_dict(json.loads(rep.to_json())) == rep
    text = str(rep)
    line = rep.summary_line()
    assert "\n" not in line and line.startswith("keras_loadtune: ")
    if rep.trials and rep.decision not in ("compute-bound", "not-wrapped"):
        assert len(table_lines(text)) == len(rep.trials) + 1
    page = rep._repr_html_()
    for note in rep.notes:
        assert html.escape(" ".join(note.split())) in page


# ----------------------------------------------------------------------------------- HTML


def test_html_escapes_user_strings():
    evil = "<script>alert(1)</script>"
    trials = make_trials()
    trials[2] = TrialRecord(2, BEST, "failed", "sampler", reason=evil)
    rep = make_report(notes=[evil], reopen_reasons=[evil], study_name=evil, trials=trials)
    page = rep._repr_html_()
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
    assert page.count("<tr") == len(trials) + 1  # header + one row per trial
    assert "2.9x" in page and "4 threads, queue 8" in page


def test_html_not_wrapped_shows_the_wrap_hint():
    rep = make_report("not-wrapped", trials=[])
    assert "<code>model.fit(tuner.wrap(dataset), ..., callbacks=[tuner])</code>" in (
        rep._repr_html_()
    )


# ----------------------------------------------------------------------------------- plot


@pytest.fixture
def agg():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_plot_one_bar_per_trial_with_best_hatches_and_baseline(agg):
    from matplotlib.figure import Figure

    rep = make_report()
    fig = rep.plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if (p.get_gid() or "").startswith("trial-")]
    assert len(bars) == len(ax.patches) == len(rep.trials)
    heights = [b.get_height() for b in bars]
    assert heights[:3] == pytest.approx([18.2, 52.3, 30.0]) and heights[3:] == [0, 0]
    assert [bool(b.get_hatch()) for b in bars] == [False, False, True, True, True]
    assert max(bars, key=lambda b: b.get_linewidth()).get_gid() == "trial-1"
    assert bars[0].get_facecolor() != bars[2].get_facecolor()  # thread vs process colour
    assert any(line.get_ydata()[0] == pytest.approx(18.2) for line in ax.get_lines())


def test_plot_into_given_axes_and_with_no_trials(agg):
    fig, ax = agg.subplots()
    assert make_report().plot(ax=ax) is fig
    empty = make_report("compute-bound", trials=[]).plot()
    assert len(empty.axes[0].patches) == 0


def test_plot_legend_pluralises_modes(agg):
    ax = make_report().plot().axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "threads" in labels and "processes" in labels
    assert not any("processs" in label for label in labels)


def test_plot_with_nothing_to_plot_says_so_in_words(agg):
    from keras_loadtune.decision.limit import Bound, MachineLimit

    rep = make_report(
        "compute-bound", trials=[], limit=MachineLimit(120.0, Bound.MODEL_STEP, reached=0.98)
    )
    ax = rep.plot().axes[0]
    words = " ".join(t.get_text() for t in ax.texts)
    assert "Nothing to plot" in words and "compute-bound" in words and "model-step" in words
    assert not ax.axison  # no empty chart with a -0.04..0.04 y-axis


def test_plot_draws_the_limit_line(agg):
    from keras_loadtune.decision.limit import Bound, MachineLimit

    rep = make_report(limit=MachineLimit(60.0, Bound.LOADER_CPU, reached=0.87))
    ax = rep.plot().axes[0]
    assert any(line.get_ydata()[0] == pytest.approx(60.0) for line in ax.get_lines())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("limit 60.0 steps/s (loader-cpu)" in label for label in labels)


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install keras-loadtune\[plot\]"):
        make_report().plot()


# -------------------------------------------------------------------------- Optuna studies


def record_trial(study: optuna.Study, rec: TrialRecord) -> None:
    """Store one record the way trial.py prescribes: params + user attrs, via ask/tell."""
    study.enqueue_trial(rec.optuna_params())
    trial = study.ask()
    trial.suggest_int("workers", 1, 64)
    trial.suggest_int("max_queue_size", 1, 256)
    trial.suggest_categorical("mode", ["thread", "process"])
    for key, value in rec.optuna_user_attrs().items():
        trial.set_user_attr(key, value)
    if rec.state == "complete":
        study.tell(trial, rec.steps_per_s)
    elif rec.state == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def populate(study: optuna.Study, report: TuningReport, *, with_report: bool = True) -> None:
    for rec in report.trials:
        record_trial(study, rec)
    if with_report:
        data = report.to_dict()
        del data["trials"]
        study.set_user_attr(STUDY_ATTR_REPORT, data)


def expected_from_storage(report: TuningReport) -> list[TrialRecord]:
    """Stored trials are renumbered by Optuna and lose `extra`."""
    return [
        TrialRecord(**{**r.to_dict(), "config": r.config, "number": i, "extra": {}})
        for i, r in enumerate(report.trials)
    ]


def test_from_study_in_memory_round_trip():
    rep = make_report(reopen_reasons=["drift"])
    study = optuna.create_study(study_name="mem", direction="maximize")
    populate(study, rep)
    back = TuningReport.from_study(study)
    assert back.trials == expected_from_storage(rep)
    assert back.decision == "tuned" and back.best_config == BEST
    assert back.speedup == pytest.approx(rep.speedup)
    assert back.notes == rep.notes and back.reopen_reasons == ["drift"]
    assert back.study_name == "run1"  # the stored report's own name wins
    assert str(back) == str(
        make_report(reopen_reasons=["drift"], trials=expected_from_storage(rep))
    )


def test_from_study_sqlite_round_trip(tmp_path):
    url = f"sqlite:///{tmp_path / 'klt.db'}"
    rep = make_report(study_name=None)
    populate(optuna.create_study(study_name="disk", storage=url, direction="maximize"), rep)
    study = optuna.load_study(study_name="disk", storage=url)
    back = TuningReport.from_study(study, storage_url=url)
    assert back.trials == expected_from_storage(rep)
    assert back.study_name == "disk" and back.storage_url == url
    assert back.final_wait_fraction == 0.03 and back.profile == rep.profile
    assert load_report(url, "disk") == back


def test_from_study_without_report_attr_is_in_progress_and_derived():
    rep = make_report()
    study = optuna.create_study(study_name="live", direction="maximize")
    populate(study, rep, with_report=False)
    study.ask()  # a trial still running: not shown, counted in a note
    back = TuningReport.from_study(study)
    assert back.decision == "in-progress"
    assert back.baseline_config == BASE and back.best_config == BEST
    assert back.baseline_steps_per_s == 18.2 and back.best_steps_per_s == 52.3
    assert back.probe_wait_fraction == 0.61
    assert back.tuning_steps == 40 + 40 + 10 and len(back.trials) == 5
    assert any("klt_report" in n for n in back.notes)
    assert any("1 trial(s) still running" in n for n in back.notes)
    assert "Best yet: 4 threads, queue 8 (trial #1)" in str(back)


def test_list_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 'klt.db'}"
    populate(optuna.create_study(study_name="a", storage=url, direction="maximize"), make_report())
    live = optuna.create_study(study_name="b", storage=url, direction="maximize")
    record_trial(live, make_trials()[1])
    optuna.create_study(study_name="c", storage=url)
    rows = {r["name"]: r for r in list_studies(url)}
    json.dumps(rows)
    assert set(rows) == {"a", "b", "c"}
    assert rows["a"]["n_trials"] == 5 and rows["a"]["decision"] == "tuned"
    assert rows["a"]["best_config"] == BEST.to_dict()
    assert rows["a"]["speedup"] == pytest.approx(52.3 / 18.2)
    assert rows["a"]["datetime"] is not None
    assert rows["a"]["limit"] is None  # the report has none
    assert rows["b"]["decision"] is None and rows["b"]["best_config"] == BEST.to_dict()
    assert rows["c"] == {
        "name": "c", "n_trials": 0, "decision": None, "best_config": None, "speedup": None,
        "limit": None, "datetime": None,
    }  # fmt: skip


def test_open_storage_never_creates_a_missing_sqlite_file(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(StorageError, match="no such SQLite file"):
        list_studies(f"sqlite:///{missing}")
    assert not missing.exists()
    assert os.listdir(tmp_path) == []


def test_open_storage_rejects_bad_inputs_clearly(tmp_path):
    with pytest.raises(StorageError, match="cannot parse"):
        open_storage("definitely not a url")
    (tmp_path / "text.db").write_text("not sqlite at all " * 100)
    with pytest.raises(StorageError, match="not a readable SQLite database"):
        open_storage(f"sqlite:///{tmp_path / 'text.db'}")
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE foo (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="not an Optuna storage"):
        open_storage(f"sqlite:///{tmp_path / 'other.db'}")
    with sqlite3.connect(tmp_path / "other.db") as conn:  # and it was left untouched
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"foo"}


def test_load_report_missing_study_lists_the_others(tmp_path):
    url = f"sqlite:///{tmp_path / 'klt.db'}"
    optuna.create_study(study_name="real", storage=url)
    with pytest.raises(StudyNotFoundError, match=r"no study named 'ghost'.*studies there: real"):
        load_report(url, "ghost")


def test_repr_is_one_short_line_that_points_to_print():
    from keras_loadtune import LoaderConfig
    from keras_loadtune.report import TuningReport
    from keras_loadtune.trial import TrialRecord

    trials = [
        TrialRecord(i, LoaderConfig(i + 1, 4), "complete", "sampler", steps_per_s=10.0 * (i + 1))
        for i in range(40)
    ]
    report = TuningReport(
        decision="tuned",
        baseline_config=LoaderConfig(),
        best_config=LoaderConfig(4, 8),
        trials=trials,
        baseline_steps_per_s=10.0,
        best_steps_per_s=25.0,
    )
    text = repr(report)
    assert "\\n" not in text and len(text) < 120
    assert "tuned" in text and "4 threads, queue 8" in text and "2.50x" in text
    assert "40 trial" in text


# ------------------------------------------------------------------- net effect (issue #13)


def test_unchanged_config_never_shows_a_speedup():
    # Two windows of your own config measured 18.2 and 19.1 steps/s: that is noise, not a
    # speedup (the "1.05x over your config" for an unchanged config).
    rep = make_report("kept-baseline", best_config=BASE, best_steps_per_s=19.1)
    assert rep.speedup is None
    text = str(rep)
    assert "Speedup" not in text and "1.05x" not in text
    assert "x faster" not in rep.summary_line() and "1.05" not in rep.summary_line()
    assert "Speedup" not in rep._repr_html_()


def test_net_effect_is_shown_and_labelled():
    rep = make_report(
        fit_seconds=9.0, fit_steps=360, fit_wall_seconds=10.0, tuning_cost_seconds=1.25
    )
    # At yours = Fit - Cost + 360 steps x (1/18.2 - 1/52.3): the figures the report shows.
    at_yours = 10.0 - 1.25 + 360 * (1 / 18.2 - 1 / 52.3)
    assert rep.baseline_fit_seconds == pytest.approx(at_yours)
    assert rep.net_speedup == pytest.approx(at_yours / 10.0)
    text = str(rep)
    assert "Fit:      10.0 s for 360 steps (measured, the whole fit" in text
    assert "At yours: 21.6 s (estimated: this fit at your config on keras-loadtune's loader" in text
    assert "Net:      2.16x faster than this fit at your config on keras-loadtune's loader" in text
    assert "Cost:     1.2 s caused by tuning (estimated" in text or "1.3 s caused" in text
    assert "steady state (measured)" in text
    assert "Why:" not in text
    html = rep._repr_html_()
    assert "Net" in html and "estimated" in html
    assert TuningReport.from_dict(rep.to_dict()) == rep


def test_kept_config_with_no_cost_has_a_net_of_one():
    # The "Kept your config" + "Cost 0.0 s" + "Net 1.84x slower": impossible now.
    rep = make_report(
        "kept-baseline",
        best_config=BASE,
        fit_wall_seconds=30.0,
        fit_steps=360,
        tuning_cost_seconds=0.0,
    )
    assert rep.net_speedup == pytest.approx(1.0)
    text = str(rep)
    assert "Net:      1.00x: no difference from this fit at your config" in text
    assert "slower" not in text and "x faster" not in text


def test_kept_config_with_a_cost_is_slower_by_that_cost():
    rep = make_report(
        "kept-baseline",
        best_config=BASE,
        fit_wall_seconds=30.0,
        fit_steps=360,
        tuning_cost_seconds=3.0,
    )
    assert rep.net_speedup == pytest.approx(27.0 / 30.0)
    assert "1.11x slower than this fit at your config" in str(rep)


def test_speedup_and_net_that_disagree_come_with_a_why_line():
    rep = make_report(fit_wall_seconds=30.0, fit_steps=10, tuning_cost_seconds=5.0)
    assert rep.speedup > 1 and rep.net_speedup < 1
    text = str(rep)
    assert "x slower than this fit" in text
    assert "Why:      tuning cost 5.0 s, more than the 0.4 s the faster config saved" in text


def test_mid_fit_report_says_it_is_mid_fit():
    rep = make_report(fit_wall_seconds=0.8, fit_all_steps=15, fit_steps=13, fit_running=True)
    text = str(rep)
    assert "mid-fit" in text.splitlines()[0]
    assert "0.8 s for 15 steps so far" in text and "the fit is still running" in text


def test_every_backend_names_what_at_yours_compares_against():
    # Found: "At yours ... Net 1.84x" on JAX, where plain Keras took 2.8x as long, and
    # no Loader line: the line existed for TensorFlow only.
    rep = make_report(fit_wall_seconds=10.0, fit_steps=360, tuning_cost_seconds=1.0)
    assert "Loader:" not in str(rep)  # backend unknown: nothing to name
    rep.backend = "tensorflow"
    assert "tf.data prefetch layer, which a wrapped dataset skips" in str(rep)
    for backend, name in (("jax", "JAX"), ("torch", "PyTorch")):
        rep.backend = backend
        rep.baseline_config = LoaderConfig(4, 8)
        assert f"plain Keras on {name} runs your config through its OrderedEnqueuer" in str(rep)
        rep.baseline_config = LoaderConfig(1, 10)
        text = " ".join(str(rep).split())
        assert "inline on the training thread" in text and f"on {name}" in text


@given(
    base=st.floats(0.1, 1e4),
    gain=st.floats(1.0, 10.0),
    steps=st.integers(1, 10**6),
    fit=st.floats(0.01, 1e6),
    cost=st.floats(0.0, 1e3),
)
def test_net_speedup_derives_from_the_shown_figures(base, gain, steps, fit, cost):
    rep = make_report(
        baseline_steps_per_s=base,
        best_steps_per_s=base * gain,
        fit_steps=steps,
        fit_wall_seconds=fit,
        tuning_cost_seconds=cost,
    )
    saved = steps * (1 / base - 1 / (base * gain)) if gain != 1.0 else 0.0
    expected = max(fit - cost + saved, 1e-9) / fit
    assert rep.net_speedup == pytest.approx(expected, rel=1e-6)
    text = str(rep)
    net = rep.net_speedup
    if net > 1.005:
        assert "x faster than this fit" in text
    elif net < 0.995:
        assert "x slower than this fit" in text
    if rep.speedup is not None and rep.speedup > 1 and net < 0.995:
        assert "Why:" in text


def test_from_study_leaves_out_proposals_that_never_ran():
    from keras_loadtune.decision import TunerSettings
    from keras_loadtune.decision.optuna_bridge import StudyBridge
    from keras_loadtune.trial import config_to_params

    study = optuna.create_study(direction="maximize")
    bridge = StudyBridge(TunerSettings(cores=4, seed=0), BASE, study)
    ran = bridge.ask(config_to_params(BASE))
    bridge.tell(ran, TrialRecord(0, bridge.suggest(ran), "complete", "baseline"), value=18.0)
    for reason in ("duplicate of trial 0, not re-run", "not worth it: predicted no faster"):
        trial = bridge.ask(config_to_params(BEST))
        record = TrialRecord(trial.number, bridge.suggest(trial), "skipped", "sampler")
        bridge.tell(
            trial,
            record.__class__(**{**record.__dict__, "reason": reason}),
            state="pruned",
            not_run=True,
        )
    rep = TuningReport.from_study(study)
    assert [t.number for t in rep.trials] == [0]
    assert any("2 sampler proposal(s) not run" in n for n in rep.notes)


def test_report_shows_the_worst_stall_the_tuner_caused_with_the_median_step():
    from keras_loadtune import LoaderConfig
    from keras_loadtune.report import TuningReport

    rep = TuningReport(
        "tuned",
        LoaderConfig(),
        LoaderConfig(4, 8),
        worst_step_gap_seconds=0.055,
        median_step_seconds=0.011,
    )
    assert "Stall:    longest step after a tuner action 55 ms (median step 11 ms)" in str(rep)
    assert TuningReport.from_dict(rep.to_dict()) == rep
    assert "Stall" not in str(TuningReport("tuned", LoaderConfig(), LoaderConfig(4, 8)))


# ------------------------------------------------------------ limit and advice (issue #19)


def _limited(**overrides):
    from keras_loadtune.decision.limit import Bound, MachineLimit

    limit = MachineLimit(60.0, Bound.LOADER_CPU, reached=52.3 / 60.0, mode="process", workers=2)
    profile = {"produce_wall_s": 0.03, "produce_cpu_s": 0.029, "step_compute_s": 0.008, "cores": 2}
    return make_report(limit=limit, profile=profile, **overrides)


def test_limit_and_advice_lines_in_text_html_json_and_summary():
    rep = _limited()
    text = str(rep)
    assert "  Limit:    60.0 steps/s on this machine, bound: loader-cpu (estimated" in text
    assert "the config in use reaches 87%" in text
    assert "  Advice:   - " in text and "tf.io.decode_jpeg" in text
    html_text = rep._repr_html_()
    assert "<b>Limit:</b>" in html_text and "<b>Advice</b>" in html_text
    data = json.loads(rep.to_json())
    assert data["limit"]["bound"] == "loader-cpu" and data["limit"]["steps_per_s"] == 60.0
    assert data["advice"] == rep.advice and data["advice"]
    back = TuningReport.from_dict(data)
    assert back == rep and back.limit.bound.value == "loader-cpu"
    assert "limit 60.0 steps/s (loader-cpu, 87% reached)" in rep.summary_line()


def test_version_1_reports_still_load():
    data = make_report().to_dict()
    data["format_version"] = 1
    for key in ("limit", "advice", "fit_wall_seconds", "fit_all_steps", "fit_running", "backend"):
        data.pop(key)
    rep = TuningReport.from_dict(data)
    assert rep.limit is None and rep.advice == [] and "Limit:" not in str(rep)


def test_no_limit_no_limit_line():
    rep = make_report()
    assert rep.limit is None
    assert "Limit:" not in str(rep) and "Advice:" not in str(rep)
    assert "limit" not in rep.summary_line()


def test_list_studies_reads_speedup_and_limit_through_the_report(tmp_path):
    from keras_loadtune.decision.limit import Bound, MachineLimit

    url = f"sqlite:///{tmp_path / 'klt.db'}"
    kept = make_report(
        "kept-baseline", best_config=BASE, best_steps_per_s=19.1,
        limit=MachineLimit(22.7, Bound.LOADER_CPU, reached=0.8),
    )  # fmt: skip
    populate(optuna.create_study(study_name="k", storage=url, direction="maximize"), kept)
    row = next(r for r in list_studies(url) if r["name"] == "k")
    assert row["speedup"] is None  # the report's own rule: an unchanged config has none
    assert row["limit"]["bound"] == "loader-cpu" and row["limit"]["steps_per_s"] == 22.7


# ------------------------------------------------------------- issue #23: words that read right


def test_a_report_before_any_fit_says_no_fit_yet():
    # Found: `print(tuner.report)` before any fit said "tuning in progress".
    rep = TuningReport("in-progress", None, None)
    assert "no fit yet" in str(rep).splitlines()[0] and "in progress" not in str(rep)
    assert rep.summary_line() == "keras_loadtune: no fit yet"
    assert "in progress" in make_report("in-progress", fit_running=True).summary_line()


def test_wait_has_an_arrow_only_after_a_switch():
    # Found: "Wait: 58% of step time (after tuning)" on a run that never left the user's
    # config, and "Wait: <1% -> 17%" with 0 trials.
    kept = make_report("kept-baseline", best_config=BASE, trials=[], probe_wait_fraction=0.004,
                       final_wait_fraction=0.17, epoch_wait_fractions=[0.2, 0.17])  # fmt: skip
    wait = next(line for line in str(kept).splitlines() if line.startswith("  Wait:"))
    assert "->" not in wait and "after tuning" not in wait
    assert "<1% of step time while probing, 17% in the last epoch (your config throughout)" in wait
    # Found (Grain, 180 steps): "(your config throughout)" while a trial of 256 threads
    # served most of the last epoch.
    ended = "stopped: training ended before tuning finished"
    cut = TrialRecord(1, LoaderConfig(256, 283), "pruned", "analytical", steps_per_s=389.0,
                      steps=83, reason=ended)  # fmt: skip
    tried = make_report("kept-baseline", best_config=BASE, baseline_config=BASE, trials=[cut],
                        probe_wait_fraction=0.9, final_wait_fraction=0.6,
                        baseline_steps_per_s=103.5)  # fmt: skip
    text = str(tried)
    assert "your config throughout" not in text
    assert "your config kept, trials of others ran meanwhile" in text
    only_epochs = make_report("kept-baseline", best_config=BASE, trials=[],
                              probe_wait_fraction=None, final_wait_fraction=0.58)  # fmt: skip
    assert "58% of step time (your config)" in str(only_epochs)


def test_a_wait_that_rose_after_a_faster_switch_says_why():
    # Found: "Wait: 1% -> 10%" on a run that the switch made faster.
    rep = make_report(probe_wait_fraction=0.01, final_wait_fraction=0.10,
                      epoch_wait_fractions=[0.01, 0.10])  # fmt: skip
    wait = " ".join(line.strip() for line in str(rep).splitlines() if "Wait:" in line)
    assert "1% -> 10% of step time (steps got faster, 18.2 -> 52.3 steps/s" in wait


def test_kept_config_with_no_trial_says_no_other_config_was_tried():
    # Found: "kept your config ...: no faster config found (0 trials in 0.0 s)".
    rep = make_report("kept-baseline", best_config=BASE, trials=[], tuning_seconds=0.0)
    line = rep.summary_line()
    assert "no other config was tried" in line and "0 trials" not in line
    assert (
        "no faster config found (5 trials"
        in make_report("kept-baseline", best_config=BASE).summary_line()
    )


def test_the_summary_says_which_speedup_it_quotes():
    # Found: the summary said "5.7x faster" where Net said 1.79x for the whole fit.
    rep = make_report(fit_wall_seconds=10.0, fit_steps=360, tuning_cost_seconds=1.0)
    line = rep.summary_line()
    assert "2.9x faster in steady state" in line
    net = f"{rep.net_speedup:.2f}x faster net over this fit"
    assert net in line and f"Net:      {rep.net_speedup:.2f}x faster" in str(rep)


def test_kept_says_when_a_faster_trial_was_cut_short_not_that_none_was_faster():
    # Found (Grain, 180 steps): "Kept: 16 threads (your config): no config tried was
    # faster" beside a trial of 256 threads at 389 steps/s against 103.5, cut by the
    # fit's end.
    ended = "stopped: training ended before tuning finished"
    cut = TrialRecord(1, LoaderConfig(256, 283), "pruned", "analytical", steps_per_s=389.0,
                      steps=83, reason=ended)  # fmt: skip
    kept = make_report("kept-baseline", best_config=BASE, baseline_config=BASE, trials=[cut],
                       baseline_steps_per_s=103.5)  # fmt: skip
    line = next(x for x in str(kept).splitlines() if x.startswith("  Kept:"))
    assert "no config tried was faster" not in line
    assert "256 threads, queue 283, ran 3.8x its steps/s over 83 steps" in line
    assert "training ended before tuning finished" in line
    slower = TrialRecord(1, LoaderConfig(4, 8), "pruned", "analytical", steps_per_s=50.0, steps=9)
    kept = make_report("kept-baseline", best_config=BASE, baseline_config=BASE, trials=[slower],
                       baseline_steps_per_s=103.5)  # fmt: skip
    assert "no config tried was faster" in str(kept)
