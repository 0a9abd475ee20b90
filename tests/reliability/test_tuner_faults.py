"""Faults around the tuner: Optuna failing, process mode impossible, memory pressure.

The promise under test: the tuner never breaks training. Whatever goes wrong in tuning,
`fit` completes every epoch on every batch, one clear warning is logged, and the report
says what was skipped.
"""

from __future__ import annotations

import logging

import optuna
import pytest
from tuners import make_tuner

from keras_loadtune import LoaderConfig
from keras_loadtune.trial import PARAM_MODE
from reliability.faulty import Faulty, Unpicklable

pytestmark = [pytest.mark.keras, pytest.mark.timeout(120)]

N = 30
EPOCHS = 2


class ExplodingSampler(optuna.samplers.BaseSampler):
    """Every sampling call raises, as a broken third-party sampler would."""

    def infer_relative_search_space(self, study, trial):
        raise RuntimeError("sampler exploded")

    def sample_relative(self, study, trial, search_space):
        raise RuntimeError("sampler exploded")

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise RuntimeError("sampler exploded")


def _train(kdata, wrapped, tuner, epochs=EPOCHS):
    marks = kdata.EpochMarks(wrapped)
    history = kdata.tiny_model().fit(
        wrapped, epochs=epochs, verbose=0, shuffle=False, callbacks=[tuner, marks]
    )
    per_epoch = kdata.epochs_of(wrapped, marks.marks)
    assert len(history.history["loss"]) == epochs, "training stopped early"
    assert [sorted(e) for e in per_epoch] == [list(range(len(wrapped)))] * epochs
    return history


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("keras_loadtune")
    ]


def _input_bound(delay=0.01, **kwargs):
    return Faulty(N, delay=delay, **kwargs)


# These tests exercise failure paths, not the policy: every trial "pays" (payoff_ratio
# 0), so the tuner asks the sampler and tries the configs these short fits would
# otherwise skip as not worth their cost.
ALWAYS_PAYS = {"payoff_ratio": 0.0}


class ProcessLovingSampler(optuna.samplers.RandomSampler):
    """Random search that always proposes worker processes (as for a CPU-bound dataset)."""

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name == PARAM_MODE:
            return "process"
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_a_raising_sampler_does_not_break_training(keras_ready, klt_log, closing, monkeypatch):
    from keras_loadtune.decision import analytical

    kdata = keras_ready
    # No seeds from the pipeline model: after your config, the sampler is asked.
    monkeypatch.setattr(analytical, "seed_configs", lambda *args, **kwargs: [])
    tuner = make_tuner(verbose=1, sampler=ExplodingSampler(), **ALWAYS_PAYS)
    # Slow enough that the analytical seed cannot reach the compute floor: the sampler is asked.
    wrapped = tuner.wrap(kdata.KerasView(_input_bound(0.03)), LoaderConfig(1, 1))
    closing(wrapped)
    _train(kdata, wrapped, tuner)
    warnings = _warnings(klt_log)
    report = tuner.report
    print(f"\n[tuner] raising sampler: warnings={warnings}\n{report}")
    assert len(warnings) == 1, warnings
    assert "sampler exploded" in warnings[0]
    assert any("sampler exploded" in n for n in report.notes), report.notes
    assert tuner.best_config is not None


def test_a_failing_study_tell_does_not_break_training(keras_ready, klt_log, closing, monkeypatch):
    kdata = keras_ready

    def broken_tell(self, *args, **kwargs):
        raise RuntimeError("storage is down")

    monkeypatch.setattr(optuna.study.Study, "tell", broken_tell)
    tuner = make_tuner(verbose=1)
    wrapped = tuner.wrap(kdata.KerasView(_input_bound()), LoaderConfig(1, 1))
    closing(wrapped)
    _train(kdata, wrapped, tuner)
    warnings = _warnings(klt_log)
    report = tuner.report
    print(f"\n[tuner] failing tell: warnings={warnings}\n{report}")
    assert len(warnings) == 1, warnings
    assert "storage is down" in warnings[0]
    assert any("storage is down" in n for n in report.notes), report.notes


def test_an_unreachable_study_storage_does_not_break_training(
    keras_ready, klt_log, closing, tmp_path
):
    kdata = keras_ready
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the database's parent "directory" is a file: cannot be created
    tuner = make_tuner(verbose=1, storage=f"sqlite:///{blocker}/klt/studies.db")
    wrapped = tuner.wrap(kdata.KerasView(_input_bound(0.03)), LoaderConfig(1, 1))
    closing(wrapped)
    _train(kdata, wrapped, tuner)
    warnings = _warnings(klt_log)
    report = tuner.report
    print(f"\n[tuner] unreachable storage: warnings={warnings}\n{report}")
    assert len(warnings) == 1, warnings
    assert "storage" in warnings[0]
    assert any("storage" in n for n in report.notes), report.notes
    assert report.trials, "tuning still ran, in memory"


def _train_unpicklable(kdata, holder, closing):
    # Processes only (besides your thread config): the tuner must try them, whatever a
    # thread seed would reach, and can go nowhere else when they fail.
    tuner = make_tuner(
        verbose=1,
        max_trials=6,
        patience=6,
        sampler=ProcessLovingSampler(seed=0),
        modes=("process",),
        **ALWAYS_PAYS,
    )
    # CPU-heavy Python: processes are a candidate (never for a latency-bound loader).
    ds = Unpicklable(N, cpu=0.01, holder=holder)
    wrapped = tuner.wrap(kdata.KerasView(ds), LoaderConfig(1, 1))
    closing(wrapped)
    _train(kdata, wrapped, tuner, epochs=3)
    return tuner, wrapped


@pytest.mark.parametrize("holder", ["lock"])  # a lambda ships by value (cloudpickle)
def test_unpicklable_dataset_tunes_threads_only(keras_ready, closing, holder):
    """Processes are asked for; the dataset cannot go there; only threads ever run."""
    tuner, wrapped = _train_unpicklable(keras_ready, holder, closing)
    report = tuner.report
    print(f"\n[tuner] unpicklable ({holder}):\n{report}")
    assert all(not r.config.use_multiprocessing for r in wrapped.stats)
    assert all(not s.config.use_multiprocessing for s in wrapped.stats.startups)
    measured = [t for t in report.trials if t.state == "complete"]
    # Thread trials run only where they can gain (this loader is GIL-bound).
    assert measured and all(not t.config.use_multiprocessing for t in measured)
    failed = [t for t in report.trials if t.state == "failed"]
    assert all(t.config.use_multiprocessing for t in failed)
    assert [n for n in report.notes if n.startswith("process mode skipped")], report.notes
    assert "cannot be sent to worker processes" in " ".join(report.notes)
    assert tuner.best_config is not None and not tuner.best_config.use_multiprocessing


def test_unpicklable_dataset_logs_one_warning(keras_ready, klt_log, closing):
    _train_unpicklable(keras_ready, "lock", closing)
    warnings = _warnings(klt_log)
    assert len(warnings) == 1, warnings


def test_ram_budget_below_one_queue_of_batches(keras_ready, klt_log, closing):
    kdata = keras_ready
    budget = 16 * 1024  # one batch is 40 KiB
    tuner = make_tuner(verbose=1, ram_budget_bytes=budget, max_trials=6, patience=6, **ALWAYS_PAYS)
    wrapped = tuner.wrap(kdata.KerasView(_input_bound(rows=2048)), LoaderConfig(1, 1))
    closing(wrapped)
    _train(kdata, wrapped, tuner)
    report = tuner.report
    print(f"\n[tuner] ram budget {budget} B:\n{report}")
    session = tuner._session
    for trial in report.trials:
        if trial.state == "complete" and trial.source != "baseline":
            assert session._memory.excess(trial.rss_bytes) <= 0, trial
    proposed = [t for t in report.trials if t.source != "baseline"]
    if proposed:  # every candidate holds more than the budget: each one says so
        assert any("RAM budget" in (t.reason or "") for t in proposed) or any(
            "RAM" in n for n in report.notes
        ), report
    best = tuner.best_config
    kept = [t for t in report.trials if t.config == best and t.state == "complete"]
    assert kept and (kept[0].source == "baseline" or session._memory.excess(kept[0].rss_bytes) <= 0)
    assert wrapped.config == best
