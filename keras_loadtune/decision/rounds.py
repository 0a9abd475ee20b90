"""`RoundRunner`: runs the trials of the current `SearchRound` and records them.

The runner holds the current round (a new `SearchRound` per round: tuning after
the probe, a warm-start re-tune, a drift reopen), the `TrialWindow` that runs now,
and the session's `TrialRecord`s. It measures the window step by step (refill skip,
RSS probes against the `MemoryBudget`, early aborts, settling) and records every
trial in the study through the `StudyBridge`. It returns what happened
(`WindowStep`, `Pick`); the session decides the phase and the loader's config.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision.memory import MemoryBudget
>>> from keras_loadtune.decision.optuna_bridge import StudyBridge
>>> from keras_loadtune.decision.payoff import PayoffModel
>>> from keras_loadtune.decision.planner import Planner
>>> from keras_loadtune.decision.settings import TunerSettings
>>> s = TunerSettings(cores=4)
>>> bridge, memory = StudyBridge(s, LoaderConfig()), MemoryBudget(s, LoaderConfig(), lambda: 0)
>>> planner = Planner(s, LoaderConfig(), 4, bridge, memory, PayoffModel(payoff_ratio=2.0),
...                   modes=["thread"])
>>> runner = RoundRunner(s, bridge, memory, planner)
>>> runner.step(StepSample(0.0, 0.01), steps=1, now=0.0).next  # no trial runs: pick one
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.delivery import refill_steps, round_steps
from keras_loadtune.decision.memory import MemoryBudget
from keras_loadtune.decision.optuna_bridge import StudyBridge
from keras_loadtune.decision.planner import Planner
from keras_loadtune.decision.probe import ProbeVerdict
from keras_loadtune.decision.search import SearchRound, TrialWindow
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import StepSample, WindowStats, window_stats
from keras_loadtune.trial import TrialOutcome, TrialRecord, config_to_params

# A trial cut short by the end of training counts if it ran this many times the best.
PARTIAL_WIN = 1.5


@dataclass(frozen=True)
class WindowStep:
    """What one training step did to the running trial.

    Args:
        next: The trial ended (measured, pruned or aborted): pick the next one.
        finish: The round's budget ran out: settle, for this reason.
        verified: A warm start's verify window was measured, with these statistics.
    """

    next: bool = False
    finish: str | None = None
    verified: WindowStats | None = None


@dataclass(frozen=True)
class Pick:
    """The next trial of the round, or why the round is over.

    Args:
        window: The trial to run (`None`: the round is over).
        finish: Why the round is over.
    """

    window: TrialWindow | None = None
    finish: str | None = None


class RoundRunner:
    """The current round, its running trial and the session's trial records.

    Args:
        settings: Budget, windows, thresholds.
        bridge: Where trials are asked and told.
        memory: The RAM budget.
        planner: The search space and the economics of trials.
        log: Where trials are logged.

    Attributes:
        round: The current `SearchRound` (`None` before tuning starts).
        window: The trial that runs now, or `None`.
        trials: Every recorded `TrialRecord`, in order.
        baseline_record: The baseline's measurement.
    """

    def __init__(
        self,
        settings: TunerSettings,
        bridge: StudyBridge,
        memory: MemoryBudget,
        planner: Planner,
        log: logging.Logger | None = None,
    ) -> None:
        self.settings = settings
        self._bridge = bridge
        self._memory = memory
        self._planner = planner
        self._log = log if log is not None else logging.getLogger("keras_loadtune")
        self.round: SearchRound | None = None
        self.window: TrialWindow | None = None
        self.trials: list[TrialRecord] = []
        self.baseline_record: TrialRecord | None = None

    def new_round(self, limit: int, *, start_steps: int, start_time: float) -> SearchRound:
        """Start a new `SearchRound` (a reopen or re-tune is a new round)."""
        self.round = SearchRound(
            self.settings, limit=limit, start_steps=start_steps, start_time=start_time
        )
        return self.round

    def drop_seeds(self) -> None:
        """Forget the seeds still pending (the round settles)."""
        if self.round is not None:
            self.round.pending_seeds = []

    def feasible(self, record: TrialRecord) -> bool:
        """Whether a record's measured memory is within the RAM budget."""
        return self._memory.excess(record.rss_bytes) <= 0

    def begin_verify(self, config: LoaderConfig, current: LoaderConfig) -> TrialWindow:
        """The verify window of a warm start's stored `config` (refill always skipped)."""
        trial = self._bridge.ask(config_to_params(config))
        config = self._bridge.suggest(trial)
        # Skip the refill even without a switch: the loader only just started.
        self.window = TrialWindow(
            config,
            "warm-start",
            trial,
            self._refill(config, current),
            round_cap=self._planner.round_cap(),
        )
        return self.window

    def startup(self, config: LoaderConfig, seconds: float) -> None:
        """The loader's start-up seconds for `config`: the running trial's, if it is its."""
        if self.window is not None and self.window.config == config:
            self.window.startup_s = seconds
        self._log.debug("loader restart to %s took %.3f s", config, seconds)

    def open_round(
        self,
        window: TrialWindow,
        stats: WindowStats,
        *,
        floor_by_wait: bool = True,
        contended: bool = False,
        log_seeds: bool = False,
    ) -> None:
        """Open the current round on a measured incumbent: record it, seed the round.

        Args:
            window: The incumbent's window (baseline after the probe, verify on drift).
            stats: Its measurement.
            floor_by_wait: Whether the round may stop on the wait floor (`False` when
                contention alone made the probe input-bound).
            contended: Loader threads contend with the trainer (the probe's verdict,
                whatever the wait): process configs are predicted uncontended.
            log_seeds: Log the pipeline model's seeds (the first round after the probe).
        """
        rnd = self.round
        assert rnd is not None
        rnd.floor_by_wait = floor_by_wait
        self._planner.note_window(window.config, stats)
        self.record_measured(window, stats)
        rnd.pending_seeds = self._planner.seed(
            stats, contended=contended or not floor_by_wait, size_uncontended=not floor_by_wait
        )
        if log_seeds:
            self._log.debug(
                "keras_loadtune: pipeline model seeds: %s",
                ", ".join(str(c) for c in rnd.pending_seeds) or "none",
            )

    def open_after_probe(self, verdict: ProbeVerdict, baseline: LoaderConfig) -> None:
        """Open the first round on an input-bound probe `verdict`, the `baseline` its
        incumbent (its window is the probe's; see `open_round`)."""
        window = TrialWindow(baseline, "baseline", None, 0, peak_rss=self._memory.probe_rss)
        self.open_round(
            window,
            verdict.stats,
            floor_by_wait=verdict.floor_by_wait(self.settings.wait_threshold),
            contended=verdict.contention is not None,
            log_seeds=True,
        )

    def failure(self, config: LoaderConfig, reason: str) -> tuple[str, str]:
        """The loader could not run `config`: a failing process config disables process
        mode (in the planner's modes). Logs it; does not record the trial (see `fail`).

        Returns:
            The reason (without a `"process mode skipped:"` prefix) and the report note.
        """
        prefix = "process mode skipped:"
        if reason.startswith(prefix):  # callers may phrase it like our note already
            reason = reason[len(prefix) :].strip()
        modes = self._planner.modes
        if config.use_multiprocessing and "process" in modes:
            modes.remove("process")
            self._log.warning("keras_loadtune: process mode disabled: %s", reason)
            return reason, f"process mode skipped: {reason}"
        self._log.warning("keras_loadtune: %s failed: %s", config, reason)
        return reason, f"config {config} failed: {reason}"

    def log_done(self, reason: str, best: LoaderConfig, speedup: float | None) -> None:
        """Log the end of tuning: why, the config kept, its speedup over the baseline."""
        self._log.info(
            "keras_loadtune: tuning done (%s): %s%s",
            reason,
            best,
            f", {speedup:.2f}x the baseline's steps/s" if speedup is not None else "",
        )

    def _refill(self, config: LoaderConfig, current: LoaderConfig) -> int:
        return refill_steps(self.settings, config, current, self._planner.round_cap())

    def step(self, sample: StepSample, *, steps: int, now: float) -> WindowStep:
        """Feed one step to the running trial.

        Args:
            sample: The step.
            steps: The session's tuning steps so far (this one included).
            now: The clock.
        """
        window, rnd = self.window, self.round
        if window is None or rnd is None:
            return WindowStep(next=True)
        if not window.add(sample):
            return WindowStep()
        over = self._sample_rss(window) if window.rss_due else None
        if over is not None:
            self._prune_for_ram(window, over)
            return WindowStep(next=True)
        abort = window.abort_reason(self.settings, rnd.best, cpu_heavy=self._planner.cpu_heavy())
        if abort is not None:
            self.window = None
            self._planner.learn_gil(window.config, window_stats(window.samples))
            self.tell_unmeasured(window, "pruned", abort, partial=True)
            return WindowStep(next=True)
        budget_reason = rnd.budget_spent(steps, now)
        if budget_reason is not None and not window.long_enough(self.settings):
            self.window = None
            self.tell_unmeasured(window, "pruned", budget_reason, partial=True)
            return WindowStep(finish=budget_reason)
        if budget_reason is None and not window.settled(self.settings):
            return WindowStep()
        self.window = None
        over = self._sample_rss(window)
        if over is not None:
            self._prune_for_ram(window, over)
            return WindowStep(next=True)
        stats = window.stats()
        if window.config.use_multiprocessing and window.peak_rss is not None:
            self._memory.learn_process_rss(window.config, window.peak_rss, self._planner.profile)
        self._planner.learn_gil(window.config, stats)
        self._planner.note_window(window.config, stats)
        self.record_measured(window, stats)
        if window.source == "warm-start":
            return WindowStep(verified=stats)
        return WindowStep(next=True)

    def pick(
        self, *, steps: int, now: float, current: LoaderConfig, steps_left: int | None
    ) -> Pick:
        """The next trial of the round: stop reasons first, then `SearchRound.propose`.

        Args:
            steps: The session's tuning steps so far.
            now: The clock.
            current: The config the loader runs now.
            steps_left: Training steps left in this fit (`None`: unknown).
        """
        rnd, planner = self.round, self._planner
        assert rnd is not None
        modes = planner.allowed_modes()
        reason = rnd.stop_reason(steps=steps, seconds=now, modes=modes)
        if reason is not None:
            return Pick(finish=reason)
        climb = rnd.pending_climb
        if climb is not None and steps_left is not None:
            # A climb skips the payoff gate (a thread costs a batch of RAM), not the
            # clock: a trial that cannot reach even a delivery round before the fit
            # ends could neither be measured nor kept.
            need = self._refill(climb, current) + round_steps(climb, planner.round_cap()) + 2
            if steps_left < need:
                rnd.pending_climb = None
                return Pick(
                    finish=f"too few steps left to measure {climb} ({steps_left} left, "
                    f"{need} needed)"
                )
        planner.search_locally(rnd)
        if current in rnd.pending_seeds[1:]:  # measure what runs first: no switch
            rnd.pending_seeds.remove(current)
            rnd.pending_seeds.insert(0, current)
        if not rnd.pending_seeds and not rnd.pending_baseline:
            why = planner.nothing_pays(modes, rnd, current=current, steps_left=steps_left)
            if why is not None:  # asking the sampler would only fill the study with skips
                return Pick(finish=why)
        proposal = rnd.propose(
            self._bridge,
            baseline=planner.baseline,
            modes=modes,
            infeasible=planner.infeasible_reason,
            predicted_excess=lambda c: self._memory.predicted_excess(c, planner.profile),
            refill=lambda c: self._refill(c, current),
            known_excess=lambda r: self._memory.excess(r.rss_bytes),
            unpaid=lambda c: planner.unpaid(c, rnd, current=current, steps_left=steps_left),
            round_cap=planner.round_cap(),
        )
        for record in proposal.skipped:
            self.trials.append(record)
            self._log.debug(
                "keras_loadtune: trial %d %s skipped: %s",
                record.number,
                record.config,
                record.reason,
            )
        window = proposal.window
        if window is None:
            return Pick(finish=proposal.finish or "no new config to try")
        self.window = window
        self._log.debug(
            "keras_loadtune: trial %d (%s): %s", window.trial.number, window.source, window.config
        )
        return Pick(window=window)

    def stop(self, reason: str) -> None:
        """Training ended: record the running trial (measured if long enough)."""
        window, self.window = self.window, None
        if window is None:
            return
        if window.long_enough(self.settings) or self._clearly_faster(window):
            # Enough of the window ran to count: a trial cut short by the end of
            # training is still a measurement, not a loss.
            self.record_measured(window, window.stats())
        else:
            self.tell_unmeasured(window, "pruned", f"stopped: {reason}", partial=True)

    def _clearly_faster(self, window: TrialWindow) -> bool:
        """A window shorter than its minimum still counts at the end of training if it
        spans a delivery round (`round_steps` and two more: a burst of ready batches
        alone would overstate it) and ran `PARTIAL_WIN` times the best measured rate."""
        rnd = self.round
        best = rnd.best if rnd is not None else None
        if best is None or not best.steps_per_s:
            return False
        if len(window.samples) < round_steps(window.config, window.round_cap) + 2:
            return False
        try:
            rate = window.stats().steps_per_s
        except ValueError:
            return False
        return rate >= PARTIAL_WIN * float(best.steps_per_s)

    def fail(self, config: LoaderConfig, reason: str) -> bool:
        """The loader could not run `config`; True if a measured config was forgotten."""
        window = self.window
        if window is not None and window.config == config:
            self.window = None
            self.tell_unmeasured(window, "failed", reason)
            return False
        rnd = self.round
        if rnd is not None and config in rnd.measured:  # e.g. the switch to the best failed
            rnd.forget(config, self.feasible)
            return True
        return False

    def _sample_rss(self, window: TrialWindow) -> int | None:
        """Read the RSS into `window`; its rss if over the budget, else `None`."""
        rss = self._memory.read()
        if rss is None:
            return None
        window.peak_rss = max(window.peak_rss or 0, rss)
        return rss if self._memory.excess(rss) > 0 else None

    def _prune_for_ram(self, window: TrialWindow, rss: int) -> None:
        """Stop a trial whose measured memory went over the budget."""
        self.window = None
        over = self._memory.excess(rss)
        if self._memory.learn_process_rss(window.config, rss, self._planner.profile) and self.round:
            # Now that a worker process's memory is known, re-fit the seeds to the budget.
            fresh = [c for c in self._planner.seeds() if c != window.config]
            self.round.pending_seeds = fresh + self.round.pending_seeds
        self.tell_unmeasured(
            window,
            "pruned",
            f"RSS {rss / 2**20:.0f} MiB, {over / 2**20:.0f} MiB over the RAM budget",
            partial=True,
            constraint=over,
        )

    def record_measured(self, window: TrialWindow, stats: WindowStats) -> TrialRecord:
        """Record a measured window and tell Optuna (a fixed trial if it has none).

        If Optuna fails, the measurement is kept and the error re-raised, so that
        the session settles on the best known config.
        """
        error: Exception | None = None
        if window.trial is None:  # baseline / verify: recorded through a fixed trial
            try:
                window.trial = self._bridge.ask(config_to_params(window.config))
                self._bridge.suggest(window.trial)
            except Exception as exc:
                error, window.trial = exc, None
        rnd = self.round
        assert rnd is not None
        number = window.trial.number if window.trial is not None else len(self.trials)
        record = rnd.add_measured(window, stats, number, self.feasible)
        self.trials.append(record)
        if window.source == "baseline":
            self.baseline_record = record
        excess = self._memory.excess(window.peak_rss)
        self._log.debug(
            "keras_loadtune: trial %d %s: %.1f steps/s, waits %.0f%%%s",
            record.number,
            record.config,
            stats.steps_per_s,
            100 * stats.wait_fraction,
            " (over the RAM budget)" if excess > 0 else "",
        )
        if error is not None:
            raise error
        # How it was ranked (`decision.ranking.rank_key`), for the warm start.
        self._bridge.ranking = (not self._planner.cpu_heavy(), self._planner.round_cap())
        self._bridge.tell(window.trial, record, value=stats.steps_per_s, constraint=excess)
        return record

    def tell_unmeasured(
        self,
        window: TrialWindow,
        state: TrialOutcome,
        reason: str,
        *,
        partial: bool = False,
        constraint: float = 0.0,
    ) -> None:
        """Record a trial that produced no objective value (pruned or failed)."""
        assert self.round is not None
        record = self.round.add_unmeasured(window, state, reason, partial=partial)
        self.trials.append(record)
        self._log.debug(
            "keras_loadtune: trial %d %s %s: %s", record.number, window.config, state, reason
        )
        tell_as = "failed" if state == "failed" else "pruned"
        self._bridge.tell(window.trial, record, constraint=constraint, state=tell_as)


__all__ = ["Pick", "RoundRunner", "WindowStep"]
