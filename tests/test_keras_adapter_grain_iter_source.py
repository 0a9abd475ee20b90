"""`keras_adapter/grain_iter_source.py` and `grain_pipeline.py`: a Grain `IterDataset` or
`grain.DataLoader` retuned through `get_state`/`set_state`, the worker count at epoch
boundaries (issue #25, target 2).

Every pass must equal the unwrapped pipeline's with the same seed: with the options the
pass started with, whatever threads and buffers change mid-pass (0 lost, duplicated or
reordered), and with the new worker count from the pass after a worker change.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time

import grain
import keras
import numpy as np
import pytest
from config_strategies import thread_configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tuners import make_tuner

from keras_loadtune import LoaderConfig
from keras_loadtune.keras_adapter.grain_iter_source import GrainIterSource
from keras_loadtune.keras_adapter.grain_pipeline import (
    GrainOptions,
    _read_mp_prefetch,
    options_for,
    pipeline_of,
)
from keras_loadtune.keras_adapter.input_kind import RestartPoint
from keras_loadtune.keras_adapter.inputs import plan_input

pytestmark = [pytest.mark.timeout(600)]


def _iter_dataset(n: int, batch_size: int, seed: int, threads: int = 2, workers: int = 0):
    ds = grain.MapDataset.range(n).shuffle(seed=seed)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=3))
    ds = ds.batch(batch_size)
    if workers:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(workers, per_worker_buffer_size=1))
    return ds


def _loader(n: int, batch_size: int, seed: int, workers: int = 0):
    sampler = grain.samplers.IndexSampler(
        n, shard_options=grain.sharding.NoSharding(), shuffle=True, seed=seed, num_epochs=1
    )
    return grain.DataLoader(
        data_source=list(range(n)),
        sampler=sampler,
        operations=[grain.transforms.Batch(batch_size)],
        worker_count=workers,
    )


def _pass(iterable) -> list[list[int]]:
    return [np.asarray(b).tolist() for b in iterable]


def _served_pass(source: GrainIterSource, plan: dict[int, object]) -> list[list[int]]:
    """One pass, with `source.reconfigure(plan[step])` after batch `step`."""
    out = []
    iterator = iter(source)
    try:
        for step, batch in enumerate(iterator):
            out.append(np.asarray(batch).tolist())
            if step in plan:
                source.reconfigure(plan[step])
    finally:
        iterator.close()
    return out


_plans = st.lists(st.tuples(st.integers(0, 12), thread_configs), min_size=20, max_size=30)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 40), batch_size=st.integers(1, 5), seed=st.integers(0, 2**16), plan=_plans)
def test_iter_dataset_resumes_exactly_once_through_thread_changes(n, batch_size, seed, plan):
    ds = _iter_dataset(n, batch_size, seed)
    expected = _pass(ds)
    source = GrainIterSource(ds)
    for epoch in range(2):
        served = _served_pass(source, {s + epoch: c for s, c in plan})
        assert served == expected
    assert source.resumes >= min(len(expected) - 1, 1) or len(expected) <= 1
    assert not source.pending and source.switch_error is None


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(1, 40), batch_size=st.integers(1, 5), seed=st.integers(0, 2**16), plan=_plans)
def test_data_loader_resumes_exactly_once_through_thread_changes(n, batch_size, seed, plan):
    loader = _loader(n, batch_size, seed)
    expected = _pass(loader)
    source = GrainIterSource(loader)
    assert _served_pass(source, dict(plan)) == expected
    assert sorted(i for b in expected for i in b) == list(range(n))


def test_a_worker_change_waits_for_the_next_pass():
    # 20 switches in one pass: threads apply at once, the worker count never mid-pass.
    ds = _iter_dataset(60, 2, seed=4)
    expected = _pass(ds)
    source = GrainIterSource(_loader(60, 2, seed=4))
    loader_expected = _pass(_loader(60, 2, seed=4))
    processes = LoaderConfig(2, 4, use_multiprocessing=True)
    plan = {s: (processes if s % 5 == 0 else LoaderConfig(1 + s % 3, 1 + s % 4)) for s in range(25)}
    assert source.reconfigure(processes) is RestartPoint.EPOCH_BOUNDARY
    assert source.pending
    source.reconfigure(LoaderConfig(2, 2))
    assert _served_pass(source, plan) == loader_expected
    assert source.resumes >= 10  # the thread changes between two worker requests
    assert expected  # the IterDataset twin is non-trivial


def test_mp_prefetch_resumes_with_the_same_workers_and_changes_them_at_the_boundary():
    ds = _iter_dataset(24, 3, seed=5, workers=2)
    two, one = _pass(_iter_dataset(24, 3, seed=5, workers=2)), _pass(_iter_dataset(24, 3, 5, 0, 1))
    source = GrainIterSource(ds)
    assert source.tunable == (True, True)
    buffers = dataclasses.replace(source.options, per_worker_buffer_size=3, num_threads=1)
    fewer = LoaderConfig(1, 1, use_multiprocessing=True)
    first = _served_pass(source, {1: buffers, 3: fewer})
    assert first == two and source.resumes == 1  # the buffer change: same workers, resumed
    assert source.pending
    second = _served_pass(source, {})
    assert second == one and not source.pending  # one worker from the next pass
    assert sorted(i for b in second for i in b) == list(range(24))
    deadline = time.monotonic() + 30
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)  # closed passes stop their workers; nothing is left behind
    assert not multiprocessing.active_children()


def test_data_loader_changes_its_worker_count_at_the_boundary():
    source = GrainIterSource(_loader(20, 4, seed=2))
    assert source.reconfigure(LoaderConfig(2, 2, use_multiprocessing=True)) is (
        RestartPoint.EPOCH_BOUNDARY
    )
    assert _served_pass(source, {}) == _pass(_loader(20, 4, seed=2, workers=2))
    assert source.config == LoaderConfig(2, 2, use_multiprocessing=True)
    (start,) = source.stats.startups  # the new worker count's restart, for the tuner
    assert start.config == source.config and start.workers_started == 2
    assert start.error is None and start.seconds >= next(iter(source.stats)).wait_s * 0.999
    _served_pass(source, {})
    assert len(source.stats.startups) == 1  # the same worker count: no switch's restart


def test_mp_prefetch_is_read_back_with_its_arguments():
    # Pins Grain 0.2.x's mp_prefetch shape that `grain_pipeline` rebuilds (no process
    # starts: nothing is iterated).
    inner = _iter_dataset(12, 2, seed=0)
    ds = inner.mp_prefetch(
        grain.MultiprocessingOptions(3, per_worker_buffer_size=2),
        worker_init_fn=_init_worker,
        sequential_slice=True,
    )
    call = _read_mp_prefetch(ds)
    assert call is not None
    assert (call.inner, call.num_workers, call.buffer_size) == (inner, 3, 2)
    assert call.worker_init_fn is _init_worker and call.sequential_slice
    assert _read_mp_prefetch(inner) is None
    rebuilt = pipeline_of(ds).build(GrainOptions(1, 1, 2, 4))
    again = _read_mp_prefetch(rebuilt)
    assert again is not None and (again.num_workers, again.buffer_size) == (2, 4)
    assert again.worker_init_fn is _init_worker and again.sequential_slice


def _init_worker(index: int, count: int) -> None:
    del index, count


def test_options_map_onto_loader_configs_and_back():
    loader = pipeline_of(_loader(8, 2, seed=0))
    threads = options_for(loader, LoaderConfig(3, 5))
    assert (threads.num_threads, threads.prefetch_buffer_size, threads.num_workers) == (3, 5, 0)
    procs = options_for(loader, LoaderConfig(4, 9, use_multiprocessing=True))
    assert (procs.num_workers, procs.per_worker_buffer_size) == (4, 3)
    assert procs.to_config() == LoaderConfig(4, 12, use_multiprocessing=True)
    assert threads.to_config() == LoaderConfig(3, 5)
    mp = pipeline_of(_iter_dataset(8, 2, seed=0, workers=2))
    assert options_for(mp, LoaderConfig(3, 5)).num_workers == 2  # never below 1 worker
    plain = pipeline_of(_iter_dataset(8, 2, seed=0))
    assert options_for(plain, LoaderConfig(2, 2, use_multiprocessing=True)) == plain.options


def test_a_failed_rebuild_keeps_serving_and_is_not_retried(monkeypatch):
    ds = _iter_dataset(30, 3, seed=1)
    expected = _pass(ds)
    source = GrainIterSource(ds)
    calls = []
    original = source._pipeline.build

    def build(options):
        calls.append(options)
        if options != source._pipeline.options:
            raise RuntimeError("cannot build")
        return original(options)

    monkeypatch.setattr(source._pipeline, "build", build)
    assert _served_pass(source, {s: LoaderConfig(1, 1) for s in range(8)}) == expected
    assert isinstance(source.switch_error, RuntimeError)
    assert len(calls) == 2  # the pass's own build, and one failed try
    source.reconfigure(LoaderConfig(1, 1, use_multiprocessing=False))
    assert _served_pass(source, {}) == expected  # the refused options: the user's instead


def test_bad_arguments_say_what_to_do():
    with pytest.raises(TypeError, match=r"grain\.DataLoader or grain\.IterDataset"):
        GrainIterSource([1, 2, 3])
    source = GrainIterSource(_iter_dataset(4, 2, seed=0))
    with pytest.raises(TypeError, match="LoaderConfig or GrainOptions"):
        source.reconfigure({"workers": 2})
    with pytest.raises(ValueError, match="num_workers"):
        GrainOptions(1, 1, -1, 1)
    with pytest.raises(ValueError, match="per_worker_buffer_size"):
        GrainOptions(1, 1, 1, 0)


def test_plans_say_when_each_grain_input_can_change():
    for x in (_iter_dataset(6, 2, seed=0), _loader(6, 2, seed=0)):
        plan = plan_input(x)
        assert plan.restart is RestartPoint.EPOCH_BOUNDARY
        assert isinstance(plan.source, GrainIterSource) and "epoch boundary" in plan.note
    mixed = grain.IterDataset.mix(
        [grain.MapDataset.range(4).to_iter_dataset(), grain.MapDataset.range(4).to_iter_dataset()]
    )
    plan = plan_input(mixed)  # two read nodes, no mp_prefetch: nothing to change
    assert plan.measured_only and plan.restart is RestartPoint.NEVER
    assert plan_input(grain.MapDataset.range(4).batch(2)).restart is RestartPoint.ANY_BATCH


def test_fit_trains_on_a_wrapped_iter_dataset_retuned_mid_epoch():
    keras.utils.set_random_seed(0)

    def sample(i):
        return np.full((2,), i / 40, np.float32), np.float32(2 * i / 40)

    ds = grain.MapDataset.range(40).shuffle(seed=1).map(sample).to_iter_dataset().batch(4)
    tuner = make_tuner(fast=False, probe_steps=3, max_trials=2)
    train = tuner.wrap(ds)
    assert isinstance(train, GrainIterSource)
    seen = []

    class Retune(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)
            train.reconfigure(LoaderConfig(1 + batch % 3, 1 + batch % 2))

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    history = model.fit(train, epochs=2, callbacks=[tuner, Retune()], verbose=0)
    assert np.isfinite(history.history["loss"]).all() and len(history.history["loss"]) == 2
    assert seen.count(0) == 2 and max(seen) == 9  # 10 batches per epoch, each epoch whole
    assert train.resumes >= 5 and train.switch_error is None


def _fails_at_7(i):
    if i == 7:
        raise ValueError("bad record 7")
    return i


def test_a_pipeline_error_reaches_the_caller_unchanged_after_switches():
    ds = grain.MapDataset.range(12).map(_fails_at_7).to_iter_dataset().batch(2)
    source = GrainIterSource(ds)
    with pytest.raises(ValueError, match="bad record 7"):
        _served_pass(source, {0: LoaderConfig(2, 2), 1: LoaderConfig(1, 1)})
    assert source.resumes == 2 and source.switch_error is None


def test_each_batch_becomes_one_record_of_the_config_that_served_it():
    # What the tuner's lifecycle reads (`lifecycle/step_meter.py`): one record per batch.
    source = GrainIterSource(_loader(20, 4, seed=2))
    first = _served_pass(source, {1: LoaderConfig(2, 3)})
    assert source.num_batches == len(first) == 5
    records = list(source.stats)
    assert [r.sequence for r in records] == list(range(5)) and source.stats.delivered == 5
    assert [r.index for r in records] == list(range(5))
    assert [r.config for r in records] == [records[0].config] * 2 + [LoaderConfig(2, 3)] * 3
    assert all(r.producer == r.config and r.consumer == 0 for r in records)
    assert all(r.wait_s >= 0 and r.produce_cpu_s >= 0 for r in records)
    # A batch took at least its CPU time to make, though Grain's prefetch hid the rest.
    assert all(r.produce_wall_s == max(r.wait_s, r.produce_cpu_s) for r in records)
    assert not any(r.pass_tail for r in records)  # the pass length was not known yet
    _served_pass(source, {})
    assert [r.pass_tail for r in source.stats][5:] == [False] * 4 + [True]
    assert {r.stream for r in source.stats} == {1, 2}


def test_a_worker_change_is_pending_with_its_config_until_the_next_pass():
    source = GrainIterSource(_loader(12, 3, seed=0))
    user = source.config
    assert source.pending_config is None and source.modes == ("thread", "process")
    iterator = iter(source)
    next(iterator)
    processes = LoaderConfig(2, 4, use_multiprocessing=True)
    source.reconfigure(processes, background=True)
    assert source.pending_config == processes and source.config == user
    source.reconfigure(LoaderConfig(3, 3))  # a newer thread change supersedes it
    assert source.pending_config is None and source.config == LoaderConfig(3, 3)
    iterator.close()


def test_the_tuner_never_adds_worker_processes_to_a_pipeline_without_them():
    # Grain restarts an iterator's workers at every pass: a trial's steady state hides
    # that cost (a GIL-bound map given workers ran a 192-step fit 4x slower).
    bare = GrainIterSource(_loader(12, 3, seed=0))
    assert bare.modes == ("thread", "process") and bare.searched_modes == ("thread",)
    mp = GrainIterSource(_iter_dataset(8, 2, seed=0, workers=2))
    assert mp.searched_modes == mp.modes == ("process",)
    with_workers = GrainIterSource(_loader(12, 3, seed=0, workers=1))
    assert with_workers.searched_modes == with_workers.modes


def test_a_session_for_a_bare_grain_pipeline_searches_threads_only():
    import logging

    from keras_loadtune.decision.settings import TunerSettings
    from keras_loadtune.lifecycle.session_start import SessionStarter

    source = GrainIterSource(_loader(12, 3, seed=0))
    starter = SessionStarter(TunerSettings(), None, None, logging.getLogger("klt-test"))
    session = starter._session(source, source.config, study=None)
    assert tuple(session.modes) == ("thread",)


def test_a_config_of_a_kind_the_pipeline_cannot_run_is_refused_at_once():
    plain = GrainIterSource(_iter_dataset(8, 2, seed=0))
    assert plain.modes == ("thread",)
    with pytest.raises(ValueError, match=r"cannot run .* on worker processes"):
        plain.reconfigure(LoaderConfig(2, 2, use_multiprocessing=True))
    mp = GrainIterSource(_iter_dataset(8, 2, seed=0, workers=2))
    assert mp.modes == ("process",)
    with pytest.raises(ValueError, match="on threads alone"):
        mp.reconfigure(LoaderConfig(2, 2))
    assert plain.pending_config is None and mp.pending_config is None


def test_a_failed_rebuild_is_a_failed_start_the_tuner_reads(monkeypatch):
    ds = _iter_dataset(12, 3, seed=1)
    source = GrainIterSource(ds)
    user = source.config
    original = source._pipeline.build
    monkeypatch.setattr(
        source._pipeline,
        "build",
        lambda o: original(o) if o == source._pipeline.options else 1 / 0,
    )
    assert _served_pass(source, {0: LoaderConfig(2, 2)}) == _pass(ds)
    failed = [s for s in source.stats.startups if s.error is not None]
    assert [s.config for s in failed] == [LoaderConfig(2, 2)]
    assert "ZeroDivisionError" in failed[0].error
    assert source.config == user  # what serves is named, not what was refused
