"""TuningSpend: the steps and seconds the tuner spent, and the cost it reports."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keras_loadtune.decision.spend import TuningSpend

# (seconds of a spell, steps observed in it, seconds outside any spell after it)
SPELLS = st.lists(
    st.tuples(
        st.floats(0.0, 100.0, allow_nan=False),
        st.integers(0, 50),
        st.floats(0.0, 100.0, allow_nan=False),
    ),
    max_size=6,
)


@given(SPELLS)
def test_seconds_and_steps_are_the_sum_over_spells(spells):
    now = [0.0]
    spend = TuningSpend(lambda: now[0])
    for seconds, steps, gap in spells:
        spend.open()
        for _ in range(steps):
            spend.count_step()
        now[0] += seconds
        spend.close()
        now[0] += gap  # time between spells never counts
    assert spend.steps == sum(s for _, s, _ in spells)
    expected = sum(s for s, _, _ in spells)
    assert abs(spend.seconds(active=False) - expected) <= 1e-9 * max(1.0, expected)
    assert spend.cost_s(10.0) >= 0.0


@given(st.integers(1, 500), st.integers(0, 500), st.floats(0.1, 1000.0))
def test_cost_counts_fit_steps_from_steps_left(total, unobserved, rate):
    """Fit steps during a spell come from `steps_left` (observed or not)."""
    now, left = [0.0], [10_000]
    spend = TuningSpend(lambda: now[0], lambda: left[0])
    spend.open()
    spend.count_step()  # one observed step ...
    left[0] -= total + unobserved  # ... while the fit ran more
    now[0] += 50.0
    spend.close()
    assert spend.cost_s(rate) == max(50.0 - (total + unobserved) / rate, 0.0)


def test_open_keeps_a_running_spell_and_restart_replaces_it():
    now = [0.0]
    spend = TuningSpend(lambda: now[0])
    spend.open()
    now[0] = 5.0
    spend.open()  # already open: the spell still began at 0
    assert spend.seconds(active=True) == 5.0
    spend.open(restart=True)
    now[0] = 7.0
    assert spend.seconds(active=True) == 2.0
    assert spend.seconds(active=False) == 0.0  # an open spell counts only while active


def test_a_failing_counter_reads_as_unknown():
    def broken() -> int:
        raise RuntimeError("counter broke")

    spend = TuningSpend(lambda: 0.0, broken)
    assert spend.left() is None
    spend.open()
    spend.count_step()
    spend.close()
    assert spend.cost_s(1.0) == 0.0
