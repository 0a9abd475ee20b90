"""`TunerSettings`: every knob of the tuning policy, validated up front."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from keras_loadtune._validate import int_at_least, number_in
from keras_loadtune.decision import resources

MODES = ("thread", "process")
# Absolute limit on worker threads (the per-loader cap is derived from the measured
# profile, see `analytical.thread_cap`; this bounds it).
THREAD_LIMIT = 256


def _check_int(name: str, value: Any, low: int, *, optional: bool = False) -> None:
    int_at_least(f"TunerSettings.{name}", value, low, none_ok=optional)


def _check_float(
    name: str, value: Any, low: float, high: float, *, optional: bool = False, closed: bool = False
) -> None:
    number_in(f"TunerSettings.{name}", value, low, high, closed=closed, none_ok=optional)


@dataclass(frozen=True)
class TunerSettings:
    """Budget, search space and thresholds of the tuning policy.

    All arguments are keyword arguments with defaults; `None` defaults are
    resolved from the machine (psutil) when the settings are created. Invalid
    values raise `ValueError` (bad value) or `TypeError` (bad type) naming the
    argument and what it accepts.

    Args:
        cores: Logical cores the loader may use; `None`: `resources.available_cores()`.
        max_thread_workers: Most worker threads to try; `None`: `THREAD_LIMIT` (256).
            This is an absolute bound: the cap each loader gets comes from its
            measured profile (batch latency over step time, with a margin, bounded by
            RAM; `analytical.thread_cap`). Threads may exceed cores: latency-bound
            loaders (disk, network, sleeps) need one thread per batch in flight.
        max_process_workers: Most worker processes to try; `None`: `cores`.
            Processes only help when CPU-bound, and a process per core is the ceiling.
        queue_size_range: Inclusive `(min, max)` for `max_queue_size`. Keras keeps
            at most `max_queue_size` batches in flight, so `max` should reach the
            largest worker count; the search ties the queue to the worker count
            (`analytical.queue_for`). Default `(1, 512)`.
        modes: Worker kinds to search, a non-empty subset of `("thread", "process")`.
        max_trials: Most measured trials per tuning round, the user's baseline included.
        max_tuning_steps: Training steps tuning may take (probe included), or `None`.
        max_tuning_seconds: Wall seconds tuning may take (probe included), or `None`.
        ram_budget_bytes: Memory the loader may add on top of what the trainer used
            during the probe (queued batches, worker processes); `None`: 50% of the
            RAM available now, as tf.data's AUTOTUNE does.
        sampler: An Optuna sampler, or `None` for a seeded multivariate TPE. The RAM
            constraint reaches any sampler through `Trial.set_constraint`.
        seed: Seed of the default sampler (ignored when `sampler` is given).
        wait_threshold: Wait fraction below which the pipeline is not input-bound
            (0.05, the TensorFlow profiler's line); also the "compute floor reached" line.
        probe_steps: Steps measured on the baseline before deciding to tune (at least
            two delivery rounds: `2 x min(workers, max_queue_size)`, see `engine.in_flight`).
        skip_steps: Steps ignored after every loader restart (queue refill), plus one
            per batch the restarted loader can prefetch (those come out in a burst).
        min_trial_steps: Fewest measured steps per trial window (at least two
            delivery rounds are always measured).
        max_trial_steps: Most measured steps per trial window (raised to two delivery
            rounds for configs with many batches in flight).
        settle_rel_tol: A window may stop early once the relative standard error of
            its mean step time is at most this.
        patience: Stop after this many measured trials without an improvement.
        min_improvement: Relative gain that counts as an improvement; configs within
            it of the best count as ties, and the cheaper one wins.
        drift_margin: Margin over `wait_threshold` at which a compute-bound fit counts
            as input-bound again (per epoch, the callback's check).
        drift_drop: After tuning, drift is a sustained throughput drop: a window whose
            steps/s fall under `(1 - drift_drop)` of the tuned rate (and that waits for
            data) counts as low; the count resets only once a window is back above
            `(1 - drift_drop / 2)` of it (hysteresis).
        payoff_ratio: A trial runs only if its predicted gain over the rest of the fit
            (plus expected reuse) is at least this many times its predicted cost.
        drift_window_steps: Steps per drift-detection window.
        drift_sustain_windows: Consecutive input-bound windows that count as drift.
        reopen_trials: Measured trials allowed when drift reopens the study.
        max_reopens: Most times drift may reopen the study.
        process_pool_prior_s: Seconds a first process pool is expected to take before
            one was measured; None: `decision.payoff.PROCESS_POOL_PRIOR_S`. The Keras
            adapter sets it from the engine when the workers will import no Keras.

    Example:

    ```python
    from keras_loadtune.decision.settings import TunerSettings

    s = TunerSettings(cores=16, max_trials=8, seed=0)
    s.max_thread_workers, s.max_process_workers  # (256, 16)
    s.replace(modes=("thread",)).modes          # ('thread',)
    ```
    """

    cores: int | None = None
    max_thread_workers: int | None = None
    max_process_workers: int | None = None
    queue_size_range: tuple[int, int] = (1, 512)
    modes: tuple[str, ...] = MODES
    max_trials: int = 10
    max_tuning_steps: int | None = 800
    max_tuning_seconds: float | None = 300.0
    ram_budget_bytes: int | None = None
    sampler: Any = field(default=None, compare=False)
    seed: int | None = None
    wait_threshold: float = 0.05
    probe_steps: int = 20
    skip_steps: int = 3
    min_trial_steps: int = 10
    max_trial_steps: int = 50
    settle_rel_tol: float = 0.05
    patience: int = 4
    min_improvement: float = 0.02
    drift_margin: float = 0.10
    drift_drop: float = 0.15
    payoff_ratio: float = 1.5
    drift_window_steps: int = 50
    drift_sustain_windows: int = 3
    reopen_trials: int = 4
    max_reopens: int = 3
    process_pool_prior_s: float | None = None

    def __post_init__(self) -> None:
        auto = frozenset(
            name
            for name in ("cores", "max_thread_workers", "max_process_workers", "ram_budget_bytes")
            if getattr(self, name) is None
        )
        object.__setattr__(self, "_auto", auto)
        _check_int("cores", self.cores, 1, optional=True)
        cores = self.cores if self.cores is not None else resources.available_cores()
        object.__setattr__(self, "cores", cores)
        _check_int("max_thread_workers", self.max_thread_workers, 1, optional=True)
        if self.max_thread_workers is None:
            object.__setattr__(self, "max_thread_workers", THREAD_LIMIT)
        _check_int("max_process_workers", self.max_process_workers, 1, optional=True)
        if self.max_process_workers is None:
            object.__setattr__(self, "max_process_workers", cores)

        qr = self.queue_size_range
        if (
            not isinstance(qr, (tuple, list))
            or len(qr) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in qr)
        ):
            raise TypeError(
                f"TunerSettings.queue_size_range must be a (min, max) pair of ints; got {qr!r}."
            )
        if not 1 <= qr[0] <= qr[1]:
            raise ValueError(
                f"TunerSettings.queue_size_range must satisfy 1 <= min <= max; got {tuple(qr)}."
            )
        object.__setattr__(self, "queue_size_range", (int(qr[0]), int(qr[1])))

        modes = self.modes
        if isinstance(modes, str) or not isinstance(modes, (tuple, list)):
            raise TypeError(
                f"TunerSettings.modes must be a tuple drawn from {MODES}; got {modes!r}."
            )
        bad = [m for m in modes if m not in MODES]
        if bad or not modes or len(set(modes)) != len(modes):
            raise ValueError(
                f"TunerSettings.modes must be a non-empty subset of {MODES} without "
                f"repeats; got {tuple(modes)!r}."
            )
        object.__setattr__(self, "modes", tuple(m for m in MODES if m in modes))

        _check_int("max_trials", self.max_trials, 1)
        _check_int("max_tuning_steps", self.max_tuning_steps, 1, optional=True)
        _check_float(
            "max_tuning_seconds", self.max_tuning_seconds, 0.0, float("inf"), optional=True
        )
        _check_int("ram_budget_bytes", self.ram_budget_bytes, 1, optional=True)
        if self.ram_budget_bytes is None:
            object.__setattr__(self, "ram_budget_bytes", resources.default_ram_budget())
        if self.sampler is not None and not (
            hasattr(self.sampler, "sample_independent") and hasattr(self.sampler, "after_trial")
        ):
            raise TypeError(
                "TunerSettings.sampler must be an optuna.samplers.BaseSampler or None; "
                f"got {type(self.sampler).__name__}."
            )
        _check_int("seed", self.seed, 0, optional=True)
        _check_float("wait_threshold", self.wait_threshold, 0.0, 1.0)
        _check_int("probe_steps", self.probe_steps, 2)
        _check_int("skip_steps", self.skip_steps, 0)
        _check_int("min_trial_steps", self.min_trial_steps, 2)
        _check_int("max_trial_steps", self.max_trial_steps, 2)
        if self.max_trial_steps < self.min_trial_steps:
            raise ValueError(
                "TunerSettings.max_trial_steps must be >= min_trial_steps; got "
                f"max_trial_steps={self.max_trial_steps}, min_trial_steps={self.min_trial_steps}."
            )
        if self.max_tuning_steps is not None and self.max_tuning_steps < self.probe_steps:
            raise ValueError(
                "TunerSettings.max_tuning_steps must leave room for the probe: it must be >= "
                f"probe_steps; got max_tuning_steps={self.max_tuning_steps}, "
                f"probe_steps={self.probe_steps}."
            )
        _check_float("settle_rel_tol", self.settle_rel_tol, 0.0, 1.0)
        _check_int("patience", self.patience, 1)
        _check_float("min_improvement", self.min_improvement, 0.0, 1.0, closed=True)
        _check_float("drift_margin", self.drift_margin, 0.0, 1.0)
        _check_float("drift_drop", self.drift_drop, 0.0, 1.0)
        _check_float("payoff_ratio", self.payoff_ratio, 0.0, float("inf"), closed=True)
        _check_int("drift_window_steps", self.drift_window_steps, 2)
        _check_int("drift_sustain_windows", self.drift_sustain_windows, 1)
        _check_int("reopen_trials", self.reopen_trials, 1)
        _check_int("max_reopens", self.max_reopens, 0)
        _check_float("process_pool_prior_s", self.process_pool_prior_s, 0.0, 3600.0, optional=True)

    @property
    def max_workers(self) -> int:
        """Largest worker count of any allowed mode."""
        caps = {"thread": self.max_thread_workers, "process": self.max_process_workers}
        return max(int(caps[m]) for m in self.modes)

    def worker_cap(self, mode: str) -> int:
        """Most workers allowed in `mode` (`"thread"` or `"process"`)."""
        if mode == "thread":
            return int(self.max_thread_workers)  # type: ignore[arg-type]
        if mode == "process":
            return int(self.max_process_workers)  # type: ignore[arg-type]
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")

    def replace(self, **changes: Any) -> TunerSettings:
        """A copy with some fields changed (validated again).

        Fields that were resolved from the machine (`None` at creation) are resolved
        again unless given, so `replace(cores=64)` also rescales the worker caps.

        Example:

        ```python
        from keras_loadtune.decision.settings import TunerSettings

        TunerSettings(cores=4).replace(max_trials=3).max_trials  # 3
        ```
        """
        for name in self._auto:  # type: ignore[attr-defined]
            changes.setdefault(name, None)
        return replace(self, **changes)
