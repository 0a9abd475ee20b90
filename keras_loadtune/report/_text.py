"""Plain-text rendering of a `TuningReport`: the fixed-width table and the one-line summary."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from keras_loadtune.report import _format as fmt

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.report._model import TuningReport
    from keras_loadtune.trial import TrialRecord

PREFIX = "keras_loadtune"
WRAP_HINT = "model.fit(tuner.wrap(dataset), ..., callbacks=[tuner])"
COLUMNS = ("#", "config", "source", "steps/s", "wait %", "RSS MiB", "state")
_RIGHT = {"#", "steps/s", "wait %", "RSS MiB"}
_HEADLINES = {
    "tuned": "tuned",
    "compute-bound": "compute-bound, nothing to tune",
    "not-wrapped": "measured only (dataset not wrapped)",
    "tuning-failed": "tuning failed",
    "in-progress": "tuning in progress",
    "kept-baseline": "kept your config",
    "warm-start": "warm-started from a stored study",
}


def one_line(text: str) -> str:
    """Collapse newlines/tabs so user strings cannot break the table layout."""
    return " ".join(str(text).split())


def measured_wait(report: TuningReport) -> float | None:
    """The wait fraction that best describes the user's own config."""
    for value in (report.probe_wait_fraction, report.final_wait_fraction):
        if fmt.is_number(value):
            return value
    waits = [w for w in report.epoch_wait_fractions if fmt.is_number(w)]
    return sum(waits) / len(waits) if waits else None


def state_text(trial: TrialRecord, best: TrialRecord | None) -> str:
    """`"complete"`, `"complete <- best"`, or `"pruned: <reason>"`."""
    text = trial.state
    if trial.reason and trial.state != "complete":
        text += ": " + one_line(trial.reason)
    if best is not None and trial is best:
        text += " <- best"
    return text


def trial_rows(report: TuningReport) -> list[tuple[str, ...]]:
    """Rendered cells, one tuple per trial (same order as `COLUMNS`)."""
    best = report.best_trial
    return [
        (
            str(t.number),
            str(t.config),
            t.source,
            fmt.num(t.steps_per_s),
            fmt.num(None if t.wait_fraction is None else 100 * t.wait_fraction),
            fmt.mib(t.rss_bytes),
            state_text(t, best),
        )
        for t in report.trials
    ]


def table(report: TuningReport, indent: str = "  ") -> list[str]:
    """The fixed-width trial table (header + one line per trial)."""
    rows = [COLUMNS, *trial_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        cells = []
        for i, (name, cell) in enumerate(zip(COLUMNS, row)):
            if i == len(COLUMNS) - 1:
                cells.append(cell)  # last column: no padding
            elif name in _RIGHT:
                cells.append(cell.rjust(widths[i]))
            else:
                cells.append(cell.ljust(widths[i]))
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _field(label: str, value: str) -> str:
    return f"  {label + ':':<9} {value}"


def _speedup_text(report: TuningReport) -> str | None:
    if report.speedup is None:
        return None
    text = f"{fmt.speedup(report.speedup)} over your config"
    if report.baseline_config is not None:
        text += f" ({report.baseline_config})"
    return (
        text + f": {fmt.num(report.baseline_steps_per_s)} -> "
        f"{fmt.num(report.best_steps_per_s)} steps/s, steady state (measured)"
    )


def _wait_text(report: TuningReport) -> str | None:
    before, after = report.probe_wait_fraction, report.final_wait_fraction
    if fmt.is_number(before) and fmt.is_number(after):
        return f"{fmt.pct(before)} -> {fmt.pct(after)} of step time"
    if fmt.is_number(before):
        return f"{fmt.pct(before)} of step time (your config)"
    if fmt.is_number(after):
        return f"{fmt.pct(after)} of step time (after tuning)"
    return None


def fit_text(report: TuningReport) -> str | None:
    """The `Fit` figure: the whole fit's wall time (or, for old reports, the part after
    the warm-up), saying when the fit is still running."""
    running = "; the fit is still running, this is a mid-fit report" if report.fit_running else ""
    if fmt.is_number(report.fit_wall_seconds):
        steps = report.fit_all_steps or report.fit_steps
        count = f" for {steps} steps" if steps else ""
        so_far = " so far" if report.fit_running else ""
        return (
            f"{fmt.seconds(report.fit_wall_seconds)}{count}{so_far} (measured, the whole "
            f"fit: start-ups and warm-up included{running})"
        )
    if fmt.is_number(report.fit_seconds):
        steps = f" for {report.fit_steps} steps" if report.fit_steps else ""
        return (
            f"{fmt.seconds(report.fit_seconds)}{steps} (measured, after the warm-up steps{running})"
        )
    return None


def net_effect(net: float) -> str:
    """`"1.43x faster than"`, `"1.00x: no difference from"` or `"1.20x slower than"`."""
    if abs(net - 1.0) < 0.005:
        return "1.00x: no difference from"
    return f"{net:.2f}x faster than" if net > 1.0 else f"{1.0 / net:.2f}x slower than"


def why_lines(report: TuningReport) -> list[str]:
    """A line saying why Speedup and Net disagree in direction, if they do."""
    sp, net = report.speedup, report.net_speedup
    if sp is None or net is None or not (sp > 1.0 and net < 0.995):
        return []
    cost = report.tuning_cost_seconds if fmt.is_number(report.tuning_cost_seconds) else 0.0
    return [
        _field(
            "Why",
            f"tuning cost {fmt.seconds(cost)}, more than the {fmt.seconds(report.saved_seconds)} "
            f"the faster config saved over this fit's {report.fit_steps or 0} steps; later "
            "epochs and later runs get the speedup",
        )
    ]


def net_lines(report: TuningReport) -> list[str]:
    """This fit's net effect, each figure labelled measured or estimated."""
    lines: list[str] = []
    fit = fit_text(report)
    if fit is not None:
        lines.append(_field("Fit", fit))
    at_yours = report.baseline_fit_seconds
    if at_yours is not None:
        saved = report.saved_seconds
        how = "Fit minus tuning's cost"
        if saved:
            how += (
                f", plus {report.fit_steps} steps at your config's "
                f"{fmt.num(report.baseline_steps_per_s)} steps/s instead of the best's "
                f"{fmt.num(report.best_steps_per_s)}"
            )
        lines.append(
            _field(
                "At yours",
                f"{fmt.seconds(at_yours)} (estimated: this fit at your config on "
                f"keras-loadtune's loader; {how})",
            )
        )
    net = report.net_speedup
    if net is not None:
        lines.append(
            _field(
                "Net",
                f"{net_effect(net)} this fit at your config on keras-loadtune's "
                "loader (estimated, tuning included)",
            )
        )
        lines += why_lines(report)
        if report.backend == "tensorflow":
            lines.append(
                _field(
                    "Loader",
                    "on TensorFlow a wrapped dataset skips Keras's tf.data prefetch "
                    "layer, so plain Keras with your config may differ from `At yours` "
                    "(time a plain run to compare)",
                )
            )
    if fmt.is_number(report.tuning_cost_seconds):
        lines.append(
            _field(
                "Cost",
                f"{fmt.seconds(report.tuning_cost_seconds)} caused by tuning (estimated: "
                "its time minus the same steps at the best config's rate)",
            )
        )
    if fmt.is_number(report.worst_step_gap_seconds):
        median = report.median_step_seconds
        scale = f" (median step {fmt.ms(median)})" if fmt.is_number(median) else ""
        lines.append(
            _field(
                "Stall",
                f"longest step after a tuner action {fmt.ms(report.worst_step_gap_seconds)}"
                f"{scale} (measured)",
            )
        )
    return lines


def _tuning_text(report: TuningReport) -> str:
    n = len(report.trials)
    return (
        f"{n} trial{'s' if n != 1 else ''}, {report.tuning_steps} steps, "
        f"{fmt.seconds(report.tuning_seconds)}"
    )


def _outcome(report: TuningReport) -> list[str]:
    d = report.decision
    best = report.best_trial
    winner = fmt.config(report.best_config) + (f" (trial #{best.number})" if best else "")
    lines: list[str] = []
    if d == "tuned":
        lines.append(_field("Winner", winner))
    elif d == "kept-baseline":
        cfg = report.baseline_config or report.best_config
        why = "no config tried was faster" if report.trials else "no other config was tried"
        lines.append(_field("Kept", f"{fmt.config(cfg)} (your config): {why}"))
    elif d == "tuning-failed":
        cfg = report.best_config or report.baseline_config
        lines.append(_field("Using", f"{fmt.config(cfg)}; see the notes for why tuning failed"))
    elif d == "in-progress":
        lines.append(_field("Best yet", winner if report.best_config else "none measured yet"))
    elif d == "warm-start":
        src = f" from study {report.warm_start_from!r}" if report.warm_start_from else ""
        lines.append(_field("Using", f"{fmt.config(report.best_config)}{src}"))
    speed = _speedup_text(report)
    if speed and d != "kept-baseline":
        lines.append(_field("Speedup", speed))
    elif d == "kept-baseline" and fmt.is_number(report.baseline_steps_per_s):
        lines.append(_field("Speed", f"{fmt.num(report.baseline_steps_per_s)} steps/s"))
    wait = _wait_text(report)
    if wait:
        lines.append(_field("Wait", wait))
    if report.trials or report.tuning_seconds:
        lines.append(_field("Tuning", _tuning_text(report)))
    lines += net_lines(report)
    return lines


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, width=88, initial_indent="  ", subsequent_indent="  ")


def _paragraph(report: TuningReport) -> list[str]:
    wait = measured_wait(report)
    on = f" on your config ({report.baseline_config})" if report.baseline_config else ""
    if report.decision == "compute-bound":
        return _wrap(
            f"The input pipeline keeps up: the model waited for data {fmt.pct(wait)} of "
            f"step time{on}. Training is compute-bound, so there is nothing to tune; the "
            "loader config was left unchanged."
        )
    return [
        *_wrap(
            f"LoadTuner only measured: the model waited for data {fmt.pct(wait)} of step "
            f"time{on}. To let it tune workers, queue size and threads/processes, pass the "
            "wrapped dataset to fit:"
        ),
        "",
        f"      {WRAP_HINT}",
    ]


def limit_text(report: TuningReport) -> str | None:
    """The `Limit` figure: the machine limit, its bound and how much of it is reached."""
    limit = report.limit
    if limit is None:
        return None
    kind = "estimated" if limit.estimated else "measured"
    text = (
        f"{fmt.num(limit.steps_per_s)} steps/s on this machine, bound: {limit.bound.value} ({kind}"
    )
    if limit.assumptions and limit.estimated:
        text += "; assumes " + "; ".join(limit.assumptions)
    text += ")"
    if limit.reached is not None:
        text += f"; the config in use reaches {fmt.pct(limit.reached)}"
    return text


def limit_lines(report: TuningReport) -> list[str]:
    """`Limit:` and `Advice:` lines (none when the limit is unknown)."""
    text = limit_text(report)
    lines = [] if text is None else [_field("Limit", text)]
    for i, item in enumerate(report.advice):
        first = f"  {'Advice:' if i == 0 else '':<9} - "
        lines += textwrap.wrap(
            one_line(item),
            width=100,
            initial_indent=first,
            subsequent_indent=" " * len(first),
            break_on_hyphens=False,
        )
    return lines


def render_text(report: TuningReport) -> str:
    """`str(report)`."""
    headline = _HEADLINES.get(report.decision, report.decision)
    if report.fit_running:
        headline += " (mid-fit: the fit is still running)"
    lines = [f"{PREFIX} tuning report: {headline}"]
    if report.study_name or report.storage_url:
        where = report.study_name or "?"
        if report.storage_url:
            where += f" @ {fmt.redact_url(report.storage_url)}"
        lines.append(_field("Study", where))
    lines.append("")
    if report.decision in ("compute-bound", "not-wrapped"):
        lines += _paragraph(report)
        if report.trials:
            lines += ["", *table(report)]
    else:
        lines += table(report) if report.trials else ["  No trials recorded."]
        lines += ["", *_outcome(report)]
    lines += limit_lines(report)
    waits = [w for w in report.epoch_wait_fractions if fmt.is_number(w)]
    if report.epoch_wait_fractions:
        lines.append(_field("Epochs", "wait " + ", ".join(fmt.pct(w) for w in waits)))
    if report.profile:
        lines.append(_field("Profile", fmt.profile_line(report.profile)))
    if report.reopen_reasons:
        n = len(report.reopen_reasons)
        lines += ["", f"  Re-tuned {n} time{'s' if n != 1 else ''} after input drift:"]
        lines += [f"    - {one_line(r)}" for r in report.reopen_reasons]
    if report.notes:
        lines += ["", "  Notes:"]
        lines += [f"    - {one_line(n)}" for n in report.notes]
    return "\n".join(lines).rstrip() + "\n"


def render_summary_line(report: TuningReport) -> str:
    """`report.summary_line()`."""
    d = report.decision
    n = len(report.trials)
    trials = f"{n} trial{'s' if n != 1 else ''} in {fmt.seconds(report.tuning_seconds)}"
    before, after = report.probe_wait_fraction, report.final_wait_fraction
    if d == "tuned":
        body = f"tuned {fmt.config(report.best_config)}"
        if report.speedup is not None:
            body += f": {fmt.speedup(report.speedup)} faster"
        if fmt.is_number(before) and fmt.is_number(after):
            body += f" (wait {fmt.pct(before)} -> {fmt.pct(after)})"
        body += f", {trials}"
    elif d == "compute-bound":
        body = (
            f"compute-bound (wait {fmt.pct(measured_wait(report))}); "
            "the loader keeps up, nothing to tune"
        )
    elif d == "not-wrapped":
        body = (
            f"measured wait {fmt.pct(measured_wait(report))} of step time; "
            "pass tuner.wrap(dataset) to fit() to tune"
        )
    elif d == "kept-baseline":
        body = f"kept your config {fmt.config(report.baseline_config)}: no faster config found"
        body += f" ({trials})"
    elif d == "tuning-failed":
        why = f" ({one_line(report.notes[0])})" if report.notes else ""
        cfg = report.best_config or report.baseline_config
        body = f"tuning failed{why}; using {fmt.config(cfg)}"
    elif d == "in-progress":
        body = f"tuning in progress, {n} trial{'s' if n != 1 else ''} so far"
        if report.best_config is not None:
            body += f"; best {report.best_config}"
            if report.speedup is not None:
                body += f" ({fmt.speedup(report.speedup)})"
    elif d == "warm-start":
        body = f"warm-started {fmt.config(report.best_config)}"
        if report.warm_start_from:
            body += f" from study {report.warm_start_from!r}"
        if fmt.is_number(after):
            body += f" (wait {fmt.pct(after)})"
    else:  # pragma: no cover - decision is validated on construction
        body = d
    if report.reopen_reasons:
        body += f"; re-tuned {len(report.reopen_reasons)}x after drift"
    limit = report.limit
    if limit is not None:
        body += f"; limit {fmt.num(limit.steps_per_s)} steps/s ({limit.bound.value}"
        if limit.reached is not None:
            body += f", {fmt.pct(limit.reached)} reached"
        body += ")"
    return f"{PREFIX}: {one_line(body)}"
