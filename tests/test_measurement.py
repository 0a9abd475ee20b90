"""Measurement layer: robust step statistics, loader profile, settling, drift."""

from __future__ import annotations

import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_loadtune.measurement import (
    DriftDetector,
    LoaderProfile,
    StepSample,
    align_to_cycles,
    estimate_wait_fraction,
    loader_profile,
    window_is_settled,
    window_stats,
)

step_samples = st.builds(
    lambda wait, extra: StepSample(wait, wait + extra),
    st.floats(0.0, 1.0, allow_nan=False),
    st.floats(0.0, 1.0, allow_nan=False),
)
windows = st.lists(step_samples, min_size=1, max_size=60)


def test_imports_no_tensorflow():
    code = (
        "import sys, keras_loadtune.measurement, keras_loadtune.decision, "
        "keras_loadtune.simulation.pipeline; assert 'tensorflow' not in sys.modules; "
        "assert 'keras' not in sys.modules; assert 'optuna' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compute_s_is_step_minus_wait_and_never_negative():
    assert StepSample(0.03, 0.04).compute_s == pytest.approx(0.01)
    assert StepSample(0.05, 0.04).compute_s == 0.0


def test_window_stats_constant_window():
    stats = window_stats([StepSample(0.03, 0.04)] * 10)
    assert stats.steps == 10
    assert stats.steps_per_s == pytest.approx(25.0)
    assert stats.wait_fraction == pytest.approx(0.75)
    assert stats.median_wait_s == pytest.approx(0.03)
    assert stats.median_compute_s == pytest.approx(0.01)
    assert stats.cv == pytest.approx(0.0)


def test_bursty_arrivals_use_the_mean_not_the_median():
    # 2 fast steps then one waiting step: 30 ms for 3 steps -> 100 steps/s, median says 125.
    window = [StepSample(0.0, 0.008), StepSample(0.0, 0.008), StepSample(0.006, 0.014)] * 10
    stats = window_stats(window)
    assert stats.median_step_s == pytest.approx(0.008)
    assert stats.steps_per_s == pytest.approx(100.0)


def test_compute_spikes_are_clipped_but_waits_count():
    gc_pause = [StepSample(0.0, 0.01)] * 9 + [StepSample(0.0, 1.0)]
    slow_batch = [StepSample(0.0, 0.01)] * 9 + [StepSample(0.99, 1.0)]
    assert window_stats(gc_pause).steps_per_s == pytest.approx(10 / (0.09 + 0.05))
    assert window_stats(slow_batch).steps_per_s == pytest.approx(10 / 1.09)


def test_skip_drops_leading_steps():
    samples = [StepSample(0.5, 0.51)] + [StepSample(0.0, 0.01)] * 20
    assert window_stats(samples, skip=1).steps_per_s == pytest.approx(100.0)
    assert window_stats(samples).steps_per_s < 70


@pytest.mark.parametrize(("samples", "skip"), [([], 0), ([StepSample(0, 1)] * 3, 3)])
def test_window_stats_empty_raises(samples, skip):
    with pytest.raises(ValueError, match="no samples"):
        window_stats(samples, skip=skip)


def test_window_stats_negative_skip_raises():
    with pytest.raises(ValueError, match="skip"):
        window_stats([StepSample(0, 1)], skip=-1)


@settings(max_examples=60, deadline=None)
@given(windows)
def test_wait_fraction_in_unit_interval(samples):
    stats = window_stats(samples)
    assert 0.0 <= stats.wait_fraction <= 1.0
    assert stats.steps == len(samples)
    assert stats.steps_per_s > 0


@settings(max_examples=60, deadline=None)
@given(windows, st.randoms(use_true_random=False))
def test_window_stats_order_invariant(samples, rnd):
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    a, b = window_stats(samples), window_stats(shuffled)
    assert a.steps_per_s == pytest.approx(b.steps_per_s)
    assert a.wait_fraction == pytest.approx(b.wait_fraction, abs=1e-12)
    assert a.median_step_s == pytest.approx(b.median_step_s)


@settings(max_examples=60, deadline=None)
@given(windows, st.integers(0, 10))
def test_skip_equals_slicing(samples, skip):
    if skip >= len(samples):
        with pytest.raises(ValueError):
            window_stats(samples, skip=skip)
    else:
        assert window_stats(samples, skip=skip) == window_stats(samples[skip:])


def test_align_to_cycles_trims_to_whole_rounds():
    fast, slow = StepSample(0.0, 0.005), StepSample(0.27, 0.275)
    window = ([fast] * 17 + [slow]) * 2 + [fast] * 14
    assert window_stats(window).steps_per_s > 60
    aligned = align_to_cycles(window)
    assert len(aligned) == 18
    assert window_stats(aligned).steps_per_s == pytest.approx(50.0)


def test_align_to_cycles_leaves_smooth_windows_whole():
    smooth = [StepSample(0.0, 0.01)] * 30
    assert align_to_cycles(smooth) == smooth
    one_event = [StepSample(0.0, 0.01)] * 10 + [StepSample(0.5, 0.51)] + [StepSample(0, 0.01)] * 9
    assert align_to_cycles(one_event) == one_event


def test_align_to_cycles_drops_a_refill_transient_the_config_left_behind():
    # Found on a Grain-like loader: 77 threads after a switch waited in their first 17
    # steps (the pool starting on 2 cores), then 125 steps not at all; the aligned window
    # kept the 16 transient steps and measured the refill's rate, not the config's.
    fast, slow = StepSample(0.0, 0.003), StepSample(0.03, 0.033)
    window = [slow, fast, slow, fast, fast, slow] + [fast] * 125
    assert len(align_to_cycles(window)) == 5  # without a bound: the transient
    kept = align_to_cycles(window, max_cycle=71)
    assert kept == [fast] * 125
    assert window_stats(kept).steps_per_s == pytest.approx(1 / 0.003)
    # A cyclic window whose tail is within one round keeps its whole rounds; so does a
    # window whose irregular waits reach past its first half.
    cyclic = ([fast] * 17 + [slow]) * 2 + [fast] * 14
    assert align_to_cycles(cyclic, max_cycle=18) == align_to_cycles(cyclic)
    irregular = [fast] * 5 + [slow] + [fast] * 12 + [slow] + [fast] * 16
    assert align_to_cycles(irregular, max_cycle=2) == align_to_cycles(irregular)


@settings(max_examples=200, deadline=None)
@given(
    waits=st.lists(st.booleans(), min_size=2, max_size=120),
    max_cycle=st.one_of(st.none(), st.integers(1, 60)),
)
def test_align_to_cycles_returns_a_contiguous_run(waits, max_cycle):
    samples = [StepSample(0.05, 0.055) if w else StepSample(0.0, 0.005 + i * 1e-9)
               for i, w in enumerate(waits)]  # fmt: skip
    kept = align_to_cycles(samples, max_cycle=max_cycle)
    assert kept, "never empty"
    start = next(i for i in range(len(samples)) if samples[i : i + len(kept)] == kept)
    assert samples[start : start + len(kept)] == kept
    if max_cycle is None:
        assert kept == align_to_cycles(samples)
    else:  # a bound only drops the steps before a wait-free tail longer than it and
        # than half the window (waits that were a refill, not cycles)
        tail = kept == samples[len(samples) - len(kept) :]
        long_tail = len(kept) > max_cycle and 2 * len(kept) > len(samples)
        assert kept == align_to_cycles(samples) or (tail and long_tail)


def test_window_is_settled_bounds():
    steady = [StepSample(0.0, 0.01)] * 12
    assert not window_is_settled(steady[:9], min_steps=10, max_steps=50, rel_tol=0.05)
    assert window_is_settled(steady, min_steps=10, max_steps=50, rel_tol=0.05)
    rng = np.random.default_rng(0)
    noisy = [StepSample(0.0, float(x)) for x in rng.lognormal(-4.6, 0.8, size=50)]
    assert not window_is_settled(noisy[:12], min_steps=10, max_steps=50, rel_tol=0.05)
    assert window_is_settled(noisy, min_steps=10, max_steps=50, rel_tol=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_steps": 1, "max_steps": 5, "rel_tol": 0.1}, "min_steps"),
        ({"min_steps": 6, "max_steps": 5, "rel_tol": 0.1}, "max_steps"),
        ({"min_steps": 2, "max_steps": 5, "rel_tol": 0.0}, "rel_tol"),
    ],
)
def test_window_is_settled_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        window_is_settled([StepSample(0, 1)] * 3, **kwargs)


def test_estimate_wait_fraction_from_step_times():
    assert estimate_wait_fraction([0.01] * 9 + [0.11]) == pytest.approx(0.5)
    assert estimate_wait_fraction(np.full(50, 0.02)) == 0.0
    bursty = [0.008, 0.008, 0.014] * 10
    assert estimate_wait_fraction(bursty) == pytest.approx(0.2)
    assert estimate_wait_fraction([0.010] * 90 + [0.050] * 10) == pytest.approx(0.4 / 1.4)
    with pytest.raises(ValueError, match="step time"):
        estimate_wait_fraction([])
    with pytest.raises(ValueError, match="step time"):
        estimate_wait_fraction([0.0, float("nan")])
    with pytest.raises(ValueError, match="floor_quantile"):
        estimate_wait_fraction([0.1], floor_quantile=1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-6, 10.0, allow_nan=False), min_size=1, max_size=50))
def test_estimate_wait_fraction_in_unit_interval(times):
    assert 0.0 <= estimate_wait_fraction(times) <= 1.0


def _rec(wall: float, cpu: float, nbytes: int = 1000) -> SimpleNamespace:
    return SimpleNamespace(produce_wall_s=wall, produce_cpu_s=cpu, nbytes=nbytes)


def test_loader_profile_medians_and_ratio():
    recs = [_rec(0.04, 0.004, 1000), _rec(0.05, 0.005, 3000), _rec(0.04, 0.004, 2000)]
    prof = loader_profile(recs)
    assert isinstance(prof, LoaderProfile)
    assert prof.produce_wall_s == pytest.approx(0.04)
    assert prof.produce_cpu_s == pytest.approx(0.004)
    assert prof.cpu_ratio == pytest.approx(0.1)
    assert prof.batch_nbytes == 2000
    assert prof.batches == 3


def test_loader_profile_clips_ratio_and_measures_jitter():
    assert loader_profile([_rec(0.01, 0.02)] * 3).cpu_ratio == 1.0
    steady = loader_profile([_rec(0.02, 0.0)] * 8)
    jittery = loader_profile([_rec(w, 0.0) for w in (0.01, 0.02, 0.03, 0.05, 0.02, 0.015)])
    assert steady.jitter_cv == 0.0
    assert jittery.jitter_cv > 0.2


def test_loader_profile_empty_raises():
    with pytest.raises(ValueError, match="record"):
        loader_profile([])


def test_drift_detector_needs_sustained_windows():
    det = DriftDetector(threshold=0.2, window_steps=10, sustain_windows=2)
    slow, fast = StepSample(0.03, 0.04), StepSample(0.0, 0.01)
    fired = [det.update(slow) for _ in range(20)]
    assert fired.index(True) == 19 and sum(fired) == 1
    # Slow, fast, slow windows: never two in a row.
    pattern = [slow] * 10 + [fast] * 10 + [slow] * 10
    assert not any(det.update(s) for s in pattern)
    assert det.streak == 1
    det.reset()
    assert det.streak == 0 and det.last_stats is None


def test_drift_detector_quiet_pipeline_never_fires():
    det = DriftDetector(threshold=0.2, window_steps=5, sustain_windows=1)
    rnd = random.Random(0)
    assert not any(det.update(StepSample(rnd.uniform(0, 0.001), 0.01)) for _ in range(200))


@pytest.mark.parametrize(
    ("args", "match"),
    [((0.0, 10, 2), "threshold"), ((0.2, 1, 2), "window_steps"), ((0.2, 10, 0), "sustain")],
)
def test_drift_detector_validates(args, match):
    with pytest.raises(ValueError, match=match):
        DriftDetector(*args)
