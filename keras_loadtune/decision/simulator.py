"""A simulated Keras input pipeline with a fake clock, to test the policy without TensorFlow.

`SimulatedPipeline` is a discrete-event, processor-sharing model of a
`keras.utils.PyDataset` feeding `model.fit`:

- every batch costs `io_s` of latency (sleep/disk/network: no CPU, releases the
  GIL), then `numpy_s` of CPU that releases the GIL, then `python_s` of CPU that
  holds it (plus pickling `batch_nbytes` in process mode);
- `workers` threads share **one** GIL; worker processes have one each;
- like Keras's `OrderedEnqueuer`, batches are submitted in order and at most
  `max_queue_size + 1` submitted batches wait to be taken by the trainer, which
  takes them in order (head-of-line blocking);
- the trainer's step needs `compute_s` of one core (plus unpickling in process mode);
- when more CPU work is runnable than `cores`, everything runs proportionally slower;
- restarting the loader discards its work and costs start-up time; process pools
  cost `process_rss_bytes` per worker; optional log-normal noise (`noise_cv`).

`simulate_tuning` drives a real `TuningSession` exactly as the Keras callback
would; `static_grid` measures fixed configs, for exhaustive-oracle comparisons.

Example:

```python
from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings
from keras_loadtune.decision.simulator import SimulatedPipeline, simulate_tuning

pipe = SimulatedPipeline(io_s=0.040, compute_s=0.010, cores=8, seed=0)
result = simulate_tuning(pipe, TunerSettings(cores=8, seed=0), baseline=LoaderConfig(),
                         total_steps=800)
result.session.best_config     # 5 threads, queue 4: enough to hide the 40 ms latency
result.final_steps_per_s       # ~100: the compute floor
```
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import StepSample, WindowStats, window_stats

_IO, _NUMPY, _PYTHON = 0, 1, 2
_EPS = 1e-12


@dataclass(frozen=True)
class PipelineParams:
    """Costs of a simulated pipeline and machine.

    Args:
        io_s: Per-batch latency that needs no CPU and releases the GIL.
        python_s: Per-batch CPU seconds holding the GIL (pure Python).
        numpy_s: Per-batch CPU seconds releasing the GIL (NumPy, decoding in C).
        compute_s: Trainer compute seconds per step (needs one core).
        cores: Cores shared by the trainer and the loader.
        batch_nbytes: Bytes per batch (memory, and pickling cost in process mode).
        ipc_bytes_per_s: Pickling throughput (each side) in process mode.
        process_startup_s: Seconds to start a process pool (+ 10 ms per process).
        process_rss_bytes: Resident memory of one worker process.
        thread_startup_s: Seconds to start one worker thread.
        base_rss_bytes: Resident memory of the trainer itself.
        noise_cv: Coefficient of variation of every duration (log-normal), 0 for none.
        seed: Seed of the noise.
        picklable: `False` makes switching to process mode fail.

    Example:

    ```python
    from keras_loadtune.decision.simulator import PipelineParams

    PipelineParams(python_s=0.02, compute_s=0.005, cores=16).cores  # 16
    ```
    """

    io_s: float = 0.0
    python_s: float = 0.0
    numpy_s: float = 0.0
    compute_s: float = 0.010
    cores: int = 8
    batch_nbytes: int = 1 << 20
    ipc_bytes_per_s: float = 1.0e9
    process_startup_s: float = 0.5
    process_rss_bytes: int = 150 << 20
    thread_startup_s: float = 0.0005
    base_rss_bytes: int = 1 << 30
    noise_cv: float = 0.0
    seed: int = 0
    picklable: bool = True


class SimulatedPipeline:
    """A simulated `PyDataset` + trainer; time only advances when it is run.

    Args:
        params: A `PipelineParams`; keyword arguments override its fields.

    Example:

    ```python
    from keras_loadtune import LoaderConfig
    from keras_loadtune.decision.simulator import SimulatedPipeline

    pipe = SimulatedPipeline(io_s=0.04, compute_s=0.01)
    samples = pipe.run_steps(LoaderConfig(workers=1), 20)
    samples[-1].wait_s  # ~0.03: one thread delivers a batch per 40 ms
    ```
    """

    def __init__(self, params: PipelineParams | None = None, **overrides: Any) -> None:
        self.params = replace(params or PipelineParams(), **overrides)
        self.now = 0.0
        self.config: LoaderConfig | None = None
        self._rng = np.random.default_rng(self.params.seed)
        self._records: list[SimpleNamespace] = []
        self._peak_held = 0
        self._reset_loader()

    # --------------------------------------------------------------- public API

    @property
    def cores(self) -> int:
        """Simulated cores."""
        return self.params.cores

    def set_params(self, **changes: Any) -> None:
        """Change costs mid-run (e.g. the storage got slower), keeping the clock."""
        self.params = replace(self.params, **changes)

    def reconfigure(self, config: LoaderConfig) -> float:
        """Restart the loader with `config`; returns (and spends) the start-up seconds.

        Raises:
            RuntimeError: For a process config when the dataset is not picklable.
        """
        if config == self.config:
            return 0.0
        p = self.params
        if config.use_multiprocessing and not p.picklable:
            raise RuntimeError("the dataset cannot be pickled for worker processes")
        if config.use_multiprocessing:
            startup = p.process_startup_s + 0.01 * config.workers
        else:
            startup = p.thread_startup_s * config.workers
        self.config = config
        self._reset_loader()
        self.now += startup
        self._fill()
        return startup

    def run_steps(self, config: LoaderConfig, n: int) -> list[StepSample]:
        """Run `n` training steps under `config` (restarting the loader if it differs)."""
        self.reconfigure(config)
        return [self.step() for _ in range(n)]

    def step(self) -> StepSample:
        """Run one training step under the current config."""
        if self.config is None:
            raise RuntimeError("SimulatedPipeline: call reconfigure(config) first.")
        p = self.params
        start = self.now
        head = self._head
        self._fill()
        self._head += 1  # the trainer takes the head future out of the queue ...
        self._fill()  # ... which lets the producer submit another batch
        while head not in self._done:
            self._advance(None)
        ready = self.now
        del self._done[head]
        work = self._draw(p.compute_s)
        if self.config.use_multiprocessing:
            work += p.batch_nbytes / p.ipc_bytes_per_s
        while work > _EPS:
            work = self._advance(work)
        return StepSample(wait_s=ready - start, step_s=self.now - start)

    def drain_records(self) -> list[SimpleNamespace]:
        """Per-batch producer records since the last call (`produce_wall_s`,
        `produce_cpu_s`, `nbytes`), like the engine reports them."""
        records, self._records = self._records, []
        return records

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

    def _reset_loader(self) -> None:
        self._pending: deque[int] = deque()
        self._running: list[list[Any]] = []  # [remaining, phase_i, phases, start, cpu, idx]
        self._done: dict[int, float] = {}
        self._next_submit = getattr(self, "_head", 0)
        self._head = self._next_submit
        self._peak_held = 0

    def _held(self) -> int:
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
        # Untaken submitted batches: the queue (max_queue_size) + 1 held by the producer.
        while self._next_submit - self._head < cfg.max_queue_size + 1:
            self._pending.append(self._next_submit)
            self._next_submit += 1
        while self._pending and len(self._running) < cfg.workers:
            self._start(self._pending.popleft())

    def _start(self, idx: int) -> None:
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
        ]
        if not phases:
            phases = [(_IO, 0.0)]
        self._running.append([phases[0][1], 0, phases, self.now, 0.0, idx])
        self._peak_held = max(self._peak_held, self._held())

    def _advance(self, consumer_work: float | None) -> float:
        """Advance to the next event; return the consumer's remaining work."""
        cfg = self.config
        assert cfg is not None
        running = self._running
        n_numpy = 0
        n_python = 0
        for task in running:
            kind = task[2][task[1]][0]
            if kind == _NUMPY:
                n_numpy += 1
            elif kind == _PYTHON:
                n_python += 1
        python_demand = n_python if cfg.use_multiprocessing else min(n_python, 1)
        demand = n_numpy + python_demand + (1 if consumer_work is not None else 0)
        share = min(1.0, self.params.cores / demand) if demand else 1.0
        gil_rate = share if cfg.use_multiprocessing or n_python == 0 else share / n_python
        rates = [
            1.0 if k == _IO else share if k == _NUMPY else gil_rate
            for k in (task[2][task[1]][0] for task in running)
        ]
        dt = math.inf
        for task, rate in zip(running, rates):
            dt = min(dt, task[0] / rate)
        if consumer_work is not None:
            dt = min(dt, consumer_work / share)
        if dt == math.inf:
            raise RuntimeError("SimulatedPipeline deadlocked (no work in flight).")
        self.now += dt
        finished: list[list[Any]] = []
        for task, rate in zip(running, rates):
            done = dt * rate
            task[0] -= done
            if task[2][task[1]][0] != _IO:
                task[4] += done
            while task[0] <= _EPS:
                task[1] += 1
                if task[1] >= len(task[2]):
                    finished.append(task)
                    break
                task[0] += task[2][task[1]][1]
        if finished:
            p = self.params
            for task in finished:
                running.remove(task)
                self._done[task[5]] = self.now
                self._records.append(
                    SimpleNamespace(
                        produce_wall_s=self.now - task[3],
                        produce_cpu_s=task[4],
                        nbytes=p.batch_nbytes,
                    )
                )
            self._fill()
        if consumer_work is None:
            return 0.0
        return consumer_work - dt * share


@dataclass
class SimulationResult:
    """What `simulate_tuning` observed.

    Args:
        session: The `TuningSession` after the run (trials, best config, notes...).
        total_time_s: Simulated seconds for all steps, start-up costs included.
        steps: Training steps run.
        steps_per_s_by_config: Measured steps/s of every completed trial, by config.
        final_config: The config the loader ran at the end.
        final_steps_per_s: Steps/s over the steps after tuning finished (`None` if it
            never finished).
        switches: `(step, config)` for every reconfigure the session asked for.

    Example:

    ```python
    result.steps_per_s_by_config[result.session.best_config]
    ```
    """

    session: TuningSession
    total_time_s: float
    steps: int
    steps_per_s_by_config: dict[LoaderConfig, float]
    final_config: LoaderConfig
    final_steps_per_s: float | None
    switches: list[tuple[int, LoaderConfig]] = field(default_factory=list)


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
) -> SimulationResult:
    """Train `total_steps` simulated steps with a `TuningSession` in charge of the loader.

    Drives the session exactly as the Keras callback does: after each step,
    `observe_loader` (new producer records) then `observe_step`; a returned config
    is applied at once (`observe_startup` with the start-up seconds, or
    `mark_failed` if the restart raises). Training ends with `session.stop`.

    Args:
        pipeline: The simulated pipeline (its clock is the session's clock).
        settings: Tuner settings; `seed`, if given, replaces `settings.seed`.
        baseline: The user's config; the loader starts with it.
        total_steps: Training steps to run.
        seed: Optional sampler seed override.
        study: Optional Optuna study for the session.
        changes: `{step: {param: value}}` changes to the pipeline's costs (drift).
        process_mode_available: Passed to the session.

    Example:

    ```python
    from keras_loadtune import LoaderConfig
    from keras_loadtune.decision import TunerSettings
    from keras_loadtune.decision.simulator import SimulatedPipeline, simulate_tuning

    res = simulate_tuning(SimulatedPipeline(python_s=0.02, compute_s=0.005, cores=16),
                          TunerSettings(cores=16, seed=1), baseline=LoaderConfig(),
                          total_steps=1000)
    res.session.best_config.use_multiprocessing  # True: pure Python wants processes
    ```
    """
    if seed is not None:
        settings = settings.replace(seed=seed)
    changes = dict(changes or {})
    pipeline.reconfigure(baseline)
    session = TuningSession(
        baseline,
        settings,
        study=study,
        clock=lambda: pipeline.now,
        rss_probe=pipeline.rss,
        process_mode_available=process_mode_available,
        cores=pipeline.cores,
    )
    start = pipeline.now
    switches: list[tuple[int, LoaderConfig]] = []
    steady_from: tuple[int, float] | None = None
    for i in range(total_steps):
        if i in changes:
            pipeline.set_params(**changes[i])
        sample = pipeline.step()
        session.observe_loader(pipeline.drain_records())
        new = session.observe_step(sample)
        if new is not None:
            switches.append((i, new))
            try:
                seconds = pipeline.reconfigure(new)
            except Exception as exc:
                session.mark_failed(new, str(exc))
            else:
                session.observe_startup(new, seconds)
        if session.phase in ("steady", "compute-bound"):
            if steady_from is None:
                steady_from = (i + 1, pipeline.now)
        else:
            steady_from = None
    final = session.stop("training ended")
    if final is not None:
        try:
            pipeline.reconfigure(final)
        except Exception as exc:
            session.mark_failed(final, str(exc))
    final_rate = None
    if steady_from is not None and total_steps > steady_from[0]:
        final_rate = (total_steps - steady_from[0]) / (pipeline.now - steady_from[1])
    by_config = {
        r.config: float(r.steps_per_s)
        for r in session.trials
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
    )


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

    ```python
    from keras_loadtune import LoaderConfig
    from keras_loadtune.decision.simulator import PipelineParams, static_grid

    grid = static_grid(PipelineParams(io_s=0.04), [LoaderConfig(w, 8) for w in (1, 2, 4, 8)])
    {c.workers: round(s.steps_per_s) for c, s in grid.items()}  # {1: 25, 2: 50, 4: 100, 8: 100}
    ```
    """
    params = pipeline.params if isinstance(pipeline, SimulatedPipeline) else pipeline
    out: dict[LoaderConfig, WindowStats] = {}
    for config in configs:
        out[config] = SimulatedPipeline(params).throughput(config, steps=steps, skip=skip)
    return out


__all__ = [
    "PipelineParams",
    "SimulatedPipeline",
    "SimulationResult",
    "simulate_tuning",
    "static_grid",
]
