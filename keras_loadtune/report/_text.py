"""Plain-text rendering of a `TuningReport`: the fixed-width table and the one-line summary."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

from keras_loadtune.report import _format as fmt
from keras_loadtune.report._advice import advise

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.report._data import ReportData
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


def measured_wait(report: ReportData) -> float | None:
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


def trial_rows(report: ReportData) -> list[tuple[str, ...]]:
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


def table(report: ReportData, indent: str = "  ") -> list[str]:
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


def _speedup_text(report: ReportData) -> str | None:
    if report.speedup is None:
        return None
    text = f"{fmt.speedup(report.speedup)} over your config"
    if report.baseline_config is not None:
        text += f" ({report.baseline_config})"
    return (
        text + f": {fmt.num(report.baseline_steps_per_s)} -> "
        f"{fmt.num(report.best_steps_per_s)} steps/s, steady state (measured)"
    )


def switched(report: ReportData) -> bool:
    """True when the config in use is not yours (a switch happened and stayed)."""
    return report.speedup is not None or (
        report.best_config is not None
        and report.baseline_config is not None
        and report.best_config != report.baseline_config
    )


def _trials_of_others(report: ReportData) -> list:
    """Trials of a config other than yours that ran steps (not skipped unrun)."""
    return [
        t
        for t in report.trials
        if t.config != report.baseline_config and t.state != "skipped" and (t.steps or 0) > 0
    ]


def _kept_why(report: ReportData, cfg: Any) -> str:
    """Why your config was kept: nothing else tried, nothing faster, or a faster trial
    that ended before it was measured long enough to keep (its partial rate shown)."""
    others = [t for t in report.trials if t.config != cfg]
    if not others:
        return "no other config was tried"
    base = report.baseline_steps_per_s
    cut = [
        t
        for t in _trials_of_others(report)
        if t.state != "complete"
        and fmt.is_number(base)
        and fmt.is_number(t.steps_per_s)
        and float(t.steps_per_s) > float(base)  # type: ignore[arg-type]
    ]
    if not cut:
        return "no config tried was faster"
    t = max(cut, key=lambda r: float(r.steps_per_s))  # type: ignore[arg-type]
    ratio = float(t.steps_per_s) / float(base)  # type: ignore[arg-type]
    reason = f" ({t.reason})" if t.reason else ""
    return (
        f"the fastest config tried, {fmt.config(t.config)}, ran {ratio:.1f}x its steps/s over "
        f"{t.steps} steps but ended before it was measured long enough to keep{reason}"
    )


def wait_text(report: ReportData) -> str | None:
    """The `Wait` figure. An arrow only when the config changed: your config's wait
    (the probe's) -> the last epoch's; a wait that rose although the steps got faster
    says why. A config that never changed shows the two figures by name."""
    before, after = report.probe_wait_fraction, report.final_wait_fraction
    if not switched(report):
        if fmt.is_number(before) and fmt.is_number(after):
            ran = (
                "your config kept, trials of others ran meanwhile"
                if _trials_of_others(report)
                else "your config throughout"
            )
            return (
                f"{fmt.pct(before)} of step time while probing, {fmt.pct(after)} in the last "
                f"epoch ({ran})"
            )
        if fmt.is_number(before) or fmt.is_number(after):
            value = before if fmt.is_number(before) else after
            return f"{fmt.pct(value)} of step time (your config)"
        return None
    if fmt.is_number(before) and fmt.is_number(after):
        text = f"{fmt.pct(before)} -> {fmt.pct(after)} of step time"
        if fmt.pct(after) != fmt.pct(before) and float(after) > float(before):  # type: ignore[arg-type]
            if report.speedup is not None and report.speedup > 1.0:
                text += (
                    f" (steps got faster, {fmt.num(report.baseline_steps_per_s)} -> "
                    f"{fmt.num(report.best_steps_per_s)} steps/s: the shorter step leaves a "
                    "larger share of it waiting)"
                )
            else:
                text += " (the config in use waits more than yours did while probing)"
        return text
    if fmt.is_number(after):
        return f"{fmt.pct(after)} of step time in the last epoch (after tuning)"
    if fmt.is_number(before):
        return f"{fmt.pct(before)} of step time (your config, while probing)"
    return None


def fit_text(report: ReportData) -> str | None:
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


def net_summary(net: float) -> str:
    """Net's figure for the summary line: `"1.79x faster net over this fit"`."""
    if abs(net - 1.0) < 0.005:
        return "no net difference over this fit"
    if net > 1.0:
        return f"{net:.2f}x faster net over this fit"
    return f"{1.0 / net:.2f}x slower net over this fit"


def why_lines(report: ReportData) -> list[str]:
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


def loader_text(report: ReportData) -> str | None:
    """The `Loader` line: what `At yours` compares against on this backend, next to
    what plain Keras runs at your config (`None` when the backend is unknown)."""
    cfg, backend = report.baseline_config, report.backend
    if backend is None or cfg is None:
        return None
    ours = "`At yours` is keras-loadtune's loader at your config"
    if backend == "tensorflow":
        return (
            f"{ours}; plain Keras on TensorFlow also feeds a PyDataset through a tf.data "
            "prefetch layer, which a wrapped dataset skips, so plain Keras with your "
            "config may differ (time a plain run to compare)"
        )
    name = {"jax": "JAX", "torch": "PyTorch"}.get(backend, backend)
    if cfg.workers <= 1 and not cfg.use_multiprocessing:
        if getattr(cfg, "inline", None) is not None:  # the engine runs it inline too
            return (
                f"{ours}, which calls `__getitem__` inline on the training thread as "
                f"plain Keras on {name} does at `workers=1`, so `At yours` estimates plain "
                "Keras at your config"
            )
        return (
            f"{ours} (one worker thread); plain Keras on {name} calls `__getitem__` "
            "inline on the training thread at `workers=1`, so a plain run may differ "
            "(time one to compare)"
        )
    return (
        f"{ours} (its prefetcher, at most `max_queue_size` batches ahead); plain Keras on "
        f"{name} runs your config through its OrderedEnqueuer, so a plain run may differ "
        "(time one to compare)"
    )


_COST_ORDER = ("probe and trials", "pool starts")


def cost_text(report: ReportData) -> str | None:
    """The `Cost` figure: everything the tuner added, and its parts when known."""
    if not fmt.is_number(report.tuning_cost_seconds):
        return None
    text = f"{fmt.seconds(report.tuning_cost_seconds)} caused by tuning (estimated"
    parts = {k: v for k, v in report.cost.items() if fmt.is_number(v) and v >= 0.05}
    if parts:
        keys = sorted(parts, key=lambda k: (k in _COST_ORDER, k))  # storage first
        text += ": " + ", ".join(f"{k} {fmt.seconds(parts[k])}" for k in keys)
        text += "; probe and trials: their time minus the same steps at the best config's rate)"
    else:
        text += ": its time minus the same steps at the best config's rate)"
    return text


def net_lines(report: ReportData) -> list[str]:
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
        loader = loader_text(report)
        if loader is not None:
            lines.append(_field("Loader", loader))
    cost = cost_text(report)
    if cost is not None:
        lines.append(_field("Cost", cost))
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


def _tuning_text(report: ReportData) -> str:
    n = len(report.trials)
    if n == 0:
        return (
            f"no trial; the probe took {report.tuning_steps} steps, "
            f"{fmt.seconds(report.tuning_seconds)}"
        )
    return (
        f"{n} trial{'s' if n != 1 else ''}, {report.tuning_steps} steps, "
        f"{fmt.seconds(report.tuning_seconds)}"
    )


def _outcome(report: ReportData) -> list[str]:
    d = report.decision
    best = report.best_trial
    winner = fmt.config(report.best_config) + (f" (trial #{best.number})" if best else "")
    lines: list[str] = []
    if d == "tuned":
        lines.append(_field("Winner", winner))
    elif d == "kept-baseline":
        cfg = report.baseline_config or report.best_config
        lines.append(_field("Kept", f"{fmt.config(cfg)} (your config): {_kept_why(report, cfg)}"))
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
    wait = wait_text(report)
    if wait:
        lines.append(_field("Wait", wait))
    if report.trials or report.tuning_seconds:
        lines.append(_field("Tuning", _tuning_text(report)))
    lines += net_lines(report)
    return lines


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, width=88, initial_indent="  ", subsequent_indent="  ")


def _paragraph(report: ReportData) -> list[str]:
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


def limit_text(report: ReportData) -> str | None:
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


def limit_lines(report: ReportData) -> list[str]:
    """`Limit:` and `Advice:` lines (none when the limit is unknown)."""
    text = limit_text(report)
    lines = [] if text is None else [_field("Limit", text)]
    for i, item in enumerate(advise(report)):
        first = f"  {'Advice:' if i == 0 else '':<9} - "
        lines += textwrap.wrap(
            one_line(item),
            width=100,
            initial_indent=first,
            subsequent_indent=" " * len(first),
            break_on_hyphens=False,
        )
    return lines


def not_started(report: ReportData) -> bool:
    """True for the report of a tuner before any fit (nothing measured, nothing run)."""
    return (
        report.decision == "in-progress"
        and not report.fit_running
        and not report.trials
        and not report.fit_all_steps
        and not report.fit_steps
        and not report.epoch_wait_fractions
    )


def headline(report: ReportData) -> str:
    """The report's first words: its decision, "no fit yet", or that it is mid-fit."""
    if not_started(report):
        return "no fit yet"
    text = _HEADLINES.get(report.decision, report.decision)
    if report.fit_running:
        text += " (mid-fit: the fit is still running)"
    return text


def render_text(report: ReportData) -> str:
    """`str(report)`."""
    lines = [f"{PREFIX} tuning report: {headline(report)}"]
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
        fit = net_lines(report)  # Fit, and Cost: what the tuner added, if anything
        lines += ["", *fit] if fit else []
    elif not_started(report):
        lines += _wrap(
            "No fit yet: pass the tuner to fit(), e.g. `" + WRAP_HINT + "`; the report "
            "fills in as training runs."
        )
    else:
        lines += table(report) if report.trials else ["  No trials recorded."]
        lines += ["", *_outcome(report)]
    lines += limit_lines(report)
    waits = [w for w in report.epoch_wait_fractions if fmt.is_number(w)]
    if report.epoch_wait_fractions:
        lines.append(_field("Epochs", "wait " + ", ".join(fmt.pct(w) for w in waits)))
    batches = _batches(report.input_facts)
    if report.profile or batches:
        profile = fmt.profile_line(report.profile) if report.profile else ""
        lines.append(_field("Profile", ", ".join(p for p in (profile, batches) if p)))
    if report.dataloader_kwargs:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in report.dataloader_kwargs.items())
        lines.append(_field("DataLoader", f"DataLoader(..., {kwargs})"))
    if report.reopen_reasons:
        n = len(report.reopen_reasons)
        lines += ["", f"  Re-tuned {n} time{'s' if n != 1 else ''} after input drift:"]
        lines += [f"    - {one_line(r)}" for r in report.reopen_reasons]
    if report.notes:
        lines += ["", "  Notes:"]
        lines += [f"    - {one_line(n)}" for n in report.notes]
    return "\n".join(lines).rstrip() + "\n"


def _batches(facts: dict[str, int]) -> str:
    """The input's batch facts for the Profile line ("" when unknown)."""
    size, last = facts.get("batch_size"), facts.get("partial_batch_size")
    if not size:
        return ""
    return f"{size} samples/batch" + (f" (the last {last})" if last else "")


def render_summary_line(report: ReportData) -> str:
    """`report.summary_line()`."""
    d = report.decision
    n = len(report.trials)
    trials = f"{n} trial{'s' if n != 1 else ''} in {fmt.seconds(report.tuning_seconds)}"
    before, after = report.probe_wait_fraction, report.final_wait_fraction
    if d == "tuned":
        body = f"tuned {fmt.config(report.best_config)}"
        if report.speedup is not None:
            body += f": {fmt.speedup(report.speedup)} faster in steady state"
            net = report.net_speedup
            if net is not None:
                body += ", " + net_summary(net)
        if fmt.is_number(before) and fmt.is_number(after):
            body += f" (wait {fmt.pct(before)} -> {fmt.pct(after)})"
        body += f", {trials}" if n else " (the pipeline model's seed, not measured)"
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
        body = f"kept your config {fmt.config(report.baseline_config)}"
        others = [t for t in report.trials if t.config != report.baseline_config]
        if others:
            body += f": no faster config found ({trials})"
        else:
            body += ": no other config was tried"
            if fmt.is_number(after):
                body += f" (wait {fmt.pct(after)} in the last epoch)"
    elif d == "tuning-failed":
        why = f" ({one_line(report.notes[0])})" if report.notes else ""
        cfg = report.best_config or report.baseline_config
        body = f"tuning failed{why}; using {fmt.config(cfg)}"
    elif not_started(report):
        body = "no fit yet"
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
