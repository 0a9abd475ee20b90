"""Self-contained HTML rendering of a `TuningReport` for notebooks (every user string escaped)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from keras_loadtune.report import _format as fmt
from keras_loadtune.report import _text
from keras_loadtune.report._advice import advise

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.report._data import ReportData

_TABLE = "border-collapse:collapse;font-family:monospace;font-size:12px;margin:4px 0"
_CELL = "border-bottom:1px solid #ddd;padding:2px 8px"
_STATE_BG = {"pruned": "#fff4e0", "failed": "#fde8e8", "skipped": "#f2f2f2"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _align(column: str) -> str:
    return "right" if column in _text._RIGHT else "left"


def _list(title: str, items: list[str]) -> str:
    if not items:
        return ""
    lis = "".join(f"<li>{_e(_text.one_line(i))}</li>" for i in items)
    return f"<div><b>{_e(title)}</b><ul style='margin:2px 0'>{lis}</ul></div>"


def render_html(report: ReportData) -> str:
    """`report._repr_html_()`."""
    headline = _text.headline(report)
    parts = [
        "<div class='keras-loadtune-report'>",
        f"<div><b>keras_loadtune</b>: {_e(headline)}</div>",
        f"<div>{_e(_text.render_summary_line(report))}</div>",
    ]
    if report.study_name or report.storage_url:
        where = report.study_name or "?"
        if report.storage_url:
            where += f" @ {fmt.redact_url(report.storage_url)}"
        parts.append(f"<div>Study: {_e(where)}</div>")
    if report.decision == "not-wrapped":
        parts.append(f"<div>To tune: <code>{_e(_text.WRAP_HINT)}</code></div>")
    if report.trials:
        best = report.best_trial
        head = "".join(
            f"<th style='{_CELL};text-align:{_align(c)}'>{_e(c)}</th>" for c in _text.COLUMNS
        )
        body = []
        for trial, row in zip(report.trials, _text.trial_rows(report)):
            style = "font-weight:bold;background:#e8f5e9" if trial is best else ""
            if trial.state in _STATE_BG:
                style = f"background:{_STATE_BG[trial.state]}"
            cells = "".join(
                f"<td style='{_CELL};text-align:{_align(c)}'>{_e(cell)}</td>"
                for c, cell in zip(_text.COLUMNS, row)
            )
            body.append(f"<tr style='{style}'>{cells}</tr>")
        parts.append(
            f"<table style='{_TABLE}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    facts = []
    speed = _text._speedup_text(report)
    if speed:
        facts.append(("Speedup", speed))
    wait = _text.wait_text(report)
    if wait:
        facts.append(("Wait", wait))
    if report.trials or report.tuning_seconds:
        facts.append(("Tuning", _text._tuning_text(report)))
    if report.epoch_wait_fractions:
        facts.append(("Epochs", ", ".join(fmt.pct(w) for w in report.epoch_wait_fractions)))
    if report.profile:
        facts.append(("Profile", fmt.profile_line(report.profile)))
    for line in _text.net_lines(report):
        label, _, value = line.strip().partition(":")
        facts.append((label, value.strip()))
    limit = _text.limit_text(report)
    if limit:
        facts.append(("Limit", limit))
    if facts:
        parts.append("<div>" + "<br>".join(f"<b>{_e(k)}:</b> {_e(v)}" for k, v in facts) + "</div>")
    parts.append(_list("Advice", advise(report)))
    parts.append(_list("Re-tuned after input drift", report.reopen_reasons))
    parts.append(_list("Notes", report.notes))
    parts.append("</div>")
    return "".join(parts)
