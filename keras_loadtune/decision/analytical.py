"""The analytical pipeline model: predict a config's throughput and memory, seed the search.

A fluid (average-rate) model of the project's `Prefetcher` (the loader a
`TunedPyDataset` runs). One batch costs the loader `produce_wall_s` of wall time,
`produce_cpu_s` of which need a core; the trainer needs `step_compute_s` per step.
The queue arithmetic is the engine's own (`keras_loadtune.engine.arithmetic`): at
most `max_queue_size` positions are submitted or buffered ahead of the cursor, so
`in_flight(config) = min(workers, max_queue_size)` batches are produced
concurrently. Then:

- **threads** overlap latency freely, share the cores, and serialise the
  GIL-holding part of the CPU work (`gil_fraction x produce_cpu_s` per batch);
- **processes** have a GIL each but pay to pickle every batch across a pipe
  (`batch_nbytes / ipc_bytes_per_s`, in the worker and again in the trainer),
  cost start-up time and resident memory per process;
- throughput is the smallest of the trainer's rate and the loader's limits
  (latency: `n / wall`, cores: `cores / (cpu + step compute)`: the trainer idles while
  it waits, GIL: `1 / (gil x cpu)`) — Little's law;
- **inline** (one thread: Keras runs `workers=1, use_multiprocessing=False` with no
  worker at all, calling `__getitem__` on the training thread, and so does the engine)
  produces and computes in series: `1 / (wall + step compute)`.

A single-worker probe cannot tell GIL-holding Python from GIL-releasing NumPy
(both show CPU time ~ wall time), so for CPU-heavy loaders `seed_configs` seeds
one thread config (optimistic: GIL released) and one process config, and the
live measurement decides.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision.settings import TunerSettings
>>> from keras_loadtune.measurement import LoaderProfile
>>> io_bound = LoaderProfile(produce_wall_s=0.040, produce_cpu_s=0.002, cpu_ratio=0.05,
...                          batch_nbytes=1 << 20, jitter_cv=0.1)
>>> seeds = seed_configs(io_bound, 0.010, 8, TunerSettings(cores=8), LoaderConfig())
>>> seeds[0]
LoaderConfig(workers=8, max_queue_size=11, use_multiprocessing=False)
>>> predict(seeds[0], io_bound, 0.010, 8).steps_per_s  # the compute floor
100.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.process_policy import CPU_HEAVY_RATIO
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.engine.arithmetic import held_batches, in_flight
from keras_loadtune.measurement import LoaderProfile

# Pickling throughput across a process pipe, bytes/s (order of magnitude; one side).
IPC_BYTES_PER_S = 1.0e9
# Headroom over the compute floor that seeds aim for (plus the loader's jitter).
RATE_MARGIN = 0.25
# Thread seeds are sized as if k threads delivered only this share of the ideal
# `k / wall` batches/s. On a quiet 2-core machine 2-8 threads of a 40 ms loader
# delivered 97-99% of it, under load 7-8 threads about 75% (issue #22), and the steps of
# a trial near the floor run slower than an epoch's: a thread costs a batch of RAM, a
# missing one a wait at every step, so the seed errs on the side of more threads.
THREAD_DELIVERY = 0.75
# The per-loader thread cap is this many times the threads the model says reach the
# floor (room for the sampler to find what the model missed), plus one.
THREAD_CAP_MARGIN = 2.0


@dataclass(frozen=True)
class Prediction:
    """What the analytical model expects from one config.

    Args:
        steps_per_s: Predicted training throughput.
        produce_rate: Batches/s the loader could deliver if the trainer never waited.
        extra_rss_bytes: Memory the config holds beyond the trainer itself (queued and
            in-flight batches, worker processes).
        bottleneck: `"compute"`, `"latency"`, `"cores"`, `"gil"`, `"ipc"` or `"inline"`
            (produce and compute in series on the training thread).

    Example:

    >>> Prediction(100.0, 120.0, 1 << 20, "compute").bottleneck
    'compute'
    """

    steps_per_s: float
    produce_rate: float
    extra_rss_bytes: int
    bottleneck: str


def concurrency(config: LoaderConfig) -> int:
    """Batches produced at once: the engine's `in_flight(config)`.

    Args:
        config: The loader config.

    Returns:
        `min(workers, max_queue_size)`, see `keras_loadtune.engine.arithmetic`.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> concurrency(LoaderConfig(workers=8, max_queue_size=3))
    3
    """
    return in_flight(config)


def extra_rss_bytes(
    config: LoaderConfig, batch_nbytes: int, *, process_rss_bytes: int | None = None
) -> int:
    """Memory a config holds beyond the trainer: `held_batches(config) + 1` batches
    (the loader's window plus the trainer's batch, see `keras_loadtune.engine.arithmetic`),
    a pickled copy of each in process mode, plus one `process_rss_bytes` per worker
    process (0 when unknown).

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> extra_rss_bytes(LoaderConfig(2, 4), 1000)
    5000
    >>> extra_rss_bytes(LoaderConfig(2, 4, True), 1000, process_rss_bytes=10**6)
    2010000
    """
    held = (held_batches(config) + 1) * int(batch_nbytes)
    if config.use_multiprocessing:
        held = 2 * held + config.workers * int(process_rss_bytes or 0)
    return int(held)


def predict(
    config: LoaderConfig,
    profile: LoaderProfile,
    step_compute_s: float,
    cores: int,
    *,
    gil_fraction: float = 0.0,
    process_rss_bytes: int | None = None,
    ipc_bytes_per_s: float = IPC_BYTES_PER_S,
) -> Prediction:
    """Predict throughput and memory of `config` for a loader with `profile`.

    Args:
        config: The loader config.
        profile: Per-batch costs measured on the baseline.
        step_compute_s: Trainer compute seconds per step (the compute floor is its inverse).
        cores: Cores shared by the trainer and the loader.
        gil_fraction: Share of the loader's CPU time that holds the GIL (0: NumPy/I/O,
            1: pure Python). Only matters for threads.
        process_rss_bytes: Resident memory of one worker process, if known.
        ipc_bytes_per_s: Pickling throughput for process mode.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> from keras_loadtune.measurement import LoaderProfile
    >>> py = LoaderProfile(0.02, 0.02, 1.0, 1000, 0.0)
    >>> predict(LoaderConfig(8, 9), py, 0.005, 16, gil_fraction=1.0).bottleneck
    'gil'
    """
    compute = max(float(step_compute_s), 1e-9)
    wall = max(profile.produce_wall_s, 1e-9)
    cpu = min(max(profile.produce_cpu_s, 0.0), wall)
    if config.inline:
        return Prediction(
            steps_per_s=1.0 / (wall + compute),
            produce_rate=1.0 / wall,
            extra_rss_bytes=extra_rss_bytes(
                config, profile.batch_nbytes, process_rss_bytes=process_rss_bytes
            ),
            bottleneck="inline",
        )
    n = concurrency(config)
    limits: dict[str, float] = {}
    # Cores: every step needs the loader's CPU for its batch and one core for the
    # trainer's compute (the trainer idles while it waits, so the loader may use it).
    if config.use_multiprocessing:
        ipc = profile.batch_nbytes / ipc_bytes_per_s
        compute += ipc  # the trainer unpickles every batch
        limits["latency"] = n / (wall + ipc)
        limits["cores"] = cores / max(cpu + ipc + compute, 1e-9)
    else:
        limits["latency"] = n / wall
        limits["cores"] = cores / max(cpu + compute, 1e-9)
        gil = min(max(gil_fraction, 0.0), 1.0) * cpu
        if gil > 0:
            limits["gil"] = 1.0 / gil
    bottleneck = min(limits, key=limits.__getitem__)
    produce_rate = limits[bottleneck]
    floor = 1.0 / compute
    if floor <= produce_rate:
        rate, bottleneck = floor, "compute"
    else:
        rate = produce_rate
    if config.use_multiprocessing and bottleneck == "compute" and profile.batch_nbytes > 0:
        bottleneck = "ipc" if profile.batch_nbytes / ipc_bytes_per_s > step_compute_s else "compute"
    return Prediction(
        steps_per_s=rate,
        produce_rate=produce_rate,
        extra_rss_bytes=extra_rss_bytes(
            config, profile.batch_nbytes, process_rss_bytes=process_rss_bytes
        ),
        bottleneck=bottleneck,
    )


def queue_for(workers: int, jitter_cv: float, settings: TunerSettings) -> int:
    """Queue depth for `workers`: Little's law (every worker needs one of the
        `max_queue_size` positions of the window, see `concurrency`) plus a jitter buffer
        of `2 x jitter_cv x workers + 1` ready batches, within `settings.queue_size_range`.

        Example:

    >>> queue_for(6, 0.1, TunerSettings(cores=4))
    9
    """
    low, high = settings.queue_size_range
    depth = workers + math.ceil(2.0 * max(jitter_cv, 0.0) * workers) + 1
    return int(min(max(depth, low), high))


def _fit_ram(
    config: LoaderConfig,
    profile: LoaderProfile,
    settings: TunerSettings,
    baseline_extra: int,
    process_rss_bytes: int | None,
) -> LoaderConfig | None:
    """Shrink queue, then workers, until the predicted extra memory fits the budget."""
    budget = int(settings.ram_budget_bytes) + baseline_extra  # type: ignore[arg-type]
    low_q = settings.queue_size_range[0]
    workers, queue = config.workers, config.max_queue_size
    while True:
        cand = LoaderConfig(workers, queue, config.use_multiprocessing)
        extra = extra_rss_bytes(cand, profile.batch_nbytes, process_rss_bytes=process_rss_bytes)
        if extra <= budget:
            return cand
        if queue > max(low_q, workers):
            queue -= 1
        elif workers > 1:
            workers -= 1
            queue = max(min(queue, workers), low_q)
        else:
            return None


def seed_configs(
    profile: LoaderProfile,
    step_compute_s: float,
    cores: int,
    settings: TunerSettings,
    baseline: LoaderConfig,
    *,
    modes: tuple[str, ...] | None = None,
    process_rss_bytes: int | None = None,
    process_compute_s: float | None = None,
) -> list[LoaderConfig]:
    """Configs the pipeline model expects to reach the compute floor, to measure first.

        - Threads (always, if allowed): enough to cover the latency, about
          `produce_wall_s / step_compute_s x (1 + margin) / THREAD_DELIVERY`, capped by
          `settings.max_thread_workers` and, for CPU-heavy loaders, by what the cores can run.
        - Processes (if allowed and `profile.cpu_ratio >= CPU_HEAVY_RATIO`): sized to the
          rate the cores can reach, not the compute floor (`process_cap`).
        - Queue from `queue_for` (Little's law + jitter); configs predicted over the RAM
          budget are shrunk (queue first) until they fit, or dropped.

        The baseline itself and duplicates are left out (the baseline is measured anyway).
        The thread seed comes first (cheaper to start).

        Args:
            profile: Loader costs measured during the probe.
            step_compute_s: Median trainer compute per step during the probe.
            cores: Cores of the machine.
            settings: Search ranges and RAM budget.
            baseline: The user's config.
            modes: Modes still allowed (default `settings.modes`).
            process_rss_bytes: Resident memory per worker process, when known.
            process_compute_s: The trainer's step with process workers, when it differs
                from `step_compute_s` (loader threads contending for the GIL and the
                cores made the measured step longer); sizes the process seed.

        Example:

    >>> from keras_loadtune import LoaderConfig
    >>> from keras_loadtune.measurement import LoaderProfile
    >>> python_heavy = LoaderProfile(0.02, 0.02, 1.0, 1 << 16, 0.05)
    >>> [c.mode for c in seed_configs(python_heavy, 0.005, 16, TunerSettings(cores=16),
    ...                               LoaderConfig())]
    ['thread', 'process']
    """
    modes = settings.modes if modes is None else modes
    target = _target_rate(profile, step_compute_s)
    wall = max(profile.produce_wall_s, 1e-9)
    ratio = min(max(profile.cpu_ratio, 0.0), 1.0)
    baseline_extra = extra_rss_bytes(
        baseline, profile.batch_nbytes, process_rss_bytes=process_rss_bytes
    )
    seeds: list[LoaderConfig] = []

    if "thread" in modes:
        workers = math.ceil(target * wall / THREAD_DELIVERY)
        if ratio >= CPU_HEAVY_RATIO:
            workers = min(workers, math.ceil(cores / ratio))
        # At least two threads: one thread is the inline config (in series with the step).
        workers = int(min(max(workers, 2), settings.worker_cap("thread")))
        seeds.append(LoaderConfig(workers, queue_for(workers, profile.jitter_cv, settings), False))

    if "process" in modes and ratio >= CPU_HEAVY_RATIO:
        compute = step_compute_s if process_compute_s is None else process_compute_s
        workers = process_cap(profile, compute, cores, settings)
        proc = LoaderConfig(workers, queue_for(workers, profile.jitter_cv, settings), True)
        seeds.append(proc)

    out: list[LoaderConfig] = []
    for seed in seeds:
        fitted = _fit_ram(seed, profile, settings, baseline_extra, process_rss_bytes)
        if fitted is not None and fitted != baseline and fitted not in out:
            out.append(fitted)
    return out


def _target_rate(profile: LoaderProfile, step_compute_s: float) -> float:
    """Steps/s the seeds aim for: the compute floor plus `RATE_MARGIN` and the jitter."""
    return (1.0 + RATE_MARGIN + max(profile.jitter_cv, 0.0)) / max(float(step_compute_s), 1e-6)


def process_cap(
    profile: LoaderProfile, step_compute_s: float, cores: int, settings: TunerSettings
) -> int:
    """Most worker processes worth trying: enough for the rate the cores can reach.

    A process needs `produce_wall_s` (+ pickling) per batch; the cores deliver at most
    `cores / (produce_cpu_s + step_compute_s)` batches/s. Processes beyond
    `min(target rate, that rate) x wall` only cost start-up time and memory.

    Example:

    >>> py = LoaderProfile(0.02, 0.02, 1.0, 1 << 16, 0.0)
    >>> process_cap(py, 0.0002, 64, TunerSettings(cores=64))  # the cores limit the rate
    64
    >>> process_cap(py, 0.005, 64, TunerSettings(cores=64))  # 250 steps/s x 20 ms
    6
    """
    wall = max(profile.produce_wall_s, 1e-9) + profile.batch_nbytes / IPC_BYTES_PER_S
    cpu = min(max(profile.produce_cpu_s, 0.0), wall) + profile.batch_nbytes / IPC_BYTES_PER_S
    achievable = cores / max(cpu + float(step_compute_s), 1e-9)
    rate = min(_target_rate(profile, step_compute_s), achievable * (1.0 + RATE_MARGIN / 5))
    workers = math.ceil(rate * wall)
    return int(min(max(workers, 1), settings.worker_cap("process"), cores))


def thread_cap(
    profile: LoaderProfile,
    step_compute_s: float,
    settings: TunerSettings,
    *,
    baseline: LoaderConfig | None = None,
) -> int:
    """Most worker threads worth trying for this loader.

    `THREAD_CAP_MARGIN` times the threads that cover a batch's latency at the target
    rate (`produce_wall_s / step_compute_s`, plus margin and jitter), plus one; bounded
    by `settings.max_thread_workers` (an absolute limit) and by the RAM budget (each
    thread holds a batch, and its queue position another). Never under the baseline's
    workers.

    Example:

    >>> sleep = LoaderProfile(0.1, 0.0005, 0.005, 1 << 16, 0.0)
    >>> thread_cap(sleep, 0.004, TunerSettings(cores=2))  # 100 ms fetch, 4 ms steps
    65
    """
    needed = math.ceil(_target_rate(profile, step_compute_s) * max(profile.produce_wall_s, 1e-9))
    cap = min(math.ceil(THREAD_CAP_MARGIN * needed) + 1, settings.worker_cap("thread"))
    budget = int(settings.ram_budget_bytes)  # type: ignore[arg-type]
    while cap > 1:
        cand = LoaderConfig(cap, queue_for(cap, profile.jitter_cv, settings))
        if extra_rss_bytes(cand, profile.batch_nbytes) <= budget:
            break
        cap = max(int(cap * 0.9), 1)
    floor = baseline.workers if baseline is not None and not baseline.use_multiprocessing else 1
    return int(max(cap, floor, 1))
