"""`FitClock`: a fit's step times and epoch wait fractions (no Keras)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_loadtune.keras_adapter._fit_clock import FitClock


def _run(clock: FitClock, steps: list[tuple[float, float | None]], t0: float = 0.0) -> float:
    """Ends one step per `(step_s, wait_s)`; returns the time after the last one."""
    now = t0
    for step_s, wait_s in steps:
        clock.begin_step(now)
        now += step_s
        measured_s = clock.end_step(now)
        if clock.measured(measured_s, now):
            clock.add(measured_s, wait_s)
    return now


def test_a_step_is_the_cycle_between_two_batch_ends():
    clock = FitClock(warmup_steps=0)
    clock.start_fit()
    clock.start_epoch(0.0)
    clock.begin_step(0.5)  # the batch was fetched before begin (PyTorch): it still counts
    assert clock.end_step(1.0) == pytest.approx(1.0)
    clock.begin_step(1.2)
    assert clock.end_step(1.5) == pytest.approx(0.5)


def test_warmup_steps_are_not_measured_and_the_fit_is_timed_after_them():
    clock = FitClock(warmup_steps=2)
    clock.start_fit()
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
