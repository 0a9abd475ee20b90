"""The machine limit: the highest training rate any loader config could reach here.

A pure estimate from a measured profile (no TensorFlow, no Keras, no clock). One
batch costs the loader `produce_wall_s` of wall time, `produce_cpu_s` of which need
a core; one training step takes `step_compute_s`. With `cores` cores, whatever the
loader config (`workers`, `max_queue_size`, threads or processes):

- **model-step**: at most `1 / step_compute_s` steps/s (the same fit on batches
  already in memory);
- **loader-cpu**: every step needs its batch's CPU plus the step's own CPU on the
  same cores: at most `cores / (produce_cpu_s + step_cpu_s)`, where `step_cpu_s` is
  `step_compute_s` on a CPU-only machine (assumption: the step keeps one core busy
  while it runs, as `analytical.predict` assumes) and 0 with an accelerator (the
  step runs there; its host-side work is not counted). Processes pay pickling
  (`batch_nbytes / IPC_BYTES_PER_S`) on both sides. A GIL-holding loader in threads is
  bound by `1 / (gil_fraction x produce_cpu_s)`; processes lift that, so the GIL only
  bounds the limit when processes are not allowed;
- **loader-latency**: `n` batches in flight deliver at most `n / produce_wall_s`
  batches/s (Little's law), `n` capped by the most workers allowed;
- **memory**: the same, with `n` capped by the RAM budget (each batch in flight and
  in the queue is held in memory) below the worker cap.

The limit is the best worker mode's smallest bound; a measured rate above it raises
it (a measured rate is reachable by definition), so the estimate never contradicts a
measurement.

Example:

>>> jpeg = estimate_limit(produce_wall_s=0.060, produce_cpu_s=0.058,
...                       step_compute_s=0.030, cores=2)
>>> jpeg.bound.value, round(jpeg.steps_per_s, 1)
('loader-cpu', 22.7)
>>> estimate_limit(produce_wall_s=0.040, produce_cpu_s=0.001,
...                step_compute_s=0.008, cores=2).bound.value
'model-step'
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.analytical import CPU_HEAVY_RATIO, IPC_BYTES_PER_S, extra_rss_bytes
from keras_loadtune.decision.settings import THREAD_LIMIT

#: `MachineLimit.reached` at or above this counts as at the limit (measurement noise).
REACHED_SHARE = 0.9
#: Two measured rates within this share of each other are the same (noise).
SAME_RATE = 0.05

# One worker thread runs `__getitem__` inline on the training thread (as Keras does):
# no batch is in flight while the step runs, so overlapping needs two.
_ONE_THREAD_IS_INLINE = bool(getattr(LoaderConfig(1, 1, False), "inline", False))

# Worker counts above this are not searched for the memory cap (the latency bound is
# far above any step rate by then).
_MEMORY_SEARCH_CAP = 4096


class Bound(str, enum.Enum):
    """What sets the machine limit.

    Example:

    >>> Bound("loader-cpu") is Bound.LOADER_CPU
    True
    """

    MODEL_STEP = "model-step"
    LOADER_CPU = "loader-cpu"
    LOADER_LATENCY = "loader-latency"
    MEMORY = "memory"


@dataclass(frozen=True)
class MachineLimit:
    """The highest training rate any loader config could reach, and what bounds it.

    Args:
        steps_per_s: The limit, in training steps per second.
        bound: What sets it (`Bound`).
        reached: The fraction of it the config in use reached (`None`: not measured).
        estimated: True: computed from a profile (always, in practice; False only
            when a measured rate set it).
        mode: The worker mode that reaches it (`"thread"` or `"process"`).
        workers: Workers in flight that mode needs to reach it (Little's law).
        rates: Each bound's own rate (`Bound` value -> steps/s), for advice.
        assumptions: Short phrases naming what the estimate assumed.

    Example:

    >>> lim = MachineLimit(50.0, Bound.MODEL_STEP, 0.5, True)
    >>> MachineLimit.from_dict(lim.to_dict()) == lim
    True
    """

    steps_per_s: float
    bound: Bound
    reached: float | None = None
    estimated: bool = True
    mode: str = "thread"
    workers: int = 1
    rates: dict[str, float] = field(default_factory=dict, compare=False)
    assumptions: tuple[str, ...] = field(default=(), compare=False)

    def with_reached(self, steps_per_s: float | None) -> MachineLimit:
        """The same limit with `reached` set from a measured rate of the config in use.

        A measured rate above the estimate raises the limit to it (`reached` 1.0).

        Example:

        >>> MachineLimit(40.0, Bound.MODEL_STEP).with_reached(30.0).reached
        0.75
        """
        if steps_per_s is None or not math.isfinite(steps_per_s) or steps_per_s <= 0:
            return _replace(self, reached=None)
        limit = max(self.steps_per_s, float(steps_per_s))
        return _replace(self, steps_per_s=limit, reached=float(steps_per_s) / limit)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; inverse of `from_dict`.

        Example:

        >>> MachineLimit(10.0, Bound.MEMORY).to_dict()["bound"]
        'memory'
        """
        return {
            "steps_per_s": float(self.steps_per_s),
            "bound": self.bound.value,
            "reached": None if self.reached is None else float(self.reached),
            "estimated": bool(self.estimated),
            "mode": self.mode,
            "workers": int(self.workers),
            "rates": {k: float(v) for k, v in self.rates.items()},
            "assumptions": list(self.assumptions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineLimit:
        """Rebuild from `to_dict()` output (unknown keys ignored).

        Example:

        >>> MachineLimit.from_dict({"steps_per_s": 5.0, "bound": "model-step"}).bound
        <Bound.MODEL_STEP: 'model-step'>
        """
        return cls(
            steps_per_s=float(data["steps_per_s"]),
            bound=Bound(data["bound"]),
            reached=None if data.get("reached") is None else float(data["reached"]),
            estimated=bool(data.get("estimated", True)),
            mode=str(data.get("mode", "thread")),
            workers=int(data.get("workers", 1)),
            rates={str(k): float(v) for k, v in (data.get("rates") or {}).items()},
            assumptions=tuple(str(a) for a in data.get("assumptions") or ()),
        )


def _replace(limit: MachineLimit, **changes: Any) -> MachineLimit:
    from dataclasses import replace

    return replace(limit, **changes)


def memory_worker_cap(
    batch_nbytes: int,
    ram_budget_bytes: int | None,
    *,
    processes: bool = False,
    process_rss_bytes: int | None = None,
    cap: int = _MEMORY_SEARCH_CAP,
) -> int:
    """Most batches in flight whose config (`n` workers, queue `n`) fits the RAM budget.

    Args:
        batch_nbytes: Bytes of one batch.
        ram_budget_bytes: Bytes the loader may add (`None`: no budget).
        processes: Process workers (a pickled copy per batch, RSS per worker).
        process_rss_bytes: Resident memory of one worker process, if known.
        cap: The largest count searched.

    Returns:
        The count, at least 1 (a single batch in flight is always allowed).

    Example:

    >>> memory_worker_cap(100 << 20, 1 << 30)  # (n + 1) x 100 MiB <= 1 GiB
    9
    >>> memory_worker_cap(1000, None)
    4096
    """
    if ram_budget_bytes is None or (batch_nbytes <= 0 and not processes):
        return cap

    def fits(n: int) -> bool:
        cfg = LoaderConfig(n, n, processes)
        need = extra_rss_bytes(cfg, batch_nbytes, process_rss_bytes=process_rss_bytes)
        return need <= int(ram_budget_bytes)

    if not fits(1):
        return 1
    low, high = 1, cap
    while low < high:  # largest n that fits
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def estimate_limit(
    *,
    produce_wall_s: float,
    produce_cpu_s: float,
    step_compute_s: float,
    cores: int,
    batch_nbytes: int = 0,
    ram_budget_bytes: int | None = None,
    step_uses_cores: bool = True,
    modes: tuple[str, ...] = ("thread", "process"),
    max_thread_workers: int = THREAD_LIMIT,
    max_process_workers: int | None = None,
    gil_fraction: float | None = None,
    process_rss_bytes: int | None = None,
) -> MachineLimit:
    """The highest steps/s any loader config could reach, and what bounds it.

    Args:
        produce_wall_s: Wall seconds per batch in the loader (median).
        produce_cpu_s: CPU seconds per batch in the loader (median).
        step_compute_s: The model step's seconds (median, without the wait).
        cores: Cores the trainer and its loader may use.
        batch_nbytes: Bytes per batch (memory and pickling).
        ram_budget_bytes: Bytes the loader may add (`None`: unbounded).
        step_uses_cores: True on a CPU-only machine (the step takes a core while it
            runs); False with an accelerator.
        modes: Worker modes allowed.
        max_thread_workers: Most worker threads allowed.
        max_process_workers: Most worker processes allowed (`None`: `cores`).
        gil_fraction: Share of the loader's CPU that holds the GIL, when known
            (`None`: unknown; threads are assumed to release it, which only matters
            when processes are not allowed).
        process_rss_bytes: Resident memory of one worker process, when known.

    Returns:
        A `MachineLimit` (`reached` unset: see `MachineLimit.with_reached`).

    Raises:
        ValueError: `modes` is empty or `cores` < 1.

    Example:

    >>> lim = estimate_limit(produce_wall_s=0.1, produce_cpu_s=0.001,
    ...                      step_compute_s=0.01, cores=2, max_thread_workers=4)
    >>> lim.bound.value, lim.steps_per_s
    ('loader-latency', 40.0)
    """
    if not modes:
        raise ValueError("estimate_limit: modes must not be empty.")
    if cores < 1:
        raise ValueError(f"estimate_limit: cores must be >= 1; got {cores}.")
    step = max(float(step_compute_s), 1e-9)
    wall = max(float(produce_wall_s), 1e-9)
    cpu = min(max(float(produce_cpu_s), 0.0), wall)
    step_cpu = step if step_uses_cores else 0.0
    assumptions = [
        "the step keeps one core busy while it runs"
        if step_uses_cores
        else "the step runs on the accelerator, not on the cores",
    ]
    # CPU-heavy: most of a batch's wall time is CPU, and enough of it to matter next
    # to the step (a loader that costs next to nothing is no GIL question).
    heavy = cpu >= CPU_HEAVY_RATIO * wall and cpu >= 0.25 * step
    results: dict[str, tuple[float, str, int, dict[str, float]]] = {}
    for mode in ("thread", "process"):
        if mode not in modes:
            continue
        processes = mode == "process"
        ipc = batch_nbytes / IPC_BYTES_PER_S if processes else 0.0
        cap = max_thread_workers if not processes else (max_process_workers or cores)
        mem_cap = memory_worker_cap(
            batch_nbytes,
            ram_budget_bytes,
            processes=processes,
            process_rss_bytes=process_rss_bytes,
        )
        n = max(min(cap, mem_cap), 1)
        latency_bound = Bound.MEMORY if mem_cap < cap else Bound.LOADER_LATENCY
        rates = {
            Bound.MODEL_STEP.value: 1.0 / (step + ipc),
            Bound.LOADER_CPU.value: cores / max(cpu + 2 * ipc + step_cpu, 1e-9),
            latency_bound.value: n / (wall + ipc),
        }
        if not processes and gil_fraction:  # measured: threads serialise that share
            gil = min(max(gil_fraction, 0.0), 1.0) * cpu
            if gil > 0:
                rates[Bound.LOADER_CPU.value] = min(rates[Bound.LOADER_CPU.value], 1.0 / gil)
        bound = min(rates, key=lambda k: (rates[k], k != Bound.MODEL_STEP.value))
        rate = rates[bound]
        workers = max(1, min(n, math.ceil(rate * (wall + ipc))))
        if not processes and _ONE_THREAD_IS_INLINE and cap >= 2:
            workers = max(workers, 2)  # one thread loads inline: nothing in flight
        results[mode] = (rate, bound, workers, rates)
    # The limit is the best mode's rate (threads when within 2%: cheaper). With the GIL
    # unknown, threads are taken to release it (an upper bound); but a CPU-heavy loader
    # is sent to processes, which reach about the same rate whether or not it holds it.
    mode = max(results, key=lambda m: results[m][0] * (1.02 if m == "thread" else 1.0))
    rate, bound, _, rates = results[mode]
    if gil_fraction is None and heavy and "process" in results:
        mode = "process"
        if results["process"][0] < rate:
            assumptions.append(
                "that loader threads release the GIL (not measured; worker processes "
                f"would reach {results['process'][0]:.1f} steps/s even if they do not)"
            )
    workers = results[mode][2]
    if gil_fraction is None and heavy and "process" not in modes:
        assumptions.append("loader threads release the GIL (not measured)")
    return MachineLimit(
        steps_per_s=float(rate),
        bound=Bound(bound),
        reached=None,
        estimated=True,
        mode=mode,
        workers=int(workers),
        rates=dict(rates),
        assumptions=tuple(assumptions),
    )


def corrected_step_s(step_compute_s: float, measured_steps_per_s: list[float]) -> float:
    """The model step one report shows and its limit uses: the measured step, or the
    step a faster measured rate proves (a rate of `r` steps/s means the step took at
    most `1 / r`), so the limit never exceeds `1 / step` unless a trial measured it.

    Args:
        step_compute_s: The step measured by the probe or on the config in use.
        measured_steps_per_s: Rates of the trials measured in the fit.

    Returns:
        `min(step_compute_s, 1 / max(measured_steps_per_s))`.

    Example:

    >>> corrected_step_s(0.047, [20.0, 25.0])  # 25 steps/s: the step is at most 40 ms
    0.04
    >>> corrected_step_s(0.047, [])
    0.047
    """
    rates = [float(r) for r in measured_steps_per_s if math.isfinite(r) and r > 0]
    step = float(step_compute_s)
    return min(step, 1.0 / max(rates)) if rates else step


def is_reached(
    limit: MachineLimit | None,
    *,
    wait_fraction: float | None,
    wait_threshold: float,
    in_use_steps_per_s: float | None,
    fastest_steps_per_s: float | None,
    share: float = REACHED_SHARE,
    noise: float = SAME_RATE,
) -> bool:
    """Whether a report may say the limit is reached (loader tuning cannot help): the
    config in use reaches `share` of it, its wait (the last epoch's) is under
    `wait_threshold`, and no config measured in the fit was faster (beyond `noise`).

    Args:
        limit: The machine limit (`None`: unknown, never reached).
        wait_fraction: Wait share of step time on the config in use (`None`: unknown).
        wait_threshold: The tuner's `wait_threshold`.
        in_use_steps_per_s: Measured rate of the config in use.
        fastest_steps_per_s: The fastest rate any config measured in the fit.
        share: `limit.reached` at or above this counts as reached.
        noise: Relative margin within which two measured rates are equal.

    Returns:
        True only when all three hold.

    Example:

    >>> lim = MachineLimit(100.0, Bound.MODEL_STEP, reached=0.95)
    >>> is_reached(lim, wait_fraction=0.01, wait_threshold=0.05,
    ...            in_use_steps_per_s=95.0, fastest_steps_per_s=96.0)
    True
    >>> is_reached(lim, wait_fraction=0.20, wait_threshold=0.05,
    ...            in_use_steps_per_s=95.0, fastest_steps_per_s=96.0)
    False
    """
    if limit is None or limit.reached is None or limit.reached < share:
        return False
    if wait_fraction is None or not math.isfinite(wait_fraction) or wait_fraction >= wait_threshold:
        return False
    return not (
        fastest_steps_per_s is not None
        and in_use_steps_per_s is not None
        and fastest_steps_per_s > in_use_steps_per_s * (1.0 + noise)
    )


def step_only_limit(step_s: float, wait_fraction: float) -> MachineLimit | None:
    """The limit of an input that is not wrapped (arrays, `tf.data`, a plain PyDataset):
    only the step times are known, so the estimate is the model step's own rate,
    `1 / (step_s x (1 - wait_fraction))`, marked estimated.

    Args:
        step_s: Median step cycle (seconds), wait included.
        wait_fraction: Share of it spent waiting for the batch (estimated).

    Returns:
        The limit, or `None` when the inputs are unusable.

    Example:

    >>> step_only_limit(0.02, 0.5).steps_per_s
    100.0
    """
    if not (math.isfinite(step_s) and step_s > 0 and 0 <= wait_fraction < 1):
        return None
    compute = step_s * (1.0 - wait_fraction)
    return MachineLimit(
        steps_per_s=1.0 / compute,
        bound=Bound.MODEL_STEP,
        estimated=True,
        rates={Bound.MODEL_STEP.value: 1.0 / compute},
        assumptions=("input not wrapped: only step times measured",),
    )


__all__ = [
    "REACHED_SHARE",
    "SAME_RATE",
    "Bound",
    "MachineLimit",
    "corrected_step_s",
    "estimate_limit",
    "is_reached",
    "memory_worker_cap",
    "step_only_limit",
]
