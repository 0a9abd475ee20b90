"""`GrainIterSource`: a Grain `IterDataset` or `grain.DataLoader`, retunable between batches
where Grain's state allows it and otherwise at an epoch boundary.

An iterator has no random access, so the engine cannot serve it batch by batch; Grain
runs it, with Grain's own knobs (`grain_pipeline.GrainOptions`). `GrainIterSource` is a
`grain.IterDataset` (Keras's `GrainDatasetAdapter` iterates it as it would the user's
pipeline) whose iterator owns one iterator of the user's pipeline, built with the
options in force, and changes it at a batch boundary, on the thread that iterates:

- **same worker count** (threads, buffers): the new pipeline's iterator takes the old
  one's `get_state()` through `set_state()`, and the pass goes on exactly once, as a
  Grain checkpoint restore does;
- **another worker count**: Grain's state records it, so the change waits for the next
  pass (`iter()`, an epoch boundary in Keras), which starts fresh with it
  (`RestartPoint.EPOCH_BOUNDARY`).

If a rebuild fails (e.g. the pipeline cannot be pickled for worker processes), the
running iterator keeps serving, `switch_error` says why, and that config is not tried
again: the tuner is never the reason training fails.

It is also a dataset of the tuner's lifecycle (`keras_loadtune.lifecycle.fit`), as a
`TunedPyDataset` is: every `next()` is timed on the thread that iterates (the time
blocked in Grain's iterator, a switch's rebuild included, is the batch's wait) and
becomes one `BatchRecord` in `stats`, on the hot path one `perf_counter` pair, one
`thread_time` pair and one tuple. A batch's `produce_cpu_s` is the iterating thread's
own CPU in that `next()` plus its share of what Grain's threads and worker processes
spent (`grain_cpu.GrainCpu`, read every `CPU_READ_EVERY_S` at most, on the batch that
finds the last read that old, and apportioned over the batches delivered since: the
batches until the next read carry that share); its `produce_wall_s` is the wait, or its
CPU when that is longer (a batch took at least its CPU time to make, though its wait
hid the rest behind Grain's prefetch). So a GIL-bound pure-Python Grain pipeline looks
CPU-heavy to the tuner, as it does when the engine serves it, and worker processes
(`mp_prefetch`) are considered.

A worker-count change waits as `pending_config` until the next pass starts, so the
tuner observes no step of the old config under the new one's name, and its trial
starts after the epoch boundary. `modes` says which worker kinds the pipeline can run
(the tuner searches only those).

Example:

```python
source = GrainIterSource(ds)                   # ds: a grain.IterDataset or DataLoader
it = iter(source)
first = next(it)
source.reconfigure(LoaderConfig(workers=4, max_queue_size=8))  # threads: at the next batch
```
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from typing import Any

import grain

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine.records import LoaderStats, StartupRecord, batch_nbytes
from keras_loadtune.keras_adapter.grain_cpu import GrainCpu
from keras_loadtune.keras_adapter.grain_pipeline import GrainOptions, options_for, pipeline_of
from keras_loadtune.keras_adapter.input_facts import facts_of
from keras_loadtune.keras_adapter.input_kind import RestartPoint


def _close(iterator: Any) -> None:
    """Closes a Grain iterator (a `DataLoaderIterator` through its dataset iterator)."""
    for target in (iterator, getattr(iterator, "_iterator", None)):
        close = getattr(target, "close", None)
        if callable(close):
            close()
            return


# Grain's threads and workers are read at most this often (a read costs tens of us).
CPU_READ_EVERY_S = 0.05
# Bytes of a batch are read on 1 batch in this many (a walk over the batch's arrays).
_NBYTES_EVERY = 16


class GrainIterSource(grain.IterDataset):
    """A Grain `IterDataset` or `grain.DataLoader` whose options change while it runs.

    Every `iter()` is a new pass built with the options requested last. Within a pass,
    `reconfigure` applies at the next batch when the worker count stays the same
    (through `get_state` / `set_state`), and at the next pass otherwise.

    Args:
        dataset: A `grain.IterDataset` or `grain.DataLoader` (finite or endless).

    Raises:
        TypeError: `dataset` is neither.

    Example:

    ```python
    ds = grain.MapDataset.range(1000).shuffle(seed=0).to_iter_dataset().batch(32)
    source = GrainIterSource(ds)
    source.reconfigure(LoaderConfig(workers=2, max_queue_size=4))  # RestartPoint.ANY_BATCH
    model.fit(source, epochs=3)
    ```
    """

    # What the lifecycle reads of a dataset, which Grain's own workers do not have.
    shm_fallback_note: str | None = None
    process_start_estimate_s: float | None = None

    def __init__(self, dataset: Any):
        pipeline = pipeline_of(dataset)  # raises TypeError for anything else
        super().__init__(dataset if isinstance(dataset, grain.IterDataset) else ())
        self.dataset = dataset
        self.input_facts = facts_of(dataset)  # batch size (the report)
        self._pipeline = pipeline
        self._lock = threading.Lock()
        user = pipeline.options
        # What was asked for last, in Grain's terms and in the tuner's (its name).
        self._requested, self._requested_config = user, user.to_config()
        # The options of the newest pass (or of a change it resumed with), and its name.
        self._latest, self._latest_config = user, user.to_config()
        self._refused: set[GrainOptions] = set()
        self.switch_error: BaseException | None = None
        self.passes = 0
        self.resumes = 0
        self.stats = LoaderStats()
        self.num_batches: int | None = None  # batches of the last pass that ran to its end
        self._sequence = itertools.count()
        self._record_lock = threading.Lock()  # records join `stats` in sequence order
        self._nbytes = 0
        self._open: weakref.WeakSet[_ResumableIterator] = weakref.WeakSet()
        self._pass_workers = user.num_workers  # the worker count of the newest pass
        # Grain's own CPU (read under `_record_lock`): the share per batch of the last
        # read, the sequence number and time of that read.
        self._grain_cpu = GrainCpu()
        self._cpu_per_batch = 0.0
        self._cpu_read_sequence = -1
        self._cpu_next_read = 0.0
        self._cpu_workers_starting = False  # the next batch starts the workers' clocks
        self._delivered_total = 0

    # -- the knobs ---------------------------------------------------------------------------
    @property
    def options(self) -> GrainOptions:
        """The options requested last (in force once every change has applied)."""
        with self._lock:
            return self._requested

    @property
    def config(self) -> LoaderConfig:
        """The config that serves the next batch, in the tuner's terms: the
        `LoaderConfig` requested last (or the user's options' `to_config()`), except
        while a worker-count change waits for the next pass (`pending_config`)."""
        with self._lock:
            if self._requested.resumable_from(self._latest):
                return self._requested_config
            return self._latest_config

    @property
    def pending_config(self) -> LoaderConfig | None:
        """The config a requested worker-count change waits for the next pass with,
        else `None` (what the lifecycle polls: no step is measured meanwhile)."""
        with self._lock:
            if self._requested.resumable_from(self._latest):
                return None
            return self._requested_config

    @property
    def pending(self) -> bool:
        """True while a requested worker count waits for the next pass."""
        with self._lock:
            return not self._requested.resumable_from(self._latest)

    @property
    def tunable(self) -> tuple[bool, bool]:
        """`(threads, workers)`: which knobs the pipeline exposes (`grain_pipeline`)."""
        return self._pipeline.tunable_threads, self._pipeline.tunable_workers

    @property
    def modes(self) -> tuple[str, ...]:
        """The worker kinds (`LoaderConfig` modes) this pipeline can run: `"thread"`
        where it can run with no worker process and its reading threads change,
        `"process"` where its worker count changes."""
        pipeline = self._pipeline
        modes = []
        no_worker = pipeline.min_workers == 0 or not pipeline.tunable_workers
        if pipeline.tunable_threads and no_worker:
            modes.append("thread")
        if pipeline.tunable_workers:
            modes.append("process")
        return tuple(modes)

    @property
    def searched_modes(self) -> tuple[str, ...]:
        """The worker kinds the tuner searches: `modes`, less `"process"` when the
        user's pipeline runs no worker process.

        Grain starts an iterator's worker processes anew at every pass (about 3 s each
        on 2 cores in `benchmarks/grain_loader.py`), a cost a trial's steady state does
        not show: a GIL-bound map given workers by the tuner ran a 192-step fit 4x
        slower. So the tuner never adds workers to a pipeline that has none; the user
        can (`reconfigure` takes any of `modes`)."""
        modes = self.modes
        if self._pipeline.options.num_workers > 0:
            return modes
        return tuple(m for m in modes if m != "process")

    def reconfigure(
        self, config: LoaderConfig | GrainOptions, background: bool = True
    ) -> RestartPoint:
        """Requests `config`; says when it applies to the running pass.

        Safe from any thread. A `LoaderConfig` maps onto Grain's knobs with
        `grain_pipeline.options_for` (knobs the pipeline does not expose stay), and
        `config` then names what runs (as the tuner asked).

        Args:
            config: A `LoaderConfig` (the tuner's terms) or `GrainOptions`.
            background: Accepted for the lifecycle's protocol: a change never blocks
                here (it applies on the iterating thread).

        Returns:
            `RestartPoint.ANY_BATCH`: at the next batch of the running pass (same worker
            count); `RestartPoint.EPOCH_BOUNDARY`: at the next pass.

        Raises:
            TypeError: `config` is neither type.
            ValueError: A `LoaderConfig` of a mode the pipeline cannot run (`modes`).

        Example:

        ```python
        source.reconfigure(LoaderConfig(4, 8, use_multiprocessing=True))
        # RestartPoint.EPOCH_BOUNDARY when the worker count changes
        ```
        """
        del background
        if isinstance(config, LoaderConfig):
            options = options_for(self._pipeline, config)
            if options.to_config().use_multiprocessing != config.use_multiprocessing:
                kind = "worker processes" if config.use_multiprocessing else "threads alone"
                raise ValueError(
                    f"This Grain pipeline cannot run {config} on {kind}: it runs "
                    f"{' or '.join(self.modes) or 'no tunable'} configs (a worker count "
                    "needs a final mp_prefetch or a grain.DataLoader; threads need one "
                    "to_iter_dataset and no required worker)."
                )
            name = config
        elif isinstance(config, GrainOptions):
            options, name = config, config.to_config()
        else:
            raise TypeError(
                f"config must be a LoaderConfig or GrainOptions; got {type(config).__name__}."
            )
        with self._lock:
            self._requested, self._requested_config = options, name
            if options.resumable_from(self._latest):
                self._latest, self._latest_config = options, name
                return RestartPoint.ANY_BATCH
            return RestartPoint.EPOCH_BOUNDARY

    def prewarm_processes(self) -> None:
        """Nothing to start ahead: Grain starts its workers with each pass."""

    def release_workers(self, timeout: float = 5.0) -> None:
        """Closes the passes still open (their threads and worker processes stop);
        Keras and the lifecycle call it once training ended. A later `iter()` starts
        a new pass."""
        del timeout
        for iterator in list(self._open):
            iterator.close()

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> _ResumableIterator:
        iterator = _ResumableIterator(self)
        self._open.add(iterator)
        return iterator

    def _start_pass(self) -> tuple[GrainOptions, LoaderConfig, Any, int, int]:
        """The options, config, iterator, number and workers started of a new pass:
        the requested options, or the user's own when those fail to build (then
        refused, and `switch_error` says why) or were refused before. Workers started
        counts only a changed worker count (a switch's restart, not every pass's)."""
        with self._lock:
            options, config = self._requested, self._requested_config
        user = self._pipeline.options
        iterator = None
        if options != user and options not in self._refused:
            try:
                self._cpu_pass_starts(options)
                iterator = self._build(options)
            except Exception as exc:
                self._refuse(options, config, exc)
        if iterator is None:
            if options != user:
                options, config = user, user.to_config()
            self._cpu_pass_starts(options)
            iterator = self._build(options)  # the user's own: its error, as unwrapped
        with self._lock:
            if self._requested in self._refused:  # what runs instead is what is asked
                self._requested, self._requested_config = options, config
            self._latest, self._latest_config = options, config
            self.passes += 1
            number = self.passes
            changed = options.num_workers != self._pass_workers
            self._pass_workers = options.num_workers
        return options, config, iterator, number, options.num_workers if changed else 0

    def _wanted(self, current: GrainOptions) -> tuple[GrainOptions, LoaderConfig] | None:
        """The options (and name) a running pass with `current` should switch to now."""
        with self._lock:
            wanted, config = self._requested, self._requested_config
            refused = wanted in self._refused
        if wanted == current or refused or not wanted.resumable_from(current):
            return None
        return wanted, config

    def _build(self, options: GrainOptions) -> Any:
        built = self._pipeline.build(options)
        if isinstance(built, grain.IterDataset) and built is not self.dataset:
            built.has_child = True  # this source ends the pipeline (Grain's output hooks)
        return iter(built)

    def _refuse(self, options: GrainOptions, config: LoaderConfig, error: BaseException) -> None:
        """`options` cannot run: never tried again; the tuner learns it from `stats`."""
        with self._lock:
            self._refused.add(options)
            self.switch_error = error
        self.stats.add_startup(
            StartupRecord(
                config=config,
                workers_started=0,
                seconds=0.0,
                at=time.perf_counter(),
                error=f"{type(error).__name__}: {error}",
            )
        )

    def _served_by(self, options: GrainOptions, config: LoaderConfig) -> None:
        """A switch to the requested options failed: the running ones name the config."""
        with self._lock:
            if self._requested in self._refused:
                self._requested, self._requested_config = options, config
                self._latest, self._latest_config = options, config

    def _cpu_pass_starts(self, options: GrainOptions) -> None:
        """A pass with `options` is about to be built: Grain's CPU counts from now (its
        workers are the children that appear), and its first batch reads it."""
        with self._record_lock:
            self._grain_cpu.expect_workers(options.num_workers)
            self._grain_cpu.read()  # what ran before is not this pass's
            self._cpu_read_sequence = self._delivered_total - 1
            self._cpu_next_read = 0.0
            self._cpu_workers_starting = options.num_workers > 0

    def _cpu_workers_restart(self, options: GrainOptions) -> None:
        """A switch rebuilds the pipeline with `options`: an `mp_prefetch` starts new
        workers (the same count), whose start the next batch leaves out."""
        with self._record_lock:
            self._grain_cpu.expect_workers(options.num_workers)
            self._cpu_workers_starting = options.num_workers > 0

    def _read_grain_cpu(self, sequence: int, now: float) -> None:
        """Grain's CPU since the last read, shared over the batches delivered since
        (batch `sequence` included); called under `_record_lock`."""
        batches = sequence - self._cpu_read_sequence
        spent = self._grain_cpu.read()
        if batches > 0:
            self._cpu_per_batch = spent / batches
        self._cpu_read_sequence = sequence
        self._cpu_next_read = now + CPU_READ_EVERY_S

    def _delivered(
        self,
        batch: Any,
        started: float,
        ended: float,
        own_cpu: float,
        position: int,
        config: Any,
        stream: int,
    ) -> None:
        """One `BatchRecord` (as `LoaderStats.add`'s tuple) for a batch `next()` returned
        (`own_cpu`: the iterating thread's CPU seconds in that `next()`)."""
        wait = ended - started
        n = self.num_batches
        with self._record_lock:
            sequence = next(self._sequence)
            self._delivered_total = sequence + 1
            if sequence % _NBYTES_EVERY == 0:
                self._nbytes = batch_nbytes(batch)
            if self._cpu_workers_starting:
                self._cpu_workers_starting = False
                self._grain_cpu.start_worker_clocks()
            if ended >= self._cpu_next_read:
                self._read_grain_cpu(sequence, ended)
            cpu = own_cpu + self._cpu_per_batch
            self.stats.add(
                (
                    sequence,
                    position,
                    wait,  # wait_s
                    max(wait, cpu),  # produce_wall_s: at least its CPU time
                    cpu,  # produce_cpu_s
                    0,  # queue_depth: Grain's buffers are not seen
                    self._nbytes,
                    config,
                    ended,
                    n is not None and position >= n - 1,  # pass_tail
                    stream,
                    config,  # producer: the iterator that made it runs `config`
                    0,  # consumer
                )
            )

    def _started(self, config: LoaderConfig, workers: int, at: float, seconds: float) -> None:
        """A pass started a new worker count: its first batch's wait is the restart
        (the workers' start included), recorded as the engine records a pool's start."""
        self.stats.add_startup(
            StartupRecord(config=config, workers_started=workers, seconds=seconds, at=at)
        )

    def _pass_ended(self, batches: int) -> None:
        if batches > 0:
            self.num_batches = batches

    def __str__(self) -> str:
        return f"GrainIterSource({type(self.dataset).__name__}, {self.options})"


class _ResumableIterator(grain.DatasetIterator):
    """One pass of a `GrainIterSource`: the user's pipeline's iterator, swapped for one
    built with new options at a batch boundary (state carried over), each `next()`
    timed into the source's `stats`."""

    def __init__(self, source: GrainIterSource):
        super().__init__()
        self._source = source
        started = source._start_pass()
        self._options, self._config, self._iterator, self._stream, self._starting = started
        self._position = 0

    def __next__(self) -> Any:
        started = time.perf_counter()
        cpu_started = time.thread_time()
        wanted = self._source._wanted(self._options)
        if wanted is not None:
            self._switch(*wanted)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._source._pass_ended(self._position)
            raise
        ended = time.perf_counter()
        own_cpu = time.thread_time() - cpu_started
        self._source._delivered(
            batch, started, ended, own_cpu, self._position, self._config, self._stream
        )
        if self._starting:  # the first batch of a pass with a new worker count
            self._source._started(self._config, self._starting, started, ended - started)
            self._starting = 0
        self._position += 1
        return batch

    def _switch(self, options: GrainOptions, config: LoaderConfig) -> None:
        state = self._iterator.get_state()
        new = None
        try:
            self._source._cpu_workers_restart(options)
            new = self._source._build(options)
            new.set_state(state)
        except Exception as exc:  # keep serving on the running iterator
            if new is not None:
                _close(new)
            self._source._refuse(options, config, exc)
            self._source._served_by(self._options, self._config)
            return
        old, self._iterator = self._iterator, new
        self._options, self._config = options, config
        self._source.resumes += 1
        _close(old)

    def get_state(self) -> Any:
        return self._iterator.get_state()

    def set_state(self, state: Any) -> None:
        self._iterator.set_state(state)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _close(self._iterator)

    def __str__(self) -> str:
        return f"GrainIterSource iterator ({self._options})"


__all__ = ["GrainIterSource"]
