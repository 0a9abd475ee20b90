"""`TuningSession`: the tuning policy as a state machine driven one training step at a time.

A facade over phase objects that return results and never call back:
`probe.Probe`, `warm_start` (verify), `search.SearchRound` (one per round: a drift
reopen or a warm-start re-tune is a new round), `steady.SteadyWatch`,
`memory.MemoryBudget` and `optuna_bridge.StudyBridge` (the only user of
`optuna.Trial`). The session owns the `Phase`, the current config (the one place it
is held) and the error policy. `decision.driver.Driver` runs it (observe -> decide ->
apply -> acknowledge) for the Keras callback and the simulator; `observe` returns a
`StepResult` with the config to switch to and the `Event`s of the step.

Phases (`Phase`, a `str` enum: `Phase.STEADY == "steady"`)::

    probe ──(wait < threshold)──> compute-bound        (observe_step: None forever)
      │
      └──> tuning ──(budget / patience / floor)──> steady ──(sustained drift)──> tuning
    (warm start) tuning+verifying ──> steady | tuning | probe
                                                      any phase ──stop()──> stopped

Where the rules live: warm start and its verification in `warm_start`, the search
space, skipped proposals, RAM constraint and objective in `search` and
`optuna_bridge`, the memory model in `memory`, the probe's verdict in `probe`, what
a trial costs and whether it pays in `payoff`, drift in `steady`.

Cost-aware search (issue #13): after the probe the session shapes what Optuna sees
from the measured profile (`_shape_space`: no process mode for a latency-bound
loader, per-loader worker caps, the queue tied to the workers); once the seeds ran,
the sampler searches around the incumbent (workers / 2 .. x 2). Every proposal,
seeds included, must pay (`payoff.PayoffModel`) over the steps left in the fit
(`steps_left`) plus the expected reuse of a stored study; a thread trial of a
CPU-heavy loader that is not faster is aborted after its minimum window, and what
it showed (the GIL share) makes later thread configs predicted no faster. Pending
seeds are dropped once the best waits under half of `wait_threshold`.
`tuning_cost_s` estimates the seconds the tuner caused.

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
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision import analytical, resources
from keras_loadtune.decision.memory import MemoryBudget
from keras_loadtune.decision.optuna_bridge import (
    TPE_STARTUP_TRIALS,
    StudyBridge,
    check_direction,
    default_sampler,
)
from keras_loadtune.decision.payoff import PayoffModel
from keras_loadtune.decision.phase import _ACTIVE, Event, Phase, StepResult
from keras_loadtune.decision.probe import Probe, profile_from, refill_steps
from keras_loadtune.decision.search import SearchRound, TrialWindow, window_steps
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.decision.steady import SteadyWatch
from keras_loadtune.decision.warm_start import (
    WARM_START_NOISE_SE,
    WARM_START_TOLERANCE,
    WarmStart,
    load_stored_best,
    stored_best,
    verify,
)
from keras_loadtune.measurement import (
    LoaderProfile,
    StepSample,
    WindowStats,
    window_stats,
)
from keras_loadtune.trial import (
    CONSTRAINT_KEY,
    TrialOutcome,
    TrialRecord,
    TrialSource,
    config_to_params,
)

if TYPE_CHECKING:  # pragma: no cover
    import optuna

# Producer records kept for re-profiling when drift reopens the study.
RECENT_RECORDS = 512
# A trial is aborted once, after its minimum window, it runs under this share of
# the best rate (thread trials of a CPU-heavy loader: under the best rate plus
# `min_improvement`, i.e. GIL-bound); its partial rate is told to Optuna.
ABORT_BELOW_BEST = 0.8
# Most slack (relative) an early abort gives a trial's rate for its noise.
ABORT_SLACK = 0.05
# Local search after the seeds: the workers range becomes incumbent / 2 .. incumbent x 2.
LOCAL_SPAN = 2.0


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
        steps_left: Returns the training steps left in this fit (`None`: unknown), e.g.
            from Keras's `params["epochs"] x params["steps"]` minus the steps run; a
            trial is tried only if its predicted gain over them pays for it (see
            `decision.payoff`). `None`: unbounded.
        reuse_steps: Steps a later run is expected to reuse the study for (a stored
            study), added to the gain side of that balance.
        workload_profile: The loader's timing profile (`produce_ms`, `cpu_ratio`, see
            `persistence.WorkloadFingerprint.profile`): stamped on every trial, and the
            warm start only uses stored trials whose profile matches it.

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
        steps_left: Callable[[], int | None] | None = None,
        reuse_steps: int = 0,
        workload_profile: Mapping[str, float] | None = None,
    ) -> None:
        from keras_loadtune._validate import check_instance, int_at_least

        check_instance("TuningSession: baseline", baseline, LoaderConfig)
        check_instance("TuningSession: settings", settings, TunerSettings)
        if cores is not None:
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
        self._memory = MemoryBudget(
            settings,
            baseline,
            rss_probe if rss_probe is not None else resources.process_tree_rss,
            self._log,
        )
        self._probe: Probe | None = Probe(
            settings, baseline, in_steady_state=bool(probe_in_steady_state)
        )
        self._probe_steady = bool(probe_in_steady_state)
        self._watch = SteadyWatch(settings)
        self._round: SearchRound | None = None
        self._window: TrialWindow | None = None
        self._events: list[Event] = []

        self.phase = Phase.PROBE
        self.trials: list[TrialRecord] = []
        self.notes: list[str] = []
        self.reopen_reasons: list[str] = []
        self.probe_stats: WindowStats | None = None
        self.profile: LoaderProfile | None = None
        self.finished_reason: str | None = None
        self.baseline_record: TrialRecord | None = None
        self.warm_start: WarmStart | None = None
        self.warm_start_kept = False
        self._warm_pending = bool(warm_start) and study is not None
        self._verifying = False  # measuring a warm start's stored best

        self._modes = [m for m in settings.modes if process_mode_available or m != "process"]
        if "process" in settings.modes and not process_mode_available:
            self.notes.append("process mode skipped: the dataset cannot run in worker processes")
        self._config = baseline  # the config the loader runs: the one place it is held
        self._previous_config = baseline  # restored if the switch fails
        self._pending_switch: LoaderConfig | None = None
        self._recent_records: deque[Any] = deque(maxlen=RECENT_RECORDS)
        self._seed_compute_s = 0.0
        self._tuning_steps = 0
        self._seconds_done = 0.0
        self._started_at: float | None = None
        self._steps_left = steps_left
        self._payoff = PayoffModel(
            payoff_ratio=settings.payoff_ratio,
            reuse_steps=reuse_steps,
            min_improvement=settings.min_improvement,
        )
        self._switched_from: LoaderConfig | None = None
        self._gil = 0.0  # share of the loader's CPU time holding the GIL, learned
        self._round_modes: tuple[str, ...] = tuple(self._modes)
        self._caps: dict[str, int] = {}
        self._local = False  # the sampler searches around the incumbent
        self._fit_steps_done = 0  # fit steps (observed or not) during closed tuning spells
        self._fit_mark: int | None = None  # steps_left() when the current spell began

    # ------------------------------------------------------------------ public API

    @property
    def best_record(self) -> TrialRecord | None:
        """The `TrialRecord` of `best_config`, once something was measured."""
        return self._round.best if self._round is not None else None

    @property
    def best_config(self) -> LoaderConfig:
        """Best feasible measured config so far (the baseline until one beats it)."""
        best = self.best_record
        return best.config if best is not None else self.baseline

    @property
    def current_config(self) -> LoaderConfig:
        """The config the session believes the loader runs now."""
        return self._config

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
        return self._tuning_steps

    @property
    def tuning_seconds(self) -> float:
        """Clock seconds spent probing and tuning (all rounds; start-up included)."""
        running = 0.0
        if self._started_at is not None and self.phase in _ACTIVE:
            running = self._clock() - self._started_at
        return self._seconds_done + running

    @property
    def tuning_cost_s(self) -> float | None:
        """Estimated seconds the tuner caused: its clock time minus the same steps at
        the best rate (`None` before a rate is known). An estimate: the steps are
        counted from `steps_left`, the rate is the best trial's."""
        best = self.best_record
        if best is None or not best.steps_per_s:
            return None
        steps = self._fit_steps_done
        if self._fit_mark is not None:
            left = self._left()
            steps += self._fit_mark - left if left is not None else 0
        if self._steps_left is None or steps <= 0:
            steps = self._tuning_steps
        return max(self.tuning_seconds - steps / float(best.steps_per_s), 0.0)

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
        return tuple(self._round.pending_seeds) if self._round is not None else ()

    @property
    def verifying(self) -> bool:
        """Whether the session is measuring a warm start's stored best (phase `TUNING`)."""
        return self._verifying

    @property
    def modes(self) -> tuple[str, ...]:
        """Worker modes still allowed (process mode drops out after a failure)."""
        return tuple(self._modes)

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
        self._recent_records.extend(records)

    def observe_startup(self, config: LoaderConfig, seconds: float) -> None:
        """Record the worker start-up seconds of a reconfigure to `config`."""
        window = self._window
        if window is not None and window.config == config:
            window.startup_s = float(seconds)
        self._payoff.learn_startup(config, float(seconds), previous=self._switched_from)
        self._log.debug("loader restart to %s took %.3f s", config, seconds)

    def acknowledge(self, config: LoaderConfig) -> None:
        """The loader now runs `config` (the switch returned by `observe` succeeded).

        Optional for callers that report failures through `mark_failed` only; once
        acknowledged, a later `mark_failed(config, ...)` no longer rolls back to the
        config before it.
        """
        if config == self._config:
            self._previous_config = config

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
            window, self._window = self._window, None
            if window is not None:
                if window.long_enough(self.settings):
                    # Enough of the window ran to count: a trial cut short by the end of
                    # training is still a measurement, not a loss.
                    self._record_measured(window, window.stats())
                else:
                    self._tell_unmeasured(window, "pruned", f"stopped: {reason}", partial=True)
        except Exception as exc:
            self._note_error(exc)
        self._close_clock()
        if self.finished_reason is None:
            self.finished_reason = reason
        self._enter(Phase.STOPPED)
        self._watch.disarm()
        self._log.info("keras_loadtune: stopped (%s); keeping %s", reason, self.best_config)
        return self._switch_to(self.best_config)

    # ------------------------------------------------------------------ phases

    def _enter(self, phase: Phase) -> None:
        event = {
            Phase.TUNING: Event.TUNING_STARTED,
            Phase.STEADY: Event.SETTLED,
            Phase.COMPUTE_BOUND: Event.COMPUTE_BOUND,
            Phase.STOPPED: Event.STOPPED,
        }.get(phase)
        if event is not None and phase != self.phase:
            self._events.append(event)
        self.phase = phase

    def _observe(self, sample: StepSample) -> LoaderConfig | None:
        if self.phase in (Phase.COMPUTE_BOUND, Phase.STOPPED):
            return None
        try:
            if self.phase == Phase.STEADY:
                return self._steady_step(sample)
            if self._started_at is None:
                self._started_at = self._clock()
                self._fit_mark = self._left()
            self._tuning_steps += 1
            if self.phase == Phase.PROBE and self._warm_pending:
                self._warm_pending = False
                warm = self._load_warm_start()
                if warm is not None:
                    return self._begin_warm_start(warm)
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
        s = self.settings
        stats = verdict.stats
        self.probe_stats = stats
        self._probe = None
        self._memory.mark_probe()
        if not verdict.input_bound:
            self.finished_reason = "compute-bound"
            self._close_clock()
            self._enter(Phase.COMPUTE_BOUND)
            self._log.info(
                "keras_loadtune: not input-bound (waits %.1f%% of each step < %.0f%%); "
                "keeping %s, no tuning.",
                100 * stats.wait_fraction,
                100 * s.wait_threshold,
                self.baseline,
            )
            return None
        if verdict.contention is not None:
            self._log.info("keras_loadtune: %s", verdict.contention)
        self._set_profile(verdict.records, stats, self.baseline)
        self._enter(Phase.TUNING)
        self._log.info(
            "keras_loadtune: input-bound (waits %.0f%% of each step at %.1f steps/s on %s); "
            "tuning.",
            100 * stats.wait_fraction,
            stats.steps_per_s,
            self.baseline,
        )
        self._new_round(s.max_trials)
        assert self._round is not None
        # Contention alone (the step barely waits): the wait cannot show the floor.
        self._round.floor_by_wait = (
            verdict.contention is None or stats.wait_fraction >= s.wait_threshold
        )
        window = TrialWindow(self.baseline, "baseline", None, 0, peak_rss=self._memory.probe_rss)
        self._record_measured(window, stats)
        self._seed_round(stats)
        self._log.info(
            "keras_loadtune: pipeline model seeds: %s",
            ", ".join(str(c) for c in self.pending_seeds) or "none",
        )
        return self._next()

    def _window_step(self, sample: StepSample) -> LoaderConfig | None:
        window, rnd = self._window, self._round
        if window is None or rnd is None:
            return self._next()
        if not window.add(sample):
            return None
        over = self._sample_rss(window) if window.rss_due else None
        if over is not None:
            return self._prune_for_ram(window, over)
        abort = self._abort_reason(window)
        if abort is not None:
            self._window = None
            self._learn_gil(window.config, window_stats(window.samples))
            self._tell_unmeasured(window, "pruned", abort, partial=True)
            return self._next()
        budget_reason = rnd.budget_spent(self._tuning_steps, self._clock())
        if budget_reason is not None and not window.long_enough(self.settings):
            self._window = None
            self._tell_unmeasured(window, "pruned", budget_reason, partial=True)
            return self._finish(budget_reason)
        if budget_reason is None and not window.settled(self.settings):
            return None
        self._window = None
        over = self._sample_rss(window)
        if over is not None:
            return self._prune_for_ram(window, over)
        stats = window.stats()
        if window.config.use_multiprocessing and window.peak_rss is not None:
            self._memory.learn_process_rss(window.config, window.peak_rss, self.profile)
        self._learn_gil(window.config, stats)
        self._record_measured(window, stats)
        if window.source == "warm-start":
            return self._after_warm_start(window.config, stats)
        return self._next()

    def _sample_rss(self, window: TrialWindow) -> int | None:
        """Read the RSS into `window`; its rss if over the budget, else `None`."""
        rss = self._memory.read()
        if rss is None:
            return None
        window.peak_rss = max(window.peak_rss or 0, rss)
        return rss if self._memory.excess(rss) > 0 else None

    def _prune_for_ram(self, window: TrialWindow, rss: int) -> LoaderConfig | None:
        """Stop a trial whose measured memory went over the budget, then move on."""
        self._window = None
        over = self._memory.excess(rss)
        if self._memory.learn_process_rss(window.config, rss, self.profile) and self._round:
            # Now that a worker process's memory is known, re-fit the seeds to the budget.
            fresh = [c for c in self._compute_seeds() if c != window.config]
            self._round.pending_seeds = fresh + self._round.pending_seeds
        self._tell_unmeasured(
            window,
            "pruned",
            f"RSS {rss / 2**20:.0f} MiB, {over / 2**20:.0f} MiB over the RAM budget",
            partial=True,
            constraint=over,
        )
        return self._next()

    def _load_warm_start(self) -> WarmStart | None:
        """The stored best of the study, or `None` (no study, nothing usable, unreadable)."""
        study = self._bridge.study
        if study is None:
            return None
        warm, note = load_stored_best(
            study,
            self.baseline,
            min_improvement=self.settings.min_improvement,
            allowed=lambda c: self._infeasible_reason(c) is None,
            profile=self._bridge.profile_attr,
        )
        if note is not None:
            self._note(note, logging.WARNING)
        return warm

    def _note(self, note: str, level: int = logging.INFO) -> None:
        """Add a note for the report and log it."""
        self.notes.append(note)
        self._log.log(level, "keras_loadtune: %s", note)

    def _recent(self) -> list[Any]:
        """Producer records of the last drift window (at least 16), for re-profiling."""
        return list(self._recent_records)[-max(self.settings.drift_window_steps, 16) :]

    def _begin_warm_start(self, warm: WarmStart) -> LoaderConfig | None:
        """Skip the probe: switch to the stored best and measure one trial window."""
        self.warm_start = warm
        self._memory.mark_probe()  # the loader still runs the baseline
        self._enter(Phase.TUNING)
        self._verifying = True
        self._log.info("keras_loadtune: %s", warm.describe())
        self._new_round(self.settings.max_trials)
        trial = self._bridge.ask(config_to_params(warm.config))
        config = self._bridge.suggest(trial)
        # Skip the refill even without a switch: the loader only just started.
        self._window = TrialWindow(config, "warm-start", trial, self._refill(config))
        return self._switch_to(config)

    def _after_warm_start(self, config: LoaderConfig, stats: WindowStats) -> LoaderConfig | None:
        """Keep the verified stored config, or re-tune with a small budget."""
        warm, rnd, s = self.warm_start, self._round, self.settings
        assert warm is not None and rnd is not None
        self._verifying = False
        verdict = verify(warm, stats, wait_threshold=s.wait_threshold)
        stored_base = warm.baseline_steps_per_s
        if (
            verdict.kept
            and stored_base is not None
            and config != self.baseline
            and stats.steps_per_s < stored_base
        ):
            # Never keep a stored config that measured slower than the user's own:
            # measure the user's config now and keep whichever is faster.
            self._note(
                f"warm start: {config} ran {stats.steps_per_s:.1f} steps/s, under your "
                f"config's stored {stored_base:.1f}; measuring your config to keep the faster"
            )
            self._enter(Phase.TUNING)
            rnd.limit = rnd.trials + 1
            rnd.pending_baseline = True
            self._set_profile(self._recent(), stats, config)
            self._seed_compute_s = stats.median_compute_s
            return self._next()
        if verdict.kept:
            self.warm_start_kept = True
            return self._finish(f"warm start from study {warm.study_name!r}: {verdict.figures}")
        self._note(verdict.retune_note(config, s.reopen_trials), logging.WARNING)
        self._enter(Phase.TUNING)
        rnd.limit = s.reopen_trials + 2  # + the warm-start and baseline windows
        rnd.pending_baseline = True
        self._set_profile(self._recent(), stats, config)
        self._seed_round(stats)
        return self._next()

    def _warm_start_failed(self) -> LoaderConfig | None:
        """The stored config did not run (failed / over the RAM budget): probe as usual."""
        assert self.warm_start is not None
        self._verifying = False
        self.notes.append(self.warm_start.failed_note())
        self._enter(Phase.PROBE)
        self._probe = Probe(self.settings, self.baseline, in_steady_state=self._probe_steady)
        return self._switch_to(self.baseline)

    def _steady_step(self, sample: StepSample) -> LoaderConfig | None:
        if self._pending_switch is not None:
            target, self._pending_switch = self._pending_switch, None
            return self._switch_to(target)
        drift = self._watch.update(sample)
        if drift is None:
            return None
        return self._reopen(drift.stats, drift.describe(self.settings.drift_window_steps))

    # ------------------------------------------------------------------ rounds

    def _new_round(self, limit: int, *, first: bool = True) -> None:
        """A new `SearchRound`; the first one's budget includes the probe's steps."""
        self._round = SearchRound(
            self.settings,
            limit=limit,
            start_steps=0 if first else self._tuning_steps,
            start_time=self._started_at if self._started_at is not None else self._clock(),
        )

    def _seed_round(self, stats: WindowStats) -> None:
        assert self._round is not None
        self._seed_compute_s = stats.median_compute_s
        self._shape_space()
        self._round.pending_seeds = self._compute_seeds()

    def _shape_space(self) -> None:
        """Per-loader search space of this round, from the measured profile.

        A latency-bound loader (CPU << wall per batch) gets no process mode; the worker
        caps come from the profile (`analytical.thread_cap`, `process_cap`); the queue
        is tied to the workers (`analytical.queue_for`).
        """
        profile, s, base = self.profile, self.settings, self.baseline
        assert profile is not None
        modes = tuple(self._modes)
        if profile.cpu_ratio < analytical.CPU_HEAVY_RATIO and "thread" in modes:
            modes = tuple(m for m in modes if m != "process")
        self._round_modes = modes
        compute = self._seed_compute_s
        caps = {
            "thread": analytical.thread_cap(profile, compute, s, baseline=base),
            "process": analytical.process_cap(profile, compute, self.cores, s),
        }
        caps[base.mode] = max(caps[base.mode], base.workers)
        self._caps = caps
        self._local = False
        self._bridge.set_space((1, max(caps[m] for m in modes)), self._queue_of)

    def _queue_of(self, workers: int) -> int:
        jitter = self.profile.jitter_cv if self.profile is not None else 0.0
        return analytical.queue_for(workers, jitter, self.settings)

    def _allowed_modes(self) -> tuple[str, ...]:
        return tuple(m for m in self._round_modes if m in self._modes)

    def _search_locally(self, rnd: SearchRound) -> None:
        """After the seeds, the sampler searches around the incumbent's worker count."""
        if self._local or rnd.pending_seeds or rnd.best is None or not self._caps:
            return
        modes = self._allowed_modes()
        if not modes:
            return
        self._local = True
        cap = max(self._caps[m] for m in modes)
        best = rnd.best.config.workers
        low = max(1, int(best / LOCAL_SPAN))
        high = min(cap, max(math.ceil(best * LOCAL_SPAN), low + 1))
        self._bridge.set_space((low, max(high, low)), self._queue_of)

    def _predicted_rate(self, config: LoaderConfig) -> float | None:
        profile = self.profile
        if profile is None or self._seed_compute_s <= 0:
            return None
        rnd = self._round
        if rnd is not None and not rnd.floor_by_wait and self.probe_stats is not None:
            # Contention: loader threads slow each step; only processes take their CPU
            # time out of the trainer's process (the pipeline model has no GIL share
            # for the trainer, so it cannot say more).
            step = self.probe_stats.mean_step_s
            if not config.use_multiprocessing:
                return 1.0 / max(step, 1e-9)
            return 1.0 / max(step - profile.produce_cpu_s, 0.5 * step, 1e-9)
        return analytical.predict(
            config,
            profile,
            self._seed_compute_s,
            self.cores,
            gil_fraction=0.0 if config.use_multiprocessing else self._gil,
            process_rss_bytes=self._memory.process_rss,
        ).steps_per_s

    def _unpaid(self, config: LoaderConfig) -> str | None:
        """Why trying `config` now does not pay (see `decision.payoff`), or `None`."""
        best, profile = self.best_record, self.profile
        predicted = self._predicted_rate(config)
        if best is None or not best.steps_per_s or profile is None or predicted is None:
            return None
        verdict = self._payoff.assess(
            config,
            current=self._config,
            best_rate=float(best.steps_per_s),
            predicted_rate=predicted,
            steps_left=self._left(),
            trial_steps=self._refill(config) + window_steps(self.settings, config)[1],
            produce_wall_s=profile.produce_wall_s,
        )
        return None if verdict.pays else f"not worth it: {verdict.reason}"

    def _nothing_pays(self, modes: tuple[str, ...]) -> str | None:
        """Why no config of the sampler's space can pay for a trial, or `None`.

        The pipeline model's best prediction over the space (each mode, every worker
        count up to its cap, the tied queue) is weighed as any proposal would be.
        """
        space = self._bridge.workers_range
        if self.best_record is None or self.profile is None or space is None:
            return None
        low, high = space
        best: LoaderConfig | None = None
        best_rate = -1.0
        for mode in modes:
            cap = min(high, self._caps.get(mode, high))
            for workers in range(max(low, 1), max(cap, low) + 1):
                config = LoaderConfig(workers, self._queue_of(workers), mode == "process")
                rate = self._predicted_rate(config)
                if rate is not None and rate > best_rate:
                    best, best_rate = config, rate
        if best is None:
            return None
        why = self._unpaid(best)
        return None if why is None else f"no config left that pays for its trial ({why})"

    def _cpu_heavy(self) -> bool:
        profile = self.profile
        return profile is not None and profile.cpu_ratio >= analytical.CPU_HEAVY_RATIO

    def _learn_gil(self, config: LoaderConfig, stats: WindowStats) -> None:
        """A thread config of a CPU-heavy loader far under the GIL-free prediction
        shows how much of the loader's CPU time holds the GIL."""
        profile = self.profile
        if config.use_multiprocessing or not self._cpu_heavy() or profile is None:
            return
        if stats.wait_fraction < self.settings.wait_threshold or stats.steps_per_s <= 0:
            return
        free = analytical.predict(config, profile, self._seed_compute_s, self.cores).steps_per_s
        if stats.steps_per_s < 0.8 * free and profile.produce_cpu_s > 0:
            gil = min(1.0, 1.0 / (stats.steps_per_s * profile.produce_cpu_s))
            self._gil = max(self._gil, gil)

    def _abort_reason(self, window: TrialWindow) -> str | None:
        """Why to stop a trial before its window settles: clearly slower than the best
        (threads of a CPU-heavy loader: not faster than it, GIL-bound), else `None`.

        Judged on whole delivery cycles once the window has its minimum length, with
        up to two standard errors (`ABORT_SLACK`) of slack: a trial that would otherwise
        run to its maximum window stops there."""
        rnd = self._round
        best = rnd.best if rnd is not None else None
        if best is None or not best.steps_per_s or window.source not in ("sampler", "analytical"):
            return None
        n = len(window.samples)
        if n < window_steps(self.settings, window.config)[0]:
            return None
        stats = window.stats()
        rate = stats.steps_per_s
        if rate <= 0:
            return None
        # Two standard errors, at most 5%: step times within a delivery cycle are bursty.
        sem = stats.rel_sem if math.isfinite(stats.rel_sem) else 1.0
        slack = 1.0 + min(2.0 * sem, ABORT_SLACK)
        best_rate = float(best.steps_per_s)
        mi = self.settings.min_improvement
        if not window.config.use_multiprocessing and self._cpu_heavy():
            # More threads than a thread best must be faster to pay; fewer threads (or
            # threads against a process best) only must not be slower.
            costlier = not best.config.use_multiprocessing and window.config.workers > (
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

    def _next(self) -> LoaderConfig | None:
        """Pick the next config to measure (or finish); return it if the loader must switch."""
        if self._verifying:  # the verify window failed or went over the RAM budget
            return self._warm_start_failed()
        rnd = self._round
        assert rnd is not None
        modes = self._allowed_modes()
        reason = rnd.stop_reason(steps=self._tuning_steps, seconds=self._clock(), modes=modes)
        if reason is not None:
            return self._finish(reason)
        self._search_locally(rnd)
        if not rnd.pending_seeds and not rnd.pending_baseline:
            why = self._nothing_pays(modes)
            if why is not None:  # asking the sampler would only fill the study with skips
                return self._finish(why)
        proposal = rnd.propose(
            self._bridge,
            baseline=self.baseline,
            modes=modes,
            infeasible=self._infeasible_reason,
            predicted_excess=lambda c: self._memory.predicted_excess(c, self.profile),
            refill=self._refill,
            known_excess=lambda r: self._memory.excess(r.rss_bytes),
            unpaid=self._unpaid,
        )
        for record in proposal.skipped:
            self.trials.append(record)
            self._log.info(
                "keras_loadtune: trial %d %s skipped: %s",
                record.number,
                record.config,
                record.reason,
            )
        window = proposal.window
        if window is None:
            return self._finish(proposal.finish or "no new config to try")
        self._window = window
        self._log.info(
            "keras_loadtune: trial %d (%s): %s", window.trial.number, window.source, window.config
        )
        switch = self._switch_to(window.config)
        if switch is None:  # already running: no refill to skip
            window.skip_left = 0
        return switch

    def _finish(self, reason: str) -> LoaderConfig | None:
        self._close_clock()
        self._enter(Phase.STEADY)
        self.finished_reason = reason
        if self._round is not None:
            self._round.pending_seeds = []
        best = self.best_record
        if best is not None:
            self._watch.arm(best.steps_per_s, self._refill(self.best_config))
        else:
            self._watch.disarm()
        speedup = self.speedup
        self._log.info(
            "keras_loadtune: tuning done (%s): %s%s",
            reason,
            self.best_config,
            f", {speedup:.2f}x the baseline's steps/s" if speedup is not None else "",
        )
        return self._switch_to(self.best_config)

    def _reopen(self, stats: WindowStats, why: str) -> LoaderConfig | None:
        s = self.settings
        config = self._config
        reason = f"{why} on {config}"
        self.warm_start_kept = False
        self.reopen_reasons.append(reason)
        self._log.warning("keras_loadtune: input-bound again (%s); reopening the study.", reason)
        self._events.append(Event.REOPENED)
        self._enter(Phase.TUNING)
        self.finished_reason = None
        self._started_at = self._clock()
        self._fit_mark = self._left()
        self._new_round(s.reopen_trials + 1, first=False)  # + the re-measured incumbent
        self._set_profile(self._recent(), stats, config)
        # The drift window is a fresh measurement of the incumbent: record it as such.
        window = TrialWindow(config, "verify", None, 0, peak_rss=self._memory.read())
        self._record_measured(window, stats)
        self._seed_round(stats)
        return self._next()

    # ------------------------------------------------------------------ failures

    def _mark_failed(self, config: LoaderConfig, reason: str) -> None:
        prefix = "process mode skipped:"
        if reason.startswith(prefix):  # callers may phrase it like our note already
            reason = reason[len(prefix) :].strip()
        if config.use_multiprocessing and "process" in self._modes:
            self._modes.remove("process")
            self.notes.append(f"process mode skipped: {reason}")
            self._log.warning("keras_loadtune: process mode disabled: %s", reason)
        else:
            self.notes.append(f"config {config} failed: {reason}")
            self._log.warning("keras_loadtune: %s failed: %s", config, reason)
        if self._config == config:
            self._config = self._previous_config
        window = self._window
        if window is not None and window.config == config:
            self._window = None
            self._tell_unmeasured(window, "failed", reason)
            return
        rnd = self._round
        if rnd is not None and config in rnd.measured:  # e.g. the switch to the best failed
            rnd.forget(config, self._feasible)
            if self.phase == Phase.STEADY and self.best_config != self._config:
                self._pending_switch = self.best_config

    def _abandon(self, exc: BaseException) -> LoaderConfig | None:
        """Stop tuning after an unexpected error; settle on the best known config."""
        self._note_error(exc)
        self._window = None
        if self._round is not None:
            self._round.pending_seeds = []
        self._close_clock()
        self._enter(Phase.STEADY)
        self.finished_reason = "error"
        self._watch.disarm()
        return self._switch_to(self.best_config)

    def _note_error(self, exc: BaseException) -> None:
        msg = (
            f"tuning stopped after an error ({type(exc).__name__}: {exc}); "
            f"keeping {self.best_config}"
        )
        self.notes.append(msg)
        self._log.warning("keras_loadtune: %s", msg, exc_info=exc)

    # ------------------------------------------------------------------ bookkeeping

    def _refill(self, config: LoaderConfig) -> int:
        """Refill steps of a switch from the current config to `config`."""
        return refill_steps(self.settings, config, self._config)

    def _switch_to(self, config: LoaderConfig) -> LoaderConfig | None:
        if config == self._config:
            return None
        self._switched_from = self._config
        self._previous_config = self._config
        self._config = config
        return config

    def _close_clock(self) -> None:
        if self._started_at is not None:
            self._seconds_done += self._clock() - self._started_at
            self._started_at = None
        if self._fit_mark is not None:
            left = self._left()
            if left is not None:
                self._fit_steps_done += max(self._fit_mark - left, 0)
            self._fit_mark = None

    def _left(self) -> int | None:
        """Training steps left in this fit, `None` when unknown (never raises)."""
        if self._steps_left is None:
            return None
        try:
            left = self._steps_left()
        except Exception:  # a caller's counter must not break tuning
            return None
        return None if left is None else max(int(left), 0)

    def _set_profile(self, records: list[Any], stats: WindowStats, config: LoaderConfig) -> None:
        self.profile, note = profile_from(records, stats, config)
        if note is not None:
            self.notes.append(note)

    def _compute_seeds(self) -> list[LoaderConfig]:
        """Analytical seeds for the current profile (RAM fitted against the baseline,
        whose memory the probe measured; already measured configs are deduped later)."""
        assert self.profile is not None
        return analytical.seed_configs(
            self.profile,
            self._seed_compute_s,
            self.cores,
            self.settings,
            self.baseline,
            modes=tuple(self._modes),
            process_rss_bytes=self._memory.process_rss,
        )

    def _infeasible_reason(self, config: LoaderConfig) -> str | None:
        mode = config.mode
        if mode not in self._modes:
            return f"{mode} mode not available"
        if mode not in self._round_modes:
            return f"{mode} mode cannot help this loader (latency-bound)"
        cap = min(
            self._caps.get(mode, self.settings.worker_cap(mode)),
            max(self.settings.worker_cap(mode), self.baseline.workers),
        )
        if config.workers > cap:
            return f"{config.workers} {mode} workers is over the cap of {cap}"
        return None

    def _feasible(self, record: TrialRecord) -> bool:
        return self._memory.excess(record.rss_bytes) <= 0

    def _record_measured(self, window: TrialWindow, stats: WindowStats) -> None:
        """Record a measured window and tell Optuna (a fixed trial if it has none).

        If Optuna fails, the measurement is kept and the error re-raised, so that
        `observe` settles on the best known config.
        """
        error: Exception | None = None
        if window.trial is None:  # baseline / verify: recorded through a fixed trial
            try:
                window.trial = self._bridge.ask(config_to_params(window.config))
                self._bridge.suggest(window.trial)
            except Exception as exc:
                error, window.trial = exc, None
        rnd = self._round
        assert rnd is not None
        number = window.trial.number if window.trial is not None else len(self.trials)
        record = rnd.add_measured(window, stats, number, self._feasible)
        self.trials.append(record)
        if window.source == "baseline":
            self.baseline_record = record
        excess = self._memory.excess(window.peak_rss)
        self._log.info(
            "keras_loadtune: trial %d %s: %.1f steps/s, waits %.0f%%%s",
            record.number,
            record.config,
            stats.steps_per_s,
            100 * stats.wait_fraction,
            " (over the RAM budget)" if excess > 0 else "",
        )
        if error is not None:
            raise error
        self._bridge.tell(window.trial, record, value=stats.steps_per_s, constraint=excess)

    def _tell_unmeasured(
        self,
        window: TrialWindow,
        state: TrialOutcome,
        reason: str,
        *,
        partial: bool = False,
        constraint: float = 0.0,
    ) -> None:
        """Record a trial that produced no objective value (pruned or failed)."""
        assert self._round is not None
        record = self._round.add_unmeasured(window, state, reason, partial=partial)
        self.trials.append(record)
        self._log.info(
            "keras_loadtune: trial %d %s %s: %s", record.number, window.config, state, reason
        )
        tell_as = "failed" if state == "failed" else "pruned"
        self._bridge.tell(window.trial, record, constraint=constraint, state=tell_as)


# Names kept for callers of the single-module session (moved to the phase modules).
__all__ = [
    "CONSTRAINT_KEY",
    "TPE_STARTUP_TRIALS",
    "WARM_START_NOISE_SE",
    "WARM_START_TOLERANCE",
    "Event",
    "Phase",
    "StepResult",
    "TrialSource",
    "TuningSession",
    "WarmStart",
    "default_sampler",
    "stored_best",
]
