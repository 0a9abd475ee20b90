"""Delivery rounds: the refill a switch skips and the window a trial measures, bounded by
the loader's depth (`decision.delivery`), and the ranking that stops giving threads
beyond that depth credit (`decision.ranking`).

No TensorFlow: the arithmetic, then the simulator (a Grain-like remote read of 120 ms a
batch, a 3 ms step, Grain's default 16 threads to start from).
"""

from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuners import make_settings

from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings
from keras_loadtune.decision.delivery import (
    ROUND_MARGIN,
    refill_steps,
    round_cap,
    round_steps,
    window_steps,
)
from keras_loadtune.decision.optuna_bridge import StudyBridge, default_sampler
from keras_loadtune.decision.ranking import cheapest_within, rank_key
from keras_loadtune.decision.warm_start import stored_best
from keras_loadtune.engine.arithmetic import held_batches, in_flight
from keras_loadtune.measurement import LoaderProfile
from keras_loadtune.simulation import (
    PipelineParams,
    SimulatedPipeline,
    simulate_tuning,
    static_fit_seconds,
)
from keras_loadtune.trial import TrialRecord, config_to_params

optuna.logging.set_verbosity(optuna.logging.ERROR)

configs = st.builds(
    LoaderConfig,
    workers=st.integers(1, 512),
    max_queue_size=st.integers(1, 600),
    use_multiprocessing=st.booleans(),
)
caps = st.one_of(st.none(), st.integers(1, 300))


def _profile(wall_s: float, cv: float = 0.0) -> LoaderProfile:
    return LoaderProfile(wall_s, 0.01 * wall_s, 0.01, 1 << 16, cv)


# ------------------------------------------------------------------ arithmetic


def test_round_cap_is_the_steps_one_batch_takes_with_a_margin():
    assert round_cap(_profile(0.120), 0.003) == math.ceil(ROUND_MARGIN * 40) + 1
    assert round_cap(_profile(0.120, cv=0.5), 0.003) == math.ceil(ROUND_MARGIN * 60) + 1
    assert round_cap(None, 0.003) is None
    assert round_cap(_profile(0.120), 0.0) is None
    assert round_cap(_profile(0.0), 0.003) is None


def test_uncapped_formulas_are_the_queue_arithmetic():
    s = TunerSettings(skip_steps=2, min_trial_steps=8, max_trial_steps=40)
    config, previous = LoaderConfig(256, 313), LoaderConfig(16, 32)
    assert refill_steps(s, config, previous) == 2 + 256  # max(in_flight 256, held 32)
    assert window_steps(s, config) == (512, 512)
    # Capped at 61: one round is 61 steps, the window two of them.
    assert refill_steps(s, config, previous, 61) == 63
    assert window_steps(s, config, 61) == (122, 122)
    # A config that cannot keep up (in flight <= cap) keeps its rounds and the held stock.
    assert refill_steps(s, LoaderConfig(6, 9), LoaderConfig(2, 40), 61) == 2 + 40
    assert window_steps(s, LoaderConfig(6, 9), 61) == (12, 40)


@settings(max_examples=300, deadline=None)
@given(config=configs, previous=st.one_of(st.none(), configs), cap=caps)
def test_a_cap_only_ever_shortens_and_still_spans_its_rounds(config, previous, cap):
    s = TunerSettings(skip_steps=2, min_trial_steps=8, max_trial_steps=40)
    capped, plain = refill_steps(s, config, previous, cap), refill_steps(s, config, previous)
    assert capped <= plain
    low, high = window_steps(s, config, cap)
    assert (low, high) <= window_steps(s, config) and low <= high
    rnd = round_steps(config, cap)
    assert 1 <= rnd <= in_flight(config)
    assert low >= 2 * rnd
    if cap is None or in_flight(config) <= cap:  # a config in rounds: nothing changes
        assert capped == plain and rnd == in_flight(config)
        held = held_batches(previous) if previous is not None else 0
        assert capped == 2 + max(in_flight(config), held)
    else:  # it keeps up: one capped round is skipped, the refill's wait included
        assert capped == 2 + cap and rnd == cap


@settings(max_examples=200, deadline=None)
@given(
    wall_ms=st.floats(1.0, 2000.0),
    step_ms=st.floats(0.5, 200.0),
    cv=st.floats(0.0, 0.5),
)
def test_a_capped_round_lasts_at_least_one_batch_at_the_step_estimate(wall_ms, step_ms, cv):
    # The refill skips `cap` steps and the window measures 2 x `cap`: at the step's
    # compute speed they last at least one (two) production times of a batch, so the
    # first round of a new pool has arrived before the window, and the window holds a
    # whole delivery cycle if the config does not keep up after all.
    cap = round_cap(_profile(wall_ms / 1000, cv), step_ms / 1000)
    assert cap is not None
    assert cap * step_ms >= ROUND_MARGIN * wall_ms * (1 + cv) - 1e-6


# ------------------------------------------------------------------ ranking


def test_more_threads_get_credit_only_up_to_enough():
    near = {LoaderConfig(6, 9): 150.8, LoaderConfig(11, 16): 151.8, LoaderConfig(77, 95): 151.0}
    assert cheapest_within(near, 0.02, key=rank_key(True)).workers == 77  # no bound
    assert cheapest_within(near, 0.02, key=rank_key(True, 12)).workers == 77  # 12 > 11
    assert cheapest_within(near, 0.02, key=rank_key(True, 11)).workers == 11
    assert cheapest_within(near, 0.02, key=rank_key(True, 8)).workers == 11  # 9 in flight > 8
    assert cheapest_within(near, 0.02, key=rank_key(True, 4)).workers == 6
    assert cheapest_within(near, 0.02, key=rank_key(False)).workers == 6


def test_the_warm_start_ranks_with_the_bound_its_session_stamped():
    settings = make_settings(8)
    study = optuna.create_study(direction="maximize", sampler=default_sampler(settings))
    bridge = StudyBridge(settings, LoaderConfig(), study)
    values = {LoaderConfig(77, 95): 300.0, LoaderConfig(256, 313): 301.0}
    for enough in (None, 61):
        bridge.ranking = (True, enough)
        for config, value in values.items():
            trial = bridge.ask(config_to_params(config))
            record = TrialRecord(trial.number, bridge.suggest(trial), "complete", "sampler")
            bridge.tell(trial, record, value=value)
        best = stored_best(study, LoaderConfig(), min_improvement=0.02)
        assert best is not None
        assert best.config.workers == (256 if enough is None else 77), enough


# ------------------------------------------------------------------ the simulator

GRAIN_LIKE = dict(io_s=0.12, numpy_s=0.001, compute_s=0.003, noise_cv=0.1, seed=1)
GRAIN_DEFAULT = LoaderConfig(workers=16, max_queue_size=32)


def _grain_like_fit(cores: int, steps: int, per_epoch: int):
    """The tuned simulated fit from Grain's 16 threads, and a static grid of the same fit
    (`{threads: seconds}`, each epoch a cold pass as the simulator runs it)."""
    params = PipelineParams(cores=cores, **GRAIN_LIKE)
    result = simulate_tuning(
        SimulatedPipeline(params),
        make_settings(cores),
        baseline=GRAIN_DEFAULT,
        total_steps=steps,
        steps_per_epoch=per_epoch,
    )
    grid = {
        w: static_fit_seconds(params, LoaderConfig(w, 2 * w), steps, steps_per_epoch=per_epoch)
        for w in (16, 32, 64, 128, 256)
    }
    return result, grid


@pytest.mark.parametrize("cores", [2, 16])
def test_a_loader_needing_60_threads_reaches_the_best_static_config(cores):
    # Found on a Grain `MapDataset` of remote reads (round 8: 1.13x the best static row,
    # 1.14x in the simulator): 256 threads skipped and measured 2 + 256 + 512 steps, and
    # the aligned window of the 77-thread seed kept its 16 refill steps only.
    result, grid = _grain_like_fit(cores, 900, 300)
    assert result.total_time_s <= 1.10 * min(grid.values()), (result.total_time_s, grid)
    seed_trial = result.session.trials[1]
    assert seed_trial.source == "analytical" and seed_trial.steps >= 60
    assert in_flight(result.final_config) < 256


@pytest.mark.parametrize("cores", [2, 16])
def test_no_climb_starts_that_the_fit_cannot_measure(cores):
    # Found: epochs of 60 steps, each a cold pass, made the seed's window wait at every
    # epoch start; the wait climb (which skips the payoff gate) then switched to 198
    # threads with 6 steps left, paying a pool's start for nothing.
    result, grid = _grain_like_fit(cores, 180, 60)
    assert result.session is not None
    late = [(at, config) for at, config in result.switches if at > 180 - 60]
    assert late == [], result.switches
    assert result.total_time_s < grid[16]  # the user's config, Grain's default
