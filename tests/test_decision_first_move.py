"""`decision.first_move` and `TuningSession(prestarted=...)`: at an input-bound verdict the
loader switches to the pipeline model's thread seed while the study opens, and the
session then measures that seed without switching again. No Keras."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuners import make_settings

from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings
from keras_loadtune.decision.first_move import first_move
from keras_loadtune.decision.phase import Phase
from keras_loadtune.decision.probe import Probe, ProbeVerdict
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.measurement import StepSample, window_stats
from keras_loadtune.simulation import SimulatedPipeline


def _verdict(wall_s: float, cpu_s: float, step_s: float, input_bound: bool = True):
    wait = max(step_s - 0.005, 0.0)
    stats = window_stats([StepSample(wait, step_s)] * 8)
    records = [SimpleNamespace(produce_wall_s=wall_s, produce_cpu_s=cpu_s, nbytes=1 << 16)] * 8
    return ProbeVerdict(stats, input_bound, None, records)


def test_a_latency_bound_verdict_moves_to_threads_and_starts_no_processes():
    move = first_move(_verdict(0.040, 0.0005, 0.045), TunerSettings(cores=8), LoaderConfig(), 8)
    assert move.config is not None and not move.config.use_multiprocessing
    assert move.config.workers >= 8  # 40 ms of latency behind a 5 ms step
    assert not move.prewarm_processes


def test_a_cpu_heavy_verdict_prewarms_processes():
    move = first_move(_verdict(0.020, 0.020, 0.025), TunerSettings(cores=16), LoaderConfig(), 16)
    assert move.prewarm_processes


def test_no_move_without_threads_or_without_a_verdict_to_act_on():
    verdict = _verdict(0.040, 0.0005, 0.045)
    procs_only = TunerSettings(cores=8, modes=("process",))
    assert first_move(verdict, procs_only, LoaderConfig(), 8).config is None
    calm = _verdict(0.040, 0.0005, 0.045, input_bound=False)
    assert first_move(calm, TunerSettings(cores=8), LoaderConfig(), 8) == first_move(
        calm, procs_only, LoaderConfig(), 8
    )


@settings(max_examples=30, deadline=None)
@given(
    wall=st.floats(0.001, 0.3),
    cpu_share=st.floats(0.0, 1.0),
    step=st.floats(0.002, 0.05),
    cores=st.sampled_from([2, 4, 8, 16, 64]),
)
def test_the_first_move_is_a_thread_config_within_the_settings(wall, cpu_share, step, cores):
    s = TunerSettings(cores=cores)
    move = first_move(_verdict(wall, wall * cpu_share, step + wall), s, LoaderConfig(), cores)
    if move.config is not None:
        assert not move.config.use_multiprocessing and move.config != LoaderConfig()
        assert 1 <= move.config.workers <= s.max_thread_workers


@pytest.mark.parametrize("stored", [False, True], ids=["in-memory", "storage"])
def test_the_session_measures_a_prestarted_seed_without_switching_again(stored):
    # With a study from storage the warm-start flow runs first; a first move is not a
    # warm hint, so it must not switch back to the baseline either (a real fit did).
    import optuna

    s = make_settings(8)
    study = optuna.create_study(direction="maximize") if stored else None
    user = LoaderConfig()
    # The probe, as the lifecycle runs it before the session: the user's inline config.
    probe_pipe = SimulatedPipeline(io_s=0.040, compute_s=0.005, cores=8, seed=0)
    probe_pipe.reconfigure(user)
    probe, verdict, observed = Probe(s, user, in_steady_state=True), None, []
    while verdict is None:
        sample = probe_pipe.step()
        records = probe_pipe.drain_records()
        probe.add_records(records)
        observed.append((sample, records))
        verdict = probe.add(sample)
    move = first_move(verdict, s, user, 8)
    assert move.config is not None
    # The loader switched to the seed while the study opened; the session is told so.
    pipe = SimulatedPipeline(io_s=0.040, compute_s=0.005, cores=8, seed=0)
    pipe.reconfigure(move.config)
    pipe.run_steps(move.config, 30)  # the steps while the study opened (not observed)
    session = TuningSession(
        user,
        s,
        study=study,
        clock=lambda: pipe.now,
        cores=8,
        probe_in_steady_state=True,
        prestarted=move.config,
    )
    assert session.current_config == move.config
    switches = []
    for sample, records in observed:  # the probe's steps, replayed as the lifecycle does
        session.observe_loader(records)
        switches.append(session.observe_step(sample))
    assert session.trials[0].config == user and session.trials[0].source == "baseline"
    assert session.phase == Phase.TUNING
    # The model's first seed is the config already running: no switch, measured at once.
    assert all(x is None for x in switches)
    for _ in range(200):
        if session.phase != Phase.TUNING:
            break
        config = session.observe_step(pipe.step())
        if config is not None:
            pipe.reconfigure(config)
            session.acknowledge(config)
    measured = [t for t in session.trials if t.config == move.config]
    assert measured and measured[0].state == "complete", session.trials
    assert measured[0].steps_per_s == pytest.approx(200.0, rel=0.1)  # the compute floor
