"""`Probe`: measure the user's config and decide whether the loader is worth tuning.

The probe skips the refill after the loader started (unless the callback says the
loader was already in steady state), then measures at least `settings.probe_steps`
and two delivery rounds (`2 x in_flight(baseline)`). A clearly input-bound pipeline
ends early: once each of the last `CONCLUSIVE_STEPS` steps waited at least
`CONCLUSIVE_WAIT` of its time (80% over 3 steps), or each of the last
`PROBE_MIN_STEPS` steps four times `wait_threshold`, more steps would only confirm it.
Inline (Keras's default: the training thread makes each batch), a step's wait is its
own batch's production time, with no queue to refill and no burst to smooth out:
`CONCLUSIVE_STEPS` steps that each wait `INLINE_CONCLUSIVE_WAIT` of their time and agree
within `INLINE_STEADY_SPREAD` are enough (the baseline's rate is measured on them).
A pool delivers in rounds (a wait, then a burst): once its measured steps hold whole
delivery cycles (`align_to_cycles`) that wait four times `wait_threshold`, the probe
ends on them, before its two rounds of `in_flight(baseline)` steps.

`Probe.add` returns a `ProbeVerdict` when done, `None` before. The verdict says
whether the loader is input-bound, or contends with training (loader *threads* whose
CPU time per batch is a sizeable share of the step: they slow every step through the
GIL and shared cores instead of making it wait).

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision.settings import TunerSettings
>>> from keras_loadtune.measurement import StepSample
>>> probe = Probe(TunerSettings(probe_steps=4, skip_steps=0), LoaderConfig())
>>> verdicts = [probe.add(StepSample(wait_s=0.0, step_s=0.01)) for _ in range(5)]
>>> verdicts[-1].input_bound
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.delivery import refill_steps
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.engine.arithmetic import in_flight
from keras_loadtune.measurement import (
    LoaderProfile,
    StepSample,
    WindowStats,
    align_to_cycles,
    loader_profile,
    window_stats,
)

# Fewest probe steps before a clearly input-bound pipeline may end the probe early.
PROBE_MIN_STEPS = 6
# A batch made inline in less than this costs less than handing it over from a worker
# thread would (wake-up and GIL hand-off, tens of microseconds): tuning cannot help.
INLINE_HANDOVER_S = 50e-6
# A step whose batch came with another one ready waited for the hand-over, not the
# loader, only if its wait was this short: a pool that delivers in bursts (many
# threads on a slow store) hands its first batch over with the rest of the burst
# ready, after a wait that was the loader's.
HANDOVER_MAX_WAIT_S = 1e-3
# Evidence that is conclusive sooner: this many steps in a row, each waiting at
# least this share of its time, say input-bound (no config waits 80% by chance).
CONCLUSIVE_STEPS = 3
CONCLUSIVE_WAIT = 0.8
# Inline, `CONCLUSIVE_STEPS` steps that each wait at least this share of their time, and
# whose times are within `INLINE_STEADY_SPREAD` of each other, end the probe.
INLINE_CONCLUSIVE_WAIT = 0.5
INLINE_STEADY_SPREAD = 0.10
# Loader threads whose CPU time per batch is at least this share of a training step
# contend with training for the GIL/cores: tune even when the step barely waits.
CONTENTION_CPU_SHARE = 0.25


def profile_from(
    records: list[Any], stats: WindowStats, config: LoaderConfig
) -> tuple[LoaderProfile, str | None]:
    """The loader profile of producer records, or one inferred from step times.

    Returns:
        `(profile, note)`; `note` says the model used step times only, else `None`.

    Example:

    >>> from keras_loadtune.measurement import window_stats
    >>> stats = window_stats([StepSample(0.03, 0.04)] * 4)
    >>> profile, note = profile_from([], stats, LoaderConfig())
    >>> round(profile.produce_wall_s, 3), note is not None
    (0.04, True)
    """
    if records:
        return loader_profile(records), None
    wall = in_flight(config) / max(stats.steps_per_s, 1e-9)
    profile = LoaderProfile(
        produce_wall_s=wall,
        produce_cpu_s=0.5 * wall,
        cpu_ratio=0.5,
        batch_nbytes=0,
        jitter_cv=stats.cv,
        batches=0,
    )
    return profile, "no loader records: the pipeline model used step times only"


@dataclass(frozen=True)
class ProbeVerdict:
    """What the probe found.

    Args:
        stats: The baseline's window.
        input_bound: Tuning is worth it (the step waits, or the loader contends).
        contention: Why the loader contends with training although the step barely
            waits, or `None`.
        records: The producer records seen during the probe.
        handover_only: The steps waited, but for batches already made (the next one was
            ready too), or, inline, for batches cheaper than a worker's hand-over: a
            cost no loader config removes.
    """

    stats: WindowStats
    input_bound: bool
    contention: str | None
    records: list[Any]
    handover_only: bool = False

    def summary(self, wait_threshold: float, baseline: LoaderConfig) -> str:
        """One line for the log: tune `baseline` or not."""
        stats = self.stats
        if self.handover_only and baseline.inline:
            return (
                f"not input-bound (waits {100 * stats.wait_fraction:.1f}% of each step, "
                f"{stats.median_wait_s * 1e6:.0f} us per batch made inline: less than a "
                f"worker's hand-over would cost); keeping {baseline}, no tuning."
            )
        if self.handover_only:
            return (
                f"not input-bound (waits {100 * stats.wait_fraction:.1f}% of each step, but "
                f"for batches already made: the loader keeps up); keeping {baseline}, no tuning."
            )
        if not self.input_bound:
            return (
                f"not input-bound (waits {100 * stats.wait_fraction:.1f}% of each step < "
                f"{100 * wait_threshold:.0f}%); keeping {baseline}, no tuning."
            )
        return (
            f"input-bound (waits {100 * stats.wait_fraction:.0f}% of each step at "
            f"{stats.steps_per_s:.1f} steps/s on {baseline}); tuning."
        )

    def floor_by_wait(self, wait_threshold: float) -> bool:
        """Whether the wait can show the compute floor (not with contention alone, when
        the step barely waits)."""
        return self.contention is None or self.stats.wait_fraction >= wait_threshold


class Probe:
    """Measures the baseline, one step at a time.

    Args:
        settings: `probe_steps`, `skip_steps`, `wait_threshold`.
        baseline: The config the loader runs.
        in_steady_state: The loader already ran before the probe: no refill to skip.
        prior: The fit's last warm-up step on `baseline` (after tracing; left out of
            every figure): evidence for the early verdict only, as the first of the
            `CONCLUSIVE_STEPS` (a step that waited 80% waited for its loader, whatever
            ran before it). The baseline's rate is measured on the probe's own steps.

    Example:

    >>> Probe(TunerSettings(), LoaderConfig()).steps
    0
    >>> waiting = StepSample(wait_s=0.09, step_s=0.1)
    >>> probe = Probe(TunerSettings(), LoaderConfig(), in_steady_state=True, prior=waiting)
    >>> probe.add(waiting) is None, probe.add(waiting).input_bound  # the prior is the 1st
    (True, True)
    """

    def __init__(
        self,
        settings: TunerSettings,
        baseline: LoaderConfig,
        *,
        in_steady_state: bool = False,
        prior: StepSample | None = None,
    ) -> None:
        self._settings = settings
        self._baseline = baseline
        self._prior = [prior] if prior is not None else []
        self._skip = 0 if in_steady_state else refill_steps(settings, baseline)
        self._samples: list[StepSample] = []
        self._records: list[Any] = []
        self._ready: list[bool] = []  # per step: its batch was handed over with another ready
        self._next_ready = False

    @property
    def steps(self) -> int:
        """Steps seen so far (refill included)."""
        return len(self._samples)

    def add_records(self, records: list[Any]) -> None:
        """Add producer records (`produce_wall_s`, `produce_cpu_s`, `nbytes`, and
        `queue_depth` where the engine has it) of the next step."""
        self._records.extend(records)
        depths = [getattr(r, "queue_depth", None) for r in records]
        self._next_ready = bool(depths) and all(d is not None and d >= 1 for d in depths)

    def add(self, sample: StepSample) -> ProbeVerdict | None:
        """Add one step; the verdict once the probe is done, else `None`."""
        s = self._settings
        self._samples.append(sample)
        self._ready.append(self._next_ready)
        self._next_ready = False
        probe_steps = max(s.probe_steps, 2 * in_flight(self._baseline))
        measured = self._samples[self._skip :]
        window = slice(self._skip, None)
        if len(measured) < probe_steps:
            n = min(self._early_steps(self._prior + measured), len(measured))
            if n:  # the conclusive steps, the prior left out of the figures
                window = slice(len(self._samples) - n, None)
            elif not self._cycles_wait(measured):
                return None
        stats = window_stats(align_to_cycles(self._samples[window]))
        contention = self._contention(stats)
        waits = stats.wait_fraction >= s.wait_threshold
        handover_only = waits and contention is None and self._handover_only(window, stats)
        input_bound = (waits and not handover_only) or contention is not None
        return ProbeVerdict(stats, input_bound, contention, list(self._records), handover_only)

    def _handover_only(self, window: slice, stats: WindowStats) -> bool:
        """Whether the wait is under the threshold once the steps whose batch came with
        another one ready, after a wait under `HANDOVER_MAX_WAIT_S`, are left out: those
        waited for the hand-over, not the loader.
        Inline, whether a batch costs less than handing it over from a worker would
        (`INLINE_HANDOVER_S`): then no worker can make the step wait less."""
        if self._baseline.inline:
            return stats.median_wait_s < INLINE_HANDOVER_S
        samples, ready = self._samples[window], self._ready[window]
        total = sum(x.step_s for x in samples)
        loader_wait = sum(
            x.wait_s
            for x, r in zip(samples, ready, strict=True)
            if not r or x.wait_s >= HANDOVER_MAX_WAIT_S
        )
        return total > 0 and loader_wait < self._settings.wait_threshold * total

    def _early_steps(self, samples: list[StepSample]) -> int:
        """How many of the last `samples` conclusively show an input-bound loader (0: not
        conclusive yet): `CONCLUSIVE_STEPS` waiting `CONCLUSIVE_WAIT` each, else
        `PROBE_MIN_STEPS` (and two delivery rounds) waiting four times the threshold;
        inline, `CONCLUSIVE_STEPS` steady steps waiting `INLINE_CONCLUSIVE_WAIT` each."""
        last = samples[-CONCLUSIVE_STEPS:]
        if len(last) == CONCLUSIVE_STEPS and all(
            x.step_s > 0 and x.wait_s >= CONCLUSIVE_WAIT * x.step_s for x in last
        ):
            return CONCLUSIVE_STEPS
        if (
            self._baseline.inline
            and len(last) == CONCLUSIVE_STEPS
            and min(x.step_s for x in last) > 0
            and all(x.wait_s >= INLINE_CONCLUSIVE_WAIT * x.step_s for x in last)
            and max(x.step_s for x in last)
            <= (1.0 + INLINE_STEADY_SPREAD) * min(x.step_s for x in last)
        ):
            # Inline, each wait is one batch made on the training thread (no refill, no
            # burst): steady steps that wait most of their time are conclusive, and
            # measure the baseline's rate as well as more steps would.
            return CONCLUSIVE_STEPS
        if len(samples) < max(PROBE_MIN_STEPS, 2 * in_flight(self._baseline)):
            return 0
        line = 4 * self._settings.wait_threshold
        if all(x.wait_s >= line * x.step_s for x in samples[-PROBE_MIN_STEPS:]):
            return PROBE_MIN_STEPS
        return 0

    def _cycles_wait(self, measured: list[StepSample]) -> bool:
        """Whether a pool's measured steps hold whole delivery cycles (`align_to_cycles`:
        from one wait event to another, `PROBE_MIN_STEPS` or more) that wait four times
        `wait_threshold`: a cycle measures the rate without bias, and a loader that keeps
        the step waiting a fifth of every cycle is input-bound. Grain's 16 default threads
        on a 120 ms read show it after 17 measured steps, not 32 (two rounds of 16)."""
        if self._baseline.inline or len(measured) < PROBE_MIN_STEPS:
            return False
        cycles = align_to_cycles(measured, min_steps=PROBE_MIN_STEPS)
        if len(cycles) == len(measured):  # fewer than two wait events: no whole cycle
            return False
        return window_stats(cycles).wait_fraction >= 4 * self._settings.wait_threshold

    def _contention(self, stats: WindowStats) -> str | None:
        if self._baseline.use_multiprocessing or self._baseline.inline or not self._records:
            return None  # no loader thread runs beside the step: its cost shows as wait
        try:
            profile = loader_profile(self._records)
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


__all__ = [
    "CONCLUSIVE_STEPS",
    "CONCLUSIVE_WAIT",
    "INLINE_CONCLUSIVE_WAIT",
    "INLINE_HANDOVER_S",
    "INLINE_STEADY_SPREAD",
    "PROBE_MIN_STEPS",
    "Probe",
    "ProbeVerdict",
    "profile_from",
]
