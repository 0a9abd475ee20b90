"""A simulated input pipeline with a fake clock, to test the policy without TensorFlow.

`SimulatedPipeline` is a discrete-event, processor-sharing model of the project's
`Prefetcher` (the loader a `TunedPyDataset` runs) feeding `model.fit`:

- every batch costs `io_s` of latency (sleep/disk/network: no CPU, releases the
  GIL), then `numpy_s` of CPU that releases the GIL, then `python_s` of CPU that
  holds it (plus pickling `batch_nbytes` in process mode);
- worker threads share the trainer's GIL; worker processes have one each;
- the queue arithmetic is the engine's (`keras_loadtune.engine.arithmetic`):
  positions `cursor .. cursor + max_queue_size - 1` are submitted or buffered, so
  `in_flight(config)` batches are produced at once; the trainer takes them in order
  (head-of-line blocking);
- the trainer's step needs `compute_s`: a `trainer_gil_share` part holds the GIL
  (competing with loader threads, plus unpickling in process mode), the rest runs on
  `trainer_cores` cores;
- when more CPU work is runnable than `cores`, everything runs proportionally slower,
  and `oversubscription_loss` of the machine goes to switching between them;
- when two or more threads want the GIL, `gil_contention_loss` of it goes to hand-offs
  (Python's forced switch every 5 ms, a woken thread waiting for a core) instead of
  work. Both losses are measured on a 2-core machine
  (`tests/data/machine_recording.json`, `tests/test_simulation_fidelity.py`): without
  them, threads running a CPU-heavy loader were predicted 15-23% too fast;
- a reconfigure keeps finished and in-flight work, as the engine does: same mode
  resizes the pool (only added workers pay `thread_startup_s` / `process_worker_s`;
  the trainer waits, the loader keeps working); another mode starts a new pool in the
  background (`Prefetcher.reconfigure(config, background=True)`): the old pool keeps
  serving until the new one is ready (`switch_pending`), then finishes what it runs;
  meanwhile the start keeps `startup_busy_cores` cores busy (the forkserver's imports,
  the workers' start), which the trainer and the old pool share the machine with.
  The forkserver starts once (`process_startup_s`, first process pool only);
- process pools cost `process_rss_bytes` per worker; optional log-normal noise
  (`noise_cv`, e.g. the jitter measured on the real loader);
- loader threads cost the trainer's process time the wait does not show
  (`thread_wakeup_s`): the thread that delivers a batch goes on in Python and holds
  the GIL up to Python's 5 ms switch interval, so a trainer taking the batch sooner
  (or blocked for it) loses the rest in its step, after the wait timer stopped. A
  pool that just keeps up waits ~0% and still steps slower than a bigger one, and a
  blocked probe overstates the compute. `thread_wakeup_s=0.005` reproduces the
  16-core GPU machine (40 ms latency, 6.6 ms steps: the tuner stopped at 5-6 threads,
  1.22-1.27x the best static config; `tests/test_decision_costs.py`).

An input whose worker count changes only between passes (a Grain `IterDataset` or
`grain.DataLoader`, served by `GrainIterSource`: `worker_change_at_pass`) holds such a
change until the next `begin_pass` (`held_config`); that pass then starts a fresh pool
with it while the trainer waits, as Grain starts a new iterator. Threads and buffers
still change at the next batch.

Passes (epochs) start cold as the engine's streams do (`begin_pass`), and each step
says which batch it took (`last_delivery`, the engine's `BatchRecord` fields).
`keras_loadtune.simulation.fit.simulate_tuning` runs a fit on it through the same
lifecycle as the Keras callback; `static_grid` measures fixed configs, for
exhaustive-oracle comparisons.

Example:

>>> from keras_loadtune import LoaderConfig
>>> grid = static_grid(PipelineParams(io_s=0.040, compute_s=0.010, cores=8),
...                    [LoaderConfig(2, 4), LoaderConfig(8, 10)])
>>> [round(s.steps_per_s) for s in grid.values()]  # 2 threads: 50 batches/s; 8: the step
[50, 100]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine.arithmetic import held_batches
from keras_loadtune.engine.errors import DatasetNotPicklableError
from keras_loadtune.measurement import StepSample, WindowStats, window_stats
from keras_loadtune.simulation.params import PipelineParams

_IO, _NUMPY, _PYTHON = 0, 1, 2
_EPS = 1e-12


def pass_workers(config: LoaderConfig) -> int:
    """The worker processes a config runs (0 for threads): what a Grain iterator's state
    records, so a change of it waits for the next pass (`worker_change_at_pass`).

    Example:

    >>> pass_workers(LoaderConfig(4, 8)), pass_workers(LoaderConfig(2, 4, use_multiprocessing=True))
    (0, 2)
    """
    return config.workers if config.use_multiprocessing else 0


@dataclass(frozen=True)
class Delivery:
    """The batch a simulated step took, as the engine's `BatchRecord` describes it.

    Args:
        position: Its position in the stream (0, 1, 2, ... over all passes).
        wait_s: Seconds the trainer waited for it.
        delivered_at: The simulated time it was handed over.
        produce_wall_s: Seconds from its start in a worker to its end.
        produce_cpu_s: CPU seconds it took.
        queue_depth: Finished batches left in the buffer after it was taken.
        producer: The config of the pool that made it.
        pass_tail: Every position of the pass was already handed to the workers.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> pipe = SimulatedPipeline(io_s=0.01)
    >>> _ = pipe.run_steps(LoaderConfig(workers=2), 3)
    >>> pipe.last_delivery.position, pipe.last_delivery.producer.workers
    (2, 2)
    """

    position: int
    wait_s: float
    delivered_at: float
    produce_wall_s: float
    produce_cpu_s: float
    queue_depth: int
    producer: LoaderConfig | None
    pass_tail: bool


class _Task:
    """One batch being produced: its remaining phases and what it cost so far."""

    __slots__ = ("cpu", "in_process", "phase_i", "phases", "pool", "position", "remaining", "start")

    def __init__(
        self, phases: list[tuple[int, float]], start: float, position: int, pool: int, proc: bool
    ) -> None:
        self.phases = phases
        self.phase_i = 0
        self.remaining = phases[0][1]
        self.start = start
        self.cpu = 0.0
        self.position = position
        self.pool = pool
        self.in_process = proc

    @property
    def kind(self) -> int:
        return self.phases[self.phase_i][0]


class SimulatedPipeline:
    """A simulated `Prefetcher` + trainer; time only advances when it is run.

    Implements the driver's `Applier` protocol (`reconfigure`).

    Args:
        params: A `PipelineParams`; keyword arguments override its fields.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> pipe = SimulatedPipeline(io_s=0.04, compute_s=0.01)
    >>> samples = pipe.run_steps(LoaderConfig(workers=2), 20)
    >>> round(sum(x.wait_s for x in samples[-10:]) / 10, 3)  # 2 threads: a batch per 20 ms
    0.01
    >>> inline = SimulatedPipeline(io_s=0.04, compute_s=0.01).run_steps(LoaderConfig(), 5)
    >>> round(inline[-1].wait_s, 3)  # inline: the batch is made while the step waits
    0.04
    """

    def __init__(self, params: PipelineParams | None = None, **overrides: Any) -> None:
        self.params = replace(params or PipelineParams(), **overrides)
        self.now = 0.0
        self.config: LoaderConfig | None = None
        self._rng = np.random.default_rng(self.params.seed)
        self._records: list[SimpleNamespace] = []
        self._startups: list[tuple[LoaderConfig, float]] = []
        self._forkserver = False
        self._prewarm_until = 0.0  # a prewarmed forkserver's start ends then
        self._pool = 0
        self._head = 0  # the cursor: next position the trainer takes
        self._requested = False  # the trainer is waiting for the head (inline configs)
        self._next_submit = 0
        self._pending: deque[int] = deque()
        self._running: list[_Task] = []
        # position -> (made in a process, its pool, delivered at)
        self._done: dict[int, tuple[bool, int, float]] = {}
        self._peak_held = 0
        self._pending_config: LoaderConfig | None = None  # a background switch
        self.held_config: LoaderConfig | None = None  # waits for the next pass
        self._ready_at = math.inf
        self.served_by_current_pool = True  # the last step's batch came from the current pool
        self._pool_configs: dict[int, LoaderConfig] = {}  # pool -> the config it runs
        self._pass_end: int | None = None  # one past the current pass's last position
        self.last_delivery: Delivery | None = None  # the batch the last step took

    # --------------------------------------------------------------- public API

    @property
    def cores(self) -> int:
        """Simulated cores."""
        return self.params.cores

    @property
    def switch_pending(self) -> bool:
        """A background switch of mode is still starting its pool."""
        return self._pending_config is not None

    def set_params(self, **changes: Any) -> None:
        """Change costs mid-run (e.g. the storage got slower), keeping the clock."""
        self.params = replace(self.params, **changes)

    def reconfigure(self, config: LoaderConfig) -> float:
        """Switch the loader to `config`, as `Prefetcher.reconfigure`; returns the start-up seconds.

        The trainer waits for the start-up; the loader keeps producing meanwhile.

        Raises:
            DatasetNotPicklableError: For a process config when the dataset is not
                picklable (as the engine).
        """
        old = self.config
        if self._pending_config is not None:  # a newer request supersedes a pending switch
            self._pending_config, self._ready_at = None, math.inf
        self.held_config = None  # ... and a held one
        if config == old:
            return 0.0
        p = self.params
        if config.use_multiprocessing and not p.picklable:
            raise DatasetNotPicklableError("the simulated dataset cannot be pickled")
        if (
            p.worker_change_at_pass
            and old is not None
            and pass_workers(config) != pass_workers(old)
        ):
            self.held_config = config  # the next pass starts with it (`begin_pass`)
            return 0.0
        return self._apply(config, old)

    def _apply(
        self, config: LoaderConfig, old: LoaderConfig | None, *, fresh: bool = False
    ) -> float:
        """Run `config` from now on (`fresh`: a new pass's own pool, all its workers
        started while the trainer waits); returns the start-up seconds."""
        p = self.params
        same_mode = old is not None and old.use_multiprocessing == config.use_multiprocessing
        same_mode = same_mode and not fresh
        added = max(config.workers - old.workers, 0) if same_mode and old else config.workers
        if config.use_multiprocessing:
            startup = p.process_worker_s * added
            if added and not self._forkserver:
                startup += p.process_startup_s
                self._forkserver = True
            elif added:  # prewarmed: what is left of the forkserver's start
                startup += max(self._prewarm_until - self.now, 0.0)
        else:
            startup = p.thread_startup_s * added
        self._startups.append((config, startup))
        if old is not None and not same_mode and p.background_switch and not fresh:
            self._pending_config, self._ready_at = config, self.now + startup
            return startup
        if not same_mode:
            self._pool += 1  # a new pool; the old one finishes the tasks it runs
        self.config = config
        self._pool_configs[self._pool] = config
        if startup > 0:
            self._run_for(startup)
        self._fill()
        return startup

    def prewarm_processes(self) -> None:
        """Start the forkserver in the background now (as `TunedPyDataset.prewarm_processes`):
        it keeps `startup_busy_cores` busy for `process_startup_s`, and a process pool
        started later pays only what is left of it."""
        if self._forkserver:
            return
        self._forkserver = True
        self._prewarm_until = self.now + self.params.process_startup_s

    @property
    def forkserver_ready(self) -> bool:
        """A prewarm has started the forkserver and its start is over."""
        return self._forkserver and self.now >= self._prewarm_until - _EPS

    def begin_pass(self, length: int | None) -> None:
        """Start a pass (an epoch) of `length` batches at the cursor (`None`: endless).

        As the engine's streams: nothing of a pass is made before it starts, so its
        first batches find the queue empty; `Delivery.pass_tail` marks its end. A
        worker-count change held for it (`held_config`) starts its pool now.
        """
        self._discard_ahead()
        self._pass_end = None if length is None else self._head + int(length)
        held, self.held_config = self.held_config, None
        if held is not None:  # a worker-count change held for this pass
            self._apply(held, self.config, fresh=True)
        elif self.config is not None:
            self._fill()

    def _discard_ahead(self) -> None:
        """A pass starts cold: what was made or started before it (a loader configured
        before the first pass prefetches with no pass to bound it) is not served; the
        tasks still running finish unused."""
        for position in [k for k in self._done if k >= self._head]:
            del self._done[position]
        self._pending.clear()
        self._next_submit = self._head
        for task in self._running:
            task.position = -1  # below any head: its result is dropped

    def run_steps(self, config: LoaderConfig, n: int) -> list[StepSample]:
        """Run `n` training steps under `config` (reconfiguring the loader if it differs)."""
        self.reconfigure(config)
        return [self.step() for _ in range(n)]

    def step(self, extra_compute_s: float = 0.0) -> StepSample:
        """Run one training step under the current config (`extra_compute_s`: more
        trainer time in this step, e.g. the first step's graph tracing)."""
        if self.config is None:
            raise RuntimeError("SimulatedPipeline: call reconfigure(config) first.")
        p = self.params
        start = self.now
        head = self._head
        self._requested = True  # an inline config starts the batch only now
        self._fill()
        while head not in self._done:
            self._advance(None, math.inf)
        self._requested = False
        ready = self.now
        from_process, pool, delivered, wall, cpu = self._done.pop(head)
        self.served_by_current_pool = pool == self._pool and self._pending_config is None
        self._head += 1  # the cursor moves past the delivered batch ...
        self._fill()  # ... and the window offers one more position
        end = self._pass_end
        self.last_delivery = Delivery(
            position=head,
            wait_s=ready - start,
            delivered_at=ready,
            produce_wall_s=wall,
            produce_cpu_s=cpu,
            queue_depth=len(self._done),
            producer=self._pool_configs.get(pool, self.config),
            pass_tail=end is not None and self._next_submit >= end,
        )
        if not from_process and p.thread_wakeup_s > 0:
            behind = p.thread_wakeup_s - (ready - delivered)
            if behind > _EPS:  # the delivering thread still holds the GIL
                self._run_for(behind)
        compute = self._draw(p.compute_s) + max(extra_compute_s, 0.0)
        gil = compute * min(max(p.trainer_gil_share, 0.0), 1.0)
        if from_process:
            gil += p.batch_nbytes / p.ipc_bytes_per_s  # unpickling holds the GIL
        work = [gil, compute - compute * min(max(p.trainer_gil_share, 0.0), 1.0)]
        while work[0] > _EPS or work[1] > _EPS:
            self._advance(work, math.inf)
        return StepSample(wait_s=ready - start, step_s=self.now - start)

    def drain_records(self) -> list[SimpleNamespace]:
        """Per-batch producer records since the last call (`produce_wall_s`,
        `produce_cpu_s`, `nbytes`), like the engine reports them."""
        records, self._records = self._records, []
        return records

    def drain_startups(self) -> list[tuple[LoaderConfig, float]]:
        """`(config, seconds)` of each start-up since the last call (as `LoaderStats.startups`)."""
        startups, self._startups = self._startups, []
        return startups

    def rss(self) -> int:
        """Peak resident bytes since the last call: trainer + held batches + processes."""
        p = self.params
        cfg = self.config
        held = max(self._peak_held, self._held())
        self._peak_held = self._held()
        per_batch = p.batch_nbytes * (2 if cfg is not None and cfg.use_multiprocessing else 1)
        procs = (
            cfg.workers * p.process_rss_bytes if cfg is not None and cfg.use_multiprocessing else 0
        )
        return int(p.base_rss_bytes + held * per_batch + procs)

    def throughput(self, config: LoaderConfig, steps: int = 200, skip: int = 10) -> WindowStats:
        """Stats of `steps` steps under `config` after `skip` warm-up steps."""
        samples = self.run_steps(config, skip + steps)
        return window_stats(samples, skip=skip)

    # --------------------------------------------------------------- internals

    def _pool_busy(self) -> int:
        return sum(1 for t in self._running if t.pool == self._pool)

    def _held(self) -> int:
        # The window (buffered + in production) and the trainer's batch.
        return len(self._running) + len(self._done) + 1

    def _draw(self, mean: float) -> float:
        cv = self.params.noise_cv
        if mean <= 0 or cv <= 0:
            return max(mean, 0.0)
        sigma = math.sqrt(math.log1p(cv * cv))
        return float(mean * self._rng.lognormal(-0.5 * sigma * sigma, sigma))

    def _fill(self) -> None:
        cfg = self.config
        assert cfg is not None
        if cfg.inline:  # produced on the training thread when the step asks for it
            limit = self._head + (1 if self._requested else 0)
        else:
            limit = self._head + held_batches(cfg)  # as Prefetcher._top_up
        if self._pass_end is not None:
            limit = min(limit, self._pass_end)  # a pass ends: the next one starts later
        while self._next_submit < limit:
            self._pending.append(self._next_submit)
            self._next_submit += 1
        busy = self._pool_busy()
        while self._pending and busy < cfg.workers:
            self._start(self._pending.popleft())
            busy += 1

    def _start(self, position: int) -> None:
        p = self.params
        cfg = self.config
        assert cfg is not None
        python = self._draw(p.python_s)
        if cfg.use_multiprocessing:
            python += p.batch_nbytes / p.ipc_bytes_per_s
        phases = [
            (kind, amount)
            for kind, amount in (
                (_IO, self._draw(p.io_s)),
                (_NUMPY, self._draw(p.numpy_s)),
                (_PYTHON, python),
            )
            if amount > 0
        ] or [(_IO, 0.0)]
        self._running.append(_Task(phases, self.now, position, self._pool, cfg.use_multiprocessing))
        self._peak_held = max(self._peak_held, self._held())

    def _run_for(self, seconds: float) -> None:
        """Let the loader work for `seconds` while the trainer waits (a start-up)."""
        end = self.now + seconds
        while self.now < end - _EPS:
            if not self._running and self._pending_config is None:
                self.now = end
                break
            self._advance(None, end - self.now)

    def _advance(self, trainer: list[float] | None, horizon: float) -> None:
        """Advance to the next event (or `horizon` seconds); `trainer` is the step's
        remaining `[gil_s, free_s]` work, updated in place (`None`: it waits)."""
        p = self.params
        running = self._running
        n_numpy = n_py_threads = n_py_procs = 0
        for task in running:
            kind = task.kind
            if kind == _NUMPY:
                n_numpy += 1
            elif kind == _PYTHON:
                if task.in_process:
                    n_py_procs += 1
                else:
                    n_py_threads += 1
        trainer_gil = trainer is not None and trainer[0] > _EPS
        trainer_free = trainer is not None and not trainer_gil
        gil_holders = n_py_threads + (1 if trainer_gil else 0)
        demand = n_numpy + n_py_procs + min(gil_holders, 1)
        if trainer_free:
            demand += max(p.trainer_cores, 1e-9)
        if self._pending_config is not None or self.now < self._prewarm_until - _EPS:
            demand += max(p.startup_busy_cores, 0.0)  # a pool or forkserver starting
        share = min(1.0, p.cores / demand) if demand else 1.0
        if demand > p.cores:
            share *= 1.0 - p.oversubscription_loss
        gil_rate = share / gil_holders if gil_holders else share
        if gil_holders > 1:
            gil_rate *= 1.0 - p.gil_contention_loss
        dt = min(horizon, self._ready_at - self.now)
        if self.now < self._prewarm_until - _EPS:
            dt = min(dt, self._prewarm_until - self.now)
        rates = []
        for task in running:
            kind = task.kind
            rate = 1.0 if kind == _IO else share if kind == _NUMPY or task.in_process else gil_rate
            rates.append(rate)
            if task.remaining / rate < dt:
                dt = task.remaining / rate
        trainer_rate = gil_rate if trainer_gil else share
        if trainer is not None:
            left = trainer[0] if trainer_gil else trainer[1]
            dt = min(dt, left / trainer_rate)
        if dt == math.inf:
            raise RuntimeError("SimulatedPipeline deadlocked (no work in flight).")
        self.now += dt
        if trainer is not None:
            trainer[0 if trainer_gil else 1] -= dt * trainer_rate
        finished: list[_Task] = []
        for task, rate in zip(running, rates):
            done = dt * rate
            task.remaining -= done
            if task.kind != _IO:
                task.cpu += done
            while task.remaining <= _EPS:
                task.phase_i += 1
                if task.phase_i >= len(task.phases):
                    finished.append(task)
                    break
                task.remaining += task.phases[task.phase_i][1]
        if self._pending_config is not None and self.now >= self._ready_at - _EPS:
            self.config, self._pending_config, self._ready_at = self._pending_config, None, math.inf
            self._pool += 1  # the new pool takes over; the old one finishes what it runs
            self._pool_configs[self._pool] = self.config
            self._fill()
        if finished:
            for task in finished:
                running.remove(task)
                if task.position >= self._head and task.position not in self._done:
                    wall = self.now - task.start
                    self._done[task.position] = (
                        task.in_process,
                        task.pool,
                        self.now,
                        wall,
                        task.cpu,
                    )
                self._records.append(
                    SimpleNamespace(
                        produce_wall_s=self.now - task.start,
                        produce_cpu_s=task.cpu,
                        nbytes=p.batch_nbytes,
                    )
                )
            self._fill()


def static_grid(
    pipeline: SimulatedPipeline | PipelineParams,
    configs: Iterable[LoaderConfig],
    steps: int = 200,
    *,
    skip: int = 10,
) -> dict[LoaderConfig, WindowStats]:
    """Measure each config on a fresh copy of the pipeline (an exhaustive oracle).

    Args:
        pipeline: A pipeline (its params are copied) or `PipelineParams`.
        configs: Configs to measure.
        steps: Measured steps per config.
        skip: Warm-up steps ignored per config.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> grid = static_grid(PipelineParams(io_s=0.04), [LoaderConfig(w, 8) for w in (1, 2, 4, 8)])
    >>> {c.workers: round(s.steps_per_s) for c, s in grid.items()}  # 1 worker: inline
    {1: 20, 2: 50, 4: 100, 8: 100}
    """
    params = pipeline.params if isinstance(pipeline, SimulatedPipeline) else pipeline
    out: dict[LoaderConfig, WindowStats] = {}
    for config in configs:
        out[config] = SimulatedPipeline(params).throughput(config, steps=steps, skip=skip)
    return out


__all__ = [
    "Delivery",
    "SimulatedPipeline",
    "pass_workers",
    "static_grid",
]
