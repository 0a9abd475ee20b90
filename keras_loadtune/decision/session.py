"""`TuningSession`: the tuning policy as a state machine driven one training step at a time.

The Keras callback stays thin: after every training step it hands the session a
`StepSample`; when the session answers with a `LoaderConfig`, the callback
restarts the loader with it before the next step. Everything else (probing,
seeding, Optuna ask/tell, stopping, drift) lives here, free of TensorFlow, so
the policy is tested against `keras_loadtune.decision.simulator` with a fake clock.

Phases::

    probe ──(wait < threshold)──> compute-bound        (observe_step: None forever)
      │
      └──> tuning ──(budget / patience / floor)──> steady ──(sustained drift)──> tuning
                                                      any phase ──stop()──> stopped

**Warm start.** When the study already holds measured trials (a stored study of the
same workload and host, see `keras_loadtune.persistence`), the probe is skipped: the
first step switches to the stored best config (`stored_best`), which is measured over
one short trial window (source `"warm-start"`). If it runs at least
`WARM_START_TOLERANCE` (0.8) of its stored steps/s (allowing for the window's noise),
or the loader no longer makes training wait, the session settles at once
(`warm_start_kept`). Otherwise it re-tunes with a small budget (`reopen_trials` more
trials): the user's config is measured first (source `"baseline"`), then the
pipeline model's seeds and the sampler, which sees the whole stored history. If the
stored config cannot run at all, the session falls back to the normal probe.

**Search space.** Optuna params `mode` (categorical, always both choices so a
stored study stays compatible when process mode gets disabled), `workers`
(int, `1 .. max(max_workers, baseline.workers)`) and `max_queue_size`. Processes
may not exceed `settings.max_process_workers`, which is smaller than the thread
cap on most machines. A mode-dependent range would give the param `workers`
two distributions in one study, which Optuna samplers handle poorly, so a
proposal over a mode's cap (or in a disabled mode) is *told as pruned without
running* (`klt_state="skipped"`): it costs no training step, and a pruned trial
without intermediate values ranks below every measured one for TPE, whose
default here is multivariate, so it learns the `(mode, workers)` interaction.
When only one mode is allowed, every sampler trial is enqueued with that mode
fixed (the sampler picks the other two params), so nothing is wasted.

**Memory.** `settings.ram_budget_bytes` is the memory the loader may add on top
of the process tree's RSS during the probe. Each told trial carries the user attr
`constraint = [rss - probe_rss - ram_budget]` (<= 0 is feasible) and the same
value as Optuna constraint `"ram_excess_bytes"` (`Trial.set_constraint`, which
Optuna 5 samplers such as TPE read natively, replacing the deprecated
`constraints_func`; `study.best_trial` skips infeasible trials). Configs the
analytical model predicts over budget are told as pruned without running; a trial
whose measured RSS goes over budget is pruned at once. Only feasible, measured
trials can become best.

**Objective.** Steps/s of a trial window (see `measurement.window_stats`). The
baseline is always measured (during the probe), so the result is never a config
measured slower than doing nothing. Among configs within `min_improvement` of the
fastest, the cheapest (threads before processes, then fewer workers, then a
shorter queue) is kept.

Example:

```python
from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings, TuningSession
from keras_loadtune.measurement import StepSample

session = TuningSession(LoaderConfig(), TunerSettings(cores=8, seed=0))
for wait_s, step_s in timings:                 # one pair per training step
    new_config = session.observe_step(StepSample(wait_s, step_s))
    if new_config is not None:
        loader.reconfigure(new_config)          # before the next step
print(session.phase, session.best_config, session.speedup)
```
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keras_loadtune._optuna_logging import quiet_optuna
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision import analytical, resources
from keras_loadtune.decision.settings import MODES, TunerSettings
from keras_loadtune.measurement import (
    DriftDetector,
    LoaderProfile,
    StepSample,
    WindowStats,
    align_to_cycles,
    loader_profile,
    window_is_settled,
    window_stats,
)
from keras_loadtune.trial import (
    ATTR_CONSTRAINT,
    PARAM_MODE,
    PARAM_QUEUE,
    PARAM_WORKERS,
    TrialRecord,
    TrialSource,
    TrialState,
    config_to_params,
)

if TYPE_CHECKING:  # pragma: no cover
    import optuna

PHASES = ("probe", "tuning", "steady", "compute-bound", "stopped")
# Measured steps between two RSS probes during a trial (psutil walks the process tree).
RSS_EVERY = 5
# Fewest probe steps before a clearly input-bound pipeline may end the probe early.
PROBE_MIN_STEPS = 6
# Loader threads whose CPU time per batch is at least this share of a training step
# contend with training for the GIL/cores: tune even when the step barely waits.
CONTENTION_CPU_SHARE = 0.25
# Optuna asks per decision before giving up (skipped proposals cost no training step).
MAX_ASKS_PER_DECISION = 64
# Consecutive duplicate proposals after which the search counts as converged.
MAX_CONSECUTIVE_DUPLICATES = 12
# Producer records kept for re-profiling when drift reopens the study.
RECENT_RECORDS = 512
# Startup trials of the default TPE sampler (the baseline and the seeds count).
TPE_STARTUP_TRIALS = 4
# Name of the Optuna constraint (`Trial.set_constraint`) holding the RAM excess in bytes.
CONSTRAINT_KEY = "ram_excess_bytes"
# A warm-started config is kept if it runs at least this share of its stored steps/s.
WARM_START_TOLERANCE = 0.8
# Standard errors of the verify window's mean added before comparing with the stored figure.
WARM_START_NOISE_SE = 2.0


def _cost_key(config: LoaderConfig) -> tuple[int, int, int]:
    return (int(config.use_multiprocessing), config.workers, config.max_queue_size)


def default_sampler(settings: TunerSettings) -> Any:
    """`settings.sampler`, or the seeded multivariate TPE the session uses by default."""
    import optuna

    if settings.sampler is not None:
        return settings.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=settings.seed, n_startup_trials=TPE_STARTUP_TRIALS, multivariate=True
        )


@dataclass(frozen=True)
class WarmStart:
    """The best config a stored study knows, to start from instead of probing.

    Args:
        study_name: The study it comes from.
        config: The stored best config.
        steps_per_s: Its stored throughput (median over its measurements).
        measurements: How many measured trials ran it.
        baseline_steps_per_s: Stored throughput of this run's baseline config, if any.
    """

    study_name: str
    config: LoaderConfig
    steps_per_s: float
    measurements: int
    baseline_steps_per_s: float | None = None


def stored_best(
    study: optuna.Study,
    baseline: LoaderConfig,
    *,
    min_improvement: float = 0.02,
    allowed: Callable[[LoaderConfig], bool] | None = None,
) -> WarmStart | None:
    """The best measured, feasible config of a study written by `TuningSession`.

    Only trials the tuner measured count (`klt_state="complete"`, RAM constraint <= 0);
    a config measured several times (reruns, a fleet) counts with its median. As when
    tuning, among configs within `min_improvement` of the fastest the cheapest wins.
    `allowed` filters out configs this run cannot use. `None` when nothing qualifies.
    """
    import statistics

    from optuna.trial import TrialState as OptunaState

    from keras_loadtune.trial import ATTR_STATE, params_to_config

    values: dict[LoaderConfig, list[float]] = {}
    for t in study.get_trials(deepcopy=False, states=(OptunaState.COMPLETE,)):
        attrs = t.user_attrs
        if attrs.get(ATTR_STATE) != "complete" or t.value is None:
            continue
        constraint = attrs.get(ATTR_CONSTRAINT) or [0.0]
        if any(float(c) > 0 for c in constraint):
            continue
        try:
            config = params_to_config(t.params)
        except (KeyError, TypeError, ValueError):
            continue
        values.setdefault(config, []).append(float(t.value))
    medians = {c: statistics.median(v) for c, v in values.items()}
    usable = {c: v for c, v in medians.items() if v > 0 and (allowed is None or allowed(c))}
    if not usable:
        return None
    top = max(usable.values())
    close = [c for c, v in usable.items() if v >= (1.0 - min_improvement) * top]
    best = min(close, key=_cost_key)
    return WarmStart(
        study_name=study.study_name,
        config=best,
        steps_per_s=usable[best],
        measurements=len(values[best]),
        baseline_steps_per_s=medians.get(baseline),
    )


def _ask_fixed(study: optuna.Study, params: dict[str, Any]) -> Any:
    """A new RUNNING trial whose `params` are fixed, like `enqueue_trial` + `ask`.

    Made RUNNING in one storage call, so with several processes on one study no other
    process can pop it from the WAITING queue (which would give each of them a trial
    with the other's params). `None` if the study does not expose what this needs
    (the caller then enqueues).
    """
    import datetime

    import optuna
    from optuna.trial import FrozenTrial
    from optuna.trial import TrialState as OptunaState

    storage = getattr(study, "_storage", None)
    study_id = getattr(study, "_study_id", None)
    if storage is None or study_id is None:
        return None
    template = FrozenTrial(
        number=-1,
        state=OptunaState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={"fixed_params": dict(params)},
        intermediate_values={},
        trial_id=-1,
    )
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    local = getattr(study, "_thread_local", None)
    if local is not None:  # as Study.ask: re-read the trials from storage next time
        local.cached_all_trials = None
    return optuna.Trial(study, trial_id)


@dataclass
class _ActiveTrial:
    config: LoaderConfig
    source: TrialSource
    trial: Any  # optuna.Trial
    skip_left: int
    samples: list[StepSample] = field(default_factory=list)
    peak_rss: int | None = None
    startup_s: float | None = None


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
            (see "Warm start" in the module docs); `False` always probes.

    Attributes:
        phase: `"probe"`, `"tuning"`, `"steady"`, `"compute-bound"` or `"stopped"`.
        trials: `TrialRecord`s of the baseline, measured, failed and RAM-skipped
            trials (sampler proposals that were duplicates, over a worker cap or in a
            disabled mode are only in the Optuna study, as `klt_state="skipped"`).
        notes: Human-readable warnings for the report.
        reopen_reasons: Why drift reopened the study, one line per reopen.
        warm_start: The stored best this session started from (`None`: no warm start).
        warm_start_kept: True once the stored best was verified and kept.

    Example:

    ```python
    from keras_loadtune import LoaderConfig
    from keras_loadtune.decision import TunerSettings, TuningSession
    from keras_loadtune.measurement import StepSample

    session = TuningSession(LoaderConfig(), TunerSettings(cores=4, probe_steps=5,
                                                          skip_steps=0))
    for _ in range(6):  # 1 refill step (1 worker) + 5 probe steps
        session.observe_step(StepSample(wait_s=0.0, step_s=0.01))
    session.phase  # 'compute-bound': no waiting, nothing to tune
    ```
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
    ) -> None:
        if not isinstance(baseline, LoaderConfig):
            raise TypeError(
                f"TuningSession: baseline must be a LoaderConfig; got {type(baseline).__name__}."
            )
        if not isinstance(settings, TunerSettings):
            raise TypeError(
                f"TuningSession: settings must be a TunerSettings; got {type(settings).__name__}."
            )
        bad_cores = isinstance(cores, bool) or not isinstance(cores, int) or cores < 1
        if cores is not None and bad_cores:
            raise ValueError(f"TuningSession: cores must be an int >= 1 or None; got {cores!r}.")
        self.baseline = baseline
        self.settings = settings
        self._probe_in_steady_state = bool(probe_in_steady_state)
        self.cores = int(cores if cores is not None else settings.cores)  # type: ignore[arg-type]
        self._clock = clock
        self._rss_probe = rss_probe if rss_probe is not None else resources.process_tree_rss
        self._log = logger if logger is not None else logging.getLogger("keras_loadtune")
        self._study = study
        if study is not None:
            self._check_study_direction(study)

        self.phase = "probe"
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
        self._pending_baseline = False

        self._modes = [m for m in settings.modes if process_mode_available or m != "process"]
        if "process" in settings.modes and not process_mode_available:
            self.notes.append("process mode skipped: the dataset cannot run in worker processes")
        self._loader_config = baseline
        self._previous_config = baseline
        self._pending_switch: LoaderConfig | None = None
        self._probe_samples: list[StepSample] = []
        self._probe_records: list[Any] = []
        self._recent_records: deque[Any] = deque(maxlen=RECENT_RECORDS)
        self._probe_rss: int | None = None
        self._process_rss: int | None = None
        self._measured: dict[LoaderConfig, TrialRecord] = {}
        self._best: TrialRecord | None = None
        self._best_value = 0.0
        self._since_improvement = 0
        self._active: _ActiveTrial | None = None
        self._pending_seeds: list[LoaderConfig] = []
        self._seed_compute_s = 0.0
        self._round_trials = 0
        self._round_limit = settings.max_trials
        self._round_start_steps = 0
        self._round_start_time: float | None = None
        self._duplicates = 0
        self._reopens = 0
        self._drift: DriftDetector | None = None
        self._steady_skip = 0
        self._tuning_steps = 0
        self._seconds_done = 0.0
        self._started_at: float | None = None

    # ------------------------------------------------------------------ public API

    @property
    def best_config(self) -> LoaderConfig:
        """Best feasible measured config so far (the baseline until one beats it)."""
        return self._best.config if self._best is not None else self.baseline

    @property
    def best_record(self) -> TrialRecord | None:
        """The `TrialRecord` of `best_config`, once something was measured."""
        return self._best

    @property
    def current_config(self) -> LoaderConfig:
        """The config the session believes the loader runs now."""
        return self._loader_config

    @property
    def study(self) -> optuna.Study | None:
        """The Optuna study (created when tuning starts)."""
        return self._study

    @property
    def tuning_steps(self) -> int:
        """Training steps spent probing and tuning (all rounds)."""
        return self._tuning_steps

    @property
    def tuning_seconds(self) -> float:
        """Clock seconds spent probing and tuning (all rounds; start-up included)."""
        running = 0.0
        if self._started_at is not None and self.phase in ("probe", "tuning"):
            running = self._clock() - self._started_at
        return self._seconds_done + running

    @property
    def compute_bound(self) -> bool:
        """Whether the probe found the baseline not input-bound."""
        stats = self.probe_stats
        return stats is not None and stats.wait_fraction < self.settings.wait_threshold

    @property
    def speedup(self) -> float | None:
        """Best steps/s over the baseline's steps/s (`None` before both are known)."""
        base = self.baseline_record
        if self._best is None or base is None or not base.steps_per_s:
            return None
        return float(self._best.steps_per_s or 0.0) / float(base.steps_per_s)

    @property
    def pending_seeds(self) -> tuple[LoaderConfig, ...]:
        """Analytical seeds not yet tried, in the order they will run."""
        return tuple(self._pending_seeds)

    @property
    def modes(self) -> tuple[str, ...]:
        """Worker modes still allowed (process mode drops out after a failure)."""
        return tuple(self._modes)

    def observe_step(self, sample: StepSample) -> LoaderConfig | None:
        """Record one training step; return a config to switch the loader to now, or `None`.

        Never raises because of Optuna or policy errors: they are logged, noted, and
        the session settles on the best known config.
        """
        phase = self.phase
        if phase in ("compute-bound", "stopped"):
            return None
        try:
            if phase == "steady":
                return self._steady_step(sample)
            if self._started_at is None:
                self._started_at = self._clock()
                self._round_start_time = self._started_at
            self._tuning_steps += 1
            if phase == "probe" and self._warm_pending:
                self._warm_pending = False
                warm = self._load_warm_start()
                if warm is not None:
                    return self._begin_warm_start(warm)
            if phase == "probe":
                return self._probe_step(sample)
            return self._tuning_step(sample)
        except Exception as exc:
            return self._abandon(exc)

    def observe_loader(self, records: Iterable[Any]) -> None:
        """Add per-batch producer records (`produce_wall_s`, `produce_cpu_s`, `nbytes`)."""
        if self.phase in ("compute-bound", "stopped"):
            return
        records = list(records)
        if self.phase == "probe":
            self._probe_records.extend(records)
        self._recent_records.extend(records)

    def observe_startup(self, config: LoaderConfig, seconds: float) -> None:
        """Record the worker start-up seconds of a reconfigure to `config`."""
        active = self._active
        if active is not None and active.config == config:
            active.startup_s = float(seconds)
        self._log.debug("loader restart to %s took %.3f s", config, seconds)

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
        if self.phase == "stopped":
            return None
        try:
            active = self._active
            if active is not None:
                self._active = None
                min_steps, _ = self._window_steps(active.config)
                if len(active.samples) >= min_steps:
                    # Enough of the window ran to count: a trial cut short by the end of
                    # training is still a measurement, not a loss.
                    stats = window_stats(align_to_cycles(active.samples))
                    self._record_measured(
                        active.config,
                        active.source,
                        stats,
                        active.peak_rss,
                        active.startup_s,
                        active.trial,
                    )
                else:
                    self._tell_unmeasured(active, "pruned", f"stopped: {reason}", partial=True)
        except Exception as exc:
            self._note_error(exc)
        self._close_round()
        if self.finished_reason is None:
            self.finished_reason = reason
        self.phase = "stopped"
        self._drift = None
        self._log.info("keras_loadtune: stopped (%s); keeping %s", reason, self.best_config)
        return self._switch_to(self.best_config)

    # ------------------------------------------------------------------ phases

    def _probe_step(self, sample: StepSample) -> LoaderConfig | None:
        s = self.settings
        self._probe_samples.append(sample)
        skip = 0 if self._probe_in_steady_state else self._refill_steps(self.baseline)
        probe_steps = max(s.probe_steps, 2 * analytical.concurrency(self.baseline))
        measured = self._probe_samples[skip:]
        early = len(measured) < probe_steps and self._clearly_input_bound(measured)
        if len(measured) < probe_steps and not early:
            return None
        stats = window_stats(align_to_cycles(measured[-PROBE_MIN_STEPS:] if early else measured))
        self.probe_stats = stats
        self._probe_rss = self._read_rss()
        contention = self._loader_contention(stats)
        if stats.wait_fraction < s.wait_threshold and contention is None:
            self.phase = "compute-bound"
            self.finished_reason = "compute-bound"
            self._close_round()
            self._log.info(
                "keras_loadtune: not input-bound (waits %.1f%% of each step < %.0f%%); "
                "keeping %s, no tuning.",
                100 * stats.wait_fraction,
                100 * s.wait_threshold,
                self.baseline,
            )
            return None
        if contention is not None:
            self._log.info("keras_loadtune: %s", contention)
        self.profile = self._profile_from(self._probe_records, stats, self.baseline)
        self.phase = "tuning"
        self._log.info(
            "keras_loadtune: input-bound (waits %.0f%% of each step at %.1f steps/s on %s); "
            "tuning.",
            100 * stats.wait_fraction,
            stats.steps_per_s,
            self.baseline,
        )
        self._record_measured(self.baseline, "baseline", stats, self._probe_rss, None, None)
        self.baseline_record = self._measured[self.baseline]
        self._seed_compute_s = stats.median_compute_s
        self._pending_seeds = self._compute_seeds()
        self._log.info(
            "keras_loadtune: pipeline model seeds: %s",
            ", ".join(str(c) for c in self._pending_seeds) or "none",
        )
        return self._next()

    def _clearly_input_bound(self, samples: list[StepSample]) -> bool:
        """An early end to the probe: every one of the last few steps waited a lot.

        Every probe step on a slow loader costs a full produce time, so once each of the
        last `PROBE_MIN_STEPS` steps waited at least four times `wait_threshold` of its
        time, more probe steps would only confirm it (the baseline is then measured on
        those steps). Borderline pipelines still run the whole probe.
        """
        n = len(samples)
        if n < max(PROBE_MIN_STEPS, 2 * analytical.concurrency(self.baseline)):
            return False
        line = 4 * self.settings.wait_threshold
        return all(x.wait_s >= line * x.step_s for x in samples[-PROBE_MIN_STEPS:])

    def _loader_contention(self, stats: WindowStats) -> str | None:
        """Why the loader may slow training although the step barely waits, or None.

        Loader *threads* doing CPU work (pure Python above all) run inside the trainer's
        process: they hold its GIL and share its cores, so they slow every training
        step instead of making it wait. The probe then shows a small wait and a long
        "compute" time, and only moving that work out of the process can tell. A loader
        whose CPU time per batch is a sizeable share of the step counts as contending.
        """
        if self.baseline.use_multiprocessing or not self._probe_records:
            return None
        try:
            profile = loader_profile(self._probe_records)
        except ValueError:
            return None
        step_s = stats.mean_step_s
        if step_s <= 0 or profile.cpu_ratio < 0.5:
            return None
        share = profile.produce_cpu_s / step_s
        if share < CONTENTION_CPU_SHARE:
            return None
        return (
            f"loader threads use {profile.produce_cpu_s * 1e3:.1f} ms of CPU per batch "
            f"({share:.0%} of a {step_s * 1e3:.1f} ms step) inside the trainer's process; "
            "they compete with training for the GIL and cores, so tuning although the wait "
            f"is only {stats.wait_fraction:.1%}"
        )

    def _tuning_step(self, sample: StepSample) -> LoaderConfig | None:
        s = self.settings
        active = self._active
        if active is None:
            return self._next()
        if active.skip_left > 0:
            active.skip_left -= 1
            return None
        active.samples.append(sample)
        n = len(active.samples)
        if n == 1 or n % RSS_EVERY == 0:
            rss = self._read_rss()
            if rss is not None:
                active.peak_rss = max(active.peak_rss or 0, rss)
                if self._rss_excess(rss) > 0:
                    return self._prune_for_ram(active, rss)
        budget_reason = self._budget_spent()
        min_steps, max_steps = self._window_steps(active.config)
        if budget_reason is not None and n < min_steps:
            self._active = None
            self._tell_unmeasured(active, "pruned", budget_reason, partial=True)
            return self._finish(budget_reason)
        if budget_reason is None and not window_is_settled(
            active.samples,
            min_steps=min_steps,
            max_steps=max_steps,
            rel_tol=s.settle_rel_tol,
        ):
            return None
        self._active = None
        rss = self._read_rss()
        if rss is not None:
            active.peak_rss = max(active.peak_rss or 0, rss)
            if self._rss_excess(rss) > 0:
                return self._prune_for_ram(active, rss)
        stats = window_stats(align_to_cycles(active.samples))
        if active.config.use_multiprocessing and active.peak_rss is not None:
            self._learn_process_rss(active.config, active.peak_rss)
        self._record_measured(
            active.config, active.source, stats, active.peak_rss, active.startup_s, active.trial
        )
        if active.source == "warm-start":
            return self._after_warm_start(active.config, stats)
        return self._next()

    def _prune_for_ram(self, active: _ActiveTrial, rss: int) -> LoaderConfig | None:
        """Stop a trial whose measured memory went over the budget, then move on."""
        self._active = None
        over = self._rss_excess(rss)
        if self._learn_process_rss(active.config, rss):
            # Now that a worker process's memory is known, re-fit the seeds to the budget.
            fresh = self._compute_seeds()
            self._pending_seeds = [c for c in fresh if c != active.config] + self._pending_seeds
        self._tell_unmeasured(
            active,
            "pruned",
            f"RSS {rss / 2**20:.0f} MiB, {over / 2**20:.0f} MiB over the RAM budget",
            partial=True,
            constraint=over,
        )
        return self._next()

    def _load_warm_start(self) -> WarmStart | None:
        """The stored best of the study, or `None` (empty study, nothing usable, error)."""
        study = self._study
        if study is None:
            return None
        try:
            with quiet_optuna():
                return stored_best(
                    study,
                    self.baseline,
                    min_improvement=self.settings.min_improvement,
                    allowed=lambda c: self._infeasible_reason(c) is None,
                )
        except Exception as exc:  # an unreadable study: probe as if it were empty
            self.notes.append(f"could not read the stored study ({type(exc).__name__}: {exc})")
            self._log.warning("keras_loadtune: could not read the stored study: %s", exc)
            return None

    def _begin_warm_start(self, warm: WarmStart) -> LoaderConfig | None:
        """Skip the probe: switch to the stored best and measure one trial window."""
        self.warm_start = warm
        self._probe_rss = self._read_rss()  # the loader still runs the baseline
        self.phase = "tuning"
        self._log.info(
            "keras_loadtune: warm start from study %r: verifying %s (stored %.1f steps/s "
            "over %d measurement(s))",
            warm.study_name,
            warm.config,
            warm.steps_per_s,
            warm.measurements,
        )
        trial = self._ask(config_to_params(warm.config))
        config = self._suggest(trial)
        # Skip the refill even without a switch: the loader only just started.
        self._active = _ActiveTrial(config, "warm-start", trial, self._refill_steps(config))
        return self._switch_to(config)

    def _after_warm_start(self, config: LoaderConfig, stats: WindowStats) -> LoaderConfig | None:
        """Keep the verified stored config, or re-tune with a small budget."""
        warm = self.warm_start
        assert warm is not None
        s = self.settings
        measured = float(stats.steps_per_s)
        noise = WARM_START_NOISE_SE * stats.cv / max(stats.steps, 1) ** 0.5
        ratio = measured / warm.steps_per_s
        figures = f"{measured:.1f} steps/s vs {warm.steps_per_s:.1f} stored"
        if ratio * (1.0 + noise) >= WARM_START_TOLERANCE or stats.wait_fraction < s.wait_threshold:
            self.warm_start_kept = True
            return self._finish(f"warm start from study {warm.study_name!r}: {figures}")
        note = (
            f"warm start: {config} ran {figures} ({ratio:.0%}, under "
            f"{WARM_START_TOLERANCE:.0%}); re-tuned with {s.reopen_trials} more trials"
        )
        self.notes.append(note)
        self._log.warning("keras_loadtune: %s", note)
        self._round_limit = s.reopen_trials + 2  # + the warm-start and baseline windows
        records = list(self._recent_records)[-max(s.drift_window_steps, 16) :]
        self.profile = self._profile_from(records, stats, config)
        self._seed_compute_s = stats.median_compute_s
        self._pending_baseline = True
        self._pending_seeds = self._compute_seeds()
        return self._next()

    def _warm_start_failed(self) -> LoaderConfig | None:
        """The stored config did not run (failed / over the RAM budget): probe as usual."""
        warm = self.warm_start
        assert warm is not None
        self.notes.append(
            f"warm start: {warm.config} from study {warm.study_name!r} could not be "
            "measured; probed and tuned from the start"
        )
        self.phase = "probe"
        self._probe_samples = []
        self._probe_records = []
        return self._switch_to(self.baseline)

    def _steady_step(self, sample: StepSample) -> LoaderConfig | None:
        if self._pending_switch is not None:
            target, self._pending_switch = self._pending_switch, None
            return self._switch_to(target)
        if self._drift is None:
            return None
        if self._steady_skip > 0:
            self._steady_skip -= 1
            return None
        if not self._drift.update(sample):
            return None
        return self._reopen()

    # ------------------------------------------------------------------ decisions

    def _next(self) -> LoaderConfig | None:
        """Pick the next config to measure (or finish); return it if the loader must switch."""
        if self.warm_start is not None and self.profile is None:
            return self._warm_start_failed()
        reason = self._stop_reason()
        if reason is not None:
            return self._finish(reason)
        for _ in range(MAX_ASKS_PER_DECISION):
            source: TrialSource = "sampler"
            enqueue: dict[str, Any] | None = None
            if self._pending_baseline:
                self._pending_baseline = False
                base = self.baseline
                if base not in self._measured and self._infeasible_reason(base) is None:
                    enqueue, source = config_to_params(base), "baseline"
            if enqueue is None and self._pending_seeds:
                seed = self._pending_seeds.pop(0)
                if self._infeasible_reason(seed) or seed in self._measured:
                    continue
                enqueue, source = config_to_params(seed), "analytical"
            elif enqueue is None and len(self._modes) == 1:
                enqueue = {PARAM_MODE: self._modes[0]}
            trial = self._ask(enqueue)
            config = self._suggest(trial)
            why = self._infeasible_reason(config)
            if why is not None:
                self._tell_skipped(trial, config, why)
                continue
            known = self._measured.get(config)
            if known is not None:
                self._tell_duplicate(trial, known)
                self._duplicates += 1
                if self._duplicates >= MAX_CONSECUTIVE_DUPLICATES:
                    return self._finish("search converged (the sampler only repeats configs)")
                continue
            self._duplicates = 0
            over = self._predicted_excess(config)
            if over > 0:
                active = _ActiveTrial(config, source, trial, 0)
                self._tell_unmeasured(
                    active,
                    "skipped",
                    f"predicted {over / 2**20:.0f} MiB over the RAM budget",
                    constraint=float(over),
                )
                continue
            self._active = _ActiveTrial(config, source, trial, self._refill_steps(config))
            self._log.info("keras_loadtune: trial %d (%s): %s", trial.number, source, config)
            switch = self._switch_to(config)
            if switch is None:  # already running: no refill to skip
                self._active.skip_left = 0
            return switch
        return self._finish("no new config to try")

    def _stop_reason(self) -> str | None:
        s = self.settings
        if self._round_trials >= self._round_limit:
            return f"trial budget spent ({self._round_trials} trials)"
        spent = self._budget_spent()
        if spent is not None:
            return spent
        if self._since_improvement >= s.patience:
            return f"best stable for {self._since_improvement} trials"
        best = self._best
        if (
            best is not None
            and not self._pending_seeds
            and not self._pending_baseline
            and best.wait_fraction is not None
            and best.wait_fraction < s.wait_threshold
        ):
            return f"compute floor reached (waits {100 * best.wait_fraction:.1f}% of each step)"
        if not self._modes:
            return "no worker mode left to try"
        return None

    def _budget_spent(self) -> str | None:
        s = self.settings
        steps = self._tuning_steps - self._round_start_steps
        if s.max_tuning_steps is not None and steps >= s.max_tuning_steps:
            return f"step budget spent ({steps} steps)"
        if s.max_tuning_seconds is not None and self._round_start_time is not None:
            seconds = self._clock() - self._round_start_time
            if seconds >= s.max_tuning_seconds:
                return f"time budget spent ({seconds:.0f} s)"
        return None

    def _finish(self, reason: str) -> LoaderConfig | None:
        s = self.settings
        self._close_round()
        self.phase = "steady"
        self.finished_reason = reason
        self._pending_seeds = []
        best = self._best
        self._drift = None
        if best is not None and self._reopens < s.max_reopens:
            threshold = max(s.wait_threshold, best.wait_fraction or 0.0) + s.drift_margin
            if threshold < 1.0:
                self._drift = DriftDetector(
                    threshold, s.drift_window_steps, s.drift_sustain_windows
                )
        speedup = self.speedup
        self._log.info(
            "keras_loadtune: tuning done (%s): %s%s",
            reason,
            self.best_config,
            f", {speedup:.2f}x the baseline's steps/s" if speedup is not None else "",
        )
        self._steady_skip = self._refill_steps(self.best_config)
        return self._switch_to(self.best_config)

    def _reopen(self) -> LoaderConfig | None:
        s = self.settings
        detector = self._drift
        assert detector is not None
        stats = detector.last_stats
        assert stats is not None
        config = self._loader_config
        reason = (
            f"wait fraction {100 * stats.wait_fraction:.0f}% > {100 * detector.threshold:.0f}% "
            f"for {s.drift_sustain_windows} windows of {s.drift_window_steps} steps on {config}"
        )
        if self._reopens >= s.max_reopens:
            self._drift = None
            self.notes.append(f"drift detected but the reopen budget is spent: {reason}")
            return None
        self._reopens += 1
        self.warm_start_kept = False
        self.reopen_reasons.append(reason)
        self._log.warning("keras_loadtune: input-bound again (%s); reopening the study.", reason)
        self._drift = None
        self.phase = "tuning"
        self.finished_reason = None
        self._started_at = self._clock()
        self._round_start_time = self._started_at
        self._round_start_steps = self._tuning_steps
        self._round_trials = 0
        self._round_limit = s.reopen_trials + 1  # + the re-measured incumbent
        self._measured = {}
        self._best = None
        self._best_value = 0.0
        self._since_improvement = 0
        self._duplicates = 0
        records = list(self._recent_records)[-max(s.drift_window_steps, 16) :]
        self.profile = self._profile_from(records, stats, config)
        # The drift window is a fresh measurement of the incumbent: record it as such.
        self._record_measured(config, "verify", stats, self._read_rss(), None, None)
        self._seed_compute_s = stats.median_compute_s
        self._pending_seeds = self._compute_seeds()
        return self._next()

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
        if self._loader_config == config:
            self._loader_config = self._previous_config
        active = self._active
        if active is not None and active.config == config:
            self._active = None
            self._tell_unmeasured(active, "failed", reason)
            return
        if config in self._measured:  # e.g. the switch to the best config failed
            del self._measured[config]
            self._best = self._pick_best()
            if self.phase == "steady" and self.best_config != self._loader_config:
                self._pending_switch = self.best_config

    def _abandon(self, exc: BaseException) -> LoaderConfig | None:
        """Stop tuning after an unexpected error; settle on the best known config."""
        self._note_error(exc)
        self._active = None
        self._pending_seeds = []
        self._close_round()
        self.phase = "steady"
        self.finished_reason = "error"
        self._drift = None
        return self._switch_to(self.best_config)

    def _note_error(self, exc: BaseException) -> None:
        msg = (
            f"tuning stopped after an error ({type(exc).__name__}: {exc}); "
            f"keeping {self.best_config}"
        )
        self.notes.append(msg)
        self._log.warning("keras_loadtune: %s", msg, exc_info=exc)

    # ------------------------------------------------------------------ bookkeeping

    def _refill_steps(self, config: LoaderConfig) -> int:
        """Steps to ignore after (re)starting the loader with `config`.

        A restarted loader first makes the trainer wait (the refill), then hands out
        the batches its workers built meanwhile at compute speed: a burst that
        would overstate throughput. So skip `skip_steps` plus one step per batch
        that can be prefetched (`analytical.concurrency`).
        """
        return self.settings.skip_steps + analytical.concurrency(config)

    def _window_steps(self, config: LoaderConfig) -> tuple[int, int]:
        """`(min, max)` measured steps of a trial window under `config`.

        With `n` batches in flight, deliveries come in rounds of about `n` steps (a
        burst of ready batches, then a wait), so a window shorter than a round can
        miss the wait. Windows span at least two rounds: `2 x concurrency` steps.
        """
        s = self.settings
        low = max(s.min_trial_steps, 2 * analytical.concurrency(config))
        return low, max(s.max_trial_steps, low)

    def _switch_to(self, config: LoaderConfig) -> LoaderConfig | None:
        if config == self._loader_config:
            return None
        self._previous_config = self._loader_config
        self._loader_config = config
        return config

    def _close_round(self) -> None:
        if self._started_at is not None:
            self._seconds_done += self._clock() - self._started_at
            self._started_at = None

    def _read_rss(self) -> int | None:
        try:
            return int(self._rss_probe())
        except Exception as exc:  # a probe failure must not stop tuning
            self._log.debug("keras_loadtune: RSS probe failed: %s", exc)
            return None

    def _budget(self) -> int:
        return int(self.settings.ram_budget_bytes)  # type: ignore[arg-type]

    def _rss_excess(self, rss: int | None) -> float:
        if rss is None or self._probe_rss is None:
            return 0.0
        return float(rss - self._probe_rss - self._budget())

    def _predicted_excess(self, config: LoaderConfig) -> float:
        profile = self.profile
        if profile is None:
            return 0.0
        extra = analytical.extra_rss_bytes(
            config, profile.batch_nbytes, process_rss_bytes=self._process_rss
        )
        base = analytical.extra_rss_bytes(
            self.baseline, profile.batch_nbytes, process_rss_bytes=self._process_rss
        )
        return float(extra - base - self._budget())

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
            process_rss_bytes=self._process_rss,
        )

    def _learn_process_rss(self, config: LoaderConfig, rss: int) -> bool:
        """Solve the memory model for the RSS of one worker process; True if learned."""
        if not config.use_multiprocessing or self._probe_rss is None or self.profile is None:
            return False
        base = self.baseline
        nbytes = self.profile.batch_nbytes
        coef = config.workers - (base.workers if base.use_multiprocessing else 0)
        if coef <= 0:
            return False
        const = analytical.extra_rss_bytes(config, nbytes, process_rss_bytes=0)
        const -= analytical.extra_rss_bytes(base, nbytes, process_rss_bytes=0)
        per_process = (rss - self._probe_rss - const) / coef
        if per_process <= 0:
            return False
        self._process_rss = int(per_process)
        return True

    def _infeasible_reason(self, config: LoaderConfig) -> str | None:
        mode = config.mode
        if mode not in self._modes:
            return f"{mode} mode not available"
        cap = self.settings.worker_cap(mode)
        if config.workers > cap:
            return f"{config.workers} {mode} workers is over the cap of {cap}"
        return None

    def _profile_from(
        self, records: list[Any], stats: WindowStats, config: LoaderConfig
    ) -> LoaderProfile:
        if records:
            return loader_profile(records)
        # No producer records: infer the per-batch wall time from the step rate and
        # leave the CPU share undecided (seeds both modes).
        self.notes.append("no loader records: the pipeline model used step times only")
        wall = analytical.concurrency(config) / max(stats.steps_per_s, 1e-9)
        return LoaderProfile(
            produce_wall_s=wall,
            produce_cpu_s=0.5 * wall,
            cpu_ratio=0.5,
            batch_nbytes=0,
            jitter_cv=stats.cv,
            batches=0,
        )

    def _pick_best(self) -> TrialRecord | None:
        feasible = [
            r
            for r in self._measured.values()
            if r.state == "complete"
            and r.steps_per_s is not None
            and self._rss_excess(r.rss_bytes) <= 0
        ]
        if not feasible:
            return None
        top = max(float(r.steps_per_s) for r in feasible)  # type: ignore[arg-type]
        close = [
            r
            for r in feasible
            if float(r.steps_per_s) >= (1.0 - self.settings.min_improvement) * top  # type: ignore[arg-type]
        ]
        return min(close, key=lambda r: _cost_key(r.config))

    def _record_measured(
        self,
        config: LoaderConfig,
        source: TrialSource,
        stats: WindowStats,
        rss: int | None,
        startup_s: float | None,
        trial: Any,
    ) -> None:
        error: Exception | None = None
        if trial is None:  # baseline / verify: recorded through an enqueued trial
            try:
                trial = self._ask(config_to_params(config))
                self._suggest(trial)
            except Exception as exc:  # keep the measurement, then let observe_step bail out
                error, trial = exc, None
        excess = self._rss_excess(rss)
        record = TrialRecord(
            number=trial.number if trial is not None else len(self.trials),
            config=config,
            state="complete",
            source=source,
            steps_per_s=stats.steps_per_s,
            wait_fraction=stats.wait_fraction,
            rss_bytes=rss,
            startup_s=startup_s,
            steps=stats.steps,
            extra={"median_step_s": stats.median_step_s, "cv": stats.cv},
        )
        self.trials.append(record)
        self._measured[config] = record
        if source == "baseline":
            self.baseline_record = record
        self._round_trials += 1
        value = float(stats.steps_per_s)
        if self._best is None or value > self._best_value * (1.0 + self.settings.min_improvement):
            self._since_improvement = 0
        else:
            self._since_improvement += 1
        self._best_value = max(self._best_value, value)
        self._best = self._pick_best()
        self._log.info(
            "keras_loadtune: trial %d %s: %.1f steps/s, waits %.0f%%%s",
            record.number,
            config,
            value,
            100 * stats.wait_fraction,
            " (over the RAM budget)" if excess > 0 else "",
        )
        if error is not None:
            raise error
        self._tell(trial, record, value=value, constraint=excess)

    # ------------------------------------------------------------------ Optuna

    def _ensure_study(self) -> optuna.Study:
        if self._study is None:
            import optuna

            sampler = default_sampler(self.settings)
            with quiet_optuna():
                self._study = optuna.create_study(direction="maximize", sampler=sampler)
        return self._study

    def _check_study_direction(self, study: optuna.Study) -> None:
        try:
            direction = study.direction
        except Exception as exc:  # a broken storage is handled when tuning starts
            self._log.debug("keras_loadtune: could not read the study direction: %s", exc)
            return
        if direction.name != "MAXIMIZE":
            raise ValueError(
                "TuningSession: the study must maximize steps/s "
                f"(optuna.create_study(direction='maximize')); got {direction.name}."
            )

    def _ask(self, enqueue: dict[str, Any] | None) -> Any:
        study = self._ensure_study()
        with quiet_optuna():
            if enqueue is not None:
                trial = _ask_fixed(study, enqueue)
                if trial is not None:
                    return trial
                study.enqueue_trial(enqueue)
            return study.ask()

    def _suggest(self, trial: Any) -> LoaderConfig:
        s = self.settings
        workers_high = max(s.max_workers, self.baseline.workers)
        q_low = min(s.queue_size_range[0], self.baseline.max_queue_size)
        q_high = max(s.queue_size_range[1], self.baseline.max_queue_size)
        mode = trial.suggest_categorical(PARAM_MODE, list(MODES))
        workers = trial.suggest_int(PARAM_WORKERS, 1, workers_high)
        queue = trial.suggest_int(PARAM_QUEUE, q_low, q_high)
        return LoaderConfig(int(workers), int(queue), mode == "process")

    def _tell(
        self,
        trial: Any,
        record: TrialRecord,
        *,
        value: float | None = None,
        constraint: float = 0.0,
        state: str = "complete",
    ) -> None:
        import optuna

        attrs = record.optuna_user_attrs()
        attrs[ATTR_CONSTRAINT] = [float(constraint)]
        for key, val in attrs.items():
            trial.set_user_attr(key, val)
        if hasattr(trial, "set_constraint"):  # Optuna >= 5: samplers read it natively
            trial.set_constraint(CONSTRAINT_KEY, float(constraint))
        optuna_state = {
            "complete": optuna.trial.TrialState.COMPLETE,
            "pruned": optuna.trial.TrialState.PRUNED,
            "failed": optuna.trial.TrialState.FAIL,
        }[state]
        with quiet_optuna():
            if optuna_state == optuna.trial.TrialState.COMPLETE:
                self._study.tell(trial, value)  # type: ignore[union-attr]
            else:
                self._study.tell(trial, state=optuna_state)  # type: ignore[union-attr]

    def _tell_skipped(self, trial: Any, config: LoaderConfig, reason: str) -> None:
        """A sampler proposal that cannot run here: pruned in Optuna, not in `trials`."""
        record = TrialRecord(trial.number, config, "skipped", "sampler", reason=reason)
        self._tell(trial, record, state="pruned")

    def _tell_duplicate(self, trial: Any, known: TrialRecord) -> None:
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
        self._tell(
            trial,
            record,
            value=float(known.steps_per_s or 0.0),
            constraint=self._rss_excess(known.rss_bytes),
        )

    def _tell_unmeasured(
        self,
        active: _ActiveTrial,
        state: TrialState,
        reason: str,
        *,
        partial: bool = False,
        constraint: float = 0.0,
    ) -> None:
        """Record a trial that produced no objective value (pruned, failed or skipped)."""
        stats = None
        if partial and active.samples:
            stats = window_stats(active.samples)
        record = TrialRecord(
            number=active.trial.number,
            config=active.config,
            state=state,
            source=active.source,
            steps_per_s=stats.steps_per_s if stats else None,
            wait_fraction=stats.wait_fraction if stats else None,
            rss_bytes=active.peak_rss,
            startup_s=active.startup_s,
            steps=stats.steps if stats else 0,
            reason=reason,
        )
        self.trials.append(record)
        if state == "pruned":  # it cost training steps
            self._round_trials += 1
            self._since_improvement += 1
        self._log.info(
            "keras_loadtune: trial %d %s %s: %s", record.number, active.config, state, reason
        )
        self._tell(
            active.trial,
            record,
            constraint=constraint,
            state="failed" if state == "failed" else "pruned",
        )
