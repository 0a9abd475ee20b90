"""Ranked advice: what would raise the machine limit, or get a fit closer to it.

Each rule is a small function of a `TuningReport` that returns one `Advice` (a rank
and a short sentence) or `None` when it does not apply. Rules only say what the
report's own figures support: a rule that would promise a rate a measured trial
already contradicts stays silent, and when the config in use reaches the limit the
advice says so plainly and names what would move the limit instead.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision.limit import Bound, MachineLimit
>>> from keras_loadtune.report import TuningReport
>>> rep = TuningReport("kept-baseline", LoaderConfig(), LoaderConfig(),
...                    baseline_steps_per_s=33.0,
...                    profile={"step_compute_s": 0.03, "produce_cpu_s": 0.002},
...                    limit=MachineLimit(33.3, Bound.MODEL_STEP, reached=0.99))
>>> advise(rep)[0].startswith("The config in use reaches 99% of this machine's limit")
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keras_loadtune.report import _format as fmt

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.decision.limit import MachineLimit
    from keras_loadtune.report._model import TuningReport

#: `reached` at or above this counts as "at the limit" (measurement noise).
REACHED = 0.9
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


def _reached(report: TuningReport) -> float | None:
    limit = report.limit
    return None if limit is None else limit.reached


def at_limit(report: TuningReport) -> Advice | None:
    """The config in use reaches the limit: say so, tuning further cannot help."""
    limit, reached = report.limit, _reached(report)
    if limit is None or reached is None or reached < REACHED:
        return None
    return Advice(
        0,
        f"The config in use reaches {fmt.pct(reached)} of this machine's limit "
        f"({fmt.num(limit.steps_per_s)} steps/s, set by {_bound_words(limit)}): loader "
        "tuning cannot make this fit faster; what follows would.",
    )


def _contradicted(report: TuningReport, limit: MachineLimit) -> float | None:
    """The best measured rate of a trial that already ran the limit's mode with at
    least its workers, when that rate stayed under the limit (else `None`)."""
    mode_is_proc = limit.mode == "process"
    rates = [
        float(t.steps_per_s)
        for t in report.trials
        if t.state == "complete"
        and fmt.is_number(t.steps_per_s)
        and t.config.use_multiprocessing == mode_is_proc
        and t.config.workers >= limit.workers
    ]
    if rates and max(rates) < REACHED * limit.steps_per_s:
        return max(rates)
    return None


def more_workers(report: TuningReport) -> Advice | None:
    """Below the limit: the workers (threads or processes) that would reach it."""
    limit, reached = report.limit, _reached(report)
    if limit is None or reached is None or reached >= REACHED:
        return None
    kind = "process" if limit.mode == "process" else "thread"
    kind += "es" if kind == "process" and limit.workers != 1 else ""
    kind += "s" if kind == "thread" and limit.workers != 1 else ""
    measured = _contradicted(report, limit)
    if measured is not None and measured >= CONTRADICTED * limit.steps_per_s:
        return None  # measured as close to the estimate as it is accurate: nothing to add
    if measured is not None:
        return Advice(
            1,
            f"The estimate says {limit.workers} {kind} could reach "
            f"{fmt.num(limit.steps_per_s)} steps/s, but a measured trial with as many got "
            f"{fmt.num(measured)}: the estimate is optimistic here; trust the measurement.",
        )
    gain = 1.0 / max(reached, 1e-9)
    return Advice(
        1,
        f"The config in use reaches {fmt.pct(reached)} of this machine's limit: about "
        f"{limit.workers} {kind} (e.g. `workers={limit.workers}"
        f"{', use_multiprocessing=True' if limit.mode == 'process' else ''}`) could be up to "
        f"{gain:.1f}x faster (estimated); a longer fit lets the tuner try them.",
    )


def decode_in_c(report: TuningReport) -> Advice | None:
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


def cache_batches(report: TuningReport) -> Advice | None:
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


def more_cores(report: TuningReport) -> Advice | None:
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


def cheaper_step(report: TuningReport) -> Advice | None:
    """Model-step bound: make the step itself cheaper."""
    limit = report.limit
    if limit is None or limit.bound.value != "model-step":
        return None
    step = report.profile.get("step_compute_s")
    took = f" ({fmt.ms(step)} per step)" if fmt.is_number(step) else ""
    return Advice(
        2,
        f"The model step itself is the limit{took}: mixed precision "
        "(`keras.mixed_precision.set_global_policy('mixed_float16')` on a GPU), XLA "
        "(`model.compile(..., jit_compile=True)`) or a bigger batch (fewer steps per "
        "epoch) would raise it; the loader would not.",
    )


def more_threads(report: TuningReport) -> Advice | None:
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


def less_memory(report: TuningReport) -> Advice | None:
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


#: Every rule, in the order ties are broken.
RULES: tuple[Callable[[TuningReport], Advice | None], ...] = (
    at_limit,
    more_workers,
    decode_in_c,
    cheaper_step,
    more_threads,
    less_memory,
    cache_batches,
    more_cores,
)


def advise(report: TuningReport) -> list[str]:
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


__all__ = ["REACHED", "RULES", "Advice", "advise"]
