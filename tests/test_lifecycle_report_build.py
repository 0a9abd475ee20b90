"""`lifecycle.report_build.build_report` for a fit that ended before a session existed:
it says what ran (your config, or the first move's seed), never "in progress". No Keras."""

from __future__ import annotations

from keras_loadtune import LoaderConfig
from keras_loadtune.lifecycle.report_build import build_report

USER, SEED = LoaderConfig(), LoaderConfig(9, 11)


def _report(*, running: bool = False, **kw):
    fit = {} if running else {"fit_seconds": 1.0, "fit_steps": 100, "fit_all_steps": 102}
    return build_report(
        None,
        notes=[],
        broken=False,
        wrapped=True,
        handle=None,
        cores=2,
        epoch_fractions=[] if running else [0.5, 0.1],
        reopen_reasons=[],
        fit_seconds=fit.get("fit_seconds"),
        fit_steps=fit.get("fit_steps"),
        worst_gap_s=None,
        median_step_s=None if running else 0.01,
        fit_all_steps=fit.get("fit_all_steps"),
        fit_running=running,
        **kw,
    )


def test_a_fit_that_ended_on_the_first_move_reports_the_seed_as_not_measured():
    report = _report(loader_config=SEED, user_config=USER, first_move=SEED, first_move_wait=0.8)
    assert report.decision == "tuned" and report.trials == []
    assert report.baseline_config == USER and report.best_config == SEED
    assert report.probe_wait_fraction == 0.8 and report.final_wait_fraction == 0.1
    assert any("pipeline model's seed" in n and "80%" in n for n in report.notes)
    assert "not measured" in report.summary_line()
    assert "your config was kept" not in str(report)


def test_a_fit_that_ended_before_the_probe_decided_kept_your_config():
    report = _report(loader_config=USER)
    assert report.decision == "kept-baseline" and report.best_config == USER
    assert report.probe_wait_fraction is None
    assert any("your config was kept" in n for n in report.notes)


def test_a_running_fit_without_a_session_is_in_progress():
    report = _report(running=True, loader_config=SEED, user_config=USER, first_move=SEED)
    assert report.decision == "in-progress"
