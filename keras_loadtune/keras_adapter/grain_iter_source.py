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

Example:

```python
source = GrainIterSource(ds)                   # ds: a grain.IterDataset or DataLoader
it = iter(source)
first = next(it)
source.reconfigure(LoaderConfig(workers=4, max_queue_size=8))  # threads: at the next batch
```
"""

from __future__ import annotations

import threading
from typing import Any

import grain

from keras_loadtune.config import LoaderConfig
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

    def __init__(self, dataset: Any):
        pipeline = pipeline_of(dataset)  # raises TypeError for anything else
        super().__init__(dataset if isinstance(dataset, grain.IterDataset) else ())
        self.dataset = dataset
        self.input_facts = facts_of(dataset)  # batch size (the report)
        self._pipeline = pipeline
        self._lock = threading.Lock()
        self._requested = pipeline.options
        self._latest = pipeline.options  # the options of the newest pass
        self._refused: set[GrainOptions] = set()
        self.switch_error: BaseException | None = None
        self.passes = 0
        self.resumes = 0

    # -- the knobs ---------------------------------------------------------------------------
    @property
    def options(self) -> GrainOptions:
        """The options requested last (in force once every change has applied)."""
        with self._lock:
            return self._requested

    @property
    def config(self) -> LoaderConfig:
        """`options` as a `LoaderConfig` (processes when there are workers)."""
        return self.options.to_config()

    @property
    def pending(self) -> bool:
        """True while a requested worker count waits for the next pass."""
        with self._lock:
            return not self._requested.resumable_from(self._latest)

    @property
    def tunable(self) -> tuple[bool, bool]:
        """`(threads, workers)`: which knobs the pipeline exposes (`grain_pipeline`)."""
        return self._pipeline.tunable_threads, self._pipeline.tunable_workers

    def reconfigure(self, config: LoaderConfig | GrainOptions) -> RestartPoint:
        """Requests `config`; says when it applies to the running pass.

        Safe from any thread. A `LoaderConfig` maps onto Grain's knobs with
        `grain_pipeline.options_for` (knobs the pipeline does not expose stay).

        Args:
            config: A `LoaderConfig` (the tuner's terms) or `GrainOptions`.

        Returns:
            `RestartPoint.ANY_BATCH`: at the next batch of the running pass (same worker
            count); `RestartPoint.EPOCH_BOUNDARY`: at the next pass.

        Example:

        ```python
        source.reconfigure(LoaderConfig(4, 8, use_multiprocessing=True))
        # RestartPoint.EPOCH_BOUNDARY when the worker count changes
        ```
        """
        if isinstance(config, LoaderConfig):
            options = options_for(self._pipeline, config)
        elif isinstance(config, GrainOptions):
            options = config
        else:
            raise TypeError(
                f"config must be a LoaderConfig or GrainOptions; got {type(config).__name__}."
            )
        with self._lock:
            self._requested = options
            if options.resumable_from(self._latest):
                return RestartPoint.ANY_BATCH
            return RestartPoint.EPOCH_BOUNDARY

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> _ResumableIterator:
        return _ResumableIterator(self)

    def _start_pass(self) -> tuple[GrainOptions, Any]:
        """The options and iterator of a new pass: the requested options, or the user's
        own when those fail to build (then refused, and `switch_error` says why)."""
        with self._lock:
            options = self._requested
        try:
            iterator = self._build(options)
        except Exception as exc:
            if options == self._pipeline.options:
                raise  # the user's own pipeline fails: the user's error, as unwrapped
            self._refuse(options, exc)
            with self._lock:
                self._requested = options = self._pipeline.options
            iterator = self._build(options)
        with self._lock:
            self._latest = options
            self.passes += 1
        return options, iterator

    def _wanted(self, current: GrainOptions) -> GrainOptions | None:
        """The options a running pass with `current` should switch to now, if any."""
        with self._lock:
            wanted = self._requested
            refused = wanted in self._refused
        if wanted == current or refused or not wanted.resumable_from(current):
            return None
        return wanted

    def _build(self, options: GrainOptions) -> Any:
        built = self._pipeline.build(options)
        if isinstance(built, grain.IterDataset) and built is not self.dataset:
            built.has_child = True  # this source ends the pipeline (Grain's output hooks)
        return iter(built)

    def _refuse(self, options: GrainOptions, error: BaseException) -> None:
        with self._lock:
            self._refused.add(options)
            self.switch_error = error

    def __str__(self) -> str:
        return f"GrainIterSource({type(self.dataset).__name__}, {self.options})"


class _ResumableIterator(grain.DatasetIterator):
    """One pass of a `GrainIterSource`: the user's pipeline's iterator, swapped for one
    built with new options at a batch boundary (state carried over)."""

    def __init__(self, source: GrainIterSource):
        super().__init__()
        self._source = source
        self._options, self._iterator = source._start_pass()

    def __next__(self) -> Any:
        wanted = self._source._wanted(self._options)
        if wanted is not None:
            self._switch(wanted)
        return next(self._iterator)

    def _switch(self, options: GrainOptions) -> None:
        state = self._iterator.get_state()
        new = None
        try:
            new = self._source._build(options)
            new.set_state(state)
        except Exception as exc:  # keep serving on the running iterator
            if new is not None:
                _close(new)
            self._source._refuse(options, exc)
            return
        old, self._iterator, self._options = self._iterator, new, options
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
