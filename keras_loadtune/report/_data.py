"""`ReportData`: a tuning report's fields and the figures derived from them.

What a report holds (the decision, the configs, the trials, the measured rates and
costs) and what follows from it by arithmetic alone: the speedup, the net effect on
the fit, whether the machine limit is reached. No rendering, no JSON, no storage:
`TuningReport` (`_model`) adds those, and the renderers (`_text`, `_html`, `_plot`,
`_advice`) read a `ReportData`, so they never import `TuningReport`.

Example:

>>> from keras_loadtune import LoaderConfig
>>> data = ReportData("tuned", LoaderConfig(), LoaderConfig(4, 8),
...                   baseline_steps_per_s=20.0, best_steps_per_s=50.0)
>>> data.speedup
2.5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from keras_loadtune.config import LoaderConfig
from keras_loadtune.report import _format
from keras_loadtune.trial import TrialRecord

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.decision.limit import MachineLimit


Decision = Literal[
    "tuned",
    "compute-bound",
    "not-wrapped",
    "tuning-failed",
    "in-progress",
    "kept-baseline",
    "warm-start",
]
#: Every value `TuningReport.decision` may take.
DECISIONS: tuple[str, ...] = get_args(Decision)


@dataclass
class ReportData:
    """A tuning report's fields, and the figures derived from them (measured or estimated).

    The fields, their meaning and units are listed on `TuningReport`, the public class
    built on this one; a renderer takes a `ReportData` (a `TuningReport` is one).

    Raises:
        ValueError: `decision` is not one of `DECISIONS`.

    Example:

    ```python
    data = ReportData("compute-bound", LoaderConfig(), None)
    data.speedup   # None: the config in use is yours
    ```
    """

    decision: str
    baseline_config: LoaderConfig | None
    best_config: LoaderConfig | None
    trials: list[TrialRecord] = field(default_factory=list)
    probe_wait_fraction: float | None = None
    final_wait_fraction: float | None = None
    baseline_steps_per_s: float | None = None
    best_steps_per_s: float | None = None
    tuning_seconds: float = 0.0
    tuning_steps: int = 0
    epoch_wait_fractions: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reopen_reasons: list[str] = field(default_factory=list)
    profile: dict[str, float] = field(default_factory=dict)
    study_name: str | None = None
    storage_url: str | None = None
    warm_start_from: str | None = None
    fit_seconds: float | None = None
    fit_steps: int | None = None
    tuning_cost_seconds: float | None = None
    worst_step_gap_seconds: float | None = None
    median_step_seconds: float | None = None
    fit_wall_seconds: float | None = None
    fit_all_steps: int | None = None
    fit_running: bool = False
    backend: str | None = None
    limit: MachineLimit | None = None
    wait_threshold: float = 0.05
    cost: dict[str, float] = field(default_factory=dict)
    input_facts: dict[str, int] = field(default_factory=dict)
    dataloader_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(
                f"TuningReport.decision must be one of {', '.join(DECISIONS)}; "
                f"got {self.decision!r}."
            )

    # ------------------------------------------------------------------ numbers
    @property
    def speedup(self) -> float | None:
        """Steady-state speedup (measured): `best_steps_per_s / baseline_steps_per_s`;
        `None` when either is unknown or the config in use is your own (an unchanged
        config has no speedup, whatever two of its windows measured)."""
        best, base = self.best_steps_per_s, self.baseline_steps_per_s
        if not (_format.is_number(best) and _format.is_number(base)) or base <= 0:  # type: ignore[operator]
            return None
        if self.best_config is not None and self.best_config == self.baseline_config:
            return None
        return float(best) / float(base)  # type: ignore[arg-type]

    @property
    def whole_fit_seconds(self) -> float | None:
        """The fit's wall time as the report shows it: the whole fit when known
        (`fit_wall_seconds`), else the part after the warm-up steps (`fit_seconds`)."""
        for value in (self.fit_wall_seconds, self.fit_seconds):
            if _format.is_number(value) and value > 0:  # type: ignore[operator]
                return float(value)  # type: ignore[arg-type]
        return None

    @property
    def in_use_steps_per_s(self) -> float | None:
        """Measured steady-state rate of the config in use (the best's, else yours)."""
        if self.speedup is not None:
            return float(self.best_steps_per_s)  # type: ignore[arg-type]
        for value in (self.baseline_steps_per_s, self.best_steps_per_s):
            if _format.is_number(value) and value > 0:  # type: ignore[operator]
                return float(value)  # type: ignore[arg-type]
        return None

    @property
    def in_use_wait_fraction(self) -> float | None:
        """The wait of the config in use: its last epoch's (what the user's History
        shows), else the wait its best trial measured (`None`: unknown)."""
        if self.epoch_wait_fractions and _format.is_number(self.epoch_wait_fractions[-1]):
            return float(self.epoch_wait_fractions[-1])
        trial = self.best_trial if self.speedup is not None else self.baseline_trial
        if trial is not None and _format.is_number(trial.wait_fraction):
            return float(trial.wait_fraction)  # type: ignore[arg-type]
        return None

    @property
    def baseline_trial(self) -> TrialRecord | None:
        """The measured trial of your own config (`None`: not measured)."""
        done = [
            t for t in self.trials if t.state == "complete" and _format.is_number(t.steps_per_s)
        ]
        return next((t for t in done if t.source == "baseline"), None)

    @property
    def fastest_trial(self) -> TrialRecord | None:
        """The fastest trial measured in this fit (`None`: none measured)."""
        done = [t for t in self.trials if t.state == "complete"]
        done = [t for t in done if _format.is_number(t.steps_per_s)]
        return max(done, key=lambda t: float(t.steps_per_s)) if done else None  # type: ignore[arg-type]

    @property
    def limit_reached(self) -> bool:
        """Whether the report may say the limit is reached (loader tuning cannot help):
        the config in use reaches it, its last epoch waited under `wait_threshold`, and
        no config measured in this fit was faster (`decision.limit.is_reached`)."""
        if self.limit is None:
            return False
        from keras_loadtune.decision.limit import is_reached

        fastest = self.fastest_trial
        return is_reached(
            self.limit,
            wait_fraction=self.in_use_wait_fraction,
            wait_threshold=self.wait_threshold,
            in_use_steps_per_s=self.in_use_steps_per_s,
            fastest_steps_per_s=float(fastest.steps_per_s) if fastest else None,  # type: ignore[arg-type]
        )

    @property
    def saved_seconds(self) -> float:
        """Seconds the config in use saved over this fit's steps against yours, at the
        two measured steady-state rates (0 when the config in use is yours)."""
        sp, steps = self.speedup, self.fit_steps
        if sp is None or not steps:
            return 0.0
        base, best = float(self.baseline_steps_per_s), float(self.best_steps_per_s)  # type: ignore[arg-type]
        return float(steps) * (1.0 / base - 1.0 / best)

    @property
    def baseline_fit_seconds(self) -> float | None:
        """Estimated seconds this fit would have taken at your config on
        keras-loadtune's loader: `Fit - Cost + saved_seconds` (the same figures the
        report shows); `None` when the fit or your config's rate is unknown."""
        fit, base = self.whole_fit_seconds, self.baseline_steps_per_s
        if fit is None or not _format.is_number(base) or base <= 0:  # type: ignore[operator]
            return None
        cost = self.tuning_cost_seconds if _format.is_number(self.tuning_cost_seconds) else 0.0
        return max(fit - float(cost) + self.saved_seconds, 1e-9)  # type: ignore[arg-type]

    @property
    def net_speedup(self) -> float | None:
        """This fit's net effect: `baseline_fit_seconds / whole_fit_seconds` (< 1: the
        tuner made this fit slower), `None` when either is unknown. An estimate (its
        numerator is); 1.0 for a kept config that cost nothing."""
        at_yours, fit = self.baseline_fit_seconds, self.whole_fit_seconds
        if at_yours is None or fit is None:
            return None
        return at_yours / fit

    @property
    def best_trial(self) -> TrialRecord | None:
        """The fastest completed trial that ran `best_config` (the table's `*` row)."""
        if self.best_config is None:
            return None
        matches = [t for t in self.trials if t.config == self.best_config and t.state == "complete"]
        if not matches:
            return None
        return max(matches, key=lambda t: t.steps_per_s if _format.is_number(t.steps_per_s) else -1)
