"""`TuningReport`: the public report: its renderings, its JSON form, its rebuild from a study.

Its fields and the figures derived from them are `ReportData` (`_data`), which the
renderers read: text in `_text`, HTML in `_html`, the chart in `_plot`, the advice in
`_advice` (each imported lazily, and none of them imports this module). Reading storage
lives in `_study`. This module imports neither TensorFlow nor Keras, and Optuna only to
rebuild a report from a study.

Example:

>>> from keras_loadtune import LoaderConfig
>>> rep = TuningReport("compute-bound", baseline_config=LoaderConfig(), best_config=None)
>>> TuningReport.from_dict(rep.to_dict()).decision
'compute-bound'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.report import _format
from keras_loadtune.report._data import ReportData
from keras_loadtune.storage import redact_url
from keras_loadtune.trial import ATTR_NOT_RUN, STUDY_ATTR_REPORT, TrialRecord

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


#: Written as `"format_version"` by `TuningReport.to_dict`.
#: Version 2 added `limit`, `fit_wall_seconds`, `fit_all_steps`, `fit_running`,
#: `backend` and the derived `advice`; version 3 `wait_threshold` and `cost` (the
#: parts of `tuning_cost_seconds`); older reports still load.
REPORT_FORMAT_VERSION = 3


class TuningReport(ReportData):
    """What the tuner measured, what it tried and which loader config it kept.

    `str(report)` is a fixed-width table for logs and terminals, `summary_line()`
    a single log line, `_repr_html_()` a notebook table, `plot()` a bar chart, and
    `to_dict()` / `from_dict()` / `to_json()` a lossless JSON form (database
    passwords in `storage_url` are replaced by `***`).

    Args:
        decision: One of `DECISIONS`: `"tuned"` (a faster config is in use),
            `"compute-bound"` (the loader keeps up; nothing to tune),
            `"not-wrapped"` (callback used without `tuner.wrap`: measured only),
            `"tuning-failed"`, `"in-progress"`, `"kept-baseline"` (nothing beat
            the user's config) or `"warm-start"` (config taken from a stored study).
        baseline_config: The user's own config (`None` when unknown).
        best_config: The config in use after tuning (`None` when none was chosen).
        trials: Every trial, in order.
        probe_wait_fraction: Share of step time waiting for data on the user's config.
        final_wait_fraction: The same after tuning, in steady state.
        baseline_steps_per_s: Throughput of the user's config.
        best_steps_per_s: Throughput of `best_config`.
        tuning_seconds: Wall time spent in trials.
        tuning_steps: Training steps that ran as trials.
        epoch_wait_fractions: Wait fraction of each epoch, as logged to Keras.
        notes: Warnings for the user (e.g. `"process mode skipped: dataset not picklable"`).
        reopen_reasons: Why tuning was re-opened after input drift, one per re-tune.
        profile: Pipeline profile (`produce_wall_s`, `produce_cpu_s`, `step_compute_s`,
            `cores`, `batch_nbytes`, ...).
        study_name: Optuna study name, if stored.
        storage_url: Optuna storage URL, if stored.
        warm_start_from: Study the config was warm-started from.
        fit_seconds: Wall seconds of the fit so far (measured on the training clock).
        fit_steps: Training steps of the fit so far.
        tuning_cost_seconds: Seconds the tuner caused (estimated: its time minus the
            same steps at the best config's rate; start-ups, refills, slower trials).
        worst_step_gap_seconds: The longest step cycle right after a tuner action (its
            own work on the training thread, a switch): the worst stall it caused
            (measured).
        median_step_seconds: The median step cycle of the fit (measured), for scale.
        fit_wall_seconds: Wall seconds of the whole fit (`on_train_begin` to its end,
            or to now), start-ups and warm-up included (measured).
        fit_all_steps: All training steps of the fit so far, warm-up included.
        fit_running: True when the report was taken while the fit still ran.
        backend: The Keras backend of the fit (`None`: unknown).
        limit: The machine limit (`keras_loadtune.decision.limit.MachineLimit`): the
            highest steps/s any loader config could reach here and what bounds it,
            estimated from the profile; `None` when unknown.
        wait_threshold: The tuner's `wait_threshold`: a wait under it is not
            input-bound (the limit counts as reached only then).
        cost: `tuning_cost_seconds` by part (seconds; the parts sum to it): opening
            the study storage, pool starts, the rest of the probe and trials.
        input_facts: What the training input says of its batches (`batch_size`,
            `partial_batch_size`; `keras_adapter.input_facts`), empty when unknown.
        dataloader_kwargs: For a wrapped PyTorch `DataLoader`, the keyword arguments
            that run the config in use without keras-loadtune (`num_workers`,
            `prefetch_factor`, `persistent_workers`, `pin_memory`); empty otherwise.

    The net effect (`baseline_fit_seconds`, `net_speedup`) compares the fit's
    measured wall time with the same fit at your config on keras-loadtune's loader,
    derived from the same figures the report shows: `Fit - Cost + fit_steps x
    (1 / baseline rate - 1 / best rate)` (an estimate; a kept config with no cost is
    1.0x). `speedup` is the steady-state rate ratio (measured), `None` when the config
    in use is yours. `advice` is a ranked list of what would raise the limit or get
    closer to it (`keras_loadtune.report._advice`).

    Raises:
        ValueError: `decision` is not one of `DECISIONS`.

    Example:

    ```python
    from keras_loadtune import LoaderConfig
    from keras_loadtune.report import TuningReport

    rep = TuningReport("tuned", LoaderConfig(), LoaderConfig(4, 8),
                       baseline_steps_per_s=18.0, best_steps_per_s=52.0,
                       probe_wait_fraction=0.61, final_wait_fraction=0.03)
    rep.speedup            # 2.888...
    print(rep.summary_line())
    # keras_loadtune: tuned 4 threads, queue 8: 2.9x faster (wait 61% -> 3%), 0 trials in 0.0 s
    TuningReport.from_dict(rep.to_dict()) == rep   # True
    ```
    """

    @property
    def advice(self) -> list[str]:
        """Ranked short sentences: what would raise the machine limit or get closer to
        it (see `keras_loadtune.report._advice`); empty when nothing is known.

        Example:

        ```python
        for line in tuner.report.advice:
            print("-", line)
        ```
        """
        from keras_loadtune.report._advice import advise

        return advise(self)

    # ---------------------------------------------------------------- rendering
    def __repr__(self) -> str:
        best = "none" if self.best_config is None else str(self.best_config)
        speedup = "" if self.speedup is None else f", {self.speedup:.2f}x"
        return (
            f"<TuningReport {self.decision}: {best}{speedup}, {len(self.trials)} trial(s); "
            "print() it for the table>"
        )

    def __str__(self) -> str:
        from keras_loadtune.report._text import render_text

        return render_text(self)

    def summary_line(self) -> str:
        """One log line, e.g.
        `keras_loadtune: tuned 4 threads, queue 8: 2.9x faster (wait 61% -> 3%), 9 trials in 4.1 s`.

        Example:

        ```python
        print(tuner.report.summary_line())
        ```
        """
        from keras_loadtune.report._text import render_summary_line

        return render_summary_line(self)

    def _repr_html_(self) -> str:
        """Self-contained HTML (inline styles, all user strings escaped) for notebooks."""
        from keras_loadtune.report._html import render_html

        return render_html(self)

    def plot(self, ax: Axes | None = None) -> Figure:
        """Bar chart of throughput (steps/s) per trial.

        Bars are coloured by mode (threads / processes); pruned, failed and skipped
        trials are hatched; the best trial gets a thick outline and the user's
        config a dashed baseline line. Needs matplotlib (`pip install keras-loadtune[plot]`).

        Args:
            ax: Axes to draw into; a new figure is created when `None`.

        Returns:
            The `matplotlib.figure.Figure` holding the chart.

        Raises:
            ImportError: matplotlib is not installed.

        Example:

        ```python
        fig = tuner.report.plot()
        fig.savefig("tuning.png")
        ```
        """
        from keras_loadtune.report._plot import plot_report

        return plot_report(self, ax)

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (`json.dumps` works on it); inverse of `from_dict`.

        Example:

        ```python
        data = report.to_dict()
        data["decision"], data["best_config"]   # 'tuned', {'workers': 4, ...}
        ```
        """
        data: dict[str, Any] = {"format_version": REPORT_FORMAT_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, LoaderConfig):
                value = value.to_dict()
            elif f.name == "trials":
                value = [t.to_dict() for t in value]
            elif f.name == "storage_url":
                value = redact_url(value)
            elif f.name == "limit" and value is not None:
                value = value.to_dict()
            data[f.name] = _jsonable(value)
        data["advice"] = self.advice  # derived: read back by recomputing
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuningReport:
        """Rebuild a report from `to_dict()` output.

        Missing optional keys take their defaults (so the study attribute, which has
        no `"trials"`, loads too); unknown keys are ignored for forward compatibility.

        Example:

        ```python
        rep = TuningReport.from_dict(json.load(open("report.json")))
        ```
        """
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("baseline_config", "best_config"):
            if kwargs.get(key) is not None:
                kwargs[key] = LoaderConfig.from_dict(kwargs[key])
            else:
                kwargs[key] = None
        kwargs["trials"] = [TrialRecord.from_dict(t) for t in kwargs.get("trials") or []]
        for key in ("epoch_wait_fractions", "notes", "reopen_reasons"):
            if key in kwargs:
                kwargs[key] = list(kwargs[key] or [])
        for key in ("profile", "cost", "input_facts", "dataloader_kwargs"):
            if key in kwargs:
                kwargs[key] = dict(kwargs[key] or {})
        if kwargs.get("limit") is not None:
            from keras_loadtune.decision.limit import MachineLimit

            kwargs["limit"] = MachineLimit.from_dict(kwargs["limit"])
        if "decision" not in kwargs:
            raise ValueError("TuningReport.from_dict: missing required key 'decision'.")
        return cls(**kwargs)

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int = 2) -> str:
        """The report as a JSON string; also written to `path` when given.

        Example:

        ```python
        report.to_json("tuning.json")
        TuningReport.from_dict(json.loads(open("tuning.json").read()))
        ```
        """
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    @classmethod
    def from_study(cls, study: optuna.Study, *, storage_url: str | None = None) -> TuningReport:
        """Rebuild the report of a study stored by `LoadTuner`.

        Trials come from the study (`TrialRecord.from_frozen_trial`); everything else
        from the study user attr `STUDY_ATTR_REPORT`. A study without that attr (tuning
        still running or interrupted) gives an `"in-progress"` report whose figures are
        derived from the trials, with a note saying so. Trials still running, or with
        no loader params, are left out (and counted in a note).

        Args:
            study: A loaded `optuna.Study`.
            storage_url: Shown in the report when the stored report does not carry one.

        Example:

        ```python
        study = optuna.load_study(study_name="klt", storage="sqlite:///klt.db")
        print(TuningReport.from_study(study))
        ```
        """
        return report_from_study(study, storage_url=storage_url)


def _jsonable(value: Any) -> Any:
    """Coerce NumPy scalars, tuples and nested containers to plain JSON types."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item):  # NumPy scalar / 0-d array
        return _jsonable(item())
    if isinstance(value, LoaderConfig):
        return value.to_dict()
    return str(value)


@dataclass
class StoredTrials:
    """A study's trials as a report shows them, and what it leaves out.

    Args:
        records: The trials the report shows (measured or stopped, in order).
        running: Trials still running or waiting (not shown).
        unparsable: Trials without loader params (not shown).
        not_run: Sampler proposals told without running (not trials; not shown).
        durations: Wall seconds of each shown trial with both timestamps.
    """

    records: list[TrialRecord] = field(default_factory=list)
    running: int = 0
    unparsable: int = 0
    not_run: int = 0
    durations: list[float] = field(default_factory=list)


def stored_trials(trials: list[optuna.trial.FrozenTrial]) -> StoredTrials:
    """Sort a study's frozen trials into those a report shows and those it leaves out
    (the one rule for the report and the CLI's study list, so their counts agree).

    Example:

    >>> stored_trials([]).records
    []
    """
    from optuna.trial import TrialState

    out = StoredTrials()
    for trial in trials:
        if trial.state in (TrialState.RUNNING, TrialState.WAITING):
            out.running += 1
            continue
        try:
            record = TrialRecord.from_frozen_trial(trial)
        except (KeyError, TypeError, ValueError):
            out.unparsable += 1
            continue
        if trial.user_attrs.get(ATTR_NOT_RUN):
            out.not_run += 1  # a proposal told without running, as the live report leaves out
            continue
        out.records.append(record)
        if trial.datetime_start and trial.datetime_complete:
            out.durations.append((trial.datetime_complete - trial.datetime_start).total_seconds())
    return out


def report_from_study(study: optuna.Study, *, storage_url: str | None = None) -> TuningReport:
    """`TuningReport.from_study(study, storage_url=...)` (see there)."""
    shown = stored_trials(study.get_trials(deepcopy=False))
    records, durations = shown.records, shown.durations
    running, unparsable, not_run = shown.running, shown.unparsable, shown.not_run

    extra_notes: list[str] = []
    if running:
        extra_notes.append(f"{running} trial(s) still running in storage; not shown")
    if unparsable:
        extra_notes.append(f"{unparsable} trial(s) without loader params; not shown")
    if not_run:
        extra_notes.append(
            f"{not_run} sampler proposal(s) not run (a duplicate, over a cap, or not worth "
            "a trial); not shown"
        )

    stored = study.user_attrs.get(STUDY_ATTR_REPORT)
    if isinstance(stored, dict) and "decision" in stored:
        data = dict(stored)
        data["trials"] = []
        report = TuningReport.from_dict(data)
        report.trials = records
    else:
        report = _derive_in_progress(records, durations)
        extra_notes.insert(
            0,
            f"study has no {STUDY_ATTR_REPORT!r} attribute (tuning still running or "
            "interrupted); figures derived from the stored trials",
        )
    report.notes = [*report.notes, *extra_notes]
    if report.study_name is None:
        report.study_name = study.study_name
    if report.storage_url is None and storage_url is not None:
        report.storage_url = redact_url(storage_url)
    return report


def _derive_in_progress(records: list[TrialRecord], durations: list[float]) -> TuningReport:
    def measured(t: TrialRecord) -> bool:
        return t.state == "complete" and _format.is_number(t.steps_per_s)

    baseline = next((t for t in records if t.source == "baseline" and measured(t)), None)
    baseline = baseline or next((t for t in records if t.source == "baseline"), None)
    done = [t for t in records if measured(t)]
    best = max(done, key=lambda t: float(t.steps_per_s)) if done else None  # type: ignore[arg-type]
    base_cfg: LoaderConfig | None = baseline.config if baseline else None
    return TuningReport(
        decision="in-progress",
        baseline_config=base_cfg,
        best_config=best.config if best else None,
        trials=records,
        probe_wait_fraction=baseline.wait_fraction if baseline else None,
        baseline_steps_per_s=baseline.steps_per_s if baseline else None,
        best_steps_per_s=best.steps_per_s if best else None,
        tuning_seconds=float(sum(durations)),
        tuning_steps=sum(t.steps for t in records),
    )
