"""`simulate_tuning`: a simulated fit, run through the Keras callback's own lifecycle.

The fit is the loop Keras runs, on a `SimulatedPipeline` and its clock: per epoch a
pass starts, `FitLifecycle.begin_epoch`, then per step `tick()` (while the lifecycle
still decides, as the callback's detachable `on_train_batch_begin`) and the step
itself; at the epoch's end `close_cycle()` and `end_epoch()`; at the end `end_fit()`.
The lifecycle is the one `LoadTuner` drives (`keras_loadtune.lifecycle.fit`): the
same warm-up steps, probe before the session, draining and pass-tail rules, switch
polling, per-epoch catch-up once tuning has ended, drift and compute-bound re-checks,
and report. What it reads is a `SimulatedDataset`: the engine's `LoaderStats`, filled
with one `BatchRecord` per step from the simulated pipeline.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision import TunerSettings
>>> from keras_loadtune.simulation.params import PipelineParams
>>> from keras_loadtune.simulation.pipeline import SimulatedPipeline
>>> pipe = SimulatedPipeline(io_s=0.040, compute_s=0.010, cores=8, seed=0)
>>> result = simulate_tuning(pipe, TunerSettings(cores=8, seed=0), baseline=LoaderConfig(),
...                          total_steps=800)
>>> result.session.best_config.workers >= 5   # enough threads to hide 40 ms of latency
True
>>> round(result.final_steps_per_s)  # the compute floor, less each epoch's cold first batch
99
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.phase import Phase
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.engine.records import BatchRecord, LoaderStats, StartupRecord
from keras_loadtune.lifecycle.fit import FitLifecycle
from keras_loadtune.report import TuningReport
from keras_loadtune.simulation.params import PipelineParams
from keras_loadtune.simulation.pipeline import SimulatedPipeline

logger = logging.getLogger("keras_loadtune.simulation")

# Steps per epoch when the caller does not say: every epoch starts a cold pass.
DEFAULT_STEPS_PER_EPOCH = 500


class SimulatedDataset:
    """A `SimulatedPipeline` seen as the lifecycle sees a `TunedPyDataset`.

    Args:
        pipeline: The simulated loader and trainer.
        steps_per_epoch: Batches per pass (`num_batches`).
        on_switch: Called with each config the tuner switches to.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> ds = SimulatedDataset(SimulatedPipeline(io_s=0.01), steps_per_epoch=4)
    >>> ds.reconfigure(LoaderConfig(workers=2))
    >>> ds.begin_pass(); ds.step(); len(ds.stats)
    1
    """

    shm_fallback_note = None
    switch_error = None

    def __init__(
        self, pipeline: SimulatedPipeline, steps_per_epoch: int, on_switch: Any = None
    ) -> None:
        self.pipeline = pipeline
        self.num_batches = int(steps_per_epoch)
        self.stats = LoaderStats()
        self._sequence = itertools.count()
        self._on_switch = on_switch

    @property
    def config(self) -> LoaderConfig:
        """The config serving batches (a background switch's is `pending_config`)."""
        return self.pipeline.config

    @property
    def process_start_estimate_s(self) -> float | None:
        """The engine's estimate of a first process pool's start: forks once a prewarm
        has started the forkserver (as `cold_start_estimate_s`), else `PipelineParams`."""
        pipe = self.pipeline
        if pipe.forkserver_ready:
            return 2 * pipe.params.process_worker_s
        return pipe.params.known_pool_start_s

    @property
    def pending_config(self) -> LoaderConfig | None:
        """The config a background switch is starting, or a worker-count change waits
        for the next pass with (`PipelineParams.worker_change_at_pass`), else `None`."""
        pipe = self.pipeline
        return pipe._pending_config if pipe._pending_config is not None else pipe.held_config

    def reconfigure(self, config: LoaderConfig, background: bool = False) -> None:
        """Switch the loader (a switch of mode starts in the background, as the engine's)."""
        if config == self.pipeline.config and self.pending_config is None:
            return
        if self._on_switch is not None:
            self._on_switch(config)
        self.pipeline.reconfigure(config)
        self._record_startups()

    def prewarm_processes(self) -> bool:
        """Start the forkserver in the background (`SimulatedPipeline.prewarm_processes`);
        False (nothing started) if the dataset cannot be pickled, as the engine's."""
        if not self.pipeline.params.picklable:
            return False
        self.pipeline.prewarm_processes()
        return True

    def release_workers(self) -> None:
        """Nothing to release."""

    def begin_pass(self) -> None:
        """An epoch's pass starts (the queue starts empty, as a new engine stream; a
        held worker-count change starts its pool)."""
        self.pipeline.begin_pass(self.num_batches)
        self._record_startups()

    def step(self, extra_compute_s: float = 0.0) -> None:
        """One training step: the batch it took becomes a `BatchRecord`."""
        pipe = self.pipeline
        pipe.step(extra_compute_s)
        d = pipe.last_delivery
        self._record_startups()
        self.stats.add_batch(
            BatchRecord(
                sequence=next(self._sequence),
                index=d.position % max(self.num_batches, 1),
                wait_s=d.wait_s,
                produce_wall_s=d.produce_wall_s,
                produce_cpu_s=d.produce_cpu_s,
                queue_depth=d.queue_depth,
                nbytes=pipe.params.batch_nbytes,
                config=pipe.config,
                delivered_at=d.delivered_at,
                pass_tail=d.pass_tail,
                producer=d.producer,
            )
        )

    def _record_startups(self) -> None:
        for config, seconds in self.pipeline.drain_startups():
            self.stats.add_startup(
                StartupRecord(
                    config=config,
                    workers_started=config.workers,
                    seconds=seconds,
                    at=self.pipeline.now,
                    background=self.pipeline.switch_pending,
                )
            )


@dataclass
class SimulationResult:
    """What `simulate_tuning` observed.

    Args:
        session: The `TuningSession` after the run (trials, best config, notes...);
            `None` if the fit ended before the probe decided.
        total_time_s: Simulated seconds for all steps, start-up costs included.
        steps: Training steps run.
        steps_per_s_by_config: Measured steps/s of every completed trial, by config.
        final_config: The config the loader ran at the end.
        final_steps_per_s: Steps/s over the steps after tuning finished (`None` if it
            never finished).
        switches: `(step, config)` for every reconfigure the tuner made.
        report: The tuning report of the simulated fit, as `LoadTuner.report`.
        epoch_fractions: Each epoch's `data_wait_fraction`, as Keras `logs` get it.
        startups: `(config, seconds)` of every loader start, as the engine records them
            (a prewarmed forkserver's start overlaps the steps before; only what is
            left of it is in the pool's start).
        stats: The fit's batch records as the lifecycle read them (the last 4096): the
            config that served each step and the position it took (`index`).

    Example:

    ```python
    result.steps_per_s_by_config[result.session.best_config]
    ```
    """

    session: TuningSession | None
    total_time_s: float
    steps: int
    steps_per_s_by_config: dict[LoaderConfig, float]
    final_config: LoaderConfig
    final_steps_per_s: float | None
    switches: list[tuple[int, LoaderConfig]] = field(default_factory=list)
    report: TuningReport | None = None
    epoch_fractions: list[float] = field(default_factory=list)
    startups: list[tuple[LoaderConfig, float]] = field(default_factory=list)
    stats: LoaderStats | None = None


def simulate_tuning(
    pipeline: SimulatedPipeline,
    settings: TunerSettings,
    *,
    baseline: LoaderConfig,
    total_steps: int,
    seed: int | None = None,
    study: Any = None,
    changes: Mapping[int, Mapping[str, Any]] | None = None,
    process_mode_available: bool = True,
    steps_known: bool = True,
    steps_per_epoch: int | None = None,
    warmup_steps: int = 2,
    trace_s: float = 0.0,
    study_open_s: float = 0.0,
) -> SimulationResult:
    """Train `total_steps` simulated steps with the tuner's lifecycle in charge.

    Args:
        pipeline: The simulated pipeline (its clock is the lifecycle's clock).
        settings: Tuner settings; `seed`, if given, replaces `settings.seed`.
        baseline: The user's config; the loader starts with it.
        total_steps: Training steps to run.
        seed: Optional sampler seed override.
        study: Optional Optuna study the session tunes in (trials of an earlier run
            warm-start it), as a stored study would.
        changes: `{step: {param: value}}` changes to the pipeline's costs (drift).
        process_mode_available: `False`: the dataset cannot run in worker processes
            (sets the pipeline's `picklable=False`: a process switch fails, as the
            engine's `DatasetNotPicklableError`).
        steps_known: The lifecycle knows the fit's length (as the callback from
            Keras's `params`); `False`: unknown, as for an unsized dataset.
        steps_per_epoch: Steps per epoch (default `DEFAULT_STEPS_PER_EPOCH`, at most
            `total_steps`); every epoch starts a cold pass, as the engine's streams.
        warmup_steps: First measured steps left out (`LoadTuner(warmup_steps=...)`).
        trace_s: Extra trainer seconds of the fit's first step (graph tracing), while
            the loader prefetches.
        study_open_s: Seconds between an input-bound verdict and the session (Optuna's
            import and the storage's open, done off the training thread in a fit: about
            0.3-1 s on 2 busy cores); the fit trains meanwhile.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> from keras_loadtune.decision import TunerSettings
    >>> res = simulate_tuning(SimulatedPipeline(python_s=0.02, compute_s=0.005, cores=16),
    ...                       TunerSettings(cores=16, seed=1), baseline=LoaderConfig(),
    ...                       total_steps=1000)
    >>> res.session.best_config.use_multiprocessing  # pure Python wants processes
    True
    """
    if seed is not None:
        settings = settings.replace(seed=seed)
    if not process_mode_available:
        pipeline.set_params(picklable=False)
    changes = dict(changes or {})
    per_epoch = min(int(steps_per_epoch or DEFAULT_STEPS_PER_EPOCH), int(total_steps))
    done = [0]
    switches: list[tuple[int, LoaderConfig]] = []
    pipeline.reconfigure(baseline)
    pipeline.drain_startups()
    data = SimulatedDataset(
        pipeline, per_epoch, on_switch=lambda config: switches.append((done[0], config))
    )
    life = FitLifecycle(
        settings,
        log=logger,
        warmup_steps=warmup_steps,
        storage=None,
        verbose=0,
        clock=lambda: pipeline.now,
        fit_total_steps=(lambda: total_steps) if steps_known else (lambda: None),
        background_start=False,
        rss_probe=pipeline.rss,
        study=study,
        study_open_s=study_open_s,
    )
    life.register(data)
    start = pipeline.now
    steady_from: tuple[int, float] | None = None
    life.begin_fit()
    epoch = 0
    while done[0] < total_steps:
        data.begin_pass()
        life.begin_epoch()
        for _ in range(min(per_epoch, total_steps - done[0])):
            i = done[0]
            if i in changes:
                pipeline.set_params(**changes[i])
            if life.ticking:
                life.tick()
            data.step(trace_s if i == 0 else 0.0)
            done[0] = i + 1
            if life.phase in (Phase.STEADY, Phase.COMPUTE_BOUND):
                if steady_from is None:
                    steady_from = (done[0], pipeline.now)
            else:
                steady_from = None
        life.close_cycle()
        life.end_epoch(epoch)
        epoch += 1
    life.end_fit()
    final_rate = None
    if steady_from is not None and total_steps > steady_from[0]:
        final_rate = (total_steps - steady_from[0]) / (pipeline.now - steady_from[1])
    session = life.session
    by_config = {
        r.config: float(r.steps_per_s)
        for r in (session.trials if session is not None else [])
        if r.state == "complete" and r.steps_per_s is not None
    }
    return SimulationResult(
        session=session,
        total_time_s=pipeline.now - start,
        steps=total_steps,
        steps_per_s_by_config=by_config,
        final_config=pipeline.config or baseline,
        final_steps_per_s=final_rate,
        switches=switches,
        report=life.report(),
        epoch_fractions=list(life.epoch_fractions),
        startups=[(s.config, s.seconds) for s in data.stats.startups],
        stats=data.stats,
    )


def static_fit_seconds(
    params: PipelineParams,
    config: LoaderConfig,
    total_steps: int,
    *,
    steps_per_epoch: int | None = None,
    trace_s: float = 0.0,
    include_start: bool = True,
) -> float:
    """Seconds of the same fit as `simulate_tuning` at a fixed `config`, with no tuner.

    The passes are those `simulate_tuning` runs (every epoch starts cold), so the two
    compare as a static grid and the tuner compare on a real machine.
    `include_start=False` leaves the loader's start (a process pool's) out: the fit
    at the config's running rate, what the report's tuning cost is measured against.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> p = PipelineParams(io_s=0.040, compute_s=0.010, cores=8)
    >>> round(static_fit_seconds(p, LoaderConfig(8, 10), 400, steps_per_epoch=200), 2)
    4.12
    """
    pipe = SimulatedPipeline(params)
    start, done = pipe.now, 0
    pipe.reconfigure(config)  # a pool's start is part of the fit, as in Keras
    if not include_start:
        start = pipe.now
    per_epoch = min(int(steps_per_epoch or DEFAULT_STEPS_PER_EPOCH), int(total_steps))
    while done < total_steps:
        pipe.begin_pass(per_epoch)
        for _ in range(min(per_epoch, total_steps - done)):
            pipe.step(trace_s if done == 0 else 0.0)
            done += 1
    return pipe.now - start


__all__ = [
    "DEFAULT_STEPS_PER_EPOCH",
    "SimulatedDataset",
    "SimulationResult",
    "simulate_tuning",
    "static_fit_seconds",
]
