"""`TuningSpend`: the steps and clock seconds the tuner spent, and what they cost.

Tuning spells (the probe, each search round) are opened with `open` and closed with
`close`; steps are counted with `count_step`. The fit's own step counter
(`steps_left`) tells how many training steps ran during the spells, including steps
the tuner did not observe; `cost_s` is the clock time of the spells minus those
steps at the best rate.

Example:

>>> t = [0.0]
>>> spend = TuningSpend(lambda: t[0])
>>> spend.open(); spend.count_step(); t[0] = 2.0; spend.close()
>>> spend.seconds(active=False), spend.steps
(2.0, 1)
>>> spend.cost_s(1.0)  # 2 s for 1 step that takes 1 s at the best rate
1.0
"""

from __future__ import annotations

from collections.abc import Callable


class TuningSpend:
    """Steps and seconds spent probing and tuning, over all spells.

    Args:
        clock: Seconds, monotonic.
        steps_left: Returns the training steps left in this fit (`None`: unknown).

    Example:

    >>> TuningSpend(lambda: 0.0).left() is None
    True
    """

    def __init__(
        self, clock: Callable[[], float], steps_left: Callable[[], int | None] | None = None
    ) -> None:
        self._clock = clock
        self._steps_left = steps_left
        self.steps = 0
        self.started_at: float | None = None
        self._seconds_done = 0.0
        self._fit_steps_done = 0  # fit steps (observed or not) during closed spells
        self._fit_mark: int | None = None  # steps_left() when the current spell began

    def left(self) -> int | None:
        """Training steps left in this fit, `None` when unknown (never raises)."""
        if self._steps_left is None:
            return None
        try:
            left = self._steps_left()
        except Exception:  # a caller's counter must not break tuning
            return None
        return None if left is None else max(int(left), 0)

    def open(self, *, restart: bool = False) -> None:
        """Begin a spell (no-op while one is open, unless `restart`)."""
        if self.started_at is None or restart:
            self.started_at = self._clock()
            self._fit_mark = self.left()

    def credit(self, seconds: float, fit_steps: int | None) -> None:
        """Count a spell that ran before this spend existed (the probe, run before the
        session): `seconds` of clock and `fit_steps` training steps (`None`: unknown).

        Example:

        >>> spend = TuningSpend(lambda: 0.0)
        >>> spend.credit(0.5, 10); spend.seconds(active=False)
        0.5
        """
        self._seconds_done += max(float(seconds), 0.0)
        if fit_steps is not None:
            self._fit_steps_done += max(int(fit_steps), 0)

    def count_step(self) -> None:
        """Count one observed tuning step."""
        self.steps += 1

    def close(self) -> None:
        """End the current spell."""
        if self.started_at is not None:
            self._seconds_done += self._clock() - self.started_at
            self.started_at = None
        if self._fit_mark is not None:
            left = self.left()
            if left is not None:
                self._fit_steps_done += max(self._fit_mark - left, 0)
            self._fit_mark = None

    def seconds(self, *, active: bool) -> float:
        """Clock seconds of all spells (the open one counts while `active`)."""
        running = 0.0
        if self.started_at is not None and active:
            running = self._clock() - self.started_at
        return self._seconds_done + running

    def cost_s(self, best_steps_per_s: float, *, active: bool = False) -> float:
        """Seconds the tuner caused: its clock time minus its steps at the best rate."""
        steps = self._fit_steps_done
        if self._fit_mark is not None:
            left = self.left()
            steps += self._fit_mark - left if left is not None else 0
        if self._steps_left is None or steps <= 0:
            steps = self.steps
        return max(self.seconds(active=active) - steps / float(best_steps_per_s), 0.0)


__all__ = ["TuningSpend"]
