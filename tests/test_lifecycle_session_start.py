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


_IMPORT_AHEAD = """
import logging, sys, types
from keras_loadtune import LoaderConfig
from keras_loadtune.decision.driver import Observation
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.lifecycle.session_start import SessionStarter
from keras_loadtune.measurement import StepSample

wait_s = float(sys.argv[1])
starter = SessionStarter(TunerSettings(), None, None, logging.getLogger("x"))
dataset = types.SimpleNamespace(config=LoaderConfig(), stats=[], pending_config=None)
assert starter.poll(dataset, Observation(StepSample(wait_s=wait_s, step_s=0.050))) is None
import threading
importing = [t for t in threading.enumerate() if t.name == "keras_loadtune-import"]
for t in importing:
    t.join(60)
print(len(importing), "optuna" in sys.modules)
"""


def _probe_one_step(wait_s: float) -> str:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_AHEAD, str(wait_s)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_a_probe_step_that_mostly_waits_imports_optuna_on_a_daemon_thread():
    # Issue #22: started at the verdict, the import slowed the first trial's steps.
    assert _probe_one_step(0.040) == "1 True"


def test_a_probe_step_that_barely_waits_imports_nothing():
    assert _probe_one_step(0.001) == "0 False"
