"""`FitClock`: step times and data wait of one `fit`, as the `LoadTuner` callback sees them.

The callback has no per-batch hook Keras waits on: `on_train_batch_end` is not
overridden, so Keras keeps dispatching batch-end callbacks asynchronously on JAX and
PyTorch. While the tuner still decides, `on_train_batch_begin` *ticks* the clock: a
step's time is the cycle between two ticks (it includes fetching the batch on every
backend; PyTorch's trainer fetches before `on_train_batch_begin`). The first tick of
an epoch only starts its cycle; `close_cycle` ends the last one (validation begins,
or the epoch ends). Once tuning has ended the tick is detached and the
clock catches up per epoch from the engine's hand-over records (`add_handovers`): a
step is then the interval between two batches handed to the trainer, and its wait
the record's `wait_s`.

The first `warmup_steps` measured steps of a fit (graph tracing, compilation) are not
measured: they cost the same with or without the tuner. An epoch's
`data_wait_fraction` is its waits over its step times; without wait records
(unwrapped data) it is estimated from the step-time spread. The whole fit (from
`on_train_begin` to `on_train_end`, warm-up and start-ups included) is timed too,
with all its steps, for the report.

Example:

>>> clock = FitClock(warmup_steps=0)
>>> clock.start_fit(0.0); clock.start_epoch(0.0)
>>> clock.tick(0.0) is None  # the epoch's first tick starts its first cycle
True
>>> clock.tick(0.1)
0.1
>>> clock.add(0.1, wait_s=0.05)
0.5
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

import numpy as np

from keras_loadtune.measurement import StepSample, estimate_wait_fraction


class FitClock:
    """Times a fit's steps and sums each epoch's wait (no Keras needed).

    Args:
        warmup_steps: First measured steps of each fit left out of the figures.

    Example:

    >>> FitClock(warmup_steps=2).fit_steps is None
    True
    """

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.fit_step = 0  # measured cycles of this fit, warm-up included
        self.all_steps = 0  # every training step of this fit (ticks or hand-overs)
        self.began_at: float | None = None  # on_train_begin
        self.started_at: float | None = None  # when the warm-up steps were over
        self.ended_at: float | None = None  # when training ended
        self.worst_gap_s: float | None = None
        self.cycles: collections.deque[float] = collections.deque(maxlen=4096)
        self.last_handover: float | None = None  # `delivered_at` of the latest batch seen
        self.handed_over = 0  # training batches of this fit seen in hand-over records
        self._t_last: float | None = None
        self._epoch_wait = 0.0
        self._epoch_step = 0.0
        self._step_times: list[float] = []  # unwrapped data: step times only

    def start_fit(self, now: float | None = None) -> None:
        """A `fit` begins at `now`: its step counts and warm-up start over."""
        self.fit_step = 0
        self.all_steps = 0
        self.handed_over = 0
        self.began_at = now
        self.started_at = None
        self.ended_at = None

    def end_fit(self, now: float) -> None:
        """Training ended at `now`: later reads of the fit's times stop there."""
        self.ended_at = now

    def start_epoch(self, now: float) -> None:
        """An epoch begins at `now` (`time.perf_counter()`); its first tick starts a cycle."""
        del now  # the epoch's first cycle starts at its first step, not before its hooks
        self._epoch_wait = 0.0
        self._epoch_step = 0.0
        self._step_times = []
        self._t_last = None
        self.last_handover = None

    def seen(self, records: list[Any]) -> None:
        """The tick saw these training batches handed over (the latest ends the chain)."""
        if records:
            self.handed_over += len(records)
            self.last_handover = records[-1].delivered_at

    def count_handovers(self) -> None:
        """The tick is detached: from now on a step is a batch handed over (the step in
        flight at a tick may not have its batch yet)."""
        self.all_steps = self.handed_over

    def tick(self, now: float) -> float | None:
        """A training step begins at `now`; returns the previous step's cycle, `None` at
        the epoch's first step."""
        self.all_steps += 1
        last, self._t_last = self._t_last, now
        if last is None:
            return None
        self.fit_step += 1
        return now - last

    def close_cycle(self, now: float) -> float | None:
        """The epoch's last step ended at `now` (validation or the epoch's end follows);
        returns its cycle, `None` if no step is open."""
        last, self._t_last = self._t_last, None
        if last is None:
            return None
        self.fit_step += 1
        return now - last

    def measured(self, step_s: float, now: float) -> bool:
        """Whether the cycle that just ended is past the warm-up (starts the fit's clock)."""
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
            step_s: The step's time (`tick`).
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

    def add_handovers(self, records: Iterable[Any]) -> list[tuple[Any, StepSample]]:
        """Count steps from the engine's hand-over records (the tick is detached).

        Each record is one training step; its time is the interval since the batch
        handed over before it (the epoch's first batch has none and is not timed), its
        wait the record's `wait_s`.

        Returns:
            `(record, sample)` of every step timed past the warm-up, in order.

        Example:

        >>> from types import SimpleNamespace as R
        >>> clock = FitClock(warmup_steps=0)
        >>> clock.start_fit(0.0); clock.start_epoch(0.0)
        >>> timed = clock.add_handovers([R(delivered_at=t, wait_s=0.01) for t in (1.0, 1.1)])
        >>> [round(s.step_s, 3) for _, s in timed], clock.all_steps
        ([0.1], 2)
        """
        timed = []
        for record in records:
            self.all_steps += 1
            self.handed_over += 1
            last, self.last_handover = self.last_handover, record.delivered_at
            if last is None or record.delivered_at <= last:
                continue
            step_s = record.delivered_at - last
            self.fit_step += 1
            if not self.measured(step_s, record.delivered_at):
                continue
            wait_s = min(record.wait_s, step_s)
            self.add(step_s, wait_s)
            timed.append((record, StepSample(wait_s=wait_s, step_s=step_s)))
        return timed

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

    def fit_wall_seconds(self, now: float) -> float | None:
        """Wall seconds of the whole fit, `on_train_begin` to `on_train_end` (or `now`
        while it runs), warm-up and start-ups included; `None` before a fit."""
        if self.began_at is None:
            return None
        end = now if self.ended_at is None else self.ended_at
        return end - self.began_at

    @property
    def running(self) -> bool:
        """Whether a fit began and has not ended."""
        return self.began_at is not None and self.ended_at is None

    @property
    def fit_steps(self) -> int | None:
        """Steps measured in this fit (after the warm-up); `None` if none."""
        return max(self.fit_step - self.warmup_steps, 0) or None

    @property
    def fit_all_steps(self) -> int | None:
        """Every training step of this fit, warm-up included; `None` if none."""
        return self.all_steps or None

    @property
    def median_step_s(self) -> float | None:
        """The median of recent step times (`None` before any)."""
        return float(np.median(self.cycles)) if self.cycles else None


__all__ = ["FitClock"]
