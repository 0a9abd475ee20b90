"""`FitClock`: a fit's step times and epoch wait fractions (no Keras)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_loadtune.lifecycle.fit_clock import FitClock


def _run(clock: FitClock, steps: list[tuple[float, float | None]], t0: float = 0.0) -> float:
    """Ticks one cycle per `(step_s, wait_s)` after a first tick; returns the last tick."""
    now = t0
    clock.tick(now)
    for step_s, wait_s in steps:
        now += step_s
        measured_s = clock.tick(now)
        if clock.measured(measured_s, now):
            clock.add(measured_s, wait_s)
    return now


def test_a_step_is_the_cycle_between_two_ticks_and_an_epochs_first_tick_starts_one():
    clock = FitClock(warmup_steps=0)
    clock.start_fit(0.0)
    clock.start_epoch(0.0)
    assert clock.tick(0.5) is None  # epoch hooks before the first step are not a step
    assert clock.tick(1.5) == pytest.approx(1.0)
    assert clock.tick(2.0) == pytest.approx(0.5)
    assert clock.close_cycle(2.25) == pytest.approx(0.25)  # validation begins: last step ends
    assert clock.close_cycle(8.0) is None  # the epoch's end: nothing left open
    clock.start_epoch(9.0)  # validation and epoch hooks in between: not a step either
    assert clock.tick(10.0) is None
    assert clock.all_steps == 4 and clock.fit_step == 3


def test_the_whole_fit_is_timed_with_all_its_steps_and_says_while_it_runs():
    clock = FitClock(warmup_steps=2)
    assert clock.fit_wall_seconds(1.0) is None and not clock.running
    clock.start_fit(10.0)
    clock.start_epoch(10.5)
    end = _run(clock, [(5.0, 0.0), (5.0, 0.0), (1.0, 0.5)], t0=11.0)
    assert clock.running and clock.fit_wall_seconds(end) == pytest.approx(end - 10.0)
    clock.end_fit(end + 0.5)
    assert not clock.running and clock.fit_wall_seconds(100.0) == pytest.approx(end - 9.5)
    assert clock.fit_all_steps == 4 and clock.fit_steps == 1


def test_handover_records_time_the_steps_once_the_tick_is_detached():
    clock = FitClock(warmup_steps=1)
    clock.start_fit(0.0)
    clock.start_epoch(0.0)
    records = [SimpleNamespace(delivered_at=t, wait_s=w) for t, w in ((1.0, 0.9), (2.0, 0.5))]
    records += [SimpleNamespace(delivered_at=t, wait_s=0.75) for t in (2.5, 3.0)]
    timed = clock.add_handovers(records)
    # the first hand-over starts the chain, the second is the warm-up step
    assert [s.step_s for _, s in timed] == pytest.approx([0.5, 0.5])
    assert [s.wait_s for _, s in timed] == pytest.approx([0.5, 0.5])  # capped at the step
    assert [r.delivered_at for r, _ in timed] == [2.5, 3.0]
    assert clock.all_steps == 4 and clock.fit_steps == 2
    assert clock.epoch_fraction() == pytest.approx(1.0)


def test_warmup_steps_are_not_measured_and_the_fit_is_timed_after_them():
    clock = FitClock(warmup_steps=2)
    clock.start_fit(0.0)
    clock.start_epoch(0.0)
    end = _run(clock, [(5.0, 0.0), (5.0, 0.0), (1.0, 0.5), (1.0, 0.5)])
    assert clock.fit_steps == 2 and clock.median_step_s == pytest.approx(1.0)
    assert clock.fit_seconds(end) == pytest.approx(2.0)
    assert clock.epoch_fraction() == pytest.approx(0.5)
    clock.start_fit()  # a new fit warms up again
    assert clock.fit_steps is None and clock.fit_seconds(end) is None


def test_a_report_read_after_training_gives_the_fits_own_time():
    # Found on a 16-core machine: a report read after the loader's close (which waited
    # for a process pool still starting) said "Fit: 12.1 s" for a 7.5 s fit.
    clock = FitClock(warmup_steps=1)
    clock.start_fit()
    clock.start_epoch(0.0)
    end = _run(clock, [(5.0, 0.0), (1.0, 0.0), (1.0, 0.0)])
    clock.end_fit(end)
    assert clock.fit_seconds(end + 4.5) == pytest.approx(2.0)
    clock.start_fit()
    assert clock.ended_at is None


def test_the_worst_gap_is_the_longest_step_after_the_tuners_action():
    clock = FitClock(warmup_steps=0)
    clock.add(3.0, 0.0)
    clock.add(1.0, 0.0, after_action=True)
    clock.add(2.0, 0.0, after_action=True)
    assert clock.worst_gap_s == 2.0


def test_unwrapped_data_is_estimated_from_the_step_spread_and_an_empty_epoch_is_none():
    clock = FitClock(warmup_steps=0)
    clock.start_epoch(0.0)
    assert clock.epoch_fraction() is None
    assert clock.add(0.1, None) is None
    assert 0.0 <= clock.epoch_fraction() <= 1.0


@given(
    st.lists(
        st.tuples(st.floats(1e-4, 10.0), st.floats(0.0, 20.0)),
        min_size=1,
        max_size=40,
    )
)
def test_the_epoch_fraction_is_capped_waits_over_step_times(steps):
    clock = FitClock(warmup_steps=0)
    clock.start_fit()
    clock.start_epoch(0.0)
    for step_s, wait_s in steps:
        clock.add(step_s, wait_s)
    expected = sum(min(w, s) for s, w in steps) / sum(s for s, _ in steps)
    assert clock.epoch_fraction() == pytest.approx(min(expected, 1.0))
    assert 0.0 <= clock.epoch_fraction() <= 1.0
