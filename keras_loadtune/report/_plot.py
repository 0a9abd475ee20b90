"""matplotlib chart of a `TuningReport` (matplotlib imported only here, lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from keras_loadtune.report import _format as fmt

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from keras_loadtune.report._data import ReportData

MODE_COLORS = {"thread": "#4C72B0", "process": "#DD8452"}
#: Legend label of each mode (plural).
MODE_LABELS = {"thread": "threads", "process": "processes"}
_HATCH = {"pruned": "//", "failed": "xx", "skipped": ".."}


def _import_matplotlib():  # type: ignore[no-untyped-def]
    try:
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise ImportError(
            "TuningReport.plot() needs matplotlib: pip install keras-loadtune[plot]"
        ) from exc
    return plt, Patch


def nothing_to_plot(report: ReportData) -> str | None:
    """Why a report has no chart (no measured trial), in words; `None` when it has one."""
    if any(fmt.is_number(t.steps_per_s) for t in report.trials):
        return None
    if report.decision == "compute-bound":
        why = "compute-bound: the loader keeps up, so no loader config was tried"
    elif report.decision == "not-wrapped":
        why = "the dataset was not wrapped: nothing was tried"
    elif report.decision == "in-progress":
        why = "no trial measured yet"
    else:
        why = "no trial was measured"
    from keras_loadtune.report._text import limit_text

    limit = limit_text(report)
    return f"Nothing to plot: {why}." + (f"\nLimit: {limit}" if limit else "")


def _words(ax: Axes, text: str, title: str) -> None:
    import textwrap

    wrapped = "\n".join(textwrap.fill(part, 60) for part in text.splitlines())
    ax.set_axis_off()
    ax.text(0.5, 0.5, wrapped, ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set_title(title)


def plot_report(report: ReportData, ax: Axes | None = None) -> Figure:
    """`report.plot(ax)`: one bar per trial, coloured by mode, baseline line, best outlined,
    the machine limit as a line; a report with nothing to plot says so in words."""
    plt, Patch = _import_matplotlib()
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(report.trials) + 2.0), 3.5))
    fig = ax.figure
    empty = nothing_to_plot(report)
    if empty is not None:
        _words(ax, empty, f"keras_loadtune: {report.decision}")
        return fig
    trials = report.trials
    best = report.best_trial
    xs = list(range(len(trials)))
    heights = [float(t.steps_per_s) if fmt.is_number(t.steps_per_s) else 0.0 for t in trials]
    bars = ax.bar(
        xs,
        heights,
        color=[MODE_COLORS[t.config.mode] for t in trials],
        edgecolor="black",
        linewidth=0.5,
    )
    for bar, trial in zip(bars, trials):
        bar.set_gid(f"trial-{trial.number}")
        if trial.state in _HATCH:
            bar.set_hatch(_HATCH[trial.state])
            bar.set_alpha(0.55)
            ax.annotate(
                trial.state,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                xytext=(0, 2),
                textcoords="offset points",
            )
        if best is not None and trial is best:
            bar.set_linewidth(2.5)
            bar.set_edgecolor("#2ca02c")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"#{t.number}\n{fmt.short_config(t.config)}" for t in trials], fontsize=7)
    handles = [Patch(facecolor=c, label=MODE_LABELS[m]) for m, c in MODE_COLORS.items()]
    if fmt.is_number(report.baseline_steps_per_s):
        line = ax.axhline(
            float(report.baseline_steps_per_s),  # type: ignore[arg-type]
            color="grey",
            linestyle="--",
            linewidth=1,
            label=f"your config ({fmt.num(report.baseline_steps_per_s)} steps/s)",
        )
        handles.append(line)
    limit = report.limit
    if limit is not None:
        handles.append(
            ax.axhline(
                float(limit.steps_per_s),
                color="#C44E52",
                linestyle=":",
                linewidth=1.2,
                label=f"limit {fmt.num(limit.steps_per_s)} steps/s ({limit.bound.value})",
            )
        )
    if best is not None:
        handles.append(Patch(facecolor="white", edgecolor="#2ca02c", linewidth=2.5, label="best"))
    if any(t.state in _HATCH for t in trials):
        handles.append(
            Patch(facecolor="white", edgecolor="black", hatch="//", label="not completed")
        )
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_ylabel("steps/s")
    ax.set_xlabel("trial")
    title = f"keras_loadtune: {report.decision}"
    if report.speedup is not None:
        title += f" ({fmt.speedup(report.speedup)})"
    ax.set_title(title)
    return fig
