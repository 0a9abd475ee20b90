"""TuningSession warm start from a stored study (simulator only, no TensorFlow)."""

from __future__ import annotations

import optuna
import pytest
from tuners import make_settings

from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings, TuningSession
from keras_loadtune.decision.optuna_bridge import default_sampler
from keras_loadtune.decision.warm_start import WARM_START_TOLERANCE, WarmStart, stored_best
from keras_loadtune.measurement import StepSample
from keras_loadtune.simulation import SimulatedPipeline, simulate_tuning
from keras_loadtune.trial import (
    ATTR_CONSTRAINT,
    ATTR_PROFILE,
    ATTR_SOURCE,
    ATTR_STATE,
    ATTR_THREADS_RAM_ONLY,
    config_to_params,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)
LATENCY = dict(io_s=0.04, compute_s=0.01, cores=8)
GIL = dict(python_s=0.02, compute_s=0.005, cores=16)


def _study(settings: TunerSettings, name: str = "klt-test") -> optuna.Study:
    return optuna.create_study(
        study_name=name, direction="maximize", sampler=default_sampler(settings)
    )


def _run(study, pipe_kw, *, seed=0, steps=800, settings=None, **kw):
    settings = settings or make_settings(pipe_kw["cores"])
    pipe = SimulatedPipeline(seed=seed, noise_cv=0.05, **pipe_kw)
    return simulate_tuning(
        pipe, settings, baseline=LoaderConfig(), total_steps=steps, study=study, **kw
    )


def _add(
    study, config, value, *, state="complete", constraint=0.0, source="sampler", profile=None,
    extra=None,
):  # fmt: skip
    trial = optuna.trial.create_trial(
        params=config_to_params(config),
        distributions={
            "mode": optuna.distributions.CategoricalDistribution(["thread", "process"]),
            "workers": optuna.distributions.IntDistribution(1, 64),
            "max_queue_size": optuna.distributions.IntDistribution(1, 64),
        },
        value=value,
        user_attrs={
            ATTR_STATE: state,
            ATTR_SOURCE: source,
            ATTR_CONSTRAINT: [constraint],
            **({ATTR_PROFILE: profile} if profile is not None else {}),
            **(extra or {}),
        },
    )
    study.add_trial(trial)


@pytest.mark.parametrize("pipe_kw", [LATENCY, GIL], ids=["latency", "gil"])
def test_second_run_on_the_same_study_spends_far_fewer_tuning_steps(pipe_kw):
    study = _study(make_settings(pipe_kw["cores"]))
    first = _run(study, pipe_kw, seed=0)
    second = _run(study, pipe_kw, seed=1)
    s1, s2 = first.session, second.session
    assert s1.warm_start is None and not s1.warm_start_kept
    assert s2.warm_start is not None and s2.warm_start.study_name == "klt-test"
    assert s2.warm_start_kept and s2.finished_reason.startswith("warm start from study")
    assert s2.best_config == s1.best_config == second.final_config
    # A search of two short trials (latency: windows of two capped delivery rounds) costs
    # about one verify window; a longer one (GIL: process trials) costs far more.
    assert s2.tuning_steps <= s1.tuning_steps, (s1.tuning_steps, s2.tuning_steps)
    if pipe_kw is GIL:
        assert 2 * s2.tuning_steps < s1.tuning_steps, (s1.tuning_steps, s2.tuning_steps)
        assert s2.tuning_seconds < s1.tuning_seconds
    assert second.total_time_s <= 1.01 * first.total_time_s  # never slower over the fit
    # One measured trial: the verify window of the stored best, no probe, no baseline.
    assert [(t.source, t.state) for t in s2.trials] == [("warm-start", "complete")]
    assert s2.baseline_record is None and s2.probe_stats is None
    assert second.final_steps_per_s == pytest.approx(first.final_steps_per_s, rel=0.05)
    # Switched as soon as the probe's conclusive steps opened the study (a fit with a
    # warm hint file starts on it from its first batch; the simulator has no hint file).
    # (The first move, a thread seed made while the study opened, may come before it.)
    assert any(c == s1.best_config and step <= 12 for step, c in second.switches[:2])
    # The verify window was recorded in the study, as trial.py defines.
    frozen = study.trials[s2.trials[0].number]
    assert frozen.user_attrs[ATTR_SOURCE] == "warm-start"
    assert frozen.params == config_to_params(s1.best_config)
    # A third run still warm-starts, now from two measurements of the config.
    third = _run(study, pipe_kw, seed=2)
    assert third.session.warm_start_kept and third.session.warm_start.measurements >= 2


def test_clearly_slower_stored_config_reopens_tuning_with_the_user_config_measured():
    study = _study(make_settings(8))
    first = _run(study, LATENCY)
    slower = dict(LATENCY, io_s=0.32)  # the storage got 8x slower: the stored threads no longer do
    second = _run(study, slower, steps=1000)
    s = second.session
    assert s.warm_start is not None and not s.warm_start_kept
    sources = [t.source for t in s.trials]
    assert sources[:2] == ["warm-start", "baseline"]
    assert s.trials[1].config == LoaderConfig() and s.baseline_record is s.trials[1]
    measured = [t for t in s.trials if t.state == "complete"]
    assert len(measured) <= make_settings(8).reopen_trials + 2
    assert any("re-tuned" in n and f"{WARM_START_TOLERANCE:.0%}" in n for n in s.notes)
    assert s.best_config.workers > first.session.best_config.workers
    assert second.final_steps_per_s == pytest.approx(100, rel=0.1)  # the compute floor
    # (+275: the first move, made while the study opened, is a few steps of its own, and
    # the verify then skips the refill of the first move's queue, 60-70 batches here)
    assert s.tuning_steps < first.session.tuning_steps + 275


def test_slightly_slower_or_noisy_stored_config_is_kept():
    settings = make_settings(8)
    study = _study(settings)
    first = _run(study, LATENCY)
    best = first.session.best_config
    # The stored figure is 15% too optimistic: within tolerance, keep it.
    value = first.steps_per_s_by_config[best] * 1.15
    _add(study, best, value)
    _add(study, best, value)
    second = _run(study, LATENCY, seed=3)
    assert second.session.warm_start_kept and second.session.best_config == best


def test_stored_config_that_cannot_run_falls_back_to_the_probe():
    study = _study(make_settings(16))
    first = _run(study, GIL)
    assert first.session.best_config.use_multiprocessing
    second = _run(study, dict(GIL, picklable=False), steps=900)
    s = second.session
    assert [t.source for t in s.trials[:2]] == ["warm-start", "baseline"]
    assert s.trials[0].state == "failed"
    assert any("could not be measured" in n for n in s.notes)
    assert s.probe_stats is not None and not s.best_config.use_multiprocessing
    assert not s.warm_start_kept


def test_disabled_process_mode_warm_starts_from_the_best_thread_config():
    study = _study(make_settings(16))
    _run(study, GIL)
    second = _run(study, GIL, settings=make_settings(16, modes=("thread",)))
    s = second.session
    assert s.warm_start is not None and not s.warm_start.config.use_multiprocessing
    assert not s.trials[0].config.use_multiprocessing


def test_warm_start_false_probes_as_usual():
    settings = make_settings(8)
    study = _study(settings)
    _run(study, LATENCY)
    pipe = SimulatedPipeline(**LATENCY)
    pipe.reconfigure(LoaderConfig())
    session = TuningSession(
        LoaderConfig(), settings, study=study, warm_start=False, clock=lambda: pipe.now
    )
    for _ in range(60):
        session.observe_step(pipe.step())
    assert session.warm_start is None and session.trials[0].source == "baseline"


def test_empty_or_foreign_study_probes_as_usual():
    settings = make_settings(8)
    study = _study(settings)
    # Trials another tool wrote (no klt user attrs) and tuner trials that are not usable.
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    _add(study, LoaderConfig(4, 4), 500.0, constraint=1.0)  # over the RAM budget
    _add(study, LoaderConfig(5, 5), 600.0, state="skipped")  # a duplicate, not a measurement
    res = _run(study, LATENCY)
    assert res.session.warm_start is None and res.session.trials[0].source == "baseline"


def test_unreadable_study_is_noted_and_probed():
    settings = make_settings(8)
    study = _study(settings)
    _add(study, LoaderConfig(4, 4), 50.0)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    study.get_trials = broken  # type: ignore[method-assign]
    pipe = SimulatedPipeline(**LATENCY)
    session = TuningSession(LoaderConfig(), settings, study=study, clock=lambda: pipe.now)
    session.observe_step(StepSample(0.03, 0.04))
    assert session.phase == "probe" and session.warm_start is None
    assert any("disk on fire" in n for n in session.notes)


def test_stored_best_median_cost_and_feasibility():
    study = _study(make_settings(8))
    base = LoaderConfig()
    _add(study, base, 20.0, source="baseline")
    _add(study, LoaderConfig(8, 8), 100.0)
    _add(study, LoaderConfig(8, 8), 30.0)
    _add(study, LoaderConfig(8, 8), 90.0)  # median 90
    _add(study, LoaderConfig(4, 4), 89.0)  # within 2% of 90 and cheaper
    _add(study, LoaderConfig(6, 6, True), 500.0)  # fastest, but processes are not allowed
    warm = stored_best(study, base, allowed=lambda c: not c.use_multiprocessing)
    assert warm == WarmStart("klt-test", LoaderConfig(4, 4), 89.0, 1, 20.0)
    warm = stored_best(study, base, min_improvement=0.0, allowed=lambda c: c.workers < 6)
    assert warm is not None and warm.config == LoaderConfig(4, 4)
    assert stored_best(study, LoaderConfig(3, 3)).baseline_steps_per_s is None
    assert stored_best(_study(make_settings(8), "empty"), base) is None


def test_drift_after_a_warm_start_reopens_and_clears_the_kept_flag():
    study = _study(make_settings(8))
    _run(study, LATENCY)
    res = _run(study, LATENCY, seed=1, steps=1500, changes={400: {"io_s": 0.32}})
    s = res.session
    assert s.warm_start is not None and s.reopen_reasons
    assert not s.warm_start_kept
    assert res.final_steps_per_s == pytest.approx(100, rel=0.1)


def test_fixed_trials_are_never_taken_from_another_process_queue():
    """A trial another process enqueued (WAITING) is not popped by our fixed-param asks."""
    settings = make_settings(8)
    study = _study(settings)
    study.enqueue_trial(config_to_params(LoaderConfig(3, 3)))  # "another process"
    res = _run(study, LATENCY)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [
        config_to_params(LoaderConfig(3, 3))
    ]
    for rec in res.session.trials:
        assert study.trials[rec.number].params == rec.optuna_params()


def test_verifying_is_tuning_with_a_flag_until_the_verdict():
    from keras_loadtune.decision import TuningSession
    from keras_loadtune.measurement import StepSample

    settings = make_settings(8)
    study = _study(settings)
    _add(study, LoaderConfig(6, 8), 100.0)
    session = TuningSession(LoaderConfig(), settings, study=study, cores=8)
    assert session.observe_step(StepSample(0.03, 0.04)) == LoaderConfig(6, 8)
    assert session.phase == "tuning" and session.verifying  # the callback's "tuning"
    for _ in range(200):
        session.observe_step(StepSample(0.0, 0.01))
        if not session.verifying:
            break
    assert not session.verifying and session.phase == "steady" and session.warm_start_kept


def test_a_session_started_on_the_stored_best_verifies_it_without_a_switch():
    settings = make_settings(8)
    study = _study(settings)
    best = LoaderConfig(6, 8)
    _add(study, best, 90.0)
    session = TuningSession(LoaderConfig(), settings, study=study, running=best)
    assert session.current_config == best
    result = session.observe(StepSample(wait_s=0.001, step_s=0.011))
    assert result.switch_to is None  # already running it: no switch...
    assert session.verifying and session.warm_start.config == best
    assert session._runner.window.skip_left == 0  # ...and no refill to skip: it ran before


def test_a_session_started_on_a_config_the_study_no_longer_backs_probes_the_baseline():
    settings = make_settings(8)
    study = _study(settings)
    best = LoaderConfig(6, 8)
    # This run's loader is 4x slower than the one the stored trial was measured with.
    _add(study, best, 90.0, profile={"produce_ms": 15.0, "cpu_ratio": 0.02})
    user = LoaderConfig(1, 2)
    session = TuningSession(
        user,
        settings,
        study=study,
        running=best,
        workload_profile={"produce_ms": 60.0, "cpu_ratio": 0.02},
    )
    result = session.observe(StepSample(wait_s=0.03, step_s=0.04))
    assert result.switch_to == user and session.current_config == user
    assert session.phase == "probe" and session.warm_start is None
    assert any("probing your config" in n for n in session.notes)


def test_a_session_started_on_a_stored_config_without_its_study_probes_the_baseline():
    # The warm hint was read, but the storage could not be opened: nothing verifies it.
    user, hinted = LoaderConfig(1, 2), LoaderConfig(6, 8)
    session = TuningSession(user, make_settings(8), study=None, running=hinted)
    result = session.observe(StepSample(wait_s=0.03, step_s=0.04))
    assert result.switch_to == user and session.phase == "probe"
    assert any("could not be opened" in n for n in session.notes)


@pytest.mark.parametrize("ram_only, workers", [(True, 11), (False, 6), (None, 6)])
def test_the_stored_best_is_ranked_as_the_session_that_measured_it_ranked_it(ram_only, workers):
    # A loader that is not CPU-heavy: near-equal thread configs rank more threads first
    # (`search.headroom_key`), in the session and in the warm start alike; unstamped
    # trials (older studies) keep the cheapest.
    study = optuna.create_study(direction="maximize")
    for config, value in ((LoaderConfig(6, 9), 150.8), (LoaderConfig(11, 16), 151.8)):
        stamp = {ATTR_THREADS_RAM_ONLY: ram_only} if ram_only is not None else None
        _add(study, config, value, extra=stamp)
    best = stored_best(study, LoaderConfig())
    assert best is not None and best.config.workers == workers
