"""`keras_adapter/grain_iter_source.py` as a dataset of the tuner's lifecycle: a Keras fit
on a wrapped Grain `IterDataset` / `grain.DataLoader` is measured and tuned by
`LoadTuner` (issue #25, target 2), every batch comes exactly once per epoch, a
worker-count change waits for the epoch boundary (the trial starts after it), and
nothing is left running after `fit`.

Structure only (trials exist, exactly once, notes): never which config won.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import threading
import time

import grain
import keras
import numpy as np
import pytest
from tuners import make_tuner

from keras_loadtune.keras_adapter import grain_iter_source
from keras_loadtune.keras_adapter.grain_iter_source import GrainIterSource
from keras_loadtune.simulation.pipeline import pass_workers

pytestmark = [pytest.mark.timeout(300)]

N, BATCH, EPOCHS = 96, 4, 3  # 24 batches of 4 per epoch
# Trials short enough to be measured within an epoch (a trial skips its refill first:
# `decision.delivery.refill_steps`, about its queue size).
_SMALL = dict(max_thread_workers=4, queue_size_range=(1, 6))


def _slow(i):
    time.sleep(0.01)  # input-bound: 40 ms a batch on one thread, a tiny model step
    return np.full((2,), i / N, np.float32), np.float32(2 * i / N)


class _Slow(grain.transforms.Map):
    def map(self, i):
        return _slow(i)


def _iter_dataset():
    ds = grain.MapDataset.range(N).shuffle(seed=3).map(_slow)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    return ds.batch(BATCH)


def _loader():
    sampler = grain.samplers.IndexSampler(
        N, shard_options=grain.sharding.NoSharding(), shuffle=True, seed=3, num_epochs=1
    )
    return grain.DataLoader(
        data_source=list(range(N)),
        sampler=sampler,
        operations=[_Slow(), grain.transforms.Batch(BATCH)],
        read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=1),
    )


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    return model


def _spy_passes(monkeypatch) -> dict[int, list[list[float]]]:
    """The batches each pass of any `GrainIterSource` returned, by pass number."""
    served: dict[int, list[list[float]]] = collections.defaultdict(list)
    original = grain_iter_source._ResumableIterator.__next__

    def spy(self):
        batch = original(self)
        served[self._stream].append(np.asarray(batch[0])[:, 0].tolist())
        return batch

    monkeypatch.setattr(grain_iter_source._ResumableIterator, "__next__", spy)
    return served


def _expected(pipeline) -> list[list[float]]:
    return [np.asarray(x)[:, 0].tolist() for x, _ in pipeline]


def _python_threads() -> set[str]:
    """Threads Python started (a `_DummyThread` is a runtime's own thread, e.g. the
    one tf.data ran a generator on, only seen by Python)."""
    return {
        t.name
        for t in threading.enumerate()
        if t.is_alive() and not isinstance(t, threading._DummyThread)
    }


def _settled(before: set[str]) -> set[str]:
    """Threads started since `before` that are still alive after a short grace."""
    deadline = time.monotonic() + 10
    while True:
        extra = _python_threads() - before
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)


def test_a_fit_tunes_a_wrapped_iter_dataset_exactly_once(monkeypatch):
    expected = _expected(_iter_dataset())
    served = _spy_passes(monkeypatch)
    before = _python_threads()
    tuner = make_tuner(fast=False, probe_steps=4, max_trials=3, **_SMALL)
    train = tuner.wrap(_iter_dataset())
    assert isinstance(train, GrainIterSource) and train.modes == ("thread",)
    history = _model().fit(train, epochs=EPOCHS, callbacks=[tuner], verbose=0)
    assert len(history.history["loss"]) == EPOCHS

    report = tuner.report
    assert report.decision != "not-wrapped"
    assert len(report.trials) >= 2  # the user's config and at least one other, measured
    assert all(not t.config.use_multiprocessing for t in report.trials)  # threads only
    assert any(t.steps_per_s is not None for t in report.trials if t.source != "baseline")
    assert any("epoch boundary" in note for note in report.notes)
    assert len(train.stats) > 0 and train.switch_error is None
    assert {r.config for r in train.stats} >= {t.config for t in report.trials[1:2]}

    full = [batches for batches in served.values() if len(batches) == len(expected)]
    assert len(full) == EPOCHS  # Keras's peeks are partial passes; each epoch one whole
    assert all(batches == expected for batches in full)  # 0 lost, duplicated, reordered
    assert train.resumes >= 1  # a thread change really happened mid-pass
    assert not multiprocessing.active_children()
    assert not _settled(before)


def test_a_worker_change_waits_for_the_epoch_boundary_in_a_fit(monkeypatch):
    # The tuner may only try worker processes here; Grain's processes are replaced by
    # the in-process loader (the same batches) to keep the test short: what is checked
    # is when a worker-count change applies, not what processes cost.
    expected = _expected(_loader())
    served = _spy_passes(monkeypatch)
    tuner = make_tuner(
        fast=False, probe_steps=4, max_trials=3, modes=("process",)
    )  # at most `cores` processes: trials are short
    train = tuner.wrap(_loader())
    assert train.modes == ("thread", "process")
    build = train._pipeline.build
    monkeypatch.setattr(
        train._pipeline, "build", lambda o: build(dataclasses.replace(o, num_workers=0))
    )
    held = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if train.pending_config is not None:
                held.append((batch, train.config, train.pending_config))

    _model().fit(train, epochs=EPOCHS, callbacks=[tuner, Watch()], verbose=0)

    assert any(not config.use_multiprocessing for _, config, _ in held)  # the user's served
    assert all(pass_workers(config) != pass_workers(pending) for _, config, pending in held)
    by_pass = collections.defaultdict(set)
    for r in train.stats:
        by_pass[r.stream].add(pass_workers(r.config))
    assert all(len(workers) == 1 for workers in by_pass.values())  # never within a pass
    assert any(0 not in workers for workers in by_pass.values())  # a pass ran the trial
    restarts = [s for s in train.stats.startups if s.workers_started]
    assert restarts and all(s.config.use_multiprocessing for s in restarts[:1])
    trials = tuner.report.trials
    process = [t for t in trials if t.config.use_multiprocessing]
    assert process and process[0].steps_per_s is not None  # measured after the boundary
    full = [batches for batches in served.values() if len(batches) == len(expected)]
    assert len(full) == EPOCHS and all(batches == expected for batches in full)
