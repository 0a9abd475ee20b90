"""When the tuner tries worker processes: the rules of the process policy, in one place.

Worker processes pay where the loader's CPU time competes with the trainer (for its
GIL or its cores); they cost a pool start (seconds of wall, CPU while it runs) and
memory per worker. The rules that decide whether a process config is tried:

- **Who can gain** (`helps`): only a CPU-heavy loader, whose CPU time is at least
  `CPU_HEAVY_RATIO` of each batch's wall time. A latency-bound loader's threads
  already overlap its waits; processes would add pickling and a pool start for
  nothing. The planner drops process mode from such a loader's search space, and the
  pipeline model seeds a process config only for a CPU-heavy one.
- **What a process config's step is** (`uncontended_compute_s`): when loader threads
  slow the trainer's step (contention: the probe's verdict), processes take the
  loader's CPU time out of the trainer's process: the step is predicted as the
  measured compute minus one batch's CPU time, at least `UNCONTENDED_MIN_SHARE` of it.
- **What a background start costs** (`background_start_share`): a pool started while
  the old one serves does not stop training; it costs the share of the machine its
  start keeps busy (`BACKGROUND_BUSY_CORES`).
- **More processes while a process config still waits** (`wait_climb_workers`,
  `wait_climb_rate`): measured evidence over the model. The model sizes processes to
  the step's rate, with a margin that rounding can eat (a 7 ms loader for a 7.5 ms
  step: one process, which waited 12-35% of each step on a real fit). At rate R, a
  process best that waits W of each step is sized up as a thread best is
  (`workers / (1 - W)` plus the seeds' margin, capped by the cores), and predicted
  from what it measured: no faster than its wait removed (`R / (1 - W)`), than its
  delivery scaled by the added workers, or than the cores can run (each step's compute
  and each batch's CPU time on `cores`). Unlike threads, it pays its trial (added
  workers start).

The pool start's seconds (the prior before a start was measured, then the measured
one) are in `decision.payoff` (`PROCESS_POOL_PRIOR_S`, `PROCESS_WORKER_PRIOR_S`,
`PayoffModel.learn_startup`), with the rest of what a trial costs; the RAM a worker
process takes is in `decision.memory`.

Example:

>>> from keras_loadtune.measurement import LoaderProfile
>>> helps(LoaderProfile(0.040, 0.001, 0.025, 1 << 16, 0.1))  # 40 ms latency, 1 ms CPU
False
>>> helps(LoaderProfile(0.015, 0.015, 1.0, 1 << 16, 0.1))  # 15 ms of pure Python
True
>>> background_start_share(2)
0.75
>>> wait_climb_workers(1, 0.17, cap=16, margin=0.25)  # 1 / 0.83 x 1.25
2
>>> round(wait_climb_rate(133.0, 0.17, 1, 2, produce_cpu_s=0.007, cores=16), 1)
160.2
"""

from __future__ import annotations

import math

from keras_loadtune.measurement import LoaderProfile

# Loaders whose CPU time is at least this share of their wall time are "CPU-heavy":
# threads may be GIL-bound, so a process config is seeded too.
CPU_HEAVY_RATIO = 0.3
# Under contention (loader threads slow the step, see `Probe`), a process config takes
# the loader's CPU time out of the trainer's process: its step is predicted as the
# measured compute minus one batch's CPU time, but never under this share of it.
UNCONTENDED_MIN_SHARE = 0.25
# A pool started in the background (the engine's `reconfigure(..., background=True)`)
# does not stop training: the old pool serves meanwhile. What it costs is the cores
# its start takes from the trainer and the old pool, charged as this many cores'
# share of the machine: a cold start burns about 1.5 CPU-seconds per second of wall
# (the forkserver's imports on one core, then the workers' start; issue #17's target
# is <= 1.0 s wall and <= 1.5 CPU-s), so 75% of its seconds on 2 cores.
BACKGROUND_BUSY_CORES = 1.5
# A wait climb (threads or processes) sizes workers as if the best waited at most this
# share of each step (a best waiting 95% would ask for 20x its workers at once).
WAIT_CLIMB_MAX_WAIT = 0.75
# Why a round does not search processes (`helps` is false).
NOT_CPU_HEAVY = "process mode cannot help this loader (latency-bound)"


def helps(profile: LoaderProfile | None) -> bool:
    """Whether worker processes can speed this loader up (it is CPU-heavy).

    Args:
        profile: The loader's measured profile (`None`: not measured yet, no).

    Example:

    >>> helps(None)
    False
    """
    return profile is not None and profile.cpu_ratio >= CPU_HEAVY_RATIO


def uncontended_compute_s(
    compute_s: float, profile: LoaderProfile | None, *, contended: bool
) -> float:
    """The trainer's step compute a process config is predicted to run at.

    Args:
        compute_s: The measured step compute (with the loader's threads).
        profile: The loader's profile (its CPU time per batch).
        contended: The probe saw loader threads slow the step.

    Returns:
        `compute_s`, or under contention `compute_s` minus one batch's CPU time (the GIL
        and the core the loader threads took from the trainer), at least
        `UNCONTENDED_MIN_SHARE` of it.

    Example:

    >>> profile = LoaderProfile(0.016, 0.016, 1.0, 1 << 16, 0.0)
    >>> round(uncontended_compute_s(0.024, profile, contended=True), 4)
    0.008
    >>> uncontended_compute_s(0.024, profile, contended=False)
    0.024
    """
    if not contended or profile is None:
        return compute_s
    return max(compute_s - profile.produce_cpu_s, UNCONTENDED_MIN_SHARE * compute_s)


def background_start_share(cores: int | None) -> float:
    """Share of a background pool start's seconds charged as lost training time.

    Args:
        cores: Cores of the machine (`None`: unknown, the whole start is charged).

    Example:

    >>> background_start_share(16)
    0.09375
    """
    if not cores:
        return 1.0
    return min(1.0, BACKGROUND_BUSY_CORES / max(int(cores), 1))


def wait_climb_workers(workers: int, wait: float, *, cap: int, margin: float) -> int | None:
    """Worker processes to try after a process config of `workers` that waited `wait`
    of each step: `workers / (1 - wait)` plus `margin` (the seeds' margin,
    `analytical.RATE_MARGIN`), at least one more, at most `cap`; `None` when `cap`
    allows no more.

    Example:

    >>> wait_climb_workers(4, 0.5, cap=16, margin=0.25)  # 4 / 0.5 x 1.25
    10
    >>> wait_climb_workers(2, 0.3, cap=2, margin=0.25) is None
    True
    """
    share = max(1.0 - min(max(wait, 0.0), 1.0), 1.0 - WAIT_CLIMB_MAX_WAIT)
    more = max(math.ceil(workers / share * (1.0 + margin)), workers + 1)
    more = min(more, int(cap))
    return more if more > workers else None


def wait_climb_rate(
    rate: float, wait: float, workers: int, more: int, *, produce_cpu_s: float, cores: int
) -> float:
    """Steps/s predicted for `more` worker processes from a process config of
    `workers` measured at `rate` steps/s waiting `wait` of each step.

    The least of: the wait removed (its steps computed in `(1 - wait) / rate`), its
    delivery scaled by the workers (`rate x more / workers`), and what the cores can
    run (each step's compute and each batch's CPU time, `produce_cpu_s`, on `cores`).

    Example:

    >>> round(wait_climb_rate(133.0, 0.17, 1, 2, produce_cpu_s=0.007, cores=2), 1)
    151.1
    """
    rate = max(float(rate), 1e-9)
    step = max(1.0 - min(max(wait, 0.0), 1.0), 1e-3) / rate
    cpu = max(float(produce_cpu_s), 0.0) + step
    return min(1.0 / step, rate * more / max(workers, 1), max(int(cores), 1) / cpu)


__all__ = [
    "BACKGROUND_BUSY_CORES",
    "CPU_HEAVY_RATIO",
    "NOT_CPU_HEAVY",
    "UNCONTENDED_MIN_SHARE",
    "WAIT_CLIMB_MAX_WAIT",
    "background_start_share",
    "helps",
    "uncontended_compute_s",
    "wait_climb_rate",
    "wait_climb_workers",
]
