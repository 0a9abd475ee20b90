"""`keras_adapter/grain_source.py`: a Grain `MapDataset` of batches served batch by batch.

Batch `i` of every pass must be `ds[i]`, in index order whatever `fit`'s `shuffle`
says, while the loader is reconfigured at random steps between inline, threads and
processes: 0 batches lost, duplicated or reordered (issue #25).
"""

from __future__ import annotations

import random
import time

import grain
import keras
import numpy as np
import pytest
from config_strategies import thread_configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_epochs import served_epochs
from tuners import make_tuner

import keras_loadtune as klt
from keras_loadtune import LoaderConfig
from keras_loadtune.keras_adapter.grain_source import GrainMapSource

pytestmark = [pytest.mark.keras, pytest.mark.timeout(600)]


def _sample(i: int):
    return np.full((2,), i, np.float32), np.float32(2 * i)


def _batches(n: int, batch_size: int, seed: int, drop_remainder: bool = False):
    """A shuffled MapDataset whose elements are batches `(x, y)` with `y = 2 * x[:, 0]`."""
    ds = grain.MapDataset.range(n).shuffle(seed=seed).map(_sample)
    return ds.batch(batch_size, drop_remainder=drop_remainder)


def _expected(ds, epochs: int) -> list[list[list[float]]]:
    return [[ds[i][0][:, 0].tolist() for i in range(len(ds))] for _ in range(epochs)]


def _served(wrapped, epochs: int, reconfigure_at: dict, **kw) -> list[list[list[float]]]:
    ids = lambda x: np.asarray(x)[:, 0].tolist()  # noqa: E731
    return served_epochs(wrapped, epochs, reconfigure_at, ids, **kw)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 6),
    drop_remainder=st.booleans(),
    seed=st.integers(0, 2**16),
    plan=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 8), thread_configs), min_size=20, max_size=30
    ),
    early=st.booleans(),
)
def test_threads_and_inline_serve_every_index_once_in_order(
    n, batch_size, drop_remainder, seed, plan, early
):
    # `early`: each next pass starts while the current one drains (as in a tuned fit).
    ds = _batches(n, batch_size, seed, drop_remainder)
    if len(ds) == 0:
        return
    expected = _expected(ds, 3)
    with klt.wrap(ds) as wrapped:
        served = _served(wrapped, 3, {(e, s): c for e, s, c in plan}, plan_passes=early)
        assert served == expected


_MADE: list[int] = []


def _counted(i: int):
    _MADE.append(i)
    return _sample(i)


def test_the_next_pass_starts_while_the_current_one_drains():
    # 12 batches of 4, 4 threads with a queue of 4: once the 8th batch is delivered the
    # last four are submitted, and the next epoch's pass starts (its first batches are
    # made while the current one drains); after the last epoch nothing starts. Each pass
    # is whole, once, in order, and no element is made twice.
    ds = grain.MapDataset.range(48).shuffle(seed=3).map(_counted).batch(4)
    with klt.wrap(ds, LoaderConfig(4, 4)) as wrapped:
        _MADE.clear()
        served = _served(wrapped, 3, {}, plan_passes=True)
        made = list(_MADE)
        assert wrapped._streams_opened() == 3  # the early passes were the epochs' passes
    _MADE.clear()
    assert served == [[[float(v) for v in ds[i][0][:, 0]] for i in range(12)]] * 3
    assert sorted(made) == sorted(list(range(48)) * 3)


def test_twenty_switches_across_inline_threads_and_processes_lose_nothing():
    rng = random.Random(11)
    configs = [
        LoaderConfig(workers=1, max_queue_size=1),
        LoaderConfig(workers=3, max_queue_size=5),
        LoaderConfig(workers=2, max_queue_size=3, use_multiprocessing=True),
    ]
    epochs, ds = 4, _batches(50, 4, seed=3)  # 13 batches per epoch
    reconfigure_at = {
        (e, s): rng.choice(configs) for e in range(epochs) for s in rng.sample(range(12), 6)
    }
    assert len(reconfigure_at) >= 20
    with klt.wrap(ds) as wrapped:
        served = _served(wrapped, epochs, reconfigure_at)
        producers = {r.producer.mode for r in wrapped.stats if r.producer is not None}
    assert served == _expected(ds, epochs)
    assert producers == {"thread", "process"}


def test_iterators_run_on_grains_own_iterator():
    # An IterDataset has no random access: `GrainIterSource`
    # (tests/test_keras_adapter_grain_iter_source.py) serves it, or, with no knob to
    # change, it is measured only.
    from keras_loadtune.keras_adapter.grain_iter_source import GrainIterSource

    ds = _batches(8, 2, seed=0)
    tuner = make_tuner(fast=False)
    for served in (ds.to_iter_dataset(), grain.MapDataset.range(3).to_iter_dataset()):
        assert isinstance(tuner.wrap(served), GrainIterSource)
        assert isinstance(klt.wrap(served), GrainIterSource)
    assert any("epoch boundary" in note for note in tuner.report.notes)
    parts = [grain.MapDataset.range(3).to_iter_dataset() for _ in range(2)]
    mixed = grain.IterDataset.mix(parts)
    assert tuner.wrap(mixed) is mixed
    with pytest.raises(TypeError, match="measured only"):
        klt.wrap(mixed)


def test_filtered_and_endless_datasets_get_errors_that_say_what_to_do():
    filtered = grain.MapDataset.range(4).filter(lambda i: i % 2 == 0).map(_sample)
    with pytest.raises(ValueError, match="filtered out"):
        GrainMapSource(filtered)[1]
    endless = _batches(4, 2, seed=0).repeat()
    with pytest.raises(TypeError, match="repeat"):
        klt.wrap(endless)
    tuner = make_tuner(fast=False)
    assert tuner.wrap(endless) is endless  # Keras iterates it; the tuner measures it
    assert any("repeat" in note for note in tuner.report.notes)


def test_fit_trains_on_the_datasets_batches_with_the_tuner():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    tuner = make_tuner(fast=False, probe_steps=3, max_trials=2)
    train = tuner.wrap(_batches(40, 8, seed=1))
    try:
        history = model.fit(train, epochs=2, callbacks=[tuner], verbose=0)
    finally:
        train.close()
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert train.stats.delivered >= 10


class _PassesLeft(keras.callbacks.Callback):
    """Records what the tuner told the wrapped dataset at each epoch begin."""

    def __init__(self, train):
        super().__init__()
        self.train, self.seen = train, []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(self.train._passes_left)


def _tuned_fit_made(early: bool) -> tuple[list[int], list[int]]:
    """Elements made by a tuned 3-epoch fit of 16 batches, and the passes left the
    tuner announced at each epoch begin (`early=False`: the dataset ignores them)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    tuner = make_tuner(fast=False, probe_steps=3, max_trials=2)
    ds = grain.MapDataset.range(64).shuffle(seed=1).map(_counted).batch(4)
    train = tuner.wrap(ds)
    if not early:
        train.plan_passes = lambda left: None
    passes = _PassesLeft(train)
    _MADE.clear()
    try:
        model.fit(train, epochs=3, callbacks=[tuner, passes], verbose=0)
        made = list(_MADE)
        assert train._ahead == {}  # the fit's end closed whatever started early
    finally:
        train.close()
        _MADE.clear()
    return made, passes.seen


def test_a_tuned_fit_starts_each_next_epoch_early_and_nothing_after_the_last():
    made, seen = _tuned_fit_made(early=True)
    assert seen == [2, 1, 0]
    counts = np.bincount(made, minlength=64)
    assert counts.min() >= 3, np.bincount(counts)  # every epoch saw every element
    # Keras's model-building pull and spec peek make some batches again in both fits;
    # a pass started after the last epoch would make every element once more.
    plain, _ = _tuned_fit_made(early=False)
    assert len(made) <= len(plain), (len(made), len(plain))


_BUSY_ITERATIONS = 60_000


def _busy_sample(i: int):
    """`_sample(i)` after a fixed amount of pure-Python work (it holds the GIL)."""
    total = 0
    for k in range(_BUSY_ITERATIONS):
        total += k ^ i
    return _sample(i + 0 * (total % 2))


def test_a_busy_map_served_batch_by_batch_records_its_cpu():
    # `ds[i]` runs the map on the thread that asks for batch i: the engine's worker
    # thread (or the training thread inline), whose CPU time the engine records. So
    # the MapDataset path has no blind spot for the tuner (GrainIterSource reads
    # Grain's own threads instead: tests/test_keras_adapter_grain_cpu.py).
    started = time.thread_time()
    for i in range(32):
        _busy_sample(i)
    reference = time.thread_time() - started
    ds = grain.MapDataset.range(32).map(_busy_sample).batch(4)
    wrapped = klt.wrap(ds)
    try:
        served = _served(wrapped, 1, {(0, 1): LoaderConfig(2, 4)})  # inline, then threads
        records = list(wrapped.stats)
    finally:
        wrapped.close()
    assert len(served[0]) == 8
    assert {r.config for r in records} >= {LoaderConfig(2, 4)}
    assert sum(r.produce_cpu_s for r in records) >= 0.3 * reference


def test_a_wrapped_map_dataset_starts_on_the_threads_keras_runs_it_with():
    # Keras iterates a bare MapDataset through Grain's default ReadOptions (16 threads):
    # the user's config is that, not inline (which ran a short fit 1.1x slower).
    threads = grain.ReadOptions().num_threads
    wrapped = make_tuner().wrap(_batches(12, 3, seed=0))
    try:
        assert wrapped.config == LoaderConfig(threads, 2 * threads, False)
    finally:
        wrapped.close()
