"""`SteadyWatch`: watch a settled loader for drift, within one reopen budget.

Drift is a *sustained throughput drop* against the tuned rate, not a wait fraction
near a line. After tuning settles, the watch skips the refill of the switch to the
best config, then cuts the steps into windows of `drift_window_steps`. A window is
*low* when its steps/s fall under `(1 - drift_drop)` of the tuned rate and it waits
for data (wait fraction >= `wait_threshold`: a slower model is not the loader's
fault). The count of low windows resets only when a window is back above
`(1 - drift_drop / 2)` of the tuned rate (hysteresis): windows in between keep the
count. `drift_sustain_windows` low windows return a `Drift` so the session can open a
new search round; the watch counts reopens against `settings.max_reopens`, and once
the budget is spent it stops watching.

Example:

>>> from keras_loadtune.decision.settings import TunerSettings
>>> from keras_loadtune.measurement import StepSample
>>> s = TunerSettings(drift_window_steps=4, drift_sustain_windows=1)
>>> watch = SteadyWatch(s, reopens_used=0)
>>> watch.arm(tuned_steps_per_s=100.0, skip=0)
>>> [watch.update(StepSample(0.01, 0.02)) for _ in range(4)][-1] is not None  # 50 steps/s
True
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.delivery import refill_steps
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import StepSample, WindowStats, window_stats
from keras_loadtune.trial import TrialRecord

# Producer records kept for re-profiling when drift reopens the study.
RECENT_RECORDS = 512


@dataclass(frozen=True)
class Drift:
    """Sustained drift: the window that showed it and a one-line reason.

    Args:
        stats: The last drift window (a fresh measurement of the incumbent).
        tuned_steps_per_s: The rate tuning settled on.
        low_windows: Low windows counted.
    """

    stats: WindowStats
    tuned_steps_per_s: float
    low_windows: int
    still_waiting: bool = False

    def describe(self, window_steps: int) -> str:
        """One line: the drop (or the wait), against what, for how long."""
        if self.still_waiting:
            return (
                f"still waiting {100 * self.stats.wait_fraction:.0f}% of each step at "
                f"{self.stats.steps_per_s:.1f} steps/s for {self.low_windows} windows of "
                f"{window_steps} steps, with more threads untried"
            )
        return (
            f"throughput {self.stats.steps_per_s:.1f} steps/s, "
            f"{self.stats.steps_per_s / self.tuned_steps_per_s:.0%} of the tuned "
            f"{self.tuned_steps_per_s:.1f}, waiting {100 * self.stats.wait_fraction:.0f}% "
            f"for {self.low_windows} windows of {window_steps} steps"
        )


class SteadyWatch:
    """Drift watch of the steady phase.

    Args:
        settings: `drift_*` thresholds and `max_reopens`.
        reopens_used: Reopens already spent by this session.

    Attributes:
        records: The latest producer records (`RECENT_RECORDS`), for re-profiling.

    Example:

    >>> SteadyWatch(TunerSettings(), reopens_used=0).watching
    False
    """

    def __init__(self, settings: TunerSettings, *, reopens_used: int = 0) -> None:
        self._settings = settings
        self.reopens = reopens_used
        self._tuned: float | None = None
        self._skip = 0
        self._remeasure = False  # the first window re-measures a best measured briefly
        self._climbable = False  # a wait that persists counts as drift (see `follow`)
        self._window: list[StepSample] = []
        self._low = 0
        self.records: deque[Any] = deque(maxlen=RECENT_RECORDS)

    def recent(self) -> list[Any]:
        """Producer records of the last drift window (at least 16), for re-profiling."""
        return list(self.records)[-max(self._settings.drift_window_steps, 16) :]

    @property
    def watching(self) -> bool:
        """Whether the watch is armed."""
        return self._tuned is not None

    @property
    def budget_left(self) -> bool:
        """Whether another reopen is allowed."""
        return self.reopens < self._settings.max_reopens

    def arm(self, tuned_steps_per_s: float | None, skip: int) -> None:
        """Start watching after `skip` refill steps (no-op when the reopen budget is
        spent or the tuned rate is unknown)."""
        self._tuned = None
        self._skip = skip
        self._remeasure = False
        self._climbable = False
        self._window = []
        self._low = 0
        if self.budget_left and tuned_steps_per_s is not None and tuned_steps_per_s > 0:
            self._tuned = float(tuned_steps_per_s)

    def follow(
        self, best: TrialRecord | None, *, current: LoaderConfig, climbable: bool = False
    ) -> None:
        """Watch `best`'s rate once the loader switched from `current` to its config
        (after that switch's refill); `None`: nothing measured, stop watching.

        `climbable`: more threads could still cut the wait (a latency-bound loader on
        threads under their cap): windows that keep waiting over `wait_threshold` plus
        `drift_margin` count as drift too, so a fit whose epochs still wait is tuned on.
        """
        if best is None:
            self.disarm()
            return
        self.arm(best.steps_per_s, refill_steps(self._settings, best.config, current))
        self._climbable = climbable
        # A best measured over fewer steps than one drift window (a probe that ended
        # early on a conclusive wait) is re-measured by the first steady window.
        self._remeasure = best.steps < self._settings.drift_window_steps

    def disarm(self) -> None:
        """Stop watching."""
        self._tuned = None

    def update(self, sample: StepSample) -> Drift | None:
        """Feed one step; a `Drift` when a drop was sustained, else `None`."""
        tuned = self._tuned
        if tuned is None:
            return None
        if self._skip > 0:
            self._skip -= 1
            return None
        s = self._settings
        self._window.append(sample)
        if len(self._window) < s.drift_window_steps:
            return None
        stats = window_stats(self._window)
        self._window = []
        rate = stats.steps_per_s
        if self._remeasure:
            self._remeasure = False
            self._tuned = min(tuned, rate) if rate > 0 else tuned
            return None
        waiting = self._climbable and stats.wait_fraction >= s.wait_threshold + s.drift_margin
        dropped = rate < (1.0 - s.drift_drop) * tuned and stats.wait_fraction >= s.wait_threshold
        if dropped or waiting:
            self._low += 1
        elif rate >= (1.0 - s.drift_drop / 2.0) * tuned:
            self._low = 0
        if self._low < s.drift_sustain_windows:
            return None
        self._tuned = None
        self.reopens += 1
        return Drift(stats, tuned, self._low, still_waiting=waiting and not dropped)


__all__ = ["RECENT_RECORDS", "Drift", "SteadyWatch"]
