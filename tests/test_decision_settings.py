"""TunerSettings: defaults from the machine, validation messages that name the argument."""

from __future__ import annotations

import pytest

from keras_loadtune.decision import resources
from keras_loadtune.decision.settings import TunerSettings


def test_defaults_scale_with_cores():
    s = TunerSettings(cores=4)
    assert (s.max_thread_workers, s.max_process_workers) == (256, 4)  # threads: per loader
    big = TunerSettings(cores=64)
    assert (big.max_thread_workers, big.max_process_workers) == (256, 64)
    assert s.wait_threshold == 0.05 and s.max_trials == 10
    assert s.ram_budget_bytes > 0


def test_machine_defaults_resolved():
    s = TunerSettings()
    assert s.cores == resources.available_cores()
    assert s.max_process_workers == s.cores
    assert s.max_workers == max(s.max_thread_workers, s.max_process_workers)


def test_replace_rescales_machine_derived_fields_only():
    s = TunerSettings(cores=4, max_process_workers=2)
    r = s.replace(cores=64)
    assert r.max_process_workers == 2  # given: kept
    assert r.max_thread_workers == 256  # derived: re-resolved (the absolute limit)
    assert r.max_process_workers == 2  # explicit: kept
    assert s.replace(max_trials=3).max_trials == 3


def test_modes_normalised_and_worker_cap():
    s = TunerSettings(cores=8, modes=["process", "thread"])
    assert s.modes == ("thread", "process")
    assert s.worker_cap("process") == 8
    assert TunerSettings(cores=8, modes=("thread",)).max_workers == 256
    with pytest.raises(ValueError, match="mode"):
        s.worker_cap("fiber")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"cores": 0}, ValueError, "cores"),
        ({"cores": 2.0}, TypeError, "cores"),
        ({"max_thread_workers": 0}, ValueError, "max_thread_workers"),
        ({"max_process_workers": True}, TypeError, "max_process_workers"),
        ({"queue_size_range": (0, 8)}, ValueError, "queue_size_range"),
        ({"queue_size_range": (9, 8)}, ValueError, "queue_size_range"),
        ({"queue_size_range": 8}, TypeError, "queue_size_range"),
        ({"modes": ()}, ValueError, "modes"),
        ({"modes": ("thread", "gpu")}, ValueError, "subset of"),
        ({"modes": "thread"}, TypeError, "modes"),
        ({"max_trials": 0}, ValueError, "max_trials"),
        ({"max_tuning_steps": -1}, ValueError, "max_tuning_steps"),
        ({"max_tuning_seconds": 0}, ValueError, "max_tuning_seconds"),
        ({"ram_budget_bytes": 0}, ValueError, "ram_budget_bytes"),
        ({"sampler": "tpe"}, TypeError, "sampler"),
        ({"seed": -1}, ValueError, "seed"),
        ({"wait_threshold": 1.5}, ValueError, "wait_threshold"),
        ({"wait_threshold": "5%"}, TypeError, "wait_threshold"),
        ({"probe_steps": 1}, ValueError, "probe_steps"),
        ({"skip_steps": -1}, ValueError, "skip_steps"),
        ({"min_trial_steps": 20, "max_trial_steps": 10}, ValueError, "max_trial_steps"),
        ({"settle_rel_tol": 0}, ValueError, "settle_rel_tol"),
        ({"patience": 0}, ValueError, "patience"),
        ({"min_improvement": -0.1}, ValueError, "min_improvement"),
        ({"drift_margin": 1.0}, ValueError, "drift_margin"),
        ({"drift_drop": 0.0}, ValueError, "drift_drop"),
        ({"drift_drop": 1.0}, ValueError, "drift_drop"),
        ({"payoff_ratio": -1.0}, ValueError, "payoff_ratio"),
        ({"payoff_ratio": "2"}, TypeError, "payoff_ratio"),
        ({"drift_window_steps": 1}, ValueError, "drift_window_steps"),
        ({"drift_sustain_windows": 0}, ValueError, "drift_sustain_windows"),
        ({"reopen_trials": 0}, ValueError, "reopen_trials"),
        ({"max_reopens": -1}, ValueError, "max_reopens"),
    ],
)
def test_invalid_settings_name_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        TunerSettings(**{"cores": 4, **kwargs})


def test_error_message_lists_accepted_values():
    with pytest.raises(ValueError, match=r"\('thread', 'process'\)"):
        TunerSettings(cores=4, modes=("gpu",))


def test_optional_budgets_accept_none():
    s = TunerSettings(cores=4, max_tuning_steps=None, max_tuning_seconds=None)
    assert s.max_tuning_steps is None and s.max_tuning_seconds is None


def test_resources_helpers():
    assert resources.available_cores() >= 1
    assert 0 < resources.default_ram_budget(0.25) <= resources.default_ram_budget(0.5)
    assert resources.process_tree_rss() > 10 * 2**20
    with pytest.raises(ValueError, match="fraction"):
        resources.default_ram_budget(0)
