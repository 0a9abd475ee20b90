"""`SearchRound`: one round of trials, from its first proposal to its stop reason.

A round is created when tuning starts (after the probe), when a warm start is
re-tuned, and when drift reopens the study: a reopen is a new `SearchRound`, not a
reset of fields. The round owns its budget (`limit` trials), what it measured, its
best, its patience count, the duplicate count, and the queue of fixed proposals
(the baseline and the pipeline model's seeds) that run before the sampler's.

`TrialWindow` is the trial that runs now: the refill steps it skips, the steps it
measured, its peak RSS and start-up seconds. Its length is two delivery rounds
(`decision.delivery.window_steps`), bounded by the loader's depth (`round_cap`).

Threads are decided by throughput, not by the wait: when the best is a thread config
that barely waits (the compute floor by the wait), the round first climbs, trying
twice the threads (`climb`, given by the planner), and stops only once more threads
no longer raise steps/s. Loader threads cost the trainer's process time that the wait
does not show (a thread delivering a batch just in time still holds the GIL when
the trainer takes it), so a pool that just keeps up waits ~0% and still steps slower.

Ranking (`decision.ranking`): among configs within `min_improvement` of the fastest,
the cheapest wins; where a thread costs only a batch of RAM (a loader that is not
CPU-heavy), near-equal thread configs rank more threads first (`headroom_key`), up to
enough of them (`decision.delivery.round_cap`): a trial window too short to show the
loader's jitter measured 6 threads level with 11, and the fit then waited at 6; 256
threads where 77 keep up only hold RAM. The warm start ranks stored trials the same way.

Example:

>>> from keras_loadtune import LoaderConfig
>>> window = TrialWindow(LoaderConfig(256, 256), "sampler", None, skip_left=0, round_cap=61)
>>> for _ in range(122):
...     _ = window.add(StepSample(wait_s=0.0, step_s=0.003))
>>> window.long_enough(TunerSettings(min_trial_steps=8))  # two rounds of 61, not of 256
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.delivery import round_steps, window_steps
from keras_loadtune.decision.ranking import RankKey, cheapest_within, cost_key
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import (
    StepSample,
    WindowStats,
    align_to_cycles,
    window_is_settled,
    window_stats,
)
from keras_loadtune.trial import (
    PARAM_MODE,
    TrialOutcome,
    TrialRecord,
    TrialSource,
    config_to_params,
)

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.decision.optuna_bridge import StudyBridge

# Measured steps between two RSS probes during a trial (psutil walks the process tree).
RSS_EVERY = 5
# Optuna asks per decision before giving up (skipped proposals cost no training step).
MAX_ASKS_PER_DECISION = 64
# Consecutive duplicate proposals after which the search counts as converged.
MAX_CONSECUTIVE_DUPLICATES = 12
# The compute floor counts as reached once the best waits under this share of
# `wait_threshold` (a config waiting 3% of each step may still be 3% off the floor).
FLOOR_WAIT_SHARE = 0.5
# Consecutive proposals that do not pay for their trial after which the round ends.
MAX_CONSECUTIVE_UNPAID = 8
# A trial is aborted once, after its minimum window, it runs under this share of
# the best rate (thread trials of a CPU-heavy loader: under the best rate plus
# `min_improvement`, i.e. GIL-bound); its partial rate is told to Optuna.
ABORT_BELOW_BEST = 0.8
# Most slack (relative) an early abort gives a trial's rate for its noise.
ABORT_SLACK = 0.05


@dataclass
class TrialWindow:
    """The trial that runs now.

    Args:
        config: Its config.
        source: Why it runs.
        trial: Its `optuna.Trial`.
        skip_left: Refill steps still to ignore.
        round_cap: The most steps a delivery round spans (`decision.delivery.round_cap`
            when the trial started), or `None`: `in_flight(config)`.
    """

    config: LoaderConfig
    source: TrialSource
    trial: Any
    skip_left: int
    samples: list[StepSample] = field(default_factory=list)
    peak_rss: int | None = None
    startup_s: float | None = None
    round_cap: int | None = None

    def add(self, sample: StepSample) -> bool:
        """Count a step; `False` while the refill after the switch is still skipped."""
        if self.skip_left > 0:
            self.skip_left -= 1
            return False
        self.samples.append(sample)
        return True

    @property
    def rss_due(self) -> bool:
        """Whether to read the RSS now (first measured step, then every `RSS_EVERY`)."""
        n = len(self.samples)
        return n == 1 or n % RSS_EVERY == 0

    def long_enough(self, settings: TunerSettings) -> bool:
        """Whether the window has its minimum length (`window_steps`)."""
        return len(self.samples) >= window_steps(settings, self.config, self.round_cap)[0]

    def settled(self, settings: TunerSettings) -> bool:
        """Whether the window may end (long enough and stable, or at its maximum)."""
        low, high = window_steps(settings, self.config, self.round_cap)
        return window_is_settled(
            self.samples, min_steps=low, max_steps=high, rel_tol=settings.settle_rel_tol
        )

    def stats(self) -> WindowStats:
        """The window's statistics over whole delivery cycles."""
        cycle = round_steps(self.config, self.round_cap)
        return window_stats(align_to_cycles(self.samples, max_cycle=cycle))

    def abort_reason(
        self, settings: TunerSettings, best: TrialRecord | None, *, cpu_heavy: bool
    ) -> str | None:
        """Why to stop this trial before it settles: clearly slower than `best` (threads
        of a CPU-heavy loader: not faster than it, GIL-bound), else `None`.

        Judged on whole delivery cycles once the window has its minimum length, with
        up to two standard errors (`ABORT_SLACK`) of slack: a trial that would otherwise
        run to its maximum window stops there.

        Args:
            settings: `min_improvement` and the window lengths.
            best: The round's best record.
            cpu_heavy: The loader is CPU-heavy (thread trials must be faster).
        """
        if best is None or not best.steps_per_s or self.source not in ("sampler", "analytical"):
            return None
        n = len(self.samples)
        if n < window_steps(settings, self.config, self.round_cap)[0]:
            return None
        stats = self.stats()
        rate = stats.steps_per_s
        if rate <= 0:
            return None
        # Two standard errors, at most 5%: step times within a delivery cycle are bursty.
        sem = stats.rel_sem if math.isfinite(stats.rel_sem) else 1.0
        slack = 1.0 + min(2.0 * sem, ABORT_SLACK)
        best_rate = float(best.steps_per_s)
        mi = settings.min_improvement
        if not self.config.use_multiprocessing and cpu_heavy:
            # More threads than a thread best must be faster to pay; fewer threads (or
            # threads against a process best) only must not be slower.
            costlier = not best.config.use_multiprocessing and self.config.workers > (
                best.config.workers
            )
            if costlier:  # must beat the best by min_improvement: no slack
                slack = 1.0
            line = best_rate * (1.0 + mi) if costlier else best_rate * (1.0 - mi)
            if rate * slack < line:
                return f"aborted after {n} steps: {rate:.1f} steps/s, not faster (GIL-bound)"
            return None
        if rate * slack < ABORT_BELOW_BEST * best_rate:
            return f"aborted after {n} steps: {rate:.1f} steps/s < {ABORT_BELOW_BEST:.0%} of best"
        return None


@dataclass(frozen=True)
class Proposal:
    """What `SearchRound.propose` decided.

    Args:
        window: The trial to run next (`None`: the round is over).
        finish: Why the round is over (`None` while a trial runs).
        skipped: Trials told as skipped without running (RAM prediction), for the report.
    """

    window: TrialWindow | None
    finish: str | None
    skipped: list[TrialRecord]


class SearchRound:
    """One round of the search.

    Args:
        settings: Budget, patience, thresholds.
        limit: Trials this round may run.
        start_steps: The session's tuning steps when the round began.
        start_time: The clock when the round began.
        seeds: Fixed proposals (the pipeline model's seeds) to run first.
        baseline_first: Re-measure the baseline before the seeds.

    Example:

    >>> r = SearchRound(TunerSettings(max_trials=3), limit=3, start_steps=0, start_time=0.0)
    >>> r.stop_reason(steps=0, seconds=0.0, modes=("thread",)) is None
    True
    """

    def __init__(
        self,
        settings: TunerSettings,
        *,
        limit: int,
        start_steps: int,
        start_time: float,
        seeds: list[LoaderConfig] | None = None,
        baseline_first: bool = False,
    ) -> None:
        self.settings = settings
        self.limit = limit
        self.start_steps = start_steps
        self.start_time = start_time
        self.pending_seeds: list[LoaderConfig] = list(seeds or [])
        self.pending_baseline = baseline_first
        self.trials = 0
        self.measured: dict[LoaderConfig, TrialRecord] = {}
        # Configs this round pruned (aborted as slower, over the RAM budget): a proposal
        # of one again is told as a duplicate of that record, never re-run.
        self.pruned: dict[LoaderConfig, TrialRecord] = {}
        self.best: TrialRecord | None = None
        self.best_value = 0.0
        self.since_improvement = 0
        self.duplicates = 0
        self.unpaid = 0
        # The floor counts as reached once the best barely waits; not when the loader's
        # threads slow training without making it wait (contention).
        self.floor_by_wait = True
        # At the floor by the wait, a thread best first climbs: `climb(best)` is the
        # config to try next (more threads) or `None`; set by the planner.
        self.climb: Callable[[LoaderConfig], LoaderConfig | None] | None = None
        # While the best still waits (`wait_threshold` or more), workers are added
        # before the round may stop: `wait_climb(best)` sizes them from the measured
        # wait, or returns `None` (threads of a CPU-heavy loader, the cap); set by the
        # planner. A thread climb needs no payoff (a thread costs a batch of RAM); a
        # process climb pays its trial (its workers start).
        self.wait_climb: Callable[[TrialRecord], LoaderConfig | None] | None = None
        # Whether a best at the wait floor is still slowed by its loader threads (their
        # GIL time lengthens the step instead of making it wait); set by the planner.
        self.loader_slows: Callable[[TrialRecord], bool] | None = None
        # The cost order among near-equal configs (`decision.ranking.rank_key`: more
        # threads first, up to enough, where a loader thread costs only a batch of RAM);
        # set by the planner, `cost_key` until then.
        self.rank_key: Callable[[], RankKey] | None = None
        self.pending_climb: LoaderConfig | None = None
        self._climb_is_free = False
        self._climbed_from: set[LoaderConfig] = set()

    def add_measured(
        self,
        window: TrialWindow,
        stats: WindowStats,
        number: int,
        feasible: Callable[[TrialRecord], bool],
    ) -> TrialRecord:
        """Count a measured window; update the best and the patience count.

        Args:
            window: The trial window (its config, source, peak RSS, start-up).
            stats: Its measured statistics.
            number: The Optuna trial number.
            feasible: Whether a record is within the RAM budget.

        Returns:
            The `TrialRecord` (state `"complete"`).
        """
        record = TrialRecord(
            number=number,
            config=window.config,
            state="complete",
            source=window.source,
            steps_per_s=stats.steps_per_s,
            wait_fraction=stats.wait_fraction,
            rss_bytes=window.peak_rss,
            startup_s=window.startup_s,
            steps=stats.steps,
            extra={"median_step_s": stats.median_step_s, "cv": stats.cv},
        )
        self.measured[record.config] = record
        self.trials += 1
        value = float(stats.steps_per_s)
        if self.best is None or value > self.best_value * (1.0 + self.settings.min_improvement):
            self.since_improvement = 0
        else:
            self.since_improvement += 1
        self.best_value = max(self.best_value, value)
        self.pick_best(feasible)
        return record

    def add_unmeasured(
        self, window: TrialWindow, state: TrialOutcome, reason: str, *, partial: bool = False
    ) -> TrialRecord:
        """A trial that produced no objective value; a pruned one counts against the round.

        Args:
            window: The trial window.
            state: `"pruned"` (it cost training steps) or `"failed"`.
            reason: Why.
            partial: Keep the statistics of the steps it ran.

        Returns:
            The `TrialRecord`.
        """
        stats = window_stats(window.samples) if partial and window.samples else None
        if state == "pruned":  # it cost training steps and did not improve
            self.trials += 1
            self.since_improvement += 1
        record = TrialRecord(
            number=window.trial.number,
            config=window.config,
            state=state,
            source=window.source,
            steps_per_s=stats.steps_per_s if stats else None,
            wait_fraction=stats.wait_fraction if stats else None,
            rss_bytes=window.peak_rss,
            startup_s=window.startup_s,
            steps=stats.steps if stats else 0,
            reason=reason,
        )
        if state == "pruned":  # aborted, over the RAM budget: not worth running again
            self.pruned[window.config] = record
        return record

    def forget(self, config: LoaderConfig, feasible: Callable[[TrialRecord], bool]) -> None:
        """Drop a measured config that later failed to run."""
        self.measured.pop(config, None)
        self.pick_best(feasible)

    def pick_best(self, feasible: Callable[[TrialRecord], bool]) -> TrialRecord | None:
        """Re-rank: the cheapest feasible measured config close to the fastest."""
        ok = {
            r.config: float(r.steps_per_s)
            for r in self.measured.values()
            if r.state == "complete" and r.steps_per_s is not None and feasible(r)
        }
        key = self.rank_key() if self.rank_key is not None else cost_key
        self.best = (
            self.measured[cheapest_within(ok, self.settings.min_improvement, key=key)]
            if ok
            else None
        )
        return self.best

    def budget_spent(self, steps: int, seconds: float | None) -> str | None:
        """Why the step or time budget of this round is spent, or `None`."""
        s = self.settings
        steps -= self.start_steps
        if s.max_tuning_steps is not None and steps >= s.max_tuning_steps:
            return f"step budget spent ({steps} steps)"
        if s.max_tuning_seconds is not None and seconds is not None:
            seconds -= self.start_time
            if seconds >= s.max_tuning_seconds:
                return f"time budget spent ({seconds:.0f} s)"
        return None

    def stop_reason(
        self, *, steps: int, seconds: float | None, modes: tuple[str, ...]
    ) -> str | None:
        """Why the round should stop before its next trial, or `None`."""
        s = self.settings
        if self.trials >= self.limit:
            return f"trial budget spent ({self.trials} trials)"
        spent = self.budget_spent(steps, seconds)
        if spent is not None:
            return spent
        best = self.best
        if (
            best is not None
            and self.floor_by_wait
            and not self.pending_seeds
            and not self.pending_baseline
            and best.wait_fraction is not None
            and best.wait_fraction >= s.wait_threshold
            and self._start_wait_climb(best)
        ):
            return None
        if self.since_improvement >= s.patience:
            return f"best stable for {self.since_improvement} trials"
        if (
            best is not None
            and self.floor_by_wait
            and not self.pending_baseline
            and best.wait_fraction is not None
            and best.wait_fraction < FLOOR_WAIT_SHARE * s.wait_threshold
            and not (self.loader_slows is not None and self.loader_slows(best))
        ):
            if self._start_climb(best.config):
                return None
            # Seeds still pending are dropped: nothing can beat the floor.
            return f"compute floor reached (waits {100 * best.wait_fraction:.1f}% of each step)"
        if not modes:
            return "no worker mode left to try"
        return None

    def _start_wait_climb(self, best: TrialRecord) -> bool:
        """Queue a wait climb from a `best` that still waits (once per best)."""
        if self.pending_climb is not None:
            return True
        if self.wait_climb is None or best.config in self._climbed_from:
            return False
        candidate = self.wait_climb(best)
        if candidate is None or candidate in self.measured:
            return False
        self._climbed_from.add(best.config)
        self.pending_climb, self._climb_is_free = candidate, not candidate.use_multiprocessing
        return True

    def _start_climb(self, best: LoaderConfig) -> bool:
        """Queue a climb from a thread `best` at the wait floor (once per best)."""
        if self.pending_climb is not None:
            return True
        if best.use_multiprocessing or self.climb is None or best in self._climbed_from:
            return False
        self._climbed_from.add(best)
        candidate = self.climb(best)
        if candidate is None or candidate in self.measured:
            return False
        self.pending_climb = candidate
        return True

    def propose(
        self,
        bridge: StudyBridge,
        *,
        baseline: LoaderConfig,
        modes: tuple[str, ...],
        infeasible: Callable[[LoaderConfig], str | None],
        predicted_excess: Callable[[LoaderConfig], float],
        refill: Callable[[LoaderConfig], int],
        known_excess: Callable[[TrialRecord], float],
        unpaid: Callable[[LoaderConfig], str | None] | None = None,
        round_cap: int | None = None,
    ) -> Proposal:
        """The next trial: the baseline if pending, then seeds, then the sampler.

        Sampler proposals that cannot run here (a disabled mode, over a worker cap) or
        that repeat a measured config are told to Optuna at once and cost no step; a
        config predicted over the RAM budget, or whose predicted gain does not pay for
        its trial (`unpaid` returns why), is told as skipped. The window's rounds are
        bounded by `round_cap` (`decision.delivery`).
        """
        skipped: list[TrialRecord] = []
        climb, free = self.pending_climb, self._climb_is_free
        self._climb_is_free = False
        tried = climb in self.measured or climb in self.pruned
        if climb is not None and infeasible(climb) is None and not tried:
            trial = bridge.ask(config_to_params(climb))
            config = bridge.suggest(trial)
            why_not = unpaid(config) if unpaid is not None and not free else None
            self.pending_climb = None
            if why_not is None and predicted_excess(config) <= 0:
                return Proposal(
                    TrialWindow(config, "analytical", trial, refill(config), round_cap=round_cap),
                    None,
                    [],
                )
            reason = why_not or "predicted over the RAM budget"
            record = TrialRecord(trial.number, config, "skipped", "analytical", reason=reason)
            process = config.use_multiprocessing
            bridge.tell(trial, record, state="pruned", not_run=not process)
            if process:  # the report lists a process climb it did not run, and why
                skipped.append(record)
            if process:  # a wait climb: the best still waits, the floor is not reached
                return Proposal(None, f"more processes do not pay ({config}: {reason})", skipped)
            return Proposal(None, "compute floor reached (more threads do not pay)", skipped)
        self.pending_climb = None
        for _ in range(MAX_ASKS_PER_DECISION):
            source: TrialSource = "sampler"
            fixed: dict[str, Any] | None = None
            if self.pending_baseline:
                self.pending_baseline = False
                if baseline not in self.measured and infeasible(baseline) is None:
                    fixed, source = config_to_params(baseline), "baseline"
            if fixed is None and self.pending_seeds:
                seed = self.pending_seeds.pop(0)
                if infeasible(seed) or seed in self.measured or seed in self.pruned:
                    continue
                fixed, source = config_to_params(seed), "analytical"
            elif fixed is None and len(modes) == 1:
                fixed = {PARAM_MODE: modes[0]}
            trial = bridge.ask(fixed)
            config = bridge.suggest(trial)
            why = infeasible(config)
            if why is not None:
                record = TrialRecord(trial.number, config, "skipped", "sampler", reason=why)
                bridge.tell(trial, record, state="pruned", not_run=True)
                continue
            known = self.measured.get(config) or self.pruned.get(config)
            if known is not None:
                self._tell_duplicate(bridge, trial, known, known_excess(known))
                self.duplicates += 1
                if self.duplicates >= MAX_CONSECUTIVE_DUPLICATES:
                    return Proposal(
                        None, "search converged (the sampler only repeats configs)", skipped
                    )
                continue
            self.duplicates = 0
            over = predicted_excess(config)
            if over > 0:
                reason = f"predicted {over / 2**20:.0f} MiB over the RAM budget"
                record = TrialRecord(trial.number, config, "skipped", source, reason=reason)
                bridge.tell(trial, record, constraint=float(over), state="pruned")
                skipped.append(record)
                continue
            why_not = unpaid(config) if unpaid is not None and source != "baseline" else None
            if why_not is not None:
                record = TrialRecord(trial.number, config, "skipped", source, reason=why_not)
                shown = source == "analytical"  # a seed the report lists as skipped
                bridge.tell(trial, record, state="pruned", not_run=not shown)
                if shown:
                    skipped.append(record)
                self.unpaid += 1
                if self.unpaid >= MAX_CONSECUTIVE_UNPAID and not self.pending_seeds:
                    return Proposal(None, "no config left that pays for its trial", skipped)
                continue
            self.unpaid = 0
            return Proposal(
                TrialWindow(config, source, trial, refill(config), round_cap=round_cap),
                None,
                skipped,
            )
        return Proposal(None, "no new config to try", skipped)

    @staticmethod
    def _tell_duplicate(bridge: StudyBridge, trial: Any, known: TrialRecord, excess: float) -> None:
        record = TrialRecord(
            trial.number,
            known.config,
            "skipped",
            "sampler",
            steps_per_s=known.steps_per_s,
            wait_fraction=known.wait_fraction,
            rss_bytes=known.rss_bytes,
            reason=f"duplicate of trial {known.number}, not re-run",
        )
        bridge.tell(
            trial, record, value=float(known.steps_per_s or 0.0), constraint=excess, not_run=True
        )


__all__ = [
    "Proposal",
    "SearchRound",
    "TrialWindow",
]
