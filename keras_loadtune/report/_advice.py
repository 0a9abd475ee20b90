"""Ranked advice: what would raise the machine limit, or get a fit closer to it.

Each rule is a small function of a report (`ReportData`) that returns one `Advice`
(a rank and a short sentence) or `None` when it does not apply. Rules only say what the
report's own figures support: a rule that would promise a rate a measured trial
already contradicts stays silent, and a config measured no faster in this fit is
never proposed. Only when the limit is reached by measurement (the config in use
reaches it, its epochs waited under `wait_threshold`, nothing measured was faster:
`TuningReport.limit_reached`) does the advice say loader tuning cannot help, and name
what would move the limit instead; near it but unconfirmed, it says how far off it
is and what was not tried.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision.limit import Bound, MachineLimit
>>> from keras_loadtune.report import TuningReport
>>> rep = TuningReport("kept-baseline", LoaderConfig(), LoaderConfig(),
...                    baseline_steps_per_s=33.0,
...                    profile={"step_compute_s": 0.03, "produce_cpu_s": 0.002},
...                    epoch_wait_fractions=[0.01],
...                    limit=MachineLimit(33.3, Bound.MODEL_STEP, reached=0.99))
>>> advise(rep)[0].startswith("The config in use reaches 99% of this machine's limit")
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keras_loadtune.decision.limit import REACHED_SHARE as REACHED
from keras_loadtune.decision.limit import SAME_RATE as NOISE
from keras_loadtune.report import _format as fmt

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.decision.limit import MachineLimit
    from keras_loadtune.report._data import ReportData

#: A measured trial under this share of the estimate contradicts it; between this and
#: `REACHED` the two agree within the estimate's accuracy, and no advice is given.
CONTRADICTED = 0.75


@dataclass(frozen=True)
class Advice:
    """One piece of advice: `rank` orders them (lower first), `text` is shown.

    Example:

    >>> Advice(1, "More cores.").text
    'More cores.'
    """

    rank: int
    text: str


def _bound_words(limit: MachineLimit) -> str:
    return {
        "model-step": "the model step",
        "loader-cpu": "the cores, shared by the loader's CPU and the step's",
        "loader-latency": "the loader's latency at the most workers allowed",
        "memory": "the RAM budget for batches in flight",
    }[limit.bound.value]


def _reached(report: ReportData) -> float | None:
    limit = report.limit
    return None if limit is None else limit.reached


def at_limit(report: ReportData) -> Advice | None:
    """The limit is reached (measured: the config in use reaches it, its epochs waited
    under `wait_threshold` and no config measured faster): say so first."""
    limit, reached = report.limit, _reached(report)
    if limit is None or reached is None or not report.limit_reached:
        return None
    return Advice(
        0,
        f"The config in use reaches {fmt.pct(reached)} of this machine's limit "
        f"({fmt.num(limit.steps_per_s)} steps/s, set by {_bound_words(limit)}) and its "
        f"last epoch waited {fmt.pct(report.in_use_wait_fraction)} of step time (under "
        f"{fmt.pct(report.wait_threshold)}): loader tuning cannot make this fit faster; "
        "what follows would.",
    )


def _kind(mode: str, workers: int) -> str:
    if mode == "process":
        return "process" if workers == 1 else "processes"
    return "thread" if workers == 1 else "threads"


def not_tried(report: ReportData, limit: MachineLimit) -> tuple[str, str | None] | None:
    """What of the limit's config no trial measured in this fit, and the reason the
    report knows for it: `(what, why)`; `None` when a trial ran that mode with at
    least as many workers."""
    proc = limit.mode == "process"
    same_mode = [t for t in report.trials if t.config.use_multiprocessing == proc]
    done = [t for t in same_mode if t.state == "complete" and fmt.is_number(t.steps_per_s)]
    if done and max(t.config.workers for t in done) >= limit.workers:
        return None
    if done:
        most = max(t.config.workers for t in done)
        cut = [
            t
            for t in same_mode
            if t.state not in ("complete", "skipped")
            and (t.steps or 0) > 0
            and t.config.workers > most
        ]
        if cut:  # a bigger trial ran, but not long enough to count
            t = max(cut, key=lambda r: r.config.workers)
            ran = f"{t.config.workers} {_kind(limit.mode, t.config.workers)} ran {t.steps} steps"
            return (
                f"more than {most} {_kind(limit.mode, most)} measured in full",
                f"{ran}, {t.reason}" if t.reason else ran,
            )
        return f"more than {most} {_kind(limit.mode, most)}", "the most tried in this fit"
    what = "worker processes" if proc else f"{limit.workers} {_kind('thread', limit.workers)}"
    why = next((t.reason for t in same_mode if t.state != "complete" and t.reason), None)
    if why is None and proc:
        why = next(
            (n.split(":", 1)[1].strip() for n in report.notes if n.startswith("process mode")),
            None,
        )
    if why is not None:
        why = why.removeprefix("not worth it: ")
        if why.startswith("predicted gain"):
            why = f"the start-up would not pay back in this fit ({why})"
    if why is None and not report.trials:
        why = "no trial ran in this fit"
    return what, why


def _no_faster(report: ReportData, limit: MachineLimit) -> tuple[int, float] | None:
    """A trial with the limit's mode and at least its workers that measured no faster
    than the config in use (within `NOISE`) or under `CONTRADICTED` of the limit:
    `(workers, rate)` of the fastest such trial, else `None`."""
    proc = limit.mode == "process"
    in_use = report.in_use_steps_per_s
    rows = [
        (t.config.workers, float(t.steps_per_s))  # type: ignore[arg-type]
        for t in report.trials
        if t.state == "complete"
        and fmt.is_number(t.steps_per_s)
        and t.config.use_multiprocessing == proc
        and t.config.workers >= limit.workers
    ]
    if not rows:
        return None
    workers, rate = max(rows, key=lambda r: r[1])
    slower = in_use is not None and rate <= in_use * (1.0 + NOISE)
    if slower or rate < CONTRADICTED * limit.steps_per_s:
        return workers, rate
    return None


def not_reached(report: ReportData) -> Advice | None:
    """Near the limit by the estimate, but not confirmed by a measurement: the epochs
    still wait, or a config measured in the fit was faster. Say how far off it is and
    what was not tried."""
    limit, reached = report.limit, _reached(report)
    if limit is None or reached is None or reached < REACHED or report.limit_reached:
        return None
    why: list[str] = []
    wait = report.in_use_wait_fraction
    if wait is None:
        why.append("its wait in the epochs is unknown")
    elif wait >= report.wait_threshold:
        digits = 1 if fmt.pct(wait) == fmt.pct(report.wait_threshold) else 0  # 5.0% vs 4.96%
        why.append(
            f"its last epoch still waited {fmt.pct(wait, digits=digits)} of step time "
            f"(at or over the {fmt.pct(report.wait_threshold)} threshold)"
        )
    fastest, in_use = report.fastest_trial, report.in_use_steps_per_s
    faster = fastest is not None and in_use is not None
    if faster and float(fastest.steps_per_s) > in_use * (1.0 + NOISE):  # type: ignore[arg-type,union-attr,operator]
        why.append(
            f"trial #{fastest.number} ({fastest.config}) measured "  # type: ignore[union-attr]
            f"{fmt.num(fastest.steps_per_s)} steps/s against {fmt.num(in_use)}"  # type: ignore[union-attr]
        )
    off = 1.0 / max(reached, 1e-9)
    if wait is not None and 0 <= wait < 1:
        off = max(off, 1.0 / (1.0 - wait))  # the wait alone, were it gone
    untried = not_tried(report, limit)
    tail = ""
    if untried is not None:
        what, reason = untried
        tail = f" Not tried: {what}" + (f" ({reason})." if reason else ".")
    return Advice(
        0,
        f"The config in use reaches {fmt.pct(reached)} of the estimated limit "
        f"({fmt.num(limit.steps_per_s)} steps/s), but {' and '.join(why)}: the limit is "
        f"not confirmed, and this fit may still be up to {off:.2f}x from it.{tail}",
    )


def more_workers(report: ReportData) -> Advice | None:
    """Below the limit: the workers (threads or processes) that would reach it, only
    when no trial measured them no faster; an untried config says it is estimated and
    why it was not tried."""
    limit, reached = report.limit, _reached(report)
    if limit is None or reached is None or reached >= REACHED:
        return None
    kind = _kind(limit.mode, limit.workers)
    measured = _no_faster(report, limit)
    if measured is not None:
        workers, rate = measured
        if rate >= CONTRADICTED * limit.steps_per_s:
            return None  # measured as close to the estimate as it is accurate: nothing to add
        return Advice(
            1,
            f"The estimate says {limit.workers} {kind} could reach "
            f"{fmt.num(limit.steps_per_s)} steps/s, but a measured trial with as many got "
            f"{fmt.num(rate)} ({workers} {_kind(limit.mode, workers)}): the estimate is "
            "optimistic here; trust the measurement.",
        )
    gain = 1.0 / max(reached, 1e-9)
    untried = not_tried(report, limit)
    how = "estimated"
    if untried is not None:
        what, why = untried
        how += f", not tried: {what}" + (f" ({why})" if why else " in this fit")
    return Advice(
        1,
        f"The config in use reaches {fmt.pct(reached)} of this machine's limit: about "
        f"{limit.workers} {kind} (e.g. `workers={limit.workers}"
        f"{', use_multiprocessing=True' if limit.mode == 'process' else ''}`) could be up to "
        f"{gain:.1f}x faster ({how}); a longer fit lets the tuner try them.",
    )


def decode_in_c(report: ReportData) -> Advice | None:
    """Loader-CPU bound: move decoding and augmentation out of Python."""
    limit = report.limit
    cpu = report.profile.get("produce_cpu_s")
    if limit is None or limit.bound.value != "loader-cpu" or not fmt.is_number(cpu):
        return None
    return Advice(
        2,
        f"The loader needs {fmt.ms(cpu)} of CPU per batch on cores the step also uses: "
        "decode and augment in C, e.g. `tf.io.decode_jpeg` and `tf.image` ops in a "
        "`tf.data` pipeline, or vectorised NumPy instead of per-item Python.",
    )


def cache_batches(report: ReportData) -> Advice | None:
    """Loader-CPU bound over repeated epochs: cache decoded batches."""
    limit = report.limit
    if limit is None or limit.bound.value != "loader-cpu":
        return None
    if len(report.epoch_wait_fractions) < 2 and not report.fit_running:
        return None  # one epoch: nothing repeats
    step_rate = limit.rates.get("model-step")
    up_to = ""
    if fmt.is_number(step_rate) and step_rate > limit.steps_per_s:  # type: ignore[operator]
        up_to = f", up to {step_rate / limit.steps_per_s:.1f}x (the model step's own rate)"  # type: ignore[operator]
    return Advice(
        3,
        "Epochs repeat the same decoding: cache decoded batches (in memory, or "
        f"`tf.data.Dataset.cache()`) and augment cheaply after the cache{up_to}.",
    )


def more_cores(report: ReportData) -> Advice | None:
    """Loader-CPU bound: more cores raise the limit (estimate at twice the cores)."""
    limit = report.limit
    cores = report.profile.get("cores")
    if limit is None or limit.bound.value != "loader-cpu" or not fmt.is_number(cores):
        return None
    step_rate = limit.rates.get("model-step")
    doubled = 2.0 * limit.steps_per_s
    if fmt.is_number(step_rate):
        doubled = min(doubled, float(step_rate))  # type: ignore[arg-type]
    if doubled <= limit.steps_per_s * 1.05:
        return None
    return Advice(
        4,
        f"More cores: with {2 * int(cores)} instead of {int(cores)} the limit would be about "  # type: ignore[arg-type]
        f"{fmt.num(doubled)} steps/s (estimated).",
    )


def cheaper_step(report: ReportData) -> Advice | None:
    """Model-step bound: make the step itself cheaper."""
    limit = report.limit
    if limit is None or limit.bound.value != "model-step":
        return None
    # The limit's own figure, so the advice and the Limit line quote one step.
    took = f" ({fmt.ms(1.0 / limit.steps_per_s)} per step)" if limit.steps_per_s > 0 else ""
    # "The loader would not" only once the limit is reached by measurement.
    tail = "; the loader would not." if report.limit_reached else "."
    return Advice(
        2,
        f"The model step itself is the limit{took}: mixed precision "
        "(`keras.mixed_precision.set_global_policy('mixed_float16')` on a GPU), XLA "
        "(`model.compile(..., jit_compile=True)`) or a bigger batch (fewer steps per "
        f"epoch) would raise it{tail}",
    )


def more_threads(report: ReportData) -> Advice | None:
    """Latency-bound at the worker cap: allow more threads."""
    limit = report.limit
    if limit is None or limit.bound.value != "loader-latency":
        return None
    step_rate = limit.rates.get("model-step")
    gain = ""
    if fmt.is_number(step_rate) and step_rate > limit.steps_per_s:  # type: ignore[operator]
        gain = f", up to {step_rate / limit.steps_per_s:.1f}x"  # type: ignore[operator]
    return Advice(
        2,
        f"The loader waits on latency and the worker cap ({limit.workers}) limits how "
        f"many batches are in flight: allow more threads (`max_thread_workers`){gain}.",
    )


def less_memory(report: ReportData) -> Advice | None:
    """Memory bound: fewer or smaller batches in flight."""
    limit = report.limit
    if limit is None or limit.bound.value != "memory":
        return None
    size = report.profile.get("batch_nbytes")
    each = f" of {fmt.nbytes(size)}" if fmt.is_number(size) else ""
    return Advice(
        2,
        f"The RAM budget holds only {limit.workers} batches{each} in flight: use smaller "
        "batches or a smaller `max_queue_size`, or raise `ram_budget_bytes` if the "
        "machine has the memory.",
    )


def tune_the_input(report: ReportData) -> Advice | None:
    """Unwrapped training data that kept the step waiting: the knobs of each input kind
    (a `tf.data` pipeline, a DataLoader or Grain input `tuner.wrap` returned unchanged)."""
    waits = report.epoch_wait_fractions
    if report.decision != "not-wrapped" or not waits or waits[-1] < report.wait_threshold:
        return None
    return Advice(
        1,
        f"The step waited {fmt.pct(waits[-1])} of the last epoch on input keras-loadtune does "
        "not serve: a tf.data pipeline tunes itself with `map(..., num_parallel_calls="
        "tf.data.AUTOTUNE)`, `.prefetch(tf.data.AUTOTUNE)`, `.cache()` and "
        "`tf.data.Options().autotune.ram_budget` / `cpu_budget`; a PyDataset, a map-style "
        "DataLoader or a Grain MapDataset of batches is tuned live by `tuner.wrap(...)`.",
    )


#: Every rule, in the order ties are broken.
RULES: tuple[Callable[[ReportData], Advice | None], ...] = (
    at_limit,
    not_reached,
    more_workers,
    decode_in_c,
    cheaper_step,
    more_threads,
    less_memory,
    cache_batches,
    more_cores,
    tune_the_input,
)


def advise(report: ReportData) -> list[str]:
    """The report's advice, ranked: every rule that applies, lowest rank first.

    Args:
        report: The tuning report.

    Returns:
        Short sentences (empty when the limit is unknown).

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> from keras_loadtune.report import TuningReport
    >>> advise(TuningReport("in-progress", LoaderConfig(), None))
    []
    """
    found = [a for a in (rule(report) for rule in RULES) if a is not None]
    return [a.text for a in sorted(found, key=lambda a: a.rank)]


__all__ = ["NOISE", "REACHED", "RULES", "Advice", "advise", "not_tried"]
