"""`Probe`: a wait the loader cannot remove (the hand-over of ready batches) is not input-bound."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.probe import (
    CONCLUSIVE_STEPS,
    HANDOVER_MAX_WAIT_S,
    INLINE_CONCLUSIVE_WAIT,
    PROBE_MIN_STEPS,
    Probe,
)
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.engine.arithmetic import in_flight
from keras_loadtune.measurement import StepSample

SETTINGS = TunerSettings(probe_steps=20, skip_steps=0, wait_threshold=0.05)


# A queue exists only with workers: one thread is inline (made when the step asks).
THREADS = LoaderConfig(2, 10)


def _verdict(steps: list[tuple[float, float, int | None]], baseline: LoaderConfig = THREADS):
    """Feeds `(wait_s, step_s, queue_depth)` steps (`None`: no record); the verdict."""
    probe = Probe(SETTINGS, baseline, in_steady_state=True)
    verdict = None
    for wait_s, step_s, depth in steps:
        if depth is not None:
            record = SimpleNamespace(
                queue_depth=depth, produce_wall_s=1e-4, produce_cpu_s=0.0, nbytes=1
            )
            probe.add_records([record])
        verdict = probe.add(StepSample(wait_s=wait_s, step_s=step_s)) or verdict
    assert verdict is not None
    return verdict


def test_waiting_for_batches_already_made_is_the_handover_not_the_loader():
    # A 1.5 ms step that waits 0.15 ms for a batch its queue already held: 10% "wait".
    verdict = _verdict([(0.00015, 0.0015, 5)] * 20)
    assert verdict.handover_only and not verdict.input_bound
    assert "keeps up" in verdict.summary(0.05, THREADS)


def test_an_empty_queue_at_hand_over_is_input_bound():
    verdict = _verdict([(0.004, 0.01, 0)] * 20)
    assert verdict.input_bound and not verdict.handover_only


def test_without_queue_depths_the_wait_decides_as_before():
    verdict = _verdict([(0.004, 0.01, None)] * 20)
    assert verdict.input_bound and not verdict.handover_only


def test_a_burst_of_batches_after_a_long_wait_is_the_loaders():
    # Many threads on a slow store: 16 batches land together after 300 ms; the first one
    # is handed over with 15 ready, but its wait was the loader's.
    burst = [(0.30, 0.31, 15)] + [(0.00002, 0.01, d) for d in range(14, -1, -1)]
    verdict = _verdict(burst * 2)
    assert verdict.input_bound and not verdict.handover_only


# Waits under 4x the threshold: the probe runs its full length (no early verdict).
@given(st.lists(st.tuples(st.floats(0.0, 0.0019), st.integers(0, 3)), min_size=20, max_size=40))
def test_stalls_with_an_empty_queue_count_as_the_loaders(steps):
    # Whatever the mix, the loader's wait is that of the steps that found no batch ready,
    # or that waited longer than a hand-over takes.
    verdict = _verdict([(wait, 0.01, depth) for wait, depth in steps])
    total = 0.01 * len(steps)
    waits = sum(w for w, _ in steps) >= 0.05 * total
    loader_waits = sum(w for w, d in steps if d == 0 or w >= HANDOVER_MAX_WAIT_S) >= 0.05 * total
    assert verdict.input_bound == (waits and loader_waits)
    assert verdict.handover_only == (waits and not loader_waits)


def test_an_inline_batch_cheaper_than_a_hand_over_is_not_input_bound():
    # 20 us to slice an in-memory batch inline against a 0.2 ms step: a 9% wait that no
    # worker removes (handing a batch over costs about as much).
    cheap = _verdict([(0.00002, 0.00022, None)] * 20, baseline=LoaderConfig())
    assert cheap.handover_only and not cheap.input_bound
    assert "us per batch made inline" in cheap.summary(0.05, LoaderConfig())
    dear = _verdict([(0.002, 0.022, None)] * 20, baseline=LoaderConfig())
    assert dear.input_bound and not dear.handover_only


def _steps_to_verdict(waits: list[float], baseline: LoaderConfig, step_s: float = 0.05) -> int:
    """Steps the probe takes to a verdict on `waits` (each step `step_s` long), or 0."""
    probe = Probe(SETTINGS, baseline, in_steady_state=True)
    for n, wait_s in enumerate(waits, start=1):
        if probe.add(StepSample(wait_s=wait_s, step_s=step_s)) is not None:
            return n
    return 0


@given(st.floats(INLINE_CONCLUSIVE_WAIT, 0.79))
def test_an_inline_loader_that_makes_each_step_wait_ends_the_probe_after_three_steps(share):
    # Inline, a step's wait is its own batch's production: no refill, no burst.
    waits = [share * 0.05] * SETTINGS.probe_steps
    assert _steps_to_verdict(waits, LoaderConfig()) == CONCLUSIVE_STEPS
    # Workers deliver in rounds: the same waits need PROBE_MIN_STEPS there.
    assert _steps_to_verdict(waits, THREADS) == max(PROBE_MIN_STEPS, 2 * in_flight(THREADS))


def _first_run(waits: list[float], line: float, length: int, at_least: int) -> int | None:
    """Steps up to the end of the first `length` consecutive waits >= `line` (>= `at_least`)."""
    for end in range(max(length, at_least), len(waits) + 1):
        if all(w >= line for w in waits[end - length : end]):
            return end
    return None


@given(st.lists(st.floats(0.0, 0.04), min_size=SETTINGS.probe_steps, max_size=SETTINGS.probe_steps))
def test_an_inline_probe_ends_early_only_on_consecutive_waiting_steps(waits):
    step_s = 0.05  # steady steps: only the waits decide
    n = _steps_to_verdict(waits, LoaderConfig(), step_s)
    conclusive = _first_run(waits, INLINE_CONCLUSIVE_WAIT * step_s, CONCLUSIVE_STEPS, 0)
    usual = _first_run(waits, 4 * SETTINGS.wait_threshold * step_s, PROBE_MIN_STEPS, 0)
    ends = [e for e in (conclusive, usual) if e is not None]
    assert n == min(ends, default=SETTINGS.probe_steps)


def test_a_jittery_inline_loader_is_probed_longer():
    # Step times 40% apart: three of them would measure the baseline's rate poorly.
    probe = Probe(SETTINGS, LoaderConfig(), in_steady_state=True)
    steps = [StepSample(wait_s=0.6 * s, step_s=s) for s in [0.05, 0.07] * SETTINGS.probe_steps]
    verdict_at = next(n for n, x in enumerate(steps, start=1) if probe.add(x) is not None)
    assert verdict_at == PROBE_MIN_STEPS
    steady = [StepSample(wait_s=0.6 * s, step_s=s) for s in [0.05, 0.052] * SETTINGS.probe_steps]
    probe = Probe(SETTINGS, LoaderConfig(), in_steady_state=True)
    assert next(n for n, x in enumerate(steady, start=1) if probe.add(x) is not None) == 3


def _rounds(n: int, wait_s: float, step_s: float, count: int) -> list[StepSample]:
    """`count` delivery rounds of `n` steps: one waits `wait_s`, then a burst of `n - 1`."""
    one = [StepSample(wait_s=wait_s, step_s=wait_s + step_s)]
    return (one + [StepSample(wait_s=0.0, step_s=step_s)] * (n - 1)) * count


def test_a_pool_in_rounds_ends_the_probe_on_one_whole_cycle():
    # Grain's 16 default threads on a 120 ms read, a 3 ms step: a 72 ms wait every 16
    # steps (60% of the time). Two rounds of 16 would take 32 steps; one whole cycle (from
    # one wait to the next) measures the same rate without bias.
    pool = LoaderConfig(16, 32)
    steps = _rounds(16, 0.072, 0.003, 4)
    probe = Probe(SETTINGS, pool, in_steady_state=True)
    at, verdict = next((n, v) for n, x in enumerate(steps, 1) if (v := probe.add(x)) is not None)
    assert at == 17 < 2 * in_flight(pool)
    assert verdict.input_bound
    assert verdict.stats.steps_per_s == pytest.approx(16 / (0.072 + 16 * 0.003))


@given(st.floats(0.0005, 0.0075))
def test_a_pool_whose_cycles_wait_little_is_probed_in_full(wait_s):
    # Cycles waiting less than four times the threshold (here at most 13.5%) are not
    # conclusive: the probe measures its two rounds of `in_flight` steps.
    pool = LoaderConfig(16, 32)
    probe = Probe(SETTINGS, pool, in_steady_state=True)
    steps = _rounds(16, wait_s, 0.003, 4)
    at = next(n for n, x in enumerate(steps, 1) if probe.add(x) is not None)
    assert at == 2 * in_flight(pool)
