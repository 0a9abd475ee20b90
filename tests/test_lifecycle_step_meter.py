"""`StepMeter`: which training steps reach the tuner, on fake records (no Keras, no TF)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import DatasetNotPicklableError
from keras_loadtune.lifecycle.loader_switch import LoaderSwitch
from keras_loadtune.lifecycle.step_meter import StepMeter, first_consumer

BASE = LoaderConfig(workers=2, max_queue_size=10)


def _record(
    consumer: int = 0, *, tail: bool = False, depth: int = 5, producer=None, at=0.0, config=BASE
):
    return SimpleNamespace(
        consumer=consumer,
        pass_tail=tail,
        queue_depth=depth,
        config=config,
        producer=producer,
        delivered_at=at,
        wait_s=0.0,
    )


@dataclass
class _Stats:
    records: list = field(default_factory=list)
    startups: list = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return len(self.records)

    def batches_since(self, cursor: int) -> list:
        return self.records[cursor:]


@dataclass
class _Data:
    num_batches: int | None = 100
    config: LoaderConfig = BASE
    stats: _Stats = field(default_factory=_Stats)
    pending_config: LoaderConfig | None = None
    switch_error: BaseException | None = None


def _bound(data: _Data | None = None, consumer: int = 0) -> tuple[StepMeter, _Data]:
    data = data or _Data()
    meter = StepMeter()
    meter.bind(data, consumer, data.stats.delivered)
    return meter, data


def test_records_are_the_bound_consumers_since_the_last_step_and_none_when_unwrapped():
    assert StepMeter().new_records() is None
    meter, data = _bound(consumer=1)
    data.stats.records += [_record(1), _record(2), _record(1)]
    assert [r.consumer for r in meter.new_records()] == [1, 1]
    assert meter.new_records() == []
    data.stats.records.append(_record(1))
    assert len(meter.new_records()) == 1


def test_a_new_fit_ignores_what_was_delivered_before_it():
    meter, data = _bound()
    data.stats.records += [_record(), _record()]
    data.stats.startups.append(SimpleNamespace(config=BASE, seconds=0.5, error=None))
    meter.start_fit([data])
    assert meter.new_records() == [] and meter.new_startups() == []
    data.stats.startups.append(SimpleNamespace(config=BASE, seconds=0.25, error=None))
    assert meter.new_startups() == [(BASE, 0.25)]
    assert meter.new_startups() == []


def test_end_of_epoch_steps_are_hidden_from_the_tuner_unless_the_epoch_is_that_short():
    meter, _ = _bound(_Data(num_batches=100))
    assert meter.in_pass_tail([_record(), _record(tail=True)])
    assert not meter.in_pass_tail([_record(tail=True), _record()])
    assert not meter.counts([_record(tail=True)], session_ready=True)
    meter, _ = _bound(_Data(num_batches=20))  # 20 <= 2 * (10 + 2): all of it is "tail"
    assert not meter.in_pass_tail([_record(tail=True)])
    assert meter.counts([_record(tail=True)], session_ready=True)


def test_the_stock_traced_into_the_queue_is_drained_before_steps_count():
    meter, _ = _bound()
    full = [_record(depth=8)]
    hidden = sum(not meter.counts(full, session_ready=False) for _ in range(50))
    assert hidden == 2 * BASE.max_queue_size
    meter, _ = _bound()
    assert not meter.counts([_record(depth=1)], session_ready=False)  # the last stock step
    assert meter.counts(full, session_ready=False)
    meter, _ = _bound()
    assert meter.counts(full, session_ready=True)  # a session exists: no draining
    meter.skip_draining()
    assert meter.counts(full, session_ready=False)


def test_a_batch_made_inline_counts_at_once_there_is_no_stock_to_drain():
    inline = LoaderConfig()
    meter, _ = _bound(_Data(config=inline))
    assert meter.counts([_record(depth=0, config=inline)], session_ready=False)
    # Stock a previous pool finished is still not counted, and a pool's step still drains.
    meter, _ = _bound(_Data(config=inline))
    assert not meter.counts([_record(depth=3, config=inline, producer=BASE)], session_ready=False)
    meter, _ = _bound()
    assert not meter.counts([_record(depth=0)], session_ready=False)


def test_batches_of_the_previous_pool_do_not_count():
    meter, _ = _bound()
    meter.skip_draining()
    other = LoaderConfig(workers=8)
    assert not meter.counts([_record(), _record(producer=other)], session_ready=True)
    assert meter.counts([_record(producer=BASE)], session_ready=True)


def test_rebinding_the_same_data_keeps_the_drain_state_and_new_data_resets_it():
    meter, data = _bound()
    meter.skip_draining()
    assert meter.bind(data, 0, 0) is False
    assert meter.counts([_record(depth=8)], session_ready=False)
    assert meter.bind(_Data(), 0, 0) is True
    assert not meter.counts([_record(depth=8)], session_ready=False)


def test_a_failed_background_switch_is_reported_once_with_its_config():
    meter, data = _bound()
    proc = LoaderConfig(workers=4, use_multiprocessing=True)
    data.pending_config = proc
    assert meter.switch_pending()
    data.pending_config = None
    assert not meter.switch_pending() and meter.new_switch_failure() is None
    error = DatasetNotPicklableError("lambda in the dataset")
    data.switch_error = error
    data.stats.startups.append(SimpleNamespace(config=proc, seconds=0.1, error=error))
    failed, note = meter.new_switch_failure()
    assert failed == proc and note == "process mode skipped: lambda in the dataset"
    assert meter.new_switch_failure() is None
    data.switch_error = RuntimeError("out of memory")
    assert meter.new_switch_failure()[1] == "RuntimeError: out of memory"


def test_the_training_consumer_is_the_one_that_delivered_first():
    train, val = _Data(), _Data()
    train.stats.records += [_record(7, at=2.0)]
    val.stats.records += [_record(3, at=1.0), _record(3, at=3.0)]
    assert first_consumer({1: (train, 0), 2: (val, 0)}) == (val, 3, 0)
    assert first_consumer({1: (train, 0), 2: (val, 2)}) == (train, 7, 0)
    assert first_consumer({1: (train, 1)}) == (None, None, 0)


@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.booleans()),  # (consumer, step ends after it)
        max_size=60,
    )
)
def test_every_batch_of_the_consumer_is_seen_exactly_once_in_order(deliveries):
    meter, data = _bound(consumer=1)
    seen = []
    for i, (consumer, step_ends) in enumerate(deliveries):
        data.stats.records.append(_record(consumer, at=float(i)))
        if step_ends:
            seen += meter.new_records()
    seen += meter.new_records()
    assert seen == [r for r in data.stats.records if r.consumer == 1]


class _Switchable(_Data):
    def __init__(self, fail: BaseException | None = None) -> None:
        super().__init__()
        self.fail = fail
        self.calls: list[tuple[LoaderConfig, bool]] = []

    def reconfigure(self, config: LoaderConfig, background: bool = False) -> None:
        self.calls.append((config, background))
        if self.fail is not None:
            raise self.fail
        self.pending_config = config if background else None
        self.config = self.config if background else config


def test_the_loader_switch_starts_in_the_background_and_reports_when_it_started():
    data = _Switchable()
    switch = LoaderSwitch(data, logging.getLogger("test"))
    switch.reconfigure(BASE)  # already running it: nothing to do
    assert data.calls == [] and not switch.acted
    new = LoaderConfig(workers=6)
    switch.reconfigure(new)
    assert data.calls == [(new, True)] and switch.acted
    assert switch.started() is None  # still starting
    data.pending_config, data.config = None, new
    assert switch.started() == new
    assert switch.started() is None  # once
    switch.background = False
    switch.reconfigure(BASE)
    assert data.calls[-1] == (BASE, False)


def test_the_loader_switch_logs_a_failure_and_raises_it_for_the_driver(caplog):
    data = _Switchable(RuntimeError("no room"))
    switch = LoaderSwitch(data, logging.getLogger("test"))
    new = LoaderConfig(workers=6)
    with caplog.at_level(logging.WARNING, "test"), pytest.raises(RuntimeError, match="no room"):
        switch.reconfigure(new)
    assert "could not switch the loader" in caplog.text
    assert switch.acted and switch.started() is None
