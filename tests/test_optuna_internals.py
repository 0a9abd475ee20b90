"""Pins the Optuna internals `decision.optuna_bridge.ask_fixed` relies on.

Like `tests/test_keras_internals.py` for Keras: if an Optuna release renames one of
these, this file fails and names it, instead of the tuner silently degrading (a
missing `_storage` falls back to `enqueue_trial`; a missing `_thread_local` would
leave a stale trial cache).
"""

from __future__ import annotations

import optuna
import pytest

from keras_loadtune import LoaderConfig
from keras_loadtune.decision.optuna_bridge import StudyBridge, ask_fixed
from keras_loadtune.decision.settings import TunerSettings

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def study() -> optuna.Study:
    return optuna.create_study(direction="maximize")


def test_study_exposes_storage_and_study_id(study):
    assert isinstance(study._storage, optuna.storages.BaseStorage)
    assert isinstance(study._study_id, int)
    assert study._storage.get_study_id_from_name(study.study_name) == study._study_id


def test_study_caches_trials_in_thread_local(study):
    assert hasattr(study._thread_local, "cached_all_trials")
    study.ask()
    study.get_trials(deepcopy=False)  # fills the cache
    study._thread_local.cached_all_trials = None  # what ask_fixed resets
    assert len(study.get_trials(deepcopy=False)) == 1


def test_enqueue_trial_uses_fixed_params_system_attr(study):
    study.enqueue_trial({"workers": 3})
    (waiting,) = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == {"workers": 3}


def test_ask_fixed_gives_a_running_trial_with_the_fixed_params(study):
    trial = ask_fixed(study, {"mode": "process", "workers": 5, "max_queue_size": 6})
    assert trial is not None
    assert study.get_trials(deepcopy=False)[0].state == optuna.trial.TrialState.RUNNING
    assert not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    bridge = StudyBridge(TunerSettings(), LoaderConfig(), study)
    assert bridge.suggest(trial) == LoaderConfig(5, 6, True)


def test_a_fixed_trial_outside_the_sampler_range_runs_without_a_warning(study, recwarn):
    # A climb or seed may lie outside the local range; Optuna warned "Fixed parameter
    # workers with value 12 is out of range" for a config the tuner chose on purpose.
    bridge = StudyBridge(TunerSettings(), LoaderConfig(), study)
    bridge.set_space((2, 4), lambda workers: workers + 1)
    trial = bridge.ask({"mode": "thread", "workers": 12, "max_queue_size": 13})
    assert bridge.suggest(trial) == LoaderConfig(12, 13)
    assert not [w for w in recwarn.list if "out of range" in str(w.message)]


def test_ask_fixed_degrades_without_the_internals():
    class Bare:  # a study-like object without the private attributes
        pass

    assert ask_fixed(Bare(), {"workers": 2}) is None  # type: ignore[arg-type]


def test_trial_set_constraint_exists(study):
    # Optuna >= 5: samplers read constraints natively; the bridge calls it when present.
    assert hasattr(optuna.Trial, "set_constraint")
    trial = study.ask()
    trial.set_constraint("ram_excess_bytes", -1.0)
    study.tell(trial, 1.0)
    assert study.trials[0].constraints == {"ram_excess_bytes": -1.0}


def test_trial_exposes_its_fixed_params(study):
    # optuna_bridge reads Trial._fixed_params to tell a fixed (seeded) trial from a sampled one.
    trial = ask_fixed(study, {"mode": "thread", "workers": 4, "max_queue_size": 5})
    assert trial is not None
    assert trial._fixed_params == {"mode": "thread", "workers": 4, "max_queue_size": 5}
    assert study.ask()._fixed_params == {}
