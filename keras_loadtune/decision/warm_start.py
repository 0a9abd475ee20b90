"""Warm start: start from the best config a stored study knows, and verify it.

When the study already holds measured trials (a stored study of the same workload
and host, see `keras_loadtune.fingerprint`), the session skips the probe: it switches
to `stored_best(...)` and measures it over one trial window (phase `TUNING`, `verifying`; source
`"warm-start"`). `verify` keeps it if it runs at least `WARM_START_TOLERANCE` of its
stored steps/s (allowing `WARM_START_NOISE_SE` standard errors of the window's mean),
or if the loader no longer makes training wait; otherwise the session re-tunes with a
small budget. If the stored config cannot run at all, the session probes as usual.
`WarmStartFlow` holds these steps for the session.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.measurement import StepSample, window_stats
>>> warm = WarmStart("s", LoaderConfig(4, 5), steps_per_s=100.0, measurements=2)
>>> stats = window_stats([StepSample(0.002, 0.0105)] * 20)
>>> verify(warm, stats, wait_threshold=0.05).kept
True
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.process_policy import CPU_HEAVY_RATIO
from keras_loadtune.decision.ranking import cheapest_within, rank_key
from keras_loadtune.decision.search import SearchRound
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import WindowStats
from keras_loadtune.trial import (
    ATTR_CONSTRAINT,
    ATTR_ENOUGH_IN_FLIGHT,
    ATTR_PROFILE,
    ATTR_STATE,
    ATTR_THREADS_RAM_ONLY,
    params_to_config,
)

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from keras_loadtune.decision.memory import MemoryBudget
    from keras_loadtune.decision.optuna_bridge import StudyBridge
    from keras_loadtune.decision.planner import Planner

# A warm-started config is kept if it runs at least this share of its stored steps/s.
WARM_START_TOLERANCE = 0.8
# Standard errors of the verify window's mean added before comparing with the stored figure.
WARM_START_NOISE_SE = 2.0
# Timing profiles match when their produce times are within this factor of each other
# and their CPU shares within `CPU_SHARE_TOLERANCE`.
PRODUCE_TIME_FACTOR = 1.5
CPU_SHARE_TOLERANCE = 0.25


def profiles_match(stored: Mapping[str, float] | None, current: Mapping[str, float] | None) -> bool:
    """Whether two timing profiles (`produce_ms`, `cpu_ratio`) describe the same loader.

    Unknown profiles match (the verify window then decides).

    Example:

    >>> stored = {"produce_ms": 45.0, "cpu_ratio": 0.1}
    >>> profiles_match(stored, {"produce_ms": 44.0, "cpu_ratio": 0.12})  # run-to-run noise
    True
    >>> profiles_match(stored, {"produce_ms": 160.0, "cpu_ratio": 0.1})  # another loader
    False
    """
    if not stored or not current:
        return True
    try:
        a, b = float(stored["produce_ms"]), float(current["produce_ms"])
        ca, cb = float(stored["cpu_ratio"]), float(current["cpu_ratio"])
    except (KeyError, TypeError, ValueError):
        return True
    if a <= 0 or b <= 0:
        return True
    return max(a, b) / min(a, b) <= PRODUCE_TIME_FACTOR and abs(ca - cb) <= CPU_SHARE_TOLERANCE


@dataclass(frozen=True)
class WarmStart:
    """The best config a stored study knows, to start from instead of probing.

    Args:
        study_name: The study it comes from.
        config: The stored best config.
        steps_per_s: Its stored throughput (median over its measurements).
        measurements: How many measured trials ran it.
        baseline_steps_per_s: Stored throughput of this run's baseline config, if any.

    Example:

    >>> WarmStart("s", LoaderConfig(), 10.0, 1).measurements
    1
    """

    study_name: str
    config: LoaderConfig
    steps_per_s: float
    measurements: int
    baseline_steps_per_s: float | None = None

    def describe(self) -> str:
        """One line for the log when verification starts."""
        return (
            f"warm start from study {self.study_name!r}: verifying {self.config} (stored "
            f"{self.steps_per_s:.1f} steps/s over {self.measurements} measurement(s))"
        )

    def failed_note(self) -> str:
        """The report note when the stored config could not be measured."""
        return (
            f"warm start: {self.config} from study {self.study_name!r} could not be "
            "measured; probed and tuned from the start"
        )


def stored_best(
    study: optuna.Study,
    baseline: LoaderConfig,
    *,
    min_improvement: float = 0.02,
    allowed: Callable[[LoaderConfig], bool] | None = None,
    profile: Mapping[str, float] | None = None,
) -> WarmStart | None:
    """The best measured, feasible config of a study written by `TuningSession`.

    Only trials the tuner measured count (`klt_state="complete"`, RAM constraint <= 0);
    a config measured several times (reruns, a fleet) counts with its median. As when
    tuning, among configs within `min_improvement` of the fastest the cheapest wins
    (`ranking.rank_key` as the session that measured them ranked, else by `profile`:
    more threads first, up to enough, when the loader is not CPU-heavy).

    Args:
        study: The stored study.
        baseline: This run's config (its stored figure is reported too).
        min_improvement: Tolerance of `ranking.cheapest_within`.
        allowed: Filters out configs this run cannot use.
        profile: This run's timing profile; trials stamped with a profile that does
            not match it (`profiles_match`) are left out.

    Returns:
        The `WarmStart`, or `None` when nothing qualifies.

    Example:

    >>> import optuna
    >>> stored_best(optuna.create_study(direction="maximize"), LoaderConfig()) is None
    True
    """
    from optuna.trial import TrialState

    values: dict[LoaderConfig, list[float]] = {}
    ranked: list[tuple[bool, int | None]] = []  # how their sessions ranked threads
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = t.user_attrs
        if attrs.get(ATTR_STATE) != "complete" or t.value is None:
            continue
        constraint = attrs.get(ATTR_CONSTRAINT) or [0.0]
        if any(float(c) > 0 for c in constraint):
            continue
        if not profiles_match(attrs.get(ATTR_PROFILE), profile):
            continue
        try:
            config = params_to_config(t.params)
        except (KeyError, TypeError, ValueError):
            continue
        values.setdefault(config, []).append(float(t.value))
        if isinstance(attrs.get(ATTR_THREADS_RAM_ONLY), bool):
            enough = attrs.get(ATTR_ENOUGH_IN_FLIGHT)
            enough = enough if isinstance(enough, int) and enough > 0 else None
            ranked.append((attrs[ATTR_THREADS_RAM_ONLY], enough))
    medians = {c: statistics.median(v) for c, v in values.items()}
    usable = {c: v for c, v in medians.items() if v > 0 and (allowed is None or allowed(c))}
    if not usable:
        return None
    cpu_ratio = (profile or {}).get("cpu_ratio")
    if ranked:  # as the sessions that measured these trials ranked them (the last one)
        key = rank_key(*ranked[-1])
    else:
        key = rank_key(cpu_ratio is not None and float(cpu_ratio) < CPU_HEAVY_RATIO)
    best = cheapest_within(usable, min_improvement, key=key)
    return WarmStart(
        study_name=study.study_name,
        config=best,
        steps_per_s=usable[best],
        measurements=len(values[best]),
        baseline_steps_per_s=medians.get(baseline),
    )


def load_stored_best(
    study: optuna.Study,
    baseline: LoaderConfig,
    *,
    min_improvement: float,
    allowed: Callable[[LoaderConfig], bool],
    profile: Mapping[str, float] | None = None,
) -> tuple[WarmStart | None, str | None]:
    """`stored_best(...)`, never raising: `(warm start or None, note if the study was unreadable)`.

    Example:

    >>> import optuna
    >>> load_stored_best(optuna.create_study(direction="maximize"), LoaderConfig(),
    ...                  min_improvement=0.02, allowed=lambda c: True)
    (None, None)
    """
    from keras_loadtune._optuna_logging import quiet_optuna

    try:
        with quiet_optuna():
            warm = stored_best(
                study,
                baseline,
                min_improvement=min_improvement,
                allowed=allowed,
                profile=profile,
            )
    except Exception as exc:  # an unreadable study: probe as if it were empty
        return None, f"could not read the stored study ({type(exc).__name__}: {exc})"
    return warm, None


@dataclass(frozen=True)
class Verification:
    """The verdict on a warm-started config.

    Args:
        kept: Keep it (settle) rather than re-tune.
        ratio: Measured over stored steps/s.
        figures: `"<measured> steps/s vs <stored> stored"`, for notes and logs.
    """

    kept: bool
    ratio: float
    figures: str

    def retune_note(self, config: LoaderConfig, reopen_trials: int) -> str:
        """The report note when the stored config ran too slowly and is re-tuned."""
        return (
            f"warm start: {config} ran {self.figures} ({self.ratio:.0%}, under "
            f"{WARM_START_TOLERANCE:.0%}); re-tuned with {reopen_trials} more trials"
        )


def verify(warm: WarmStart, stats: WindowStats, *, wait_threshold: float) -> Verification:
    """Whether the verify window confirms the stored figure (see the module docs).

    Args:
        warm: The warm start.
        stats: The verify window.
        wait_threshold: Below this wait fraction the config is kept whatever its speed.

    Example:

    >>> from keras_loadtune.measurement import StepSample, window_stats
    >>> w = WarmStart("s", LoaderConfig(4, 5), steps_per_s=100.0, measurements=1)
    >>> verify(w, window_stats([StepSample(0.03, 0.04)] * 20), wait_threshold=0.05).kept
    False
    """
    measured = float(stats.steps_per_s)
    noise = WARM_START_NOISE_SE * stats.cv / max(stats.steps, 1) ** 0.5
    ratio = measured / warm.steps_per_s
    figures = f"{measured:.1f} steps/s vs {warm.steps_per_s:.1f} stored"
    kept = ratio * (1.0 + noise) >= WARM_START_TOLERANCE or stats.wait_fraction < wait_threshold
    return Verification(kept, ratio, figures)


@dataclass(frozen=True)
class Resume:
    """What the session does once the verify window is measured.

    Args:
        finish: Keep the stored config: settle with this reason (`None`: measure more).
        note: The report note when it measures more.
        level: The note's log level.
        retune: Re-tune with a small budget (`False`: measure the user's config only).
    """

    finish: str | None = None
    note: str = ""
    level: int = logging.INFO
    retune: bool = False


class WarmStartFlow:
    """A session's warm start: load the stored best, verify it, keep it or re-tune.

    Works on the session's parts (study bridge, planner, memory budget, the round),
    never on the session: each step returns what the session must do.

    Args:
        settings: Thresholds and the re-tune budget (`reopen_trials`).
        baseline: The user's config.
        bridge: The study bridge (the stored study, this run's timing profile).
        planner: Tells which configs this run can use; seeds a re-tune.
        memory: Measures the RSS the budget is relative to.
        enabled: Try a warm start at the first step.

    Attributes:
        pending: The warm start is still to be tried (the first step).
        verifying: The stored best's verify window runs.
    """

    def __init__(
        self,
        settings: TunerSettings,
        baseline: LoaderConfig,
        bridge: StudyBridge,
        planner: Planner,
        memory: MemoryBudget,
        *,
        enabled: bool,
    ) -> None:
        self.settings, self.baseline = settings, baseline
        self._bridge, self._planner, self._memory = bridge, planner, memory
        self.pending = enabled
        self.verifying = False

    def load(self) -> tuple[WarmStart | None, str | None]:
        """The study's stored best (`None`: no study, nothing usable, unreadable) and a
        note if the study was unreadable; the warm start is no longer pending."""
        self.pending = False
        study = self._bridge.study
        if study is None:
            return None, None
        return load_stored_best(
            study,
            self.baseline,
            min_improvement=self.settings.min_improvement,
            allowed=lambda c: self._planner.infeasible_reason(c) is None,
            profile=self._bridge.profile_attr,
        )

    def unbacked(self, running: LoaderConfig, *, started: bool) -> str | None:
        """The note to probe the baseline on, when the loader `started` on `running`, a
        stored config (a warm hint, not a first move) that `load` found nothing to back;
        `None`: nothing to undo."""
        if not started or running == self.baseline:
            return None
        why = (
            "the stored study could not be opened"
            if self._bridge.study is None
            else "the study holds no measurement of it for this loader's timing profile"
        )
        return f"warm start: started on {running}, but {why}; probing your config"

    def begin(self) -> None:
        """Skip the probe: the loader still runs the baseline, the verify window starts."""
        self._memory.mark_probe()
        self.verifying = True

    def resume(self, warm: WarmStart, stats: WindowStats, config: LoaderConfig) -> Resume:
        """The verdict on the verify window `stats` of `config` (see the module docs)."""
        s = self.settings
        self.verifying = False
        verdict = verify(warm, stats, wait_threshold=s.wait_threshold)
        stored = warm.baseline_steps_per_s
        slower = stored is not None and config != self.baseline and stats.steps_per_s < stored
        if verdict.kept and not slower:
            return Resume(finish=f"warm start from study {warm.study_name!r}: {verdict.figures}")
        if verdict.kept:
            # Never keep a stored config that measured slower than the user's own:
            # measure the user's config now and keep whichever is faster.
            return Resume(
                note=f"warm start: {config} ran {stats.steps_per_s:.1f} steps/s, under your "
                f"config's stored {stored:.1f}; measuring your config to keep the faster"
            )
        return Resume(
            note=verdict.retune_note(config, s.reopen_trials), level=logging.WARNING, retune=True
        )

    def measure_more(self, resume: Resume, stats: WindowStats, rnd: SearchRound) -> None:
        """Set the round `rnd` up to measure the user's config (and re-tune if
        `resume.retune`), the planner's profile already set from the verify window `stats`."""
        rnd.pending_baseline = True
        if not resume.retune:  # one more trial: the baseline
            rnd.limit = rnd.trials + 1
            self._planner.compute_s = stats.median_compute_s
        else:
            rnd.limit = self.settings.reopen_trials + 2  # + the warm-start and baseline windows
            rnd.pending_seeds = self._planner.seed(stats)


__all__ = [
    "WARM_START_NOISE_SE",
    "WARM_START_TOLERANCE",
    "Resume",
    "Verification",
    "WarmStart",
    "WarmStartFlow",
    "load_stored_best",
    "profiles_match",
    "stored_best",
    "verify",
]
