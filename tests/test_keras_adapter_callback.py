"""LoadTuner end to end on real (tiny) Keras fits: logs, decisions, reports, re-checks."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest

pytestmark = [pytest.mark.keras, pytest.mark.usefixtures("no_leaks")]

keras = pytest.importorskip("keras")

from keras_datasets import FEATURES, IndexPyDataset  # noqa: E402
from tuners import make_tuner  # noqa: E402

import keras_loadtune as klt  # noqa: E402


def _model(hidden: int = 0) -> keras.Model:
    """A small regression model; `hidden` > 0 adds two ReLU layers of that width.

    A one-layer step costs about 0.1 ms under JIT-compiled JAX but 1 ms or more on
    TensorFlow, so tests that need real compute (a compute-bound verdict) ask for `hidden`
    units instead of relying on one backend's per-step overhead.
    """
    body = [keras.layers.Dense(hidden, activation="relu") for _ in range(2)] if hidden else []
    model = keras.Sequential([keras.Input((FEATURES,)), *body, keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


class SlowDownAfterFirstEpoch(keras.callbacks.Callback):
    """From the second epoch on, every batch of `dataset` waits (a cache went cold): 100 ms,
    or 4 first-epoch steps where a step is slower (a loaded machine), so the wait is well
    over half of each step whatever the machine's speed.

    Driven by the trainer's epoch number, not by counting the dataset's own epoch hooks:
    how often Keras calls those before the first epoch differs between backends.
    """

    def __init__(self, dataset: IndexPyDataset, tuner: klt.LoadTuner):
        super().__init__()
        self.dataset = dataset
        self.tuner = tuner

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0:
            self.dataset.delay = 0.0
        elif epoch == 1:
            step_s = self.tuner.report.to_dict()["median_step_seconds"] or 0.0
            self.dataset.delay = max(0.1, 4 * step_s)


def test_wait_fraction_reaches_history_and_csvlogger_and_no_batch_end_hook_is_seen(tmp_path):
    tuner = make_tuner(fast=False)
    log = tmp_path / "log.csv"
    with tuner.wrap(IndexPyDataset(n=30, delay=0.005)) as train:
        history = _model().fit(
            train,
            epochs=2,
            verbose=0,
            callbacks=[tuner, keras.callbacks.CSVLogger(str(log))],
        )
    fractions = history.history["data_wait_fraction"]
    assert len(fractions) == 2 and all(0.0 <= f <= 1.0 for f in fractions)
    with log.open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["data_wait_fraction"]) for r in rows] == pytest.approx(fractions)
    assert tuner.report.epoch_wait_fractions == pytest.approx(fractions)
    # Keras dispatches batch ends asynchronously (JAX, PyTorch) only for callbacks that
    # leave these hooks alone.
    callbacks = keras.callbacks.CallbackList([tuner])
    assert callbacks._async_train == keras.src.backend.IS_THREAD_SAFE


def test_the_tick_is_detached_once_tuning_has_ended_and_steps_are_still_counted():
    tuner = make_tuner(fast=False, wait_threshold=0.2)
    with tuner.wrap(IndexPyDataset(n=40, batch_size=64)) as train:
        history = _model(hidden=512).fit(train, epochs=3, verbose=0, callbacks=[tuner])
    assert tuner.phase == "compute-bound" and not tuner.ticking
    assert tuner.report.fit_all_steps == 3 * 40  # every step, ticked or handed over
    assert len(history.history["data_wait_fraction"]) == 3


def test_latency_bound_loader_is_tuned_to_more_threads_and_reported(caplog):
    tuner = make_tuner(fast=False, verbose=1, modes=("thread",))
    with (
        caplog.at_level(logging.INFO, logger="keras_loadtune"),
        tuner.wrap(IndexPyDataset(n=150, delay=0.02)) as train,
    ):
        _model().fit(train, epochs=2, verbose=0, callbacks=[tuner])
        assert train.config == tuner.best_config
    # settled: no Python of ours per step any more (a loaded machine may end the fit
    # before tuning does: then the next fit's first step detaches it)
    assert not tuner.ticking or tuner.phase == "stopped"
    report = tuner.report
    assert report.decision == "tuned", str(report)
    assert report.baseline_config == klt.LoaderConfig()
    assert tuner.best_config.workers >= 3 and not tuner.best_config.use_multiprocessing
    # "tuned" means the best measured faster than the baseline; by how much depends on
    # the machine's load (a loaded 2-core CPU puts the model step near the loader's)
    assert report.speedup is not None and report.speedup > 1.0
    assert report.trials[0].source == "baseline" and report.trials[0].state == "complete"
    # 20 ms per batch against a tiny model's step: well over a third of each step waits
    # (PyTorch's CPU step is the slowest: 0.46 there; the bug class reads 0.0).
    assert report.probe_wait_fraction > 0.3
    assert report.epoch_wait_fractions[-1] < report.probe_wait_fraction
    reports = [r for r in caplog.records if "tuning report" in r.getMessage()]
    assert len(reports) == 1  # the full report once, when tuning ends


def test_compute_bound_training_keeps_the_users_config_and_runs_no_trial():
    # Steps of several ms and batches that cost nothing: far below 20% wait on any backend
    # (a one-layer JAX step is ~0.1 ms, where queue overhead alone can exceed 5%).
    tuner = make_tuner(fast=False, wait_threshold=0.2)
    start = klt.LoaderConfig(2, 6)
    with tuner.wrap(IndexPyDataset(n=40, batch_size=64), start) as train:
        _model(hidden=512).fit(train, epochs=2, verbose=0, callbacks=[tuner])
        assert train.config == start
    report = tuner.report
    assert report.decision == "compute-bound", str(report)
    assert report.trials == [] and tuner.best_config == start
    assert "nothing to tune" in str(report)


def test_unwrapped_data_is_measured_and_the_report_says_how_to_tune():
    tuner = make_tuner(fast=False)
    history = _model().fit(IndexPyDataset(n=20), epochs=2, verbose=0, callbacks=[tuner])
    fractions = history.history["data_wait_fraction"]
    assert len(fractions) == 2 and all(0.0 <= f <= 1.0 for f in fractions)
    report = tuner.report
    assert report.decision == "not-wrapped"
    assert "tuner.wrap" in str(report)


def test_datasets_wrapped_by_the_same_tuner_get_the_tuned_config():
    tuner = make_tuner(fast=False, modes=("thread",))
    with (
        tuner.wrap(IndexPyDataset(n=120, delay=0.02)) as train,
        tuner.wrap(IndexPyDataset(n=4)) as val,
    ):
        _model().fit(train, validation_data=val, epochs=2, verbose=0, callbacks=[tuner])
        assert tuner.report.decision == "tuned"
        assert val.config == tuner.best_config == train.config


def test_compute_bound_verdict_is_rechecked_every_epoch():
    # Thread workers share the dataset object, so the callback's delay reaches them.
    tuner = make_tuner(fast=False, modes=("thread",), wait_threshold=0.2)
    dataset = IndexPyDataset(n=60, batch_size=64)
    with tuner.wrap(dataset) as train:
        _model(hidden=512).fit(
            train, epochs=3, verbose=0, callbacks=[tuner, SlowDownAfterFirstEpoch(dataset, tuner)]
        )
    report = tuner.report
    assert report.epoch_wait_fractions[0] < 0.2 < report.epoch_wait_fractions[1]
    assert report.reopen_reasons and "epoch 2" in report.reopen_reasons[0]
    assert tuner.phase != "compute-bound"
    assert report.decision in ("tuned", "in-progress", "kept-baseline")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"verbose": 3}, "verbose"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"timeout": 0}, "timeout"),
        ({"max_workers": 0}, "max_workers"),
        ({"ram_budget": -5}, "ram_budget"),
        ({"modes": ("thread", "gpu")}, "modes"),
    ],
)
def test_bad_arguments_are_rejected_up_front_naming_the_argument(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        klt.LoadTuner(**kwargs)


def test_wrap_rejects_what_it_cannot_run():
    tuner = make_tuner(fast=False)
    for bad in ([1, 2, 3], 7, (x for x in range(3)), np.zeros(3)):
        with pytest.raises(TypeError, match="PyDataset"):
            tuner.wrap(bad)


def test_a_small_dev_shm_note_reaches_the_report_once(monkeypatch):
    note = "/dev/shm had 60 MiB free: 2 arrays went through the pipe"
    monkeypatch.setattr(klt.TunedPyDataset, "shm_fallback_note", property(lambda self: note))
    tuner = make_tuner(fast=False)
    tuner.wrap(IndexPyDataset(4))
    tuner.wrap(IndexPyDataset(4))  # validation data with the same note: said once
    assert tuner.report.notes.count(note) == 1
