"""`PipelineParams`: the costs of a simulated pipeline and machine, set or measured.

`SimulatedPipeline` (`keras_loadtune.simulation.pipeline`) runs on these: a batch's
latency, its GIL-holding and GIL-releasing CPU, the trainer's step, the machine's
cores, what starting threads, processes and the forkserver costs, and noise.
`params_from_measurement` builds them from costs measured on a real machine
(`benchmarks/simulator_fidelity.py` records them).

Example:

>>> PipelineParams(io_s=0.040, compute_s=0.005).cores  # 8 cores unless told
8
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PipelineParams:
    """Costs of a simulated pipeline and machine.

    Args:
        io_s: Per-batch latency that needs no CPU and releases the GIL.
        python_s: Per-batch CPU seconds holding the GIL (pure Python).
        numpy_s: Per-batch CPU seconds releasing the GIL (NumPy, decoding in C).
        compute_s: Trainer seconds per step at full speed.
        cores: Cores shared by the trainer and the loader.
        trainer_gil_share: Share of `compute_s` during which the trainer holds the GIL
            (Python overhead of a step; loader threads compete for it).
        trainer_cores: Cores the GIL-free part of a step keeps busy.
        batch_nbytes: Bytes per batch (memory, and pickling cost in process mode).
        ipc_bytes_per_s: Pickling throughput (each side) in process mode.
        process_startup_s: Seconds to start the forkserver (paid by the first process
            pool only).
        process_worker_s: Seconds per worker process started.
        process_rss_bytes: Resident memory of one worker process.
        thread_startup_s: Seconds to start one worker thread.
        thread_wakeup_s: Seconds a loader thread holds the GIL after delivering a
            batch, lost by a trainer taking it sooner (see the module docs; 0: none).
        base_rss_bytes: Resident memory of the trainer itself.
        noise_cv: Coefficient of variation of every duration (log-normal), 0 for none.
        seed: Seed of the noise.
        picklable: `False` makes switching to process mode fail.
        background_switch: A switch of mode starts the new pool in the background
            while the old one serves (the engine's `background=True`); `False`: the
            trainer waits for the start-up.
        startup_busy_cores: Cores a background pool start keeps busy while it runs.
        known_pool_start_s: What the engine tells the tuner a first process pool costs
            here (`TunedPyDataset.process_start_estimate_s`: 0.5 s for a dataset whose
            workers import no Keras), or `None`: unknown (the tuner's prior applies).
        gil_contention_loss: Share of the GIL lost to hand-offs while two or more
            threads want it (0.12 measured on 2 cores).
        oversubscription_loss: Share of the machine lost to switching while more CPU
            work is runnable than `cores` (0.10 measured on 2 cores).
        worker_change_at_pass: A change of the worker count (worker processes; a thread
            config has none) waits for the next pass (`begin_pass`), as a Grain input
            served by `GrainIterSource` (`RestartPoint.EPOCH_BOUNDARY`); `False`: every
            change applies at the next batch, as the engine's.

    Example:

    >>> PipelineParams(python_s=0.02, compute_s=0.005, cores=16).cores
    16
    """

    io_s: float = 0.0
    python_s: float = 0.0
    numpy_s: float = 0.0
    compute_s: float = 0.010
    cores: int = 8
    trainer_gil_share: float = 0.0
    trainer_cores: float = 1.0
    batch_nbytes: int = 1 << 20
    ipc_bytes_per_s: float = 1.0e9
    process_startup_s: float = 0.5
    process_worker_s: float = 0.03
    process_rss_bytes: int = 150 << 20
    thread_startup_s: float = 0.0005
    thread_wakeup_s: float = 0.0
    base_rss_bytes: int = 1 << 30
    noise_cv: float = 0.0
    seed: int = 0
    picklable: bool = True
    background_switch: bool = True
    startup_busy_cores: float = 1.5
    known_pool_start_s: float | None = None
    worker_change_at_pass: bool = False
    gil_contention_loss: float = 0.12
    oversubscription_loss: float = 0.10


# The largest measured jitter a simulated pipeline takes (see `params_from_measurement`).
MAX_MEASURED_CV = 0.5


def params_from_measurement(
    measured: Mapping[str, Any], cores: int, *, gil_holding: bool = False, **overrides: Any
) -> PipelineParams:
    """The simulated pipeline of costs measured on a real machine.

    Args:
        measured: `produce_wall_s` and `produce_cpu_s` (one `__getitem__` in one thread),
            `jitter_cv`, `batch_nbytes`, the trainer's `compute_s` on in-memory batches,
            `trainer_cores` (its CPU seconds per wall second) and `trainer_gil_share`
            (its slowdown beside a spinning Python thread), as
            `benchmarks/simulator_fidelity.py` records them.
        cores: Cores of that machine.
        gil_holding: Without a measured `loader_gil_share` (the share of the loader's
            CPU that holds the GIL, from its 1- vs 2-thread speed): the loader's CPU
            time is pure Python (holds the GIL); else it releases the GIL (NumPy,
            decoding in C).
        **overrides: Any other `PipelineParams` field.

    Example:

    >>> m = dict(produce_wall_s=0.041, produce_cpu_s=0.001, jitter_cv=0.02, batch_nbytes=1 << 20,
    ...          compute_s=0.005, trainer_cores=1.4, trainer_gil_share=0.2)
    >>> p = params_from_measurement(m, 2)
    >>> round(p.io_s, 3), p.numpy_s, p.cores
    (0.04, 0.001, 2)
    >>> p = params_from_measurement(dict(m, produce_cpu_s=0.04, loader_gil_share=0.75), 2)
    >>> round(p.python_s, 3), round(p.numpy_s, 3)  # 3/4 of the CPU holds the GIL
    (0.03, 0.01)
    """
    cpu = min(float(measured["produce_cpu_s"]), float(measured["produce_wall_s"]))
    fields: dict[str, Any] = dict(
        io_s=max(float(measured["produce_wall_s"]) - cpu, 0.0),
        compute_s=float(measured["compute_s"]),
        cores=int(cores),
        trainer_gil_share=float(measured.get("trainer_gil_share", 0.0)),
        trainer_cores=max(float(measured.get("trainer_cores", 1.0)), 1.0),
        batch_nbytes=int(measured.get("batch_nbytes", 0)),
        # The loader's jitter (relative to a batch of negligible cost it is meaningless;
        # the simulator applies it to every duration, the step included: capped).
        noise_cv=(
            min(float(measured.get("jitter_cv", 0.0)), MAX_MEASURED_CV)
            if float(measured["produce_wall_s"]) >= 1e-3
            else 0.0
        ),
        seed=0,
    )
    share = measured.get("loader_gil_share")
    if share is None:  # not measured: all or nothing, as the caller says
        share = 1.0 if gil_holding else 0.0
    share = min(max(float(share), 0.0), 1.0)
    fields["python_s"] = cpu * share
    fields["numpy_s"] = cpu * (1.0 - share)
    fields.update(overrides)
    return PipelineParams(**fields)


__all__ = [
    "MAX_MEASURED_CV",
    "PipelineParams",
    "params_from_measurement",
]
