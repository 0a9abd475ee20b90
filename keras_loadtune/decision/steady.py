"""`SteadyWatch`: watch a settled loader for drift, within one reopen budget.

After tuning settles, the watch skips the refill of the switch to the best config,
then feeds every step to a `DriftDetector` whose threshold is the best trial's wait
fraction (at least `wait_threshold`) plus `drift_margin`. A sustained excess returns
a `Drift` (why) so the session can open a new search round; the watch counts reopens
against `settings.max_reopens`, and once the budget is spent it notes the drift and
stops watching.

Example:

>>> from keras_loadtune.decision.settings import TunerSettings
>>> from keras_loadtune.measurement import StepSample
>>> s = TunerSettings(drift_window_steps=4, drift_sustain_windows=1)
>>> watch = SteadyWatch(s, reopens_used=0)
>>> watch.arm(best_wait_fraction=0.0, skip=0)
>>> [watch.update(StepSample(0.05, 0.06)) for _ in range(4)][-1] is not None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import DriftDetector, StepSample, WindowStats


@dataclass(frozen=True)
class Drift:
    """Sustained drift: the window that showed it and a one-line reason.

    Args:
        stats: The last drift window (a fresh measurement of the incumbent).
        threshold: The wait fraction it exceeded.
    """

    stats: WindowStats
    threshold: float


class SteadyWatch:
    """Drift watch of the steady phase.

    Args:
        settings: `drift_*` thresholds and `max_reopens`.
        reopens_used: Reopens already spent by this session.

    Example:

    >>> SteadyWatch(TunerSettings(), reopens_used=0).watching
    False
    """

    def __init__(self, settings: TunerSettings, *, reopens_used: int = 0) -> None:
        self._settings = settings
        self.reopens = reopens_used
        self._detector: DriftDetector | None = None
        self._skip = 0

    @property
    def watching(self) -> bool:
        """Whether a detector is armed."""
        return self._detector is not None

    @property
    def budget_left(self) -> bool:
        """Whether another reopen is allowed."""
        return self.reopens < self._settings.max_reopens

    def arm(self, best_wait_fraction: float | None, skip: int) -> None:
        """Start watching after `skip` refill steps (no-op when the reopen budget is spent)."""
        s = self._settings
        self._detector = None
        self._skip = skip
        if not self.budget_left:
            return
        threshold = max(s.wait_threshold, best_wait_fraction or 0.0) + s.drift_margin
        if threshold < 1.0:
            self._detector = DriftDetector(threshold, s.drift_window_steps, s.drift_sustain_windows)

    def disarm(self) -> None:
        """Stop watching."""
        self._detector = None

    def update(self, sample: StepSample) -> Drift | None:
        """Feed one step; a `Drift` when drift was sustained, else `None`."""
        detector = self._detector
        if detector is None:
            return None
        if self._skip > 0:
            self._skip -= 1
            return None
        if not detector.update(sample):
            return None
        stats = detector.last_stats
        assert stats is not None
        self._detector = None
        self.reopens += 1
        return Drift(stats, detector.threshold)


__all__ = ["Drift", "SteadyWatch"]
