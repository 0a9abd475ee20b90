"""Tests for how the tuner logs its report (`lifecycle.fit.FitLifecycle._log_report_once`):
at `verbose=1` the full report once at the end of `fit` (the session logs its own line
when tuning starts and ends); the full report mid-fit only at `verbose=2` (issue #23:
a 30-line report appeared in the middle of training at the default verbosity)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from keras_loadtune import LoaderConfig
from keras_loadtune.lifecycle.fit import FitLifecycle
from keras_loadtune.report import TuningReport


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, fmt: str, *args: object) -> None:
        self.lines.append(fmt % args)


def _tuner(verbose: int, decision: str = "tuned") -> SimpleNamespace:
    report = TuningReport(
        decision,
        LoaderConfig(),
        LoaderConfig(4, 8),
        baseline_steps_per_s=10.0,
        best_steps_per_s=30.0,
        fit_all_steps=100,
    )
    return SimpleNamespace(verbose=verbose, _reported=False, _log=_Log(), report=lambda: report)


def _full(lines: list[str]) -> int:
    return sum("tuning report" in line for line in lines)


@pytest.mark.parametrize("verbose", [1, 2])
def test_one_full_report_per_fit_and_mid_fit_only_at_verbose_2(verbose):
    tuner = _tuner(verbose)
    FitLifecycle._log_report_once(tuner, final=False)  # tuning ended mid-fit
    mid = list(tuner._log.lines)
    assert _full(mid) == len(mid) == (1 if verbose == 2 else 0)  # verbose=1: the session's line
    FitLifecycle._log_report_once(tuner, final=True)  # the fit ended
    assert _full(tuner._log.lines) == 1 and len(tuner._log.lines) == len(mid) + 1
    FitLifecycle._log_report_once(tuner, final=True)  # a second fit logs its own report
    assert _full(tuner._log.lines) == 2


def test_verbose_0_logs_nothing_and_in_progress_is_not_logged_mid_fit():
    quiet = _tuner(0)
    FitLifecycle._log_report_once(quiet, final=False)
    FitLifecycle._log_report_once(quiet, final=True)
    assert quiet._log.lines == []
    running = _tuner(1, decision="in-progress")
    FitLifecycle._log_report_once(running, final=False)
    assert running._log.lines == []
