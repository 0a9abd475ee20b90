"""`SessionStarter`: what a stored study is expected to be worth to this fit."""

from __future__ import annotations

import logging

from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.lifecycle.session_start import SessionStarter
from keras_loadtune.persistence import StudyHandle


def _starter() -> SessionStarter:
    return SessionStarter(
        TunerSettings(), "default", None, logging.getLogger("klt-test"), fit_steps=lambda: 450
    )


def test_a_first_run_pays_for_no_trial_only_a_rerun_would_use():
    # Issue #22: with the default storage a 450-step fit ran one more trial (a climb
    # paid by "one more fit of reuse") and took 0.3-0.7 s longer than with storage=None.
    starter = _starter()
    starter.study_handle = StudyHandle(object(), "klt-x", "journal:x", copied=0)
    assert starter._reuse_steps() == 0


def test_a_rerun_counts_one_more_fit_of_reuse():
    starter = _starter()
    starter.study_handle = StudyHandle(object(), "klt-x", "journal:x", copied=4)
    assert starter._reuse_steps() == 450


def test_no_stored_study_counts_no_reuse():
    starter = _starter()
    starter.study_handle = StudyHandle(None, None, None)
    assert starter._reuse_steps() == 0
