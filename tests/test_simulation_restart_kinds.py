"""`simulation/pipeline.py` and `simulation/fit.py`: an input whose worker count changes
only at an epoch boundary (a Grain `IterDataset` / `grain.DataLoader` served by
`GrainIterSource`, `PipelineParams.worker_change_at_pass`) still tunes through the one
lifecycle, its trials of another worker count start at epoch boundaries, and every
position is delivered exactly once (issue #25, target 4). No Keras.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings
from keras_loadtune.decision.phase import Phase
from keras_loadtune.simulation.fit import SimulatedDataset, simulate_tuning
from keras_loadtune.simulation.pipeline import SimulatedPipeline, pass_workers

# Pure-Python batches on 16 cores: the tuner wants worker processes (a worker change).
_CPU_HEAVY = dict(python_s=0.02, compute_s=0.005, cores=16)


def _took_effect(records) -> list[tuple[int, LoaderConfig]]:
    """`(step, config)` wherever the config serving the steps changed."""
    out: list[tuple[int, LoaderConfig]] = []
    for r in records:
        if not out or out[-1][1] != r.config:
            out.append((r.sequence, r.config))
    return out


@pytest.mark.parametrize("per_epoch", [60, 100, 170])
def test_a_fit_whose_worker_count_changes_at_epoch_boundaries_still_tunes(per_epoch):
    pipe = SimulatedPipeline(worker_change_at_pass=True, **_CPU_HEAVY)
    result = simulate_tuning(
        pipe,
        TunerSettings(cores=16, seed=1),
        baseline=LoaderConfig(),
        total_steps=1500,
        steps_per_epoch=per_epoch,
    )
    session = result.session
    assert session is not None and session.phase == Phase.STEADY
    measured = result.steps_per_s_by_config
    assert any(c.use_multiprocessing for c in measured)  # a process trial completed
    assert session.best_config.use_multiprocessing
    records = list(result.stats)
    assert len(records) == 1500  # all kept: every step is checked below
    effects = _took_effect(records)
    serving = LoaderConfig()
    held = 0
    for step, config in result.switches:
        # The config that took effect next, at or after the request.
        applied = next(((s, c) for s, c in effects if s >= step and c == config), None)
        if pass_workers(config) != pass_workers(serving):
            held += 1
            if applied is not None:  # a later request may supersede a held one
                assert applied[0] % per_epoch == 0, (step, applied)  # a pass's first step
                assert applied[0] > step
        else:
            assert applied is not None and applied[0] == step  # threads: at the next batch
        if applied is not None:
            serving = config
    assert held >= 1
    for epoch in range(1500 // per_epoch):  # every position once per pass, in order
        chunk = records[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert [r.index for r in chunk] == list(range(per_epoch))


def test_without_the_field_a_worker_change_starts_mid_epoch():
    # The control: the engine's kind (`RestartPoint.ANY_BATCH`) switches mode mid-pass.
    pipe = SimulatedPipeline(**_CPU_HEAVY)
    result = simulate_tuning(
        pipe,
        TunerSettings(cores=16, seed=1),
        baseline=LoaderConfig(),
        total_steps=1500,
        steps_per_epoch=100,
    )
    starts = [s for s, c in _took_effect(list(result.stats)) if c.use_multiprocessing]
    assert starts and any(s % 100 != 0 for s in starts)


def test_a_held_change_shows_as_pending_until_the_next_pass():
    pipe = SimulatedPipeline(io_s=0.01, worker_change_at_pass=True)
    data = SimulatedDataset(pipe, steps_per_epoch=4)
    data.reconfigure(LoaderConfig(2, 4))
    data.begin_pass()
    data.step()
    processes = LoaderConfig(2, 4, use_multiprocessing=True)
    data.reconfigure(processes)
    assert data.pending_config == processes and data.config == LoaderConfig(2, 4)
    for _ in range(3):
        data.step()
    assert data.pending_config == processes  # the whole pass ran on the old config
    data.begin_pass()
    assert data.pending_config is None and data.config == processes
    data.step()
    assert [r.config.use_multiprocessing for r in data.stats] == [False] * 4 + [True]
    assert data.stats.startups[-1].config == processes  # the new pass's pool start


_configs = st.builds(
    LoaderConfig,
    workers=st.integers(1, 6),
    max_queue_size=st.integers(1, 8),
    use_multiprocessing=st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(
    per_pass=st.integers(1, 12),
    passes=st.integers(1, 5),
    plan=st.lists(st.tuples(st.integers(0, 60), _configs), max_size=25),
)
def test_positions_are_delivered_exactly_once_and_workers_change_only_between_passes(
    per_pass, passes, plan
):
    pipe = SimulatedPipeline(
        io_s=0.004, python_s=0.001, compute_s=0.002, cores=4, worker_change_at_pass=True
    )
    pipe.reconfigure(LoaderConfig(2, 2))
    requests: dict[int, list[LoaderConfig]] = {}
    for step, config in plan:
        requests.setdefault(step, []).append(config)
    step = 0
    for _ in range(passes):
        pipe.begin_pass(per_pass)
        workers_this_pass = pass_workers(pipe.config)
        for _ in range(per_pass):
            for config in requests.get(step, []):
                pipe.reconfigure(config)
            pipe.step()
            d = pipe.last_delivery
            assert d.position == step  # in order: none lost, none repeated
            assert pass_workers(d.producer) == workers_this_pass
            assert pass_workers(pipe.config) == workers_this_pass
            step += 1
