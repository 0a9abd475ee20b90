"""Tests for the report's limit and advice (issue #19): each advice rule in
`keras_loadtune.report._advice` against a case where it fires and one where it stays
silent, and `build_report`'s limit from a session's profile."""

from __future__ import annotations

import pytest

from keras_loadtune import LoaderConfig
from keras_loadtune.decision.limit import Bound, MachineLimit
from keras_loadtune.report import TuningReport
from keras_loadtune.report import _advice as advice
from keras_loadtune.trial import TrialRecord

BASE = LoaderConfig()
PROFILE = {
    "produce_wall_s": 0.060,
    "produce_cpu_s": 0.058,
    "step_compute_s": 0.030,
    "cores": 2.0,
    "batch_nbytes": float(1 << 20),
}


def report(bound: Bound, reached: float | None, **overrides) -> TuningReport:
    rates = {"model-step": 33.3, bound.value: 22.7} if bound is not Bound.MODEL_STEP else {}
    limit = MachineLimit(22.7, bound, reached=reached, mode="process", workers=2, rates=rates)
    kwargs = dict(
        decision="kept-baseline",
        baseline_config=BASE,
        best_config=BASE,
        baseline_steps_per_s=22.0,
        profile=dict(PROFILE),
        epoch_wait_fractions=[0.02, 0.02],
        limit=limit,
    )
    kwargs.update(overrides)
    return TuningReport(**kwargs)


def test_at_limit_fires_when_reached_and_stays_silent_below():
    fired = advice.at_limit(report(Bound.LOADER_CPU, 0.97))
    assert fired is not None and "reaches 97%" in fired.text
    assert "loader tuning cannot make this fit faster" in fired.text
    assert advice.at_limit(report(Bound.LOADER_CPU, 0.5)) is None
    assert advice.at_limit(report(Bound.LOADER_CPU, None)) is None
    assert advice.at_limit(report(Bound.LOADER_CPU, 0.97, limit=None)) is None


def test_at_limit_comes_first_and_names_what_moves_the_limit():
    lines = report(Bound.LOADER_CPU, 0.97).advice
    assert "reaches 97%" in lines[0]
    assert any("tf.io.decode_jpeg" in line for line in lines[1:])
    assert not any("could be up to" in line for line in lines)  # no promise of more tuning


def test_more_workers_fires_below_the_limit_and_says_by_how_much():
    fired = advice.more_workers(report(Bound.LOADER_CPU, 0.5))
    assert fired is not None
    assert "2 processes" in fired.text and "up to 2.0x faster" in fired.text
    assert advice.more_workers(report(Bound.LOADER_CPU, 0.95)) is None


def test_more_workers_never_promises_what_a_trial_measured_otherwise():
    slow = TrialRecord(1, LoaderConfig(2, 4, True), "complete", "sampler", steps_per_s=12.0)
    fired = advice.more_workers(report(Bound.LOADER_CPU, 0.5, trials=[slow]))
    assert fired is not None
    assert "up to" not in fired.text and "measured trial with as many got 12.0" in fired.text
    fewer = TrialRecord(1, LoaderConfig(1, 4, True), "complete", "sampler", steps_per_s=12.0)
    assert "up to 2.0x" in advice.more_workers(report(Bound.LOADER_CPU, 0.5, trials=[fewer])).text


def test_more_workers_stays_silent_when_a_trial_measured_close_to_the_estimate():
    # Found: 2 processes measured 82.4 against an estimate of 92.1 (89%), and the report
    # called the estimate "optimistic": within its accuracy, there is nothing to say.
    close = TrialRecord(1, LoaderConfig(2, 4, True), "complete", "sampler", steps_per_s=20.0)
    assert advice.more_workers(report(Bound.LOADER_CPU, 0.88, trials=[close])) is None


def test_decode_in_c_only_for_a_cpu_bound_loader():
    fired = advice.decode_in_c(report(Bound.LOADER_CPU, 0.97))
    assert fired is not None and "tf.io.decode_jpeg" in fired.text and "58 ms" in fired.text
    assert advice.decode_in_c(report(Bound.MODEL_STEP, 0.97)) is None
    assert advice.decode_in_c(report(Bound.LOADER_CPU, 0.97, profile={})) is None


def test_cache_batches_only_when_epochs_repeat():
    fired = advice.cache_batches(report(Bound.LOADER_CPU, 0.97))
    assert fired is not None and "cache" in fired.text and "up to 1.5x" in fired.text
    assert advice.cache_batches(report(Bound.LOADER_CPU, 0.97, epoch_wait_fractions=[0.3])) is None
    assert advice.cache_batches(report(Bound.MODEL_STEP, 0.97)) is None


def test_more_cores_only_when_the_cores_bound_and_capped_by_the_step():
    fired = advice.more_cores(report(Bound.LOADER_CPU, 0.97))
    assert fired is not None and "with 4 instead of 2" in fired.text and "33.3" in fired.text
    assert advice.more_cores(report(Bound.MEMORY, 0.97)) is None
    # The step is already the next limit: more cores would not move it.
    flat = report(Bound.LOADER_CPU, 0.97)
    flat.limit = MachineLimit(
        22.7, Bound.LOADER_CPU, reached=0.97, rates={"model-step": 23.0, "loader-cpu": 22.7}
    )
    assert advice.more_cores(flat) is None


def test_cheaper_step_only_when_the_model_step_bounds():
    fired = advice.cheaper_step(report(Bound.MODEL_STEP, 0.98))
    assert fired is not None and "mixed precision" in fired.text and "jit_compile" in fired.text
    assert "44 ms per step" in fired.text  # the limit's own step: 1 / 22.7 steps/s
    assert advice.cheaper_step(report(Bound.LOADER_CPU, 0.98)) is None


def test_more_threads_only_when_latency_bounds():
    fired = advice.more_threads(report(Bound.LOADER_LATENCY, 0.98))
    assert fired is not None and "max_thread_workers" in fired.text and "1.5x" in fired.text
    assert advice.more_threads(report(Bound.MODEL_STEP, 0.98)) is None


def test_less_memory_only_when_memory_bounds():
    fired = advice.less_memory(report(Bound.MEMORY, 0.98))
    assert fired is not None and "max_queue_size" in fired.text and "1.0 MiB" in fired.text
    assert advice.less_memory(report(Bound.LOADER_CPU, 0.98)) is None


def test_no_limit_no_advice():
    assert report(Bound.MODEL_STEP, 0.9, limit=None).advice == []


@pytest.mark.parametrize("rule", advice.RULES)
def test_every_rule_is_silent_without_a_limit(rule):
    assert rule(report(Bound.LOADER_CPU, 0.5, limit=None)) is None


def test_build_report_computes_the_limit_from_the_session_profile():
    from types import SimpleNamespace

    from keras_loadtune.decision.settings import TunerSettings
    from keras_loadtune.lifecycle.report_build import session_limit

    trial = TrialRecord(0, BASE, "complete", "baseline", steps_per_s=20.0)
    session = SimpleNamespace(
        settings=TunerSettings(cores=2),
        modes=("thread", "process"),
        trials=[trial],
        best_config=BASE,
        baseline=BASE,
    )
    limit = session_limit(session, dict(PROFILE), "tensorflow", 20.0)
    assert limit is not None and limit.bound is Bound.LOADER_CPU
    assert limit.reached == pytest.approx(20.0 / limit.steps_per_s)
    assert session_limit(session, {"cores": 2.0}, "tensorflow", 20.0) is None
    # A measured rate above the estimate raises it: the report never contradicts it.
    fast = TrialRecord(1, LoaderConfig(2, 4, True), "complete", "sampler", steps_per_s=40.0)
    session.trials = [trial, fast]
    raised = session_limit(session, dict(PROFILE), "tensorflow", 40.0)
    assert raised.steps_per_s == 40.0 and raised.reached == 1.0 and not raised.estimated


def _tuned_to_threads(tuned: LoaderConfig, yours: tuple, best: tuple):
    """A 2-core session that tuned threads: `(steps/s, wait fraction)` of yours and best."""
    from types import SimpleNamespace

    from keras_loadtune.decision.settings import TunerSettings

    trials = [
        TrialRecord(0, BASE, "complete", "baseline", steps_per_s=yours[0], wait_fraction=yours[1]),
        TrialRecord(1, tuned, "complete", "analytical", steps_per_s=best[0], wait_fraction=best[1]),
    ]
    return SimpleNamespace(
        settings=TunerSettings(cores=2), modes=("thread",), trials=trials,
        best_config=tuned, baseline=BASE,
    )  # fmt: skip


def test_a_light_loader_takes_the_step_measured_on_the_config_in_use():
    # Latency-bound: the probe's step was 17 ms, the tuned config's 21 ms (the machine got
    # busier); a 1 ms loader cannot have slowed it, so the limit is the step of now.
    from keras_loadtune.lifecycle.report_build import session_limit

    session = _tuned_to_threads(LoaderConfig(7, 9), (11.4, 0.81), (43.0, 0.08))
    profile = {
        "produce_wall_s": 0.087,
        "produce_cpu_s": 0.0012,
        "step_compute_s": 0.0169,
        "cores": 2.0,
    }
    limit = session_limit(session, profile, "tensorflow", 43.0)
    assert limit.bound is Bound.MODEL_STEP
    assert limit.steps_per_s == pytest.approx(43.0 / 0.92)
    assert limit.reached == pytest.approx(0.92)


def _fake_session(**overrides):
    from types import SimpleNamespace

    from keras_loadtune.decision.settings import TunerSettings
    from keras_loadtune.measurement import LoaderProfile

    values = dict(
        phase="compute-bound",
        best_config=BASE,
        baseline=BASE,
        warm_start_kept=False,
        warm_start=None,
        trials=[],
        probe_stats=SimpleNamespace(wait_fraction=0.01, median_compute_s=0.045, mean_step_s=0.046),
        profile=None,
        probe_profile=LoaderProfile(0.002, 0.0015, 0.75, 1 << 20, 0.1),
        settings=TunerSettings(cores=2),
        modes=("thread", "process"),
        notes=[],
        reopen_reasons=[],
        tuning_seconds=0.0,
        tuning_steps=0,
        tuning_cost_s=None,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def _build(session, **overrides):
    from keras_loadtune.lifecycle.report_build import build_report

    kwargs = dict(
        notes=[], broken=False, wrapped=True, handle=None, cores=2, epoch_fractions=[0.01],
        reopen_reasons=[], fit_seconds=5.0, fit_steps=100, worst_gap_s=None,
        median_step_s=0.046, fit_wall_seconds=6.5, fit_all_steps=102, fit_running=False,
    )  # fmt: skip
    kwargs.update(overrides)
    return build_report(session, **kwargs)


def test_compute_bound_report_shows_the_loader_produce_time_and_a_model_step_limit():
    rep = _build(_fake_session())
    assert rep.decision == "compute-bound"
    assert rep.profile["produce_wall_s"] == pytest.approx(0.002)
    text = str(rep)
    assert "produce 2.0 ms/batch" in text
    assert rep.limit is not None and rep.limit.bound is Bound.MODEL_STEP
    assert rep.limit.reached == pytest.approx(0.99)  # 1 - the probe's 1% wait
    assert any("mixed precision" in a for a in rep.advice)
    assert not any("could be up to" in a for a in rep.advice)


def test_build_report_passes_the_whole_fit_and_says_mid_fit():
    rep = _build(_fake_session(), fit_running=True, fit_wall_seconds=0.8, fit_all_steps=15)
    assert rep.fit_wall_seconds == 0.8 and rep.fit_all_steps == 15 and rep.fit_running
    assert rep.to_dict()["fit_running"] is True


def test_unwrapped_inputs_get_an_estimated_limit():
    rep = _build(None, wrapped=False, epoch_fractions=[0.3, 0.3], median_step_s=0.02)
    assert rep.decision == "not-wrapped"
    assert rep.limit is not None and rep.limit.estimated
    assert rep.limit.steps_per_s == pytest.approx(1 / 0.014)
    assert "Limit:" in str(rep)


def test_a_light_loader_takes_a_faster_step_on_the_config_in_use_too():
    # Under load the probe's step was 67 ms, the tuned config's 37 ms: the limit follows
    # the latest step, so a tuned config still waiting 25% is not called "at the limit".
    from keras_loadtune.lifecycle.report_build import session_limit

    session = _tuned_to_threads(LoaderConfig(4, 6), (5.3, 0.66), (20.1, 0.25))
    profile = {
        "produce_wall_s": 0.186, "produce_cpu_s": 0.0007, "step_compute_s": 0.0675, "cores": 2.0
    }  # fmt: skip
    limit = session_limit(session, profile, "tensorflow", 20.1, 0.25)
    assert limit.steps_per_s == pytest.approx(20.1 / 0.75)
    assert limit.reached == pytest.approx(0.75)


def test_a_gil_heavy_probe_step_bounds_the_limit_until_a_trial_measures_faster():
    # Found: "Limit: 42.6 steps/s" beside "compute 47.0 ms/step" (at most 21 steps/s):
    # the limit had lifted an unmeasured share of contention off the probe's step. The
    # limit now keeps the Profile's step, unless a trial measured faster, which then
    # corrects that step too.
    from types import SimpleNamespace

    from keras_loadtune.decision.settings import TunerSettings
    from keras_loadtune.lifecycle.report_build import limit_step_s, session_limit

    session = SimpleNamespace(
        settings=TunerSettings(cores=2),
        modes=("thread", "process"),
        trials=[],
        best_config=BASE,
        baseline=BASE,
    )
    profile = {"produce_wall_s": 0.0165, "produce_cpu_s": 0.016, "step_compute_s": 0.024,
               "cores": 2.0}  # fmt: skip
    limit = session_limit(session, profile, "tensorflow", None)
    assert limit.steps_per_s <= 1 / 0.024 + 1e-9
    fast = TrialRecord(1, LoaderConfig(2, 4, True), "complete", "sampler", steps_per_s=60.0)
    measured = SimpleNamespace(**{**vars(session), "trials": [fast]})
    assert limit_step_s(measured, profile) == pytest.approx(1 / 60.0)
    limit = session_limit(measured, profile, "tensorflow", 60.0)
    assert limit.steps_per_s >= 60.0 and limit.steps_per_s <= 60.0 + 1e-9


def test_a_fit_that_ended_before_tuning_started_is_never_in_progress():
    # Found: a 90-step JAX fit printed "tuning in progress" after it ended (its study was
    # still opening off the training thread).
    config = LoaderConfig(2, 10, True)
    ended = _build(None, loader_config=config)
    assert ended.decision == "kept-baseline" and ended.best_config == config
    assert "no other config was tried" in str(ended)
    assert any("training ended before tuning started" in n for n in ended.notes)
    running = _build(None, loader_config=config, fit_running=True)
    assert running.decision == "in-progress"


# ------------------------------------------------------- issue #23: reached only when measured


def _io_report(**overrides) -> TuningReport:
    """Issue #23's I/O job: 8 threads at 91 steps/s, the limit estimated at 97 steps/s."""
    tuned = LoaderConfig(8, 10)
    trials = [
        TrialRecord(0, BASE, "complete", "baseline", steps_per_s=30.0, wait_fraction=0.7),
        TrialRecord(1, tuned, "complete", "analytical", steps_per_s=91.0, wait_fraction=0.02),
    ]
    kwargs = dict(
        decision="tuned", baseline_config=BASE, best_config=tuned, trials=trials,
        baseline_steps_per_s=30.0, best_steps_per_s=91.0, epoch_wait_fractions=[0.22, 0.18],
        profile={"produce_wall_s": 0.03, "produce_cpu_s": 0.0005, "step_compute_s": 0.0103,
                 "cores": 2.0},
        limit=MachineLimit(97.0, Bound.MODEL_STEP, reached=0.94, workers=3),
    )  # fmt: skip
    kwargs.update(overrides)
    return TuningReport(**kwargs)


def test_the_limit_is_not_reached_while_the_epochs_still_wait():
    # Found: "reaches 94% of this machine's limit: loader tuning cannot make this fit
    # faster" while its epochs waited 18-22% and workers=16 ran 1.5x faster.
    rep = _io_report()
    assert not rep.limit_reached
    assert advice.at_limit(rep) is None
    said = advice.not_reached(rep)
    assert said is not None and "last epoch still waited 18%" in said.text
    assert "may still be up to 1.22x" in said.text  # 1 / (1 - 0.18)
    assert not any("cannot make this fit faster" in a for a in rep.advice)
    assert not any("the loader would not" in a for a in rep.advice)
    quiet = _io_report(epoch_wait_fractions=[0.22, 0.02])
    assert quiet.limit_reached and advice.at_limit(quiet) is not None


def test_the_limit_is_not_reached_when_a_config_measured_faster():
    faster = TrialRecord(2, LoaderConfig(16, 18), "complete", "sampler", steps_per_s=120.0)
    rep = _io_report(epoch_wait_fractions=[0.22, 0.02], trials=[*_io_report().trials, faster])
    assert not rep.limit_reached
    said = advice.not_reached(rep)
    assert said is not None and "trial #2 (16 threads, queue 18) measured 120.0" in said.text


def test_no_advice_for_a_config_that_measured_no_faster():
    # Found (JPEG job): "about 2 processes could be up to 1.9x faster", while 2 processes
    # ran no faster than 1 thread in this fit.
    two = TrialRecord(1, LoaderConfig(2, 4, True), "complete", "analytical", steps_per_s=21.5)
    rep = report(Bound.LOADER_CPU, 0.5, trials=[two], baseline_steps_per_s=21.0)
    assert not any("could be up to" in a for a in rep.advice)
    untried = report(Bound.LOADER_CPU, 0.5)
    said = advice.more_workers(untried)
    assert said is not None and "estimated, not tried: worker processes" in said.text


def test_an_estimate_says_why_it_was_not_tried():
    skipped = TrialRecord(
        1, LoaderConfig(2, 4, True), "skipped", "analytical",
        reason="not worth it: predicted gain 0.50 s over 227 steps left < 2 x cost 1.46 s",
    )  # fmt: skip
    said = advice.more_workers(report(Bound.LOADER_CPU, 0.5, trials=[skipped]))
    assert said is not None
    assert "not tried: worker processes (the start-up would not pay back in this fit" in said.text


def test_the_advice_quotes_the_limits_step():
    # Found: "141.2 steps/s" in the limit, "10 ms per step" in the advice.
    rep = _io_report(epoch_wait_fractions=[0.2, 0.01])
    step_advice = advice.cheaper_step(rep)
    assert step_advice is not None and "(10 ms per step)" in step_advice.text  # 1 / 97


def test_cost_lists_what_opening_the_storage_cost():
    from types import SimpleNamespace

    from keras_loadtune.lifecycle.report_build import cost_parts

    handle = SimpleNamespace(costs_s={"open": 0.9, "load": 0.3, "bogus": float("nan")})
    trial = TrialRecord(1, LoaderConfig(2, 4, True), "complete", "analytical", startup_s=0.4)
    parts = cost_parts(1.0, [trial], handle)
    assert parts == {
        "study storage: open": 0.9, "study storage: load": 0.3,
        "pool starts": 0.4, "probe and trials": pytest.approx(0.6),
    }  # fmt: skip
    assert cost_parts(None, [], SimpleNamespace()) == {}
    stored = SimpleNamespace(costs_s=handle.costs_s, note=None, study=None)
    rep = _build(_fake_session(tuning_cost_s=1.0), handle=stored)
    assert rep.tuning_cost_seconds == pytest.approx(2.2)
    assert rep.to_dict()["cost"]["study storage: open"] == 0.9
    assert "study storage: open 0.9 s" in str(rep)


def test_a_wait_at_the_threshold_is_shown_with_a_decimal():
    # Found (demo): "its last epoch still waited 5% of step time (over the 5% threshold)".
    said = advice.not_reached(_io_report(epoch_wait_fractions=[0.2, 0.0504]))
    assert said is not None
    assert "waited 5.0% of step time (at or over the 5% threshold)" in said.text


def test_a_bigger_trial_cut_short_is_named_not_called_untried():
    # Found (Grain, 180 steps): "more than 16 threads (the most tried in this fit)" beside
    # a trial of 256 threads that ran 83 steps before the fit ended.
    limit = MachineLimit(600.0, Bound.LOADER_CPU, reached=0.12, mode="thread", workers=80)
    done = TrialRecord(0, LoaderConfig(16, 32), "complete", "baseline", steps_per_s=75.0)
    ended = "stopped: training ended before tuning finished"
    cut = TrialRecord(1, LoaderConfig(256, 283), "pruned", "analytical", steps_per_s=389.0,
                      steps=83, reason=ended)  # fmt: skip
    what, why = advice.not_tried(
        report(Bound.LOADER_CPU, 0.12, limit=limit, trials=[done, cut]), limit
    )
    assert what == "more than 16 threads measured in full"
    assert why == "256 threads ran 83 steps, stopped: training ended before tuning finished"
    what, why = advice.not_tried(report(Bound.LOADER_CPU, 0.12, limit=limit, trials=[done]), limit)
    assert (what, why) == ("more than 16 threads", "the most tried in this fit")
