"""The driver loop and the events the session returns (no phase diffing by callers)."""

from __future__ import annotations

import pytest
from tuners import make_settings

from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TuningSession
from keras_loadtune.decision.driver import Driver, Observation
from keras_loadtune.decision.phase import Event, Phase
from keras_loadtune.measurement import StepSample
from keras_loadtune.simulation import SimulatedPipeline, simulate_tuning


class _Loader:
    """An applier that records what it ran and refuses process configs."""

    def __init__(self) -> None:
        self.applied: list[LoaderConfig] = []

    def reconfigure(self, config: LoaderConfig) -> None:
        if config.use_multiprocessing:
            raise RuntimeError("cannot pickle the dataset")
        self.applied.append(config)


def test_phase_is_a_str_enum_for_old_comparisons():
    assert Phase.COMPUTE_BOUND == "compute-bound" and str(Phase.STEADY) == "steady"
    session = TuningSession(LoaderConfig(), make_settings())
    assert session.phase == "probe" and session.phase is Phase.PROBE


def test_events_tell_tuning_started_then_settled():
    pipe = SimulatedPipeline(io_s=0.04, compute_s=0.01, cores=8, seed=0)
    pipe.reconfigure(LoaderConfig())
    session = TuningSession(
        LoaderConfig(), make_settings(), clock=lambda: pipe.now, rss_probe=pipe.rss, cores=8
    )
    driver = Driver(session, pipe)
    events: list[tuple[int, Event]] = []
    for i in range(600):
        obs = Observation(pipe.step(), pipe.drain_records(), pipe.drain_startups())
        events.extend((i, e) for e in driver.step(obs).events)
    kinds = [e for _, e in events]
    assert kinds == [Event.TUNING_STARTED, Event.SETTLED]
    started, settled = (i for i, _ in events)
    assert started < settled
    assert pipe.config == session.best_config == session.current_config != LoaderConfig()


def test_compute_bound_event_and_no_switch():
    session = TuningSession(LoaderConfig(), make_settings(probe_steps=4, skip_steps=0))
    driver = Driver(session, _Loader())
    results = [driver.step(Observation(StepSample(0.0, 0.01))) for _ in range(6)]
    assert [e for r in results for e in r.events] == [Event.COMPUTE_BOUND]
    assert all(r.switch_to is None for r in results)
    assert driver.applier.applied == []


def test_a_failed_switch_is_reported_to_the_session_and_training_goes_on():
    session = TuningSession(LoaderConfig(), make_settings(probe_steps=10, skip_steps=0))
    loader = _Loader()
    driver = Driver(session, loader)
    proc = LoaderConfig(2, 4, True)
    assert driver.apply(proc) is False
    assert "process" not in session.modes
    assert any("cannot pickle" in n for n in session.notes)
    assert session.current_config == LoaderConfig()


def test_startups_in_the_observation_reach_the_trial():
    res = simulate_tuning(
        SimulatedPipeline(python_s=0.02, compute_s=0.005, cores=16, seed=0),
        make_settings(cores=16),
        baseline=LoaderConfig(),
        total_steps=600,
    )
    procs = [r for r in res.session.trials if r.config.use_multiprocessing]
    started = dict(res.startups)  # what the loader recorded, as the engine's LoaderStats
    assert procs and procs[0].startup_s == pytest.approx(started[procs[0].config])
    # The forkserver was prewarmed when tuning started: only what was left of it counts.
    workers_s = 0.03 * procs[0].config.workers
    assert workers_s <= procs[0].startup_s < 0.5 + workers_s


@pytest.mark.parametrize("reopens_used", [0, 1])
def test_drift_returns_a_reopened_event_within_one_reopen_budget(reopens_used):
    settings = make_settings(drift_window_steps=20, drift_sustain_windows=2, max_reopens=1)
    pipe = SimulatedPipeline(io_s=0.02, compute_s=0.01, cores=8, seed=0)
    pipe.reconfigure(LoaderConfig())
    session = TuningSession(
        LoaderConfig(),
        settings,
        clock=lambda: pipe.now,
        rss_probe=pipe.rss,
        cores=8,
        reopens_used=reopens_used,  # e.g. spent by a compute-bound re-check before
    )
    driver = Driver(session, pipe)
    seen: list[Event] = []
    for i in range(2500):
        if i == 1200:
            pipe.set_params(io_s=0.12)  # the storage got 6x slower
        obs = Observation(pipe.step(), pipe.drain_records(), pipe.drain_startups())
        seen.extend(driver.step(obs).events)
    assert session.reopens == 1
    if reopens_used:  # the budget was spent before: drift is not watched
        assert Event.REOPENED not in seen and not session.reopen_reasons
        return
    assert seen.count(Event.REOPENED) == 1
    assert seen.index(Event.REOPENED) > seen.index(Event.SETTLED)
    assert session.reopen_reasons
    final = driver.finish("training ended")
    assert session.phase == "stopped" and (final is None or final == pipe.config)


@pytest.mark.parametrize("acknowledge", [True, False])
def test_a_switch_that_only_started_is_acknowledged_by_the_caller_later(acknowledge):
    pipe = SimulatedPipeline(io_s=0.04, compute_s=0.01, cores=8, seed=0)
    pipe.reconfigure(LoaderConfig())
    session = TuningSession(
        LoaderConfig(), make_settings(), clock=lambda: pipe.now, rss_probe=pipe.rss, cores=8
    )
    driver = Driver(session, pipe, acknowledge=acknowledge)
    switched = None
    for _ in range(600):
        obs = Observation(pipe.step(), pipe.drain_records(), pipe.drain_startups())
        switched = driver.step(obs).switch_to
        if switched is not None:
            break
    assert switched is not None and session.current_config == switched
    # Not acknowledged, the switch may still fail (a background start): the session then
    # rolls back to the config the loader kept; acknowledged, it stays on the new one.
    session.mark_failed(switched, "RuntimeError: the new pool did not start")
    assert session.current_config == (switched if acknowledge else LoaderConfig())


def test_the_failure_reason_can_be_phrased_by_the_caller():
    session = TuningSession(LoaderConfig(), make_settings(probe_steps=10, skip_steps=0))
    driver = Driver(session, _Loader(), describe=lambda exc: f"process mode skipped: {exc}")
    assert driver.apply(LoaderConfig(2, 4, True)) is False
    assert "process mode skipped: cannot pickle the dataset" in session.notes


def test_the_driver_polls_a_background_switch_and_reports_its_end_once():
    from keras_loadtune.decision.driver import SwitchOutcome

    class Session:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def acknowledge(self, config):
            self.calls.append(("acknowledge", config))

        def mark_failed(self, config, reason):
            self.calls.append(("mark_failed", config, reason))

    class Background:
        def __init__(self, outcomes):
            self.outcomes = list(outcomes)

        def reconfigure(self, config):
            pass

        def poll(self):
            return self.outcomes.pop(0) if self.outcomes else SwitchOutcome()

    eight, two = LoaderConfig(8), LoaderConfig(2)
    session = Session()
    loader = Background(
        [
            SwitchOutcome(pending=True),
            SwitchOutcome(started=eight),
            SwitchOutcome(failed=two, reason="no room"),
        ]
    )
    driver = Driver(session, loader, acknowledge=False)  # type: ignore[arg-type]
    assert [driver.poll() for _ in range(4)] == [True, False, False, False]
    assert session.calls == [("acknowledge", eight), ("mark_failed", two, "no room")]
    assert Driver(session, _Loader()).poll() is False  # switches at once: nothing to poll
