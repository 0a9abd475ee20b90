"""`PayoffModel`: whether a trial is worth its cost over the rest of the fit.

A trial costs wall-clock time that training would otherwise have spent at the best
known rate: the new pool's start-up (measured on earlier switches, else a
conservative prior; a pool started in the background is charged only the share of
the cores it takes, see `process_policy.background_start_share`), the refill after the switch (about
one batch's latency), and its measured steps at a possibly worse rate (half the
predicted rate, but no worse than `search.ABORT_BELOW_BEST` of the best: a slower trial
is aborted; when even that beats the best known, the trial's steps count as gain
instead). It can only pay back over the steps left in this fit, plus the steps a
later run reusing the stored study is expected to take. A config is tried only if
its predicted gain clearly exceeds that cost (`TunerSettings.payoff_ratio` times):

    gain = (1 / best_rate - 1 / predicted_rate) x (steps_left - trial_steps + reuse)
           + the trial's own steps' gain, if any

where the trial's own steps are at most those left in the fit,

so a short fit tunes little, a config the pipeline model predicts no faster than the
best is never run, and a process pool (seconds to start) must pay for itself.

Example:

>>> from keras_loadtune import LoaderConfig
>>> model = PayoffModel(payoff_ratio=2.0)
>>> cfg = LoaderConfig(8, 9)
>>> model.assess(cfg, current=LoaderConfig(), best_rate=25.0, predicted_rate=100.0,
...              steps_left=5000, trial_steps=40, produce_wall_s=0.04).pays
True
>>> pool = LoaderConfig(4, 5, use_multiprocessing=True)  # seconds to start
>>> model.assess(pool, current=LoaderConfig(), best_rate=25.0, predicted_rate=100.0,
...              steps_left=30, trial_steps=40, produce_wall_s=0.04).pays
False
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.process_policy import background_start_share
from keras_loadtune.decision.search import ABORT_BELOW_BEST

# Start-up prior of a process pool before one was measured: forkserver + imports
# (seconds), plus per worker. Measured 0.2 s (a NumPy-only `__main__` dataset: no Keras
# in workers) to 3 s (Keras numpy backend imported cold on 2 cores); 1.6 s is the most
# a 300-step GIL-bound fit on 2 cores can pay and still try processes (simulated).
PROCESS_POOL_PRIOR_S = 1.6
PROCESS_WORKER_PRIOR_S = 0.05
# Seconds per added worker thread.
THREAD_WORKER_S = 0.001
# A trial may run at this share of its predicted rate (the model can be wrong).
PESSIMISM = 0.5


@dataclass(frozen=True)
class Payoff:
    """The verdict on one candidate trial.

    Args:
        gain_s: Predicted seconds saved over the rest of the fit (and reuse).
        cost_s: Predicted seconds the trial costs (start-up, refill, slower steps).
        pays: `gain_s >= payoff_ratio x cost_s` and the gain is positive.
        reason: One line for the report when it does not pay, else `""`.
    """

    gain_s: float
    cost_s: float
    pays: bool
    reason: str


class PayoffModel:
    """Predicts trial costs from measured start-ups and weighs them against the gain.

    Args:
        payoff_ratio: How many times its cost a trial's gain must be.
        min_improvement: A config predicted within this share of the best rate is
            predicted no faster (the model is not that precise).
        reuse_steps: Steps a later run of the same workload is expected to take from
            the stored study (0 when the study is not stored).
        cores: Cores of the machine (for background start-ups; `None`: unknown).
        background: Pools start in the background while the old one serves: a
            start-up is charged `process_policy.background_start_share(cores)` of its
            seconds.

    Example:

    >>> m = PayoffModel(payoff_ratio=2.0)
    >>> m.learn_startup(LoaderConfig(4, 5, True), 3.0, previous=LoaderConfig())
    >>> round(m.startup_s(LoaderConfig(8, 9, True), current=LoaderConfig()), 2)
    3.0
    """

    def __init__(
        self,
        *,
        payoff_ratio: float,
        reuse_steps: int = 0,
        min_improvement: float = 0.02,
        cores: int | None = None,
        background: bool = False,
        process_pool_prior_s: float | None = None,
    ) -> None:
        self.payoff_ratio = float(payoff_ratio)
        self.process_pool_prior_s = (
            PROCESS_POOL_PRIOR_S if process_pool_prior_s is None else float(process_pool_prior_s)
        )
        self.startup_share = background_start_share(cores) if background else 1.0
        self.min_improvement = float(min_improvement)
        self.reuse_steps = max(int(reuse_steps), 0)
        self._process_pool_s: float | None = None

    def learn_startup(
        self, config: LoaderConfig, seconds: float, *, previous: LoaderConfig | None
    ) -> None:
        """Record a measured start-up (a new process pool teaches the pool cost)."""
        new_pool = previous is None or previous.use_multiprocessing != config.use_multiprocessing
        if config.use_multiprocessing and new_pool and seconds > 0:
            known = self._process_pool_s
            self._process_pool_s = float(seconds) if known is None else max(known, float(seconds))

    def startup_s(self, config: LoaderConfig, *, current: LoaderConfig) -> float:
        """Predicted seconds to switch the loader from `current` to `config`."""
        same_mode = current.use_multiprocessing == config.use_multiprocessing
        added = max(config.workers - current.workers, 0) if same_mode else config.workers
        if not config.use_multiprocessing:
            return THREAD_WORKER_S * added
        if same_mode:
            per_worker = PROCESS_WORKER_PRIOR_S
            if self._process_pool_s is not None:
                per_worker = min(per_worker, self._process_pool_s / max(config.workers, 1))
            return per_worker * added
        if self._process_pool_s is not None:
            return self._process_pool_s
        return self.process_pool_prior_s + PROCESS_WORKER_PRIOR_S * config.workers

    def assess(
        self,
        config: LoaderConfig,
        *,
        current: LoaderConfig,
        best_rate: float,
        predicted_rate: float,
        steps_left: int | None,
        trial_steps: int,
        produce_wall_s: float,
    ) -> Payoff:
        """Whether trying `config` now pays (see the module docs).

        Args:
            config: The candidate.
            current: The config the loader runs now.
            best_rate: Steps/s of the best measured config.
            predicted_rate: Steps/s the pipeline model predicts for `config`.
            steps_left: Training steps left in this fit (`None`: unknown, unbounded).
            trial_steps: Steps the trial takes (refill + window).
            produce_wall_s: Seconds to produce one batch (the refill's wait).
        """
        best = max(float(best_rate), 1e-9)
        predicted = max(float(predicted_rate), 1e-9)
        if config == current:
            startup = refill = 0.0
        else:
            startup = self.startup_share * self.startup_s(config, current=current)
            refill = max(float(produce_wall_s), 0.0)
        # A trial cannot run past the fit's end: its own steps are at most those left.
        trial_n = trial_steps if steps_left is None else min(trial_steps, int(steps_left))
        # The trial's own steps, at a pessimistic share of the predicted rate: a cost if
        # that is slower than the best, a gain if even that is faster (a short fit whose
        # trial is most of what is left still gains from a clearly faster config).
        # A trial under `ABORT_BELOW_BEST` of the best is aborted after its minimum
        # window, so its steps cost at most that rate's time (cheap thread trials pay).
        pessimistic = max(PESSIMISM * predicted, ABORT_BELOW_BEST * best)
        trial = trial_n * (1.0 / pessimistic - 1.0 / best)
        cost = startup + refill + max(trial, 0.0)
        per_step = 1.0 / best - 1.0 / predicted
        if steps_left is None:
            horizon = math.inf
        else:
            horizon = max(int(steps_left) - trial_steps, 0) + self.reuse_steps
        if per_step <= 0 or predicted < best * (1.0 + self.min_improvement):
            return Payoff(0.0, cost, False, "predicted no faster than the best")
        gain = per_step * horizon + max(-trial, 0.0)
        if gain >= self.payoff_ratio * cost:
            return Payoff(gain, cost, True, "")
        left = "?" if steps_left is None else str(int(steps_left))
        return Payoff(
            gain,
            cost,
            False,
            f"predicted gain {gain:.2f} s over {left} steps left < "
            f"{self.payoff_ratio:g} x cost {cost:.2f} s",
        )


__all__ = ["Payoff", "PayoffModel"]
