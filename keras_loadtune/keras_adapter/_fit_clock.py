"""`FitClock`: step times and data wait of one `fit`, as the `LoadTuner` callback sees them.

A step's time is the cycle from the previous step's end (or the epoch's start) to
this one's: it includes fetching the batch on every backend (PyTorch's trainer
fetches before `on_train_batch_begin`, so begin -> end would miss it). The first
`warmup_steps` of a fit (graph tracing, compilation) are not measured: they cost the
same with or without the tuner. An epoch's `data_wait_fraction` is its waits over
its step times; without wait records (unwrapped data) it is estimated from the
step-time spread.

Example:

>>> clock = FitClock(warmup_steps=0)
>>> clock.start_fit(); clock.start_epoch(0.0); clock.begin_step(0.0)
>>> clock.end_step(0.1)
0.1
>>> clock.add(0.1, wait_s=0.05)
0.5
"""

from __future__ import annotations

import collections

import numpy as np

from keras_loadtune.measurement import estimate_wait_fraction


class FitClock:
    """Times a fit's steps and sums each epoch's wait (no Keras needed).

    Args:
        warmup_steps: First steps of each fit left unmeasured.

    Example:

    >>> FitClock(warmup_steps=2).fit_steps is None
    True
    """

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.fit_step = 0
        self.started_at: float | None = None  # when the warm-up steps were over
        self.ended_at: float | None = None  # when training ended
        self.worst_gap_s: float | None = None
        self.cycles: collections.deque[float] = collections.deque(maxlen=4096)
        self._t_begin = 0.0
        self._t_last: float | None = None
        self._epoch_wait = 0.0
        self._epoch_step = 0.0
        self._step_times: list[float] = []  # unwrapped data: step times only

    def start_fit(self) -> None:
        """A `fit` begins: its step count and warm-up start over."""
        self.fit_step = 0
        self.started_at = None
        self.ended_at = None

    def end_fit(self, now: float) -> None:
        """Training ended at `now`: later reads of `fit_seconds` stop there."""
        self.ended_at = now

    def start_epoch(self, now: float) -> None:
        """An epoch begins at `now` (`time.perf_counter()`)."""
        self._epoch_wait = 0.0
        self._epoch_step = 0.0
        self._step_times = []
        self._t_last = now

    def begin_step(self, now: float) -> None:
        """A training step begins (`on_train_batch_begin`)."""
        self._t_begin = now

    def end_step(self, now: float) -> float:
        """A training step ends at `now`; returns its time (the cycle since the last end)."""
        start = self._t_last if self._t_last is not None else self._t_begin
        self._t_last = now
        self.fit_step += 1
        return now - min(start, self._t_begin)

    def measured(self, step_s: float, now: float) -> bool:
        """Whether the step that just ended is past the warm-up (starts the fit's clock)."""
        if self.fit_step <= self.warmup_steps:
            if self.fit_step == self.warmup_steps:
                self.started_at = now
            return False
        if self.started_at is None:  # warmup_steps=0
            self.started_at = now - step_s
        return True

    def add(
        self, step_s: float, wait_s: float | None, *, after_action: bool = False
    ) -> float | None:
        """Count a measured step; returns the epoch's wait fraction so far (`None` unwrapped).

        Args:
            step_s: The step's time (`end_step`).
            wait_s: Seconds it waited for its batch (`None`: the data is not wrapped).
            after_action: The step followed the tuner's own work (a switch, a start).
        """
        self.cycles.append(step_s)
        if after_action:
            self.worst_gap_s = max(self.worst_gap_s or 0.0, step_s)
        self._epoch_step += step_s
        if wait_s is None:
            self._step_times.append(step_s)
            return None
        self._epoch_wait += min(wait_s, step_s)
        return self._epoch_wait / self._epoch_step if self._epoch_step > 0 else None

    def epoch_fraction(self) -> float | None:
        """The epoch's wait fraction in [0, 1] (`None` if no step was measured)."""
        if self._step_times:  # not wrapped: estimate from step-time spread
            fraction = estimate_wait_fraction(np.asarray(self._step_times))
        elif self._epoch_step > 0:
            fraction = self._epoch_wait / self._epoch_step
        else:
            return None
        return float(min(max(fraction, 0.0), 1.0))

    def fit_seconds(self, now: float) -> float | None:
        """Wall seconds from the end of the warm-up steps to the end of training (or to
        `now`, while training runs); `None` before the warm-up ended.

        A report read long after `fit` (after closing the loader, say) still gives the
        fit's own time.
        """
        if self.started_at is None:
            return None
        end = now if self.ended_at is None else self.ended_at
        return end - self.started_at

    @property
    def fit_steps(self) -> int | None:
        """Steps measured in this fit (after the warm-up); `None` if none."""
        return max(self.fit_step - self.warmup_steps, 0) or None

    @property
    def median_step_s(self) -> float | None:
        """The median of recent step times (`None` before any)."""
        return float(np.median(self.cycles)) if self.cycles else None


__all__ = ["FitClock"]
