"""`TuningSession`: the tuning policy as a state machine driven one training step at a time.

A facade over phase objects that return results and never call back:
`probe.Probe` (the probe's verdict), `warm_start.WarmStartFlow` (start from a stored
study's best, verify it, keep it or re-tune), `rounds.RoundRunner` (the running trial,
its window and records, over one `search.SearchRound` per round: a drift reopen or a
warm-start re-tune is a new round), `planner.Planner` (the search space, the pipeline
model's predictions, whether a trial pays, with `payoff`), `steady.SteadyWatch`
(drift), `memory.MemoryBudget`, `spend.TuningSpend` (`tuning_cost_s`) and
`optuna_bridge.StudyBridge` (the only user of `optuna.Trial`; skipped proposals, the
RAM constraint and the objective with `search`). The session owns the `Phase` and the
error policy; `running_config.RunningConfig` holds the current config (the one place
it is held, with the switch that may fail) and `notes.SessionNotes` the report's notes.
`decision.driver.Driver` runs it (observe -> decide -> apply -> acknowledge) for the
Keras callback and the simulator; `observe` returns a `StepResult` with the config to
switch to and the `Event`s of the step.

Phases (`Phase`, a `str` enum: `Phase.STEADY == "steady"`)::

    probe ──(wait < threshold)──> compute-bound        (observe_step: None forever)
      │
      └──> tuning ──(budget / patience / floor)──> steady ──(sustained drift)──> tuning
    (warm start) tuning+verifying ──> steady | tuning | probe
                                                      any phase ──stop()──> stopped

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision import TunerSettings, TuningSession
>>> from keras_loadtune.measurement import StepSample
>>> session = TuningSession(LoaderConfig(), TunerSettings(cores=8, seed=0))
>>> result = session.observe(StepSample(wait_s=0.03, step_s=0.04))  # one per training step
>>> result.switch_to is None, session.phase
(True, <Phase.PROBE: 'probe'>)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from keras_loadtune._validate import check_instance, int_at_least
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision import resources
from keras_loadtune.decision.memory import MemoryBudget
from keras_loadtune.decision.notes import SessionNotes
from keras_loadtune.decision.optuna_bridge import StudyBridge, check_direction
from keras_loadtune.decision.payoff import PayoffModel
from keras_loadtune.decision.phase import _ACTIVE, ENTERED, Event, Phase, StepResult
from keras_loadtune.decision.planner import Planner
from keras_loadtune.decision.probe import Probe
from keras_loadtune.decision.rounds import RoundRunner
from keras_loadtune.decision.running_config import RunningConfig
from keras_loadtune.decision.search import SearchRound, TrialWindow
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.decision.spend import TuningSpend
from keras_loadtune.decision.steady import Drift, SteadyWatch
from keras_loadtune.decision.warm_start import WarmStart, WarmStartFlow
from keras_loadtune.measurement import LoaderProfile, StepSample, WindowStats, loader_profile
from keras_loadtune.trial import TrialRecord

if TYPE_CHECKING:  # pragma: no cover
    import optuna


class TuningSession:
    """Decides, step by step, which loader config to run while training goes on.

    Args:
        baseline: The user's own config (what the loader runs at the start).
        settings: Budget, search space and thresholds.
        study: An Optuna study to record into (direction must be maximize); `None`
            creates an in-memory one with a seeded multivariate TPE sampler
            (`settings.sampler` if given). Created lazily: a compute-bound run never
            imports Optuna.
        clock: Seconds, monotonic (`time.perf_counter`); the simulator passes its
            own fake clock.
        rss_probe: Returns the resident memory of the trainer and its workers in
            bytes; `None` uses `resources.process_tree_rss`.
        process_mode_available: `False` when the dataset is known not to run in
            worker processes (e.g. not picklable).
        cores: Cores for the pipeline model; `None` uses `settings.cores`.
        logger: Where progress is logged.
        warm_start: Start from the best config `study` already holds, if it holds one
            (see `decision.warm_start`); `False` always probes.
        probe_in_steady_state: The loader already ran before the first observed step,
            so the probe skips no refill.
        probe_prior: The fit's last warm-up step on `baseline` (`Probe`'s `prior`):
            evidence for an early verdict, never a figure.
        steps_left: Returns the training steps left in this fit (`None`: unknown), e.g.
            from Keras's `params["epochs"] x params["steps"]` minus the steps run; a
            trial is tried only if its predicted gain over them pays for it (see
            `decision.payoff`). `None`: unbounded.
        reuse_steps: Steps a later run is expected to reuse the study for (a stored
            study), added to the gain side of that balance.
        workload_profile: The loader's timing profile (`produce_ms`, `cpu_ratio`, see
            `fingerprint.WorkloadFingerprint.profile`): stamped on every trial, and the
            warm start only uses stored trials whose profile matches it.
        reopens_used: Reopens already spent on this workload (a caller that re-probed
            after a compute-bound verdict): one `settings.max_reopens` budget covers them
            and this session's drift reopens.
        running: The config the loader runs now if not `baseline` (a caller that
            started on a stored best before the first batch): the warm start then
            verifies it without a switch, or switches back to `baseline` and probes it
            when the study no longer confirms it.
        prestarted: The config the loader was switched to when the probe (run by the
            caller before this session existed) found the fit input-bound, while the
            study opened (`decision.first_move`): the probe's steps are still the
            baseline's, and a seed equal to it is measured without a switch.

    Attributes:
        phase: A `Phase` (compares equal to `"probe"`, `"tuning"`, `"steady"`,
            `"compute-bound"` and `"stopped"`).
        trials: `TrialRecord`s of the baseline, measured, failed and RAM-skipped
            trials (sampler proposals that were duplicates, over a worker cap or in a
            disabled mode are only in the Optuna study, as `klt_state="skipped"`).
        notes: Human-readable warnings for the report.
        reopen_reasons: Why drift reopened the study, one line per reopen.
        warm_start: The stored best this session started from (`None`: no warm start).
        warm_start_kept: True once the stored best was verified and kept.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> from keras_loadtune.decision import TunerSettings
    >>> from keras_loadtune.measurement import StepSample
    >>> session = TuningSession(LoaderConfig(), TunerSettings(cores=4, probe_steps=5,
    ...                                                       skip_steps=0))
    >>> for _ in range(6):  # 1 refill step (1 worker) + 5 probe steps
    ...     _ = session.observe_step(StepSample(wait_s=0.0, step_s=0.01))
    >>> session.phase == "compute-bound"  # no waiting, nothing to tune
    True
    """

    def __init__(
        self,
        baseline: LoaderConfig,
        settings: TunerSettings,
        *,
        study: optuna.Study | None = None,
        clock: Callable[[], float] = time.perf_counter,
        rss_probe: Callable[[], int] | None = None,
        process_mode_available: bool = True,
        cores: int | None = None,
        logger: logging.Logger | None = None,
        warm_start: bool = True,
        probe_in_steady_state: bool = False,
        probe_prior: StepSample | None = None,
        steps_left: Callable[[], int | None] | None = None,
        reuse_steps: int = 0,
        workload_profile: Mapping[str, float] | None = None,
        reopens_used: int = 0,
        running: LoaderConfig | None = None,
        prestarted: LoaderConfig | None = None,
    ) -> None:
        check_instance("TuningSession: baseline", baseline, LoaderConfig)
        check_instance("TuningSession: settings", settings, TunerSettings)
        int_at_least("TuningSession: cores", cores, 1, none_ok=True)
        self.baseline = baseline
        self.settings = settings
        self.cores = int(cores if cores is not None else settings.cores)  # type: ignore[arg-type]
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger("keras_loadtune")
        if study is not None:
            check_direction(study, self._log)
        self._bridge = StudyBridge(settings, baseline, study)
        self._bridge.profile_attr = dict(workload_profile) if workload_profile else None
        probe_rss = rss_probe if rss_probe is not None else resources.process_tree_rss
        self._memory = MemoryBudget(settings, baseline, probe_rss, self._log)
        self._probe: Probe | None = Probe(
            settings, baseline, in_steady_state=probe_in_steady_state, prior=probe_prior
        )
        self._probe_steady = bool(probe_in_steady_state)
        self._watch = SteadyWatch(settings, reopens_used=reopens_used)
        self._events: list[Event] = []
        self._spend = TuningSpend(clock, steps_left)
        self._payoff = PayoffModel(
            payoff_ratio=settings.payoff_ratio,
            reuse_steps=reuse_steps,
            min_improvement=settings.min_improvement,
            cores=self.cores,
            background=True,  # LoadTuner and the simulator start pools in the background
            process_pool_prior_s=settings.process_pool_prior_s,
        )
        modes = [m for m in settings.modes if process_mode_available or m != "process"]
        self._planner = Planner(
            settings, baseline, self.cores, self._bridge, self._memory, self._payoff, modes=modes
        )
        self._runner = RoundRunner(settings, self._bridge, self._memory, self._planner, self._log)

        self.phase = Phase.PROBE
        self.trials: list[TrialRecord] = self._runner.trials
        self._notes = SessionNotes(self._log)
        self.notes = self._notes.lines
        self.reopen_reasons: list[str] = []
        self.probe_stats: WindowStats | None = None
        # The loader's profile on the baseline during the probe, compute-bound too (the
        # report shows it); `profile` is the one tuning uses.
        self.probe_profile: LoaderProfile | None = None
        self.finished_reason: str | None = None
        self.warm_start: WarmStart | None = None
        self.warm_start_kept = False
        self._warm = WarmStartFlow(
            settings,
            baseline,
            self._bridge,
            self._planner,
            self._memory,
            # Started on a stored config: it is verified, or the baseline probed, first.
            enabled=(bool(warm_start) and study is not None)
            or (running is not None and running != baseline),
        )
        if "process" in settings.modes and not process_mode_available:
            self._notes.add("process mode skipped: the dataset cannot run in worker processes")
        self._running = RunningConfig(baseline, running=running, prestarted=prestarted)

    # ------------------------------------------------------------------ public API

    @property
    def reopens(self) -> int:
        """Reopens spent against `settings.max_reopens`: this session's drift reopens and
        the `reopens_used` it was started with (one budget covers every reopen)."""
        return self._watch.reopens

    @property
    def best_record(self) -> TrialRecord | None:
        """The `TrialRecord` of `best_config`, once something was measured."""
        rnd = self._runner.round
        return rnd.best if rnd is not None else None

    @property
    def best_config(self) -> LoaderConfig:
        """Best feasible measured config so far (the baseline until one beats it)."""
        best = self.best_record
        return best.config if best is not None else self.baseline

    @property
    def baseline_record(self) -> TrialRecord | None:
        """The baseline's measurement (`None` before the probe ends)."""
        return self._runner.baseline_record

    @property
    def profile(self) -> LoaderProfile | None:
        """The loader's measured timing profile (`None` before tuning starts)."""
        return self._planner.profile

    @property
    def current_config(self) -> LoaderConfig:
        """The config the session believes the loader runs now."""
        return self._running.config

    @property
    def study(self) -> optuna.Study | None:
        """The Optuna study (created when tuning starts, or by `prepare_study`)."""
        return self._bridge.study

    def prepare_study(self) -> None:
        """Imports Optuna and creates the study now (seconds), e.g. off the training thread.

        Otherwise that happens inside the training step where the probe ends.
        """
        self._bridge.ensure()

    @property
    def tuning_steps(self) -> int:
        """Training steps spent probing and tuning (all rounds)."""
        return self._spend.steps

    @property
    def tuning_seconds(self) -> float:
        """Clock seconds spent probing and tuning (all rounds; start-up included)."""
        return self._spend.seconds(active=self.phase in _ACTIVE)

    def credit_probe(self, seconds: float, fit_steps: int | None) -> None:
        """Count the probe that ran before this session existed (`SessionStarter`'s):
        its clock `seconds` and the `fit_steps` training steps it spanned (`None`:
        unknown) are tuning time, as the session's own spells are.

        Example:

        >>> from keras_loadtune.config import LoaderConfig
        >>> from keras_loadtune.decision.settings import TunerSettings
        >>> session = TuningSession(LoaderConfig(), TunerSettings(), clock=lambda: 0.0)
        >>> session.credit_probe(0.4, 8); session.tuning_seconds
        0.4
        """
        self._spend.credit(seconds, fit_steps)

    @property
    def tuning_cost_s(self) -> float | None:
        """Estimated seconds the tuner caused: its clock time minus the same steps at
        the best rate (`None` before a rate is known). An estimate: the steps are
        counted from `steps_left`, the rate is the best trial's."""
        best = self.best_record
        if best is None or not best.steps_per_s:
            return None
        return self._spend.cost_s(float(best.steps_per_s), active=self.phase in _ACTIVE)

    @property
    def compute_bound(self) -> bool:
        """Whether the probe found the baseline not input-bound."""
        stats = self.probe_stats
        return stats is not None and stats.wait_fraction < self.settings.wait_threshold

    @property
    def speedup(self) -> float | None:
        """Best steps/s over the baseline's steps/s (`None` before both are known, and
        when the best is the baseline itself: an unchanged config has no speedup)."""
        base, best = self.baseline_record, self.best_record
        if best is None or base is None or not base.steps_per_s or best.config == base.config:
            return None
        return float(best.steps_per_s or 0.0) / float(base.steps_per_s)

    @property
    def pending_seeds(self) -> tuple[LoaderConfig, ...]:
        """Analytical seeds not yet tried, in the order they will run."""
        rnd = self._runner.round
        return tuple(rnd.pending_seeds) if rnd is not None else ()

    @property
    def verifying(self) -> bool:
        """Whether the session is measuring a warm start's stored best (phase `TUNING`)."""
        return self._warm.verifying

    @property
    def modes(self) -> tuple[str, ...]:
        """Worker modes still allowed (process mode drops out after a failure)."""
        return tuple(self._planner.modes)

    def observe(self, sample: StepSample) -> StepResult:
        """Record one training step; return the switch to make now and the step's events.

        Never raises because of Optuna or policy errors: they are logged, noted, and
        the session settles on the best known config.
        """
        self._events = []
        switch = self._observe(sample)
        return StepResult(switch, tuple(self._events))

    def observe_step(self, sample: StepSample) -> LoaderConfig | None:
        """`observe(sample).switch_to`: a config to switch the loader to now, or `None`."""
        return self.observe(sample).switch_to

    def observe_loader(self, records: Iterable[Any]) -> None:
        """Add per-batch producer records (`produce_wall_s`, `produce_cpu_s`, `nbytes`)."""
        if self.phase in (Phase.COMPUTE_BOUND, Phase.STOPPED):
            return
        records = list(records)
        if self.phase == Phase.PROBE and self._probe is not None:
            self._probe.add_records(records)
        self._watch.records.extend(records)

    def observe_startup(self, config: LoaderConfig, seconds: float) -> None:
        """Record the worker start-up seconds of a reconfigure to `config`."""
        self._runner.startup(config, float(seconds))
        self._payoff.learn_startup(config, float(seconds), previous=self._running.switched_from)

    def acknowledge(self, config: LoaderConfig) -> None:
        """The loader now runs `config` (the switch returned by `observe` succeeded).

        Optional for callers that report failures through `mark_failed` only; once
        acknowledged, a later `mark_failed(config, ...)` no longer rolls back to the
        config before it.
        """
        self._running.acknowledge(config)

    def mark_failed(self, config: LoaderConfig, reason: str) -> None:
        """The reconfigure to `config` failed; the loader kept its previous config.

        A failing process config disables process mode for the rest of the session.
        The next `observe_step` may return another config to try.
        """
        try:
            self._mark_failed(config, reason)
        except Exception as exc:
            self._abandon(exc)

    def stop(self, reason: str = "stopped") -> LoaderConfig | None:
        """Finish now (e.g. training ended) on the best config.

        Returns:
            The best config if the loader should switch to it, else `None`.
        """
        if self.phase == Phase.STOPPED:
            return None
        try:
            self._runner.stop(reason)
        except Exception as exc:
            self._notes.error(exc, keeping=self.best_config)
        self._spend.close()
        if self.finished_reason is None:
            self.finished_reason = reason
        self._enter(Phase.STOPPED)
        self._watch.disarm()
        self._log.debug("keras_loadtune: stopped (%s); keeping %s", reason, self.best_config)
        return self._switch_to(self.best_config)

    def _enter(self, phase: Phase) -> None:
        event = ENTERED.get(phase)
        if event is not None and phase != self.phase:
            self._events.append(event)
        self.phase = phase

    def _observe(self, sample: StepSample) -> LoaderConfig | None:
        if self.phase in (Phase.COMPUTE_BOUND, Phase.STOPPED):
            return None
        try:
            if self.phase == Phase.STEADY:
                return self._steady_step(sample)
            self._spend.open()
            self._spend.count_step()
            if self.phase == Phase.PROBE and self._warm.pending:
                warm, note = self._warm.load()
                if note is not None:
                    self._notes.add(note, logging.WARNING)
                if warm is not None:
                    return self._begin_warm_start(warm)
                running = self._running
                unbacked = self._warm.unbacked(running.config, started=running.started_running)
                if unbacked is not None:
                    return self._probe_baseline(unbacked)
            if self.phase == Phase.PROBE:
                return self._probe_step(sample)
            return self._window_step(sample)
        except Exception as exc:
            return self._abandon(exc)

    def _probe_step(self, sample: StepSample) -> LoaderConfig | None:
        assert self._probe is not None
        verdict = self._probe.add(sample)
        if verdict is None:
            return None
        s, stats = self.settings, verdict.stats
        self.probe_stats, self._probe = stats, None
        self.probe_profile = loader_profile(verdict.records) if verdict.records else None
        self._planner.probe_step_s = stats.mean_step_s
        if not verdict.input_bound:
            self.finished_reason = "compute-bound"
            self._spend.close()
            self._enter(Phase.COMPUTE_BOUND)
            self._log.info("keras_loadtune: %s", verdict.summary(s.wait_threshold, self.baseline))
            return None
        self._memory.mark_probe()  # the RSS baseline of trials (not read when compute-bound)
        if verdict.contention is not None:
            self._log.debug("keras_loadtune: %s", verdict.contention)
        self._set_profile(verdict.records, stats, self.baseline)
        self._enter(Phase.TUNING)
        self._log.info("keras_loadtune: %s", verdict.summary(s.wait_threshold, self.baseline))
        self._new_round(s.max_trials)
        self._runner.open_after_probe(verdict, self.baseline)
        return self._next()

    def _window_step(self, sample: StepSample) -> LoaderConfig | None:
        done = self._runner.step(sample, steps=self._spend.steps, now=self._clock())
        if done.finish is not None:
            return self._finish(done.finish)
        if done.verified is not None:
            return self._after_warm_start(done.verified)
        return self._next() if done.next else None

    def _begin_warm_start(self, warm: WarmStart) -> LoaderConfig | None:
        """Skip the probe: switch to the stored best and measure one trial window."""
        self.warm_start = warm
        self._warm.begin()
        self._enter(Phase.TUNING)
        self._log.info("keras_loadtune: %s", warm.describe())
        self._new_round(self.settings.max_trials)
        window = self._runner.begin_verify(warm.config, self.current_config)
        switch = self._switch_to(window.config)
        if switch is None and self._running.started_running:
            window.skip_left = 0  # it ran before the session existed: no refill to skip
        return switch

    def _after_warm_start(self, stats: WindowStats) -> LoaderConfig | None:
        """Keep the verified stored config, or measure the user's config (and re-tune)."""
        assert self.warm_start is not None and self._runner.round is not None
        resume = self._warm.resume(self.warm_start, stats, self.current_config)
        if resume.finish is not None:
            self.warm_start_kept = True
            return self._finish(resume.finish)
        self._notes.add(resume.note, resume.level)
        self._enter(Phase.TUNING)
        self._set_profile(self._watch.recent(), stats, self.current_config)
        self._warm.measure_more(resume, stats, self._runner.round)
        return self._next()

    def _warm_start_failed(self) -> LoaderConfig | None:
        """The stored config did not run (failed / over the RAM budget): probe as usual."""
        assert self.warm_start is not None
        self._warm.verifying = False
        return self._probe_baseline(self.warm_start.failed_note())

    def _probe_baseline(self, note: str) -> LoaderConfig | None:
        """Note `note`, switch back to the baseline and probe it."""
        self._notes.add(note)
        self._enter(Phase.PROBE)
        self._probe = Probe(self.settings, self.baseline, in_steady_state=self._probe_steady)
        return self._switch_to(self.baseline)

    def _steady_step(self, sample: StepSample) -> LoaderConfig | None:
        if self._running.deferred is not None:
            return self._running.take_deferred()
        drift = self._watch.update(sample)
        return None if drift is None else self._reopen(drift)

    def _new_round(self, limit: int, *, first: bool = True) -> SearchRound:
        """A new `SearchRound`; the first one's budget includes the probe's steps."""
        started = self._spend.started_at
        steps = 0 if first else self._spend.steps
        start = started if started is not None else self._clock()
        return self._runner.new_round(limit, start_steps=steps, start_time=start)

    def _next(self) -> LoaderConfig | None:
        """Pick the next config to measure (or finish); return it if the loader must switch."""
        if self._warm.verifying:  # the verify window failed or went over the RAM budget
            return self._warm_start_failed()
        pick = self._runner.pick(
            steps=self._spend.steps,
            now=self._clock(),
            current=self.current_config,
            steps_left=self._spend.left(),
        )
        if pick.window is None:
            return self._finish(pick.finish or "no new config to try")
        switch = self._switch_to(pick.window.config)
        if switch is None:  # already running: no refill to skip
            pick.window.skip_left = 0
        return switch

    def _finish(self, reason: str) -> LoaderConfig | None:
        self._settle(reason, self.best_record)
        self._runner.log_done(reason, self.best_config, self.speedup)
        return self._switch_to(self.best_config)

    def _settle(self, reason: str, best: TrialRecord | None) -> None:
        """Enter `STEADY` for `reason`; watch `best`'s rate for drift (`None`: no watch)."""
        self._spend.close()
        self._enter(Phase.STEADY)
        self.finished_reason = reason
        self._runner.drop_seeds()
        # The round took `best` for the floor (it waited under the threshold): if the
        # steady windows keep waiting, that measurement was optimistic and more threads
        # are worth a new round. A best that still waited ended on a budget: no reopen.
        climbable = (
            best is not None
            and best.wait_fraction is not None
            and best.wait_fraction < self.settings.wait_threshold
            and self._planner.can_add_threads(best.config)
        )
        self._watch.follow(best, current=self.current_config, climbable=climbable)

    def _reopen(self, drift: Drift) -> LoaderConfig | None:
        config, stats = self.current_config, drift.stats
        reason = f"{drift.describe(self.settings.drift_window_steps)} on {config}"
        self.warm_start_kept = False
        self.reopen_reasons.append(reason)
        self._log.warning("keras_loadtune: input-bound again (%s); reopening the study.", reason)
        self._events.append(Event.REOPENED)
        self._enter(Phase.TUNING)
        self.finished_reason = None
        self._spend.open(restart=True)
        # A new round: its budget counts the re-measured incumbent too.
        self._new_round(self.settings.reopen_trials + 1, first=False)
        self._set_profile(self._watch.recent(), stats, config)
        # The drift window is a fresh measurement of the incumbent: record it as such.
        window = TrialWindow(config, "verify", None, 0, peak_rss=self._memory.read())
        self._runner.open_round(window, stats)
        return self._next()

    def _mark_failed(self, config: LoaderConfig, reason: str) -> None:
        reason, note = self._runner.failure(config, reason)
        self._notes.add(note)
        self._running.roll_back(config)
        forgot = self._runner.fail(config, reason)
        if forgot and self.phase == Phase.STEADY and self.best_config != self.current_config:
            self._running.deferred = self.best_config

    def _abandon(self, exc: BaseException) -> LoaderConfig | None:
        """Stop tuning after an unexpected error; settle on the best known config."""
        self._notes.error(exc, keeping=self.best_config)
        self._runner.window = None
        self._settle("error", None)
        return self._switch_to(self.best_config)

    def _set_profile(self, records: list[Any], stats: WindowStats, config: LoaderConfig) -> None:
        note = self._planner.set_profile(records, stats, config)
        if note is not None:
            self._notes.add(note)

    def _switch_to(self, config: LoaderConfig) -> LoaderConfig | None:
        return self._running.switch_to(config)


__all__ = ["TuningSession"]
