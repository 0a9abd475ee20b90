"""`TrialRecord`: what one tuning trial tried and measured, and how it is kept in Optuna.

The decision policy produces these, the report renders them, and Optuna storage
keeps them (as trial params + user attrs) so a study can be re-read later by
`python -m keras_loadtune report` or `optuna-dashboard`. This module is the one
place that knows the attribute names, so the writer and the readers cannot drift.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from keras_loadtune.config import LoaderConfig

if TYPE_CHECKING:  # pragma: no cover
    import optuna

TrialOutcome = Literal["complete", "pruned", "failed", "skipped"]
# Deprecated alias (it shadowed `optuna.trial.TrialState`); use `TrialOutcome`.
TrialState = TrialOutcome
TrialSource = Literal["baseline", "analytical", "sampler", "warm-start", "verify"]

# Optuna trial params (what was tried).
PARAM_WORKERS = "workers"
PARAM_QUEUE = "max_queue_size"
PARAM_MODE = "mode"  # "thread" | "process"

# Optuna trial user attrs (what was measured), readable in optuna-dashboard.
ATTR_STEPS_PER_S = "steps_per_s"
ATTR_WAIT_FRACTION = "wait_fraction"
ATTR_RSS_BYTES = "rss_bytes"
ATTR_STARTUP_S = "startup_s"
ATTR_STEPS = "steps"
ATTR_SOURCE = "source"
ATTR_STATE = "klt_state"
ATTR_REASON = "reason"
ATTR_CONSTRAINT = "constraint"  # list[float]; <= 0 is feasible (Optuna constraints_func)
# Which worker of a fleet ran the trial: {"host", "pid", "task"} ("task": TF_CONFIG's
# "<type>:<index>" when set), so a shared study shows each worker's trials.
ATTR_WORKER = "klt_worker"
# The workload's timing profile when the trial ran ({"produce_ms", "cpu_ratio"}):
# matched with a tolerance by the warm start, never hashed into the study name.
ATTR_PROFILE = "klt_profile"
# True when the session that measured the trial ranked near-equal thread configs with
# more threads first (its loader was not CPU-heavy: a thread cost a batch of RAM); the
# warm start ranks the stored trials the same way.
ATTR_THREADS_RAM_ONLY = "klt_threads_ram_only"
# Batches in flight beyond which that session gave more threads no headroom credit
# (`decision.delivery.round_cap`); absent: no bound.
ATTR_ENOUGH_IN_FLIGHT = "klt_enough_in_flight"
# True on sampler proposals told without running (a duplicate, over a cap, not worth
# a trial): the live report leaves them out, so does a report rebuilt from the study.
ATTR_NOT_RUN = "klt_not_run"
# Name of the Optuna constraint (`Trial.set_constraint`) holding the RAM excess in bytes.
CONSTRAINT_KEY = "ram_excess_bytes"

# Optuna study user attrs written by `keras_loadtune.persistence`.
STUDY_ATTR_WORKLOAD = "klt_workload"
STUDY_ATTR_HOST = "klt_host"
STUDY_ATTR_FINGERPRINT = "klt_fingerprint"
# The last `TuningReport.to_dict()` of a run, kept on the study for `keras-loadtune report`.
STUDY_ATTR_REPORT = "klt_report"


def worker_identity() -> dict[str, Any]:
    """Who runs this trial: host name, process id and the TF_CONFIG task, if any.

    Example:

    >>> sorted(worker_identity())
    ['host', 'pid', 'task']
    """
    task: str | None = None
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            info = json.loads(raw).get("task") or {}
            if "type" in info:
                task = f"{info['type']}:{info.get('index', 0)}"
        except (ValueError, AttributeError):
            task = None
    return {"host": socket.gethostname(), "pid": os.getpid(), "task": task}


@dataclass(frozen=True)
class TrialRecord:
    """One configuration tried during tuning and what it measured.

    Args:
        number: Trial number within the study (0-based).
        config: The `LoaderConfig` that ran.
        state: `"complete"` (measured), `"pruned"` (stopped early, e.g. over the RAM
            budget), `"failed"` (the config could not run, e.g. dataset not picklable)
            or `"skipped"` (never started: predicted to break a constraint).
        source: Why it was tried: `"baseline"` (the user's own config),
            `"analytical"` (seeded by the pipeline model), `"sampler"` (Optuna),
            `"warm-start"` / `"verify"` (from a stored study).
        steps_per_s: Median training throughput over the trial window.
        wait_fraction: Share of step time spent waiting for data, in [0, 1].
        rss_bytes: Peak resident memory (trainer + workers + queued batches).
        startup_s: Seconds spent starting workers for this trial.
        steps: Training steps measured in the window.
        reason: Human-readable reason for a pruned/failed/skipped state.

    Example:

    ```python
    from keras_loadtune import LoaderConfig
    from keras_loadtune.trial import TrialRecord

    rec = TrialRecord(0, LoaderConfig(4, 8), "complete", "analytical",
                      steps_per_s=52.0, wait_fraction=0.03)
    rec.to_dict()["config"]  # {'workers': 4, 'max_queue_size': 8, 'use_multiprocessing': False}
    ```
    """

    number: int
    config: LoaderConfig
    state: TrialOutcome
    source: TrialSource
    steps_per_s: float | None = None
    wait_fraction: float | None = None
    rss_bytes: int | None = None
    startup_s: float | None = None
    steps: int = 0
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        """Inverse of `to_dict`."""
        data = dict(data)
        data["config"] = LoaderConfig.from_dict(data["config"])
        return cls(**data)

    def optuna_params(self) -> dict[str, Any]:
        """The params to `enqueue_trial`/record for this config."""
        return config_to_params(self.config)

    def optuna_user_attrs(self) -> dict[str, Any]:
        """The user attrs that keep this record's measurements in Optuna storage."""
        attrs: dict[str, Any] = {ATTR_STATE: self.state, ATTR_SOURCE: self.source}
        for key, value in (
            (ATTR_STEPS_PER_S, self.steps_per_s),
            (ATTR_WAIT_FRACTION, self.wait_fraction),
            (ATTR_RSS_BYTES, self.rss_bytes),
            (ATTR_STARTUP_S, self.startup_s),
        ):
            if value is not None:
                attrs[key] = value
        attrs[ATTR_STEPS] = self.steps
        if self.reason:
            attrs[ATTR_REASON] = self.reason
        return attrs

    @classmethod
    def from_frozen_trial(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        """Rebuild a record from a trial stored by the tuner."""
        attrs = trial.user_attrs
        state = attrs.get(ATTR_STATE)
        if state is None:
            state = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(trial.state.name, "failed")
        return cls(
            number=trial.number,
            config=params_to_config(trial.params),
            state=state,
            source=attrs.get(ATTR_SOURCE, "sampler"),
            steps_per_s=attrs.get(ATTR_STEPS_PER_S),
            wait_fraction=attrs.get(ATTR_WAIT_FRACTION),
            rss_bytes=attrs.get(ATTR_RSS_BYTES),
            startup_s=attrs.get(ATTR_STARTUP_S),
            steps=int(attrs.get(ATTR_STEPS, 0)),
            reason=attrs.get(ATTR_REASON, ""),
        )


def config_to_params(config: LoaderConfig) -> dict[str, Any]:
    """`LoaderConfig` -> Optuna params dict."""
    return {
        PARAM_WORKERS: config.workers,
        PARAM_QUEUE: config.max_queue_size,
        PARAM_MODE: config.mode,
    }


def params_to_config(params: dict[str, Any]) -> LoaderConfig:
    """Optuna params dict -> `LoaderConfig`."""
    return LoaderConfig(
        workers=int(params[PARAM_WORKERS]),
        max_queue_size=int(params[PARAM_QUEUE]),
        use_multiprocessing=params.get(PARAM_MODE, "thread") == "process",
    )
