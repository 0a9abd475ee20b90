"""Measurement: turn per-step and per-batch timings into robust statistics.

Pure functions and small frozen dataclasses (NumPy only, no TensorFlow). The
Keras callback records one `StepSample` per training step (how long the step
waited for its batch, and how long the whole step took); the engine records one
producer record per batch (wall and CPU seconds spent in `__getitem__`, batch
size in bytes). This module summarises both:

- `window_stats`: throughput and input-boundness of a window of steps;
- `window_is_settled`: whether a window has enough steps for a stable estimate;
- `align_to_cycles`: trim a window of bursty deliveries to whole rounds;
- `estimate_wait_fraction`: a lower bound from step times alone (unwrapped datasets);
- `loader_profile`: what one batch costs the loader (latency- or CPU-bound);
- `DriftDetector`: whether a tuned pipeline became input-bound again.

**Throughput estimator.** Step times of a queue-fed trainer are bursty: when
batches arrive in groups, most steps find a batch ready (step time = compute
time) and a few wait long. The median step time then describes the fast steps
only and *overstates* throughput (steps of 10, 10, 20 ms have a median of 10 ms
but run at 1 / 13.3 ms; with 32 workers, 1 step in 33 carries the whole wait).
No rule on the step time alone can tell such a legitimate wait from a spike, so
waits are always counted in full, and only the *compute* part of a step is
winsorized: compute longer than `OUTLIER_FACTOR` x the median compute (a GC
pause, a retrace; the loader config cannot cause those) is clipped to that
fence. `WindowStats.steps_per_s` is the inverse of the resulting mean step time:
unbiased for bursty arrivals, robust to compute hiccups.
`WindowStats.median_step_s` is still reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_loadtune._validate import int_at_least, number_in

# Step compute longer than OUTLIER_FACTOR x the median compute is clipped to that fence.
OUTLIER_FACTOR = 5.0
# Scale factor making the median absolute deviation a consistent estimate of sigma.
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class StepSample:
    """Timing of one training step.

    Args:
        wait_s: Seconds the step waited for its input batch (>= 0).
        step_s: Seconds the whole step took, waiting included (>= 0).

    Example:

    ```python
    from keras_loadtune.measurement import StepSample

    s = StepSample(wait_s=0.030, step_s=0.040)
    s.compute_s  # 0.010
    ```
    """

    wait_s: float
    step_s: float

    @property
    def compute_s(self) -> float:
        """Seconds the step spent computing: `max(step_s - wait_s, 0)`."""
        return max(self.step_s - self.wait_s, 0.0)


@dataclass(frozen=True)
class WindowStats:
    """Robust summary of a window of training steps.

    Args:
        steps: Number of steps summarised (after `skip`).
        steps_per_s: Training throughput: 1 / mean step time, compute outliers
            clipped (see the module doc).
        median_step_s: Median step time.
        mean_step_s: Winsorized mean step time (`1 / steps_per_s`).
        wait_fraction: Share of step time spent waiting for data, in [0, 1]
            (sum of waits / sum of step times, compute outliers clipped).
        median_wait_s: Median wait per step.
        median_compute_s: Median compute per step (`step_s - wait_s`).
        cv: Robust coefficient of variation of the step time
            (1.4826 x median absolute deviation / median).
        rel_sem: Relative standard error of `mean_step_s` (std / sqrt(n) / mean);
            `inf` for a single step.

    Example:

    ```python
    from keras_loadtune.measurement import StepSample, window_stats

    stats = window_stats([StepSample(0.03, 0.04)] * 10)
    stats.steps_per_s, stats.wait_fraction  # (25.0, 0.75)
    ```
    """

    steps: int
    steps_per_s: float
    median_step_s: float
    mean_step_s: float
    wait_fraction: float
    median_wait_s: float
    median_compute_s: float
    cv: float
    rel_sem: float


def _arrays(samples: Iterable[StepSample]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(float(s.wait_s), float(s.step_s)) for s in samples]
    if not pairs:
        return np.empty(0), np.empty(0)
    arr = np.asarray(pairs, dtype=float)
    step = np.maximum(arr[:, 1], 0.0)
    wait = np.clip(arr[:, 0], 0.0, step)
    return wait, step


def _winsorize(wait: np.ndarray, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip each step's compute to `OUTLIER_FACTOR x median compute`; waits stay whole."""
    compute = step - wait
    fence = OUTLIER_FACTOR * float(np.median(compute))
    if fence <= 0.0:
        return wait, step
    return wait, wait + np.minimum(compute, fence)


def _robust_cv(values: np.ndarray) -> float:
    median = float(np.median(values))
    if median <= 0.0:
        return 0.0
    mad = float(np.median(np.abs(values - median)))
    return _MAD_TO_SIGMA * mad / median


def window_stats(samples: Sequence[StepSample], *, skip: int = 0) -> WindowStats:
    """Summarise a window of steps, ignoring the first `skip` ones.

    Args:
        samples: Step timings, oldest first.
        skip: Number of leading steps to ignore (e.g. queue refill after a restart).

    Returns:
        A `WindowStats`; invariant to the order of the (non-skipped) samples.

    Raises:
        ValueError: If no sample remains after `skip`, or `skip` is negative.

    Example:

    ```python
    from keras_loadtune.measurement import StepSample, window_stats

    samples = [StepSample(0.5, 0.51)] + [StepSample(0.0, 0.01)] * 20
    window_stats(samples, skip=1).steps_per_s  # 100.0 (refill step skipped)
    window_stats([StepSample(0.0, 0.01)] * 9 + [StepSample(0.0, 1.0)]).steps_per_s  # ~71: GC
    # pause clipped to 5 x 10 ms; the same second spent waiting would count (~10 steps/s)
    ```
    """
    int_at_least("window_stats: skip", skip, 0)
    wait, step = _arrays(list(samples)[skip:])
    if step.size == 0:
        raise ValueError(
            f"window_stats: no samples left after skipping {skip} (got {len(samples)})."
        )
    w_wait, w_step = _winsorize(wait, step)
    mean_step = float(np.mean(w_step))
    total = float(np.sum(w_step))
    wait_fraction = float(np.clip(np.sum(w_wait) / total, 0.0, 1.0)) if total > 0 else 0.0
    n = int(step.size)
    if n > 1 and mean_step > 0:
        rel_sem = float(np.std(w_step, ddof=1) / np.sqrt(n) / mean_step)
    else:
        rel_sem = float("inf")
    return WindowStats(
        steps=n,
        steps_per_s=1.0 / mean_step if mean_step > 0 else float("inf"),
        median_step_s=float(np.median(step)),
        mean_step_s=mean_step,
        wait_fraction=wait_fraction,
        median_wait_s=float(np.median(wait)),
        median_compute_s=float(np.median(step - wait)),
        cv=_robust_cv(step),
        rel_sem=rel_sem,
    )


def estimate_wait_fraction(
    step_s: Sequence[float] | np.ndarray, *, floor_quantile: float = 0.1
) -> float:
    """Estimate the wait fraction from step times alone (for data the tuner can't see).

    When the input is not a wrapped dataset (arrays, a plain `PyDataset`,
    `tf.data`), nobody timed the wait for each batch. Steps that found their batch
    ready take about the compute time, so the `floor_quantile` quantile of the step
    times stands in for it and anything above counts as waiting:
    `sum(max(step - floor, 0)) / sum(step)`. It is an *estimate*: steps that vary
    for other reasons (callbacks, garbage collection) count as wait, and a loader
    that makes every step wait equally looks like a slower model.

    Args:
        step_s: Seconds per step; non-finite and non-positive values are ignored.
        floor_quantile: Quantile taken as the compute floor, in [0, 1).

    Raises:
        ValueError: If no positive step time is given or `floor_quantile` is out of range.

    Example:

    ```python
    from keras_loadtune.measurement import estimate_wait_fraction

    estimate_wait_fraction([0.010] * 90 + [0.050] * 10)  # ~0.29
    estimate_wait_fraction([0.01] * 9 + [0.11])          # 0.5: one step waited 100 of 200 ms
    ```
    """
    if not 0.0 <= floor_quantile < 1.0:
        raise ValueError(f"floor_quantile must be in [0, 1); got {floor_quantile!r}.")
    steps = np.asarray(step_s, dtype=float).ravel()
    steps = steps[np.isfinite(steps) & (steps > 0)]
    if steps.size == 0:
        raise ValueError("estimate_wait_fraction needs at least one positive step time.")
    floor = float(np.quantile(steps, floor_quantile))
    total = float(steps.sum())
    return float(np.clip(np.maximum(steps - floor, 0.0).sum() / total, 0.0, 1.0))


def align_to_cycles(
    samples: Sequence[StepSample], *, min_steps: int = 4, max_cycle: int | None = None
) -> list[StepSample]:
    """Trim a window to whole delivery cycles, for an unbiased throughput.

    With `n` workers started together, batches arrive in rounds: a long wait, then
    about `n` steps at compute speed. A window cut mid-round over- or under-counts
    one wait (with 18 workers and a 50-step window, up to ~30%). This keeps the
    steps after the first *wait event* up to and including the last one (a wait
    event is a step that waited longer than the median step time), i.e. a whole
    number of rounds. Windows with fewer than two wait events, or that would keep
    fewer than `min_steps` steps, are returned whole.

    A config's rounds span at most `max_cycle` steps (`decision.delivery.round_steps`).
    When more than that many steps, and more than half the window, follow the last wait
    event, the window has left its cycles behind: its waits were the tail of a switch's
    refill (a pool of many threads starting on few cores), and the config keeps up. Its
    steps after that event are returned (at least `min_steps`), not the transient (a
    config whose waits are only irregular keeps them: its last wait is rarely in the
    first half of its window): keeping the transient's waits would measure
    the refill (77 threads of a loader that needs 60 measured at the 16 threads'
    rate, on 16 of 142 steps).

    Example:

    ```python
    from keras_loadtune.measurement import StepSample, align_to_cycles, window_stats

    fast, slow = StepSample(0.0, 0.005), StepSample(0.27, 0.275)
    window = ([fast] * 17 + [slow]) * 2 + [fast] * 14      # 50 steps, cut mid-round
    window_stats(window).steps_per_s                        # ~63: overstated
    window_stats(align_to_cycles(window)).steps_per_s       # 50.0: one whole round
    refill = [slow] * 3 + [fast] * 40                       # a refill, then no wait
    len(align_to_cycles(refill, max_cycle=18))              # 40: the steps after it
    ```
    """
    samples = list(samples)
    if len(samples) < 2:
        return samples
    wait, step = _arrays(samples)
    events = np.flatnonzero(wait > float(np.median(step)))
    if events.size == 0:
        return samples
    tail = len(samples) - 1 - int(events[-1])
    if max_cycle is not None and tail > max_cycle and 2 * tail > len(samples) and tail >= min_steps:
        return samples[int(events[-1]) + 1 :]
    if events.size < 2:
        return samples
    first, last = int(events[0]), int(events[-1])
    if last - first < min_steps:
        return samples
    return samples[first + 1 : last + 1]


def window_is_settled(
    samples: Sequence[StepSample], *, min_steps: int, max_steps: int, rel_tol: float
) -> bool:
    """Whether a trial window holds enough steps for a stable throughput estimate.

    `False` below `min_steps`, `True` from `max_steps` on; in between, `True` once
    the relative standard error of the (winsorized) mean step time is at most
    `rel_tol`, so quiet pipelines stop early and noisy ones use more steps.

    Args:
        samples: Measured steps of the window (refill steps already excluded).
        min_steps: Never settled with fewer steps (>= 2).
        max_steps: Always settled with this many steps (>= min_steps).
        rel_tol: Target relative standard error, e.g. 0.05.

    Example:

    ```python
    from keras_loadtune.measurement import StepSample, window_is_settled

    steady = [StepSample(0.0, 0.01)] * 12
    window_is_settled(steady, min_steps=10, max_steps=50, rel_tol=0.05)  # True
    ```
    """
    if min_steps < 2 or max_steps < min_steps:
        raise ValueError(
            f"window_is_settled: need 2 <= min_steps <= max_steps; got {min_steps}, {max_steps}."
        )
    if not rel_tol > 0:
        raise ValueError(f"window_is_settled: rel_tol must be > 0; got {rel_tol!r}.")
    n = len(samples)
    if n >= max_steps:
        return True
    if n < min_steps:
        return False
    return window_stats(samples).rel_sem <= rel_tol


@dataclass(frozen=True)
class LoaderProfile:
    """What producing one batch costs the loader, from the engine's per-batch records.

    Args:
        produce_wall_s: Median wall seconds per batch in `__getitem__`.
        produce_cpu_s: Median CPU seconds per batch (thread or process CPU time).
        cpu_ratio: `produce_cpu_s / produce_wall_s`, clipped to [0, 1]: near 0 means
            latency-bound (I/O, sleeps: threads scale), near 1 CPU-bound.
        batch_nbytes: Median batch size in bytes.
        jitter_cv: Robust coefficient of variation of the per-batch wall time.
        batches: Number of records summarised.

    Example:

    ```python
    from types import SimpleNamespace
    from keras_loadtune.measurement import loader_profile

    rec = SimpleNamespace(produce_wall_s=0.04, produce_cpu_s=0.004, nbytes=1 << 20)
    loader_profile([rec] * 8).cpu_ratio  # 0.1
    ```
    """

    produce_wall_s: float
    produce_cpu_s: float
    cpu_ratio: float
    batch_nbytes: int
    jitter_cv: float
    batches: int = 0


def loader_profile(records: Iterable[Any]) -> LoaderProfile:
    """Summarise per-batch producer records into a `LoaderProfile`.

    Args:
        records: Objects with attributes `produce_wall_s`, `produce_cpu_s` and
            `nbytes` (duck-typed: the engine's batch records).

    Raises:
        ValueError: If `records` is empty.

    Example:

    ```python
    from types import SimpleNamespace
    from keras_loadtune.measurement import loader_profile

    recs = [SimpleNamespace(produce_wall_s=0.02, produce_cpu_s=0.019, nbytes=4096)] * 5
    loader_profile(recs).produce_wall_s  # 0.02
    ```
    """
    rows = [(float(r.produce_wall_s), float(r.produce_cpu_s), float(r.nbytes)) for r in records]
    if not rows:
        raise ValueError("loader_profile: need at least one producer record; got none.")
    arr = np.asarray(rows, dtype=float)
    wall = np.maximum(arr[:, 0], 0.0)
    cpu = np.maximum(arr[:, 1], 0.0)
    med_wall = float(np.median(wall))
    med_cpu = float(np.median(cpu))
    ratio = float(np.clip(med_cpu / med_wall, 0.0, 1.0)) if med_wall > 0 else 1.0
    return LoaderProfile(
        produce_wall_s=med_wall,
        produce_cpu_s=med_cpu,
        cpu_ratio=ratio,
        batch_nbytes=int(np.median(np.maximum(arr[:, 2], 0.0))),
        jitter_cv=_robust_cv(wall),
        batches=len(rows),
    )


class DriftDetector:
    """Flags a tuned pipeline that became input-bound again.

    Steps are grouped into consecutive windows of `window_steps`; `update` returns
    `True` (once, then starts over) when the wait fraction of `sustain_windows`
    consecutive windows exceeded `threshold`. A single slow window (epoch edge,
    checkpoint) does not trigger it.

    Args:
        threshold: Wait fraction above which a window counts as input-bound, in (0, 1).
        window_steps: Steps per window (>= 2).
        sustain_windows: Consecutive input-bound windows needed (>= 1).

    Example:

    ```python
    from keras_loadtune.measurement import DriftDetector, StepSample

    det = DriftDetector(threshold=0.2, window_steps=10, sustain_windows=2)
    fired = [det.update(StepSample(0.03, 0.04)) for _ in range(20)]
    fired.index(True)  # 19: the end of the second slow window
    ```
    """

    def __init__(self, threshold: float, window_steps: int, sustain_windows: int) -> None:
        number_in("DriftDetector: threshold", threshold, 0.0, 1.0)
        int_at_least("DriftDetector: window_steps", window_steps, 2)
        int_at_least("DriftDetector: sustain_windows", sustain_windows, 1)
        self.threshold = float(threshold)
        self.window_steps = window_steps
        self.sustain_windows = sustain_windows
        self._window: list[StepSample] = []
        self._streak: list[WindowStats] = []
        self.last_stats: WindowStats | None = None

    @property
    def streak(self) -> int:
        """Consecutive input-bound windows seen so far."""
        return len(self._streak)

    def update(self, sample: StepSample) -> bool:
        """Add one step; `True` when sustained input-boundness was just detected."""
        self._window.append(sample)
        if len(self._window) < self.window_steps:
            return False
        stats = window_stats(self._window)
        self.last_stats = stats
        self._window = []
        if stats.wait_fraction > self.threshold:
            self._streak.append(stats)
        else:
            self._streak = []
        if len(self._streak) >= self.sustain_windows:
            self._streak = []
            return True
        return False

    def reset(self) -> None:
        """Forget all windows (e.g. after the loader was reconfigured)."""
        self._window = []
        self._streak = []
        self.last_stats = None
