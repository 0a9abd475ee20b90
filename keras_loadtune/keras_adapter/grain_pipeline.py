"""A user's Grain pipeline, rebuilt with other `GrainOptions`.

Grain's loader knobs are set when the pipeline is built: `ReadOptions(num_threads,
prefetch_buffer_size)` in `to_iter_dataset`, `MultiprocessingOptions(num_workers,
per_worker_buffer_size)` in `mp_prefetch`, and `DataLoader(worker_count,
worker_buffer_size, read_options)`. Changing one means building the pipeline again with
everything else kept, which `pipeline_of` does for the two shapes it recognises:

- a `grain.DataLoader`: rebuilt from its own constructor arguments (data source,
  sampler, operations, shard options), as Keras's `GrainDatasetAdapter` rebuilds it;
- an `IterDataset`: its one `to_iter_dataset(read_options)` node is rebuilt with the
  new `ReadOptions` (its ancestors copied, the `MapDataset` below it shared), and an
  `mp_prefetch` that ends the pipeline is applied again to the rebuilt inner pipeline
  with the new worker count, its `worker_init_fn` and `sequential_slice` kept.

A knob the pipeline does not expose that way stays as the user set it
(`GrainPipeline.tunable_threads` / `tunable_workers` say which). With the user's own
options, `build` returns the user's object itself.

What a change may keep: the state of a Grain iterator (`get_state`) records the worker
count (`mp_prefetch` slices the data per worker, a `DataLoader` checks its checkpoint's
`worker_count`), so a pipeline rebuilt with the same worker count resumes from the old
iterator's state (`GrainOptions.resumable_from`), and one with another worker count
starts a new pass (an epoch boundary). With another worker count, Grain's
`mp_prefetch` and `DataLoader` group elements into batches per worker, so the batches
of a pass follow the worker count (each element still comes once per pass); that is
Grain's own rule, the same as the user changing `worker_count` by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import grain

from keras_loadtune.config import LoaderConfig


@dataclass(frozen=True)
class GrainOptions:
    """Grain's loader knobs, as one value.

    Args:
        num_threads: `ReadOptions.num_threads` (threads reading the `MapDataset`).
        prefetch_buffer_size: `ReadOptions.prefetch_buffer_size`.
        num_workers: `MultiprocessingOptions.num_workers` / `DataLoader(worker_count)`
            (0: no worker processes).
        per_worker_buffer_size: `MultiprocessingOptions.per_worker_buffer_size` /
            `DataLoader(worker_buffer_size)`.

    Example:

    ```python
    GrainOptions(16, 500, 2, 1).resumable_from(GrainOptions(4, 8, 2, 3))  # True
    ```
    """

    num_threads: int
    prefetch_buffer_size: int
    num_workers: int
    per_worker_buffer_size: int

    def __post_init__(self) -> None:
        for name in ("num_threads", "prefetch_buffer_size", "num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"GrainOptions.{name} must be an int >= 0; got {value!r}.")
        size = self.per_worker_buffer_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f"GrainOptions.per_worker_buffer_size must be an int >= 1; got {size!r}."
            )

    def resumable_from(self, other: GrainOptions) -> bool:
        """Whether an iterator built with these options can resume `other`'s state:
        the worker count, which the state records, is the same."""
        return self.num_workers == other.num_workers

    @property
    def read_options(self) -> grain.ReadOptions:
        """These options' `grain.ReadOptions`."""
        return grain.ReadOptions(
            num_threads=self.num_threads, prefetch_buffer_size=self.prefetch_buffer_size
        )

    def to_config(self) -> LoaderConfig:
        """The `LoaderConfig` these options run like (what the tuner and report show):
        processes when there are workers, else the reading threads.

        Example:

        ```python
        GrainOptions(16, 500, 4, 2).to_config()  # 4 processes, queue 8
        ```
        """
        if self.num_workers > 0:
            return LoaderConfig(
                workers=self.num_workers,
                max_queue_size=self.num_workers * self.per_worker_buffer_size,
                use_multiprocessing=True,
            )
        return LoaderConfig(
            workers=max(self.num_threads, 1), max_queue_size=max(self.prefetch_buffer_size, 1)
        )


class GrainPipeline(Protocol):
    """A user's Grain pipeline that can be built again with other `GrainOptions`.

    Example:

    ```python
    pipeline = pipeline_of(ds)
    iterator = iter(pipeline.build(pipeline.options_for(LoaderConfig(4, 8))))
    ```
    """

    @property
    def options(self) -> GrainOptions:
        """The options the user built the pipeline with."""
        ...

    @property
    def tunable_threads(self) -> bool:
        """Whether `build` applies `num_threads` / `prefetch_buffer_size`."""
        ...

    @property
    def tunable_workers(self) -> bool:
        """Whether `build` applies `num_workers` / `per_worker_buffer_size`."""
        ...

    @property
    def min_workers(self) -> int:
        """The fewest workers `build` runs (0: the pipeline may run in-process)."""
        ...

    def build(self, options: GrainOptions) -> Iterable[Any]:
        """The pipeline with `options` (the user's object itself for the user's options)."""
        ...


def options_for(pipeline: GrainPipeline, config: LoaderConfig) -> GrainOptions:
    """The `GrainOptions` that run `config` on `pipeline`, keeping what it cannot tune.

    A process config sets the worker count and per-worker buffer (`max_queue_size`
    split over the workers, rounded up); a thread config sets the reading threads and
    their buffer (`max_queue_size`, at least one slot per thread) and, where the
    pipeline may run without workers, no workers.

    Example:

    ```python
    options_for(pipeline_of(loader), LoaderConfig(4, 8, use_multiprocessing=True))
    # GrainOptions(num_threads=16, prefetch_buffer_size=500, num_workers=4,
    #              per_worker_buffer_size=2)
    ```
    """
    options = pipeline.options
    if config.use_multiprocessing:
        if not pipeline.tunable_workers:
            return options
        return dataclasses.replace(
            options,
            num_workers=config.workers,
            per_worker_buffer_size=max(math.ceil(config.max_queue_size / config.workers), 1),
        )
    if pipeline.tunable_threads:
        options = dataclasses.replace(  # a slot per thread at least (Grain warns below)
            options,
            num_threads=config.workers,
            prefetch_buffer_size=max(config.max_queue_size, config.workers),
        )
    if pipeline.tunable_workers and pipeline.min_workers == 0:
        options = dataclasses.replace(options, num_workers=0)
    return options


# ---------------------------------------------------------------------- DataLoader
class LoaderPipeline:
    """A `grain.DataLoader`, rebuilt from its constructor arguments.

    Args:
        loader: The user's `grain.DataLoader`.

    Example:

    ```python
    pipeline = LoaderPipeline(loader)
    faster = pipeline.build(dataclasses.replace(pipeline.options, num_workers=4))
    ```
    """

    tunable_threads = True
    tunable_workers = True
    min_workers = 0  # worker_count=0 is a plain DataLoader setting

    def __init__(self, loader: Any):
        self._loader = loader
        read, mp = loader._read_options, loader._multiprocessing_options
        self._options = GrainOptions(
            int(read.num_threads),
            int(read.prefetch_buffer_size),
            int(mp.num_workers),
            max(int(mp.per_worker_buffer_size), 1),
        )

    @property
    def options(self) -> GrainOptions:
        """The loader's own options."""
        return self._options

    def build(self, options: GrainOptions) -> Any:
        """A `grain.DataLoader` like the user's, with `options`."""
        if options == self._options:
            return self._loader
        loader = self._loader
        return grain.DataLoader(
            data_source=loader._data_source,
            sampler=loader._sampler,
            operations=list(loader._operations),
            worker_count=options.num_workers,
            worker_buffer_size=options.per_worker_buffer_size,
            shard_options=loader._shard_options,
            read_options=options.read_options,
            enable_profiling=loader._multiprocessing_options.enable_profiling,
        )


# --------------------------------------------------------------------- IterDataset
def _grain_module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"grain._src.python.dataset.transformations.{name}")


@dataclass(frozen=True)
class _MpPrefetch:
    """What `ds.mp_prefetch(...)` was called with, read back from the nodes it built."""

    inner: Any
    num_workers: int
    buffer_size: int
    worker_init_fn: Any
    sequential_slice: bool


def _read_mp_prefetch(ds: Any) -> _MpPrefetch | None:
    """The call of an `mp_prefetch` that ends `ds` (None: `ds` does not end in one).

    Grain 0.2.x builds `WithOptions(Interleave([ProcessPrefetch(MpContext(
    LazyWorkerSlice(ds, i::n) or ds)) for i in range(n)]))`; any other shape is not
    recognised (`tests/test_keras_adapter_grain_iter_source.py` pins this shape).
    """
    process_prefetch = _grain_module("process_prefetch")
    interleave = _grain_module("interleave")
    if type(ds).__name__ != "WithOptionsIterDataset" or len(ds.parents) != 1:
        return None
    top = ds.parents[0]
    if not isinstance(top, interleave.InterleaveIterDataset):
        return None
    shards = list(getattr(top, "_datasets", ()))
    if not shards or not all(
        isinstance(s, process_prefetch.ProcessPrefetchIterDataset) for s in shards
    ):
        return None
    contexts = [s.parents[0] for s in shards]
    if not all(type(c).__name__ == "_MpContextIterDataset" for c in contexts):
        return None
    below = [c.parents[0] for c in contexts]
    sliced = [b for b in below if isinstance(b, process_prefetch._LazyWorkerSliceIterDataset)]
    if len(shards) == 1 and not sliced:
        inner, sequential = below[0], False
    elif len(sliced) == len(shards) and len({id(b.parents[0]) for b in sliced}) == 1:
        inner, sequential = sliced[0].parents[0], bool(sliced[0]._sequential_slice)
    else:
        return None
    init = shards[0]._worker_init_fn  # partial(_run_all, [log prefix, partial(user, i, n)])
    fns = getattr(init, "args", ((),))[0] if isinstance(init, functools.partial) else None
    if not isinstance(fns, (list, tuple)) or len(fns) > 2:
        return None
    user_init = fns[1].func if len(fns) == 2 and isinstance(fns[1], functools.partial) else None
    if len(fns) == 2 and user_init is None:
        return None
    return _MpPrefetch(inner, len(shards), int(shards[0]._buffer_size), user_init, sequential)


def _read_nodes(ds: Any) -> list[Any]:
    """Every `to_iter_dataset` node (a `PrefetchIterDataset`) reachable from `ds`."""
    prefetch = _grain_module("prefetch")
    found, seen, stack = [], set(), [ds]
    while stack:
        node = stack.pop()
        if id(node) in seen or not isinstance(node, grain.IterDataset):
            continue
        seen.add(id(node))
        if isinstance(node, prefetch.PrefetchIterDataset):
            found.append(node)
        stack.extend(node.parents)
    return found


def _with_read_options(ds: Any, node: Any, read_options: grain.ReadOptions) -> Any:
    """`ds` with `node` (a `PrefetchIterDataset`) rebuilt with `read_options`: the
    nodes between are shallow copies with new parents; all else is shared."""
    import copy

    prefetch = _grain_module("prefetch")
    memo: dict[int, Any] = {}

    def rebuild(current: Any) -> Any:
        if id(current) in memo:
            return memo[id(current)]
        if current is node:
            new = prefetch.PrefetchIterDataset(
                node.parents[0], read_options=read_options, allow_nones=node._allow_nones
            )
        elif isinstance(current, grain.IterDataset) and current.parents:
            parents = tuple(rebuild(p) for p in current.parents)
            if all(a is b for a, b in zip(parents, current.parents)):
                new = current
            else:
                new = copy.copy(current)
                new._parents = parents
        else:
            new = current
        memo[id(current)] = new
        return new

    return rebuild(ds)


class IterPipeline:
    """A Grain `IterDataset`, rebuilt with other `ReadOptions` and worker count.

    Threads are tunable when the pipeline has exactly one `to_iter_dataset` node
    (outside an `mp_prefetch` that does not end the pipeline); workers when the
    pipeline ends in `mp_prefetch` (never down to 0: Grain switched the inner
    pipeline's batches to shared memory, which only worker processes release).

    Args:
        dataset: The user's `grain.IterDataset`.

    Example:

    ```python
    ds = grain.MapDataset.range(100).to_iter_dataset().batch(8)
    pipeline = IterPipeline(ds)
    rebuilt = pipeline.build(dataclasses.replace(pipeline.options, num_threads=2))
    ```
    """

    min_workers = 1

    def __init__(self, dataset: Any):
        self._dataset = dataset
        self._mp = _read_mp_prefetch(dataset)
        inner = self._mp.inner if self._mp is not None else dataset
        nodes = _read_nodes(inner)
        self._read_node = nodes[0] if len(nodes) == 1 else None
        read = self._read_node._read_options if self._read_node is not None else None
        self._options = GrainOptions(
            int(read.num_threads) if read is not None else 0,
            int(read.prefetch_buffer_size) if read is not None else 0,
            self._mp.num_workers if self._mp is not None else 0,
            max(self._mp.buffer_size, 1) if self._mp is not None else 1,
        )

    @property
    def options(self) -> GrainOptions:
        """The pipeline's own options (0 threads: not known; 0 workers: none)."""
        return self._options

    @property
    def tunable_threads(self) -> bool:
        """True when the pipeline has exactly one `to_iter_dataset` node."""
        return self._read_node is not None

    @property
    def tunable_workers(self) -> bool:
        """True when the pipeline ends in `mp_prefetch`."""
        return self._mp is not None

    def build(self, options: GrainOptions) -> Any:
        """The pipeline with `options` applied where it exposes them."""
        if options == self._options:
            return self._dataset
        mp = self._mp
        inner = mp.inner if mp is not None else self._dataset
        if self._read_node is not None and (
            options.num_threads,
            options.prefetch_buffer_size,
        ) != (self._options.num_threads, self._options.prefetch_buffer_size):
            inner = _with_read_options(inner, self._read_node, options.read_options)
        if mp is None:
            return inner
        workers = max(options.num_workers, 1)
        return inner.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=workers, per_worker_buffer_size=options.per_worker_buffer_size
            ),
            worker_init_fn=mp.worker_init_fn,
            sequential_slice=mp.sequential_slice,
        )


def is_grain_loader(x: Any) -> bool:
    """True for a `grain.DataLoader`."""
    return isinstance(x, grain.DataLoader)


def pipeline_of(x: Any) -> GrainPipeline:
    """The `GrainPipeline` of a `grain.DataLoader` or `grain.IterDataset`.

    Raises:
        TypeError: `x` is neither.

    Example:

    ```python
    pipeline_of(ds).options  # GrainOptions(num_threads=16, ...)
    ```
    """
    if isinstance(x, grain.DataLoader):
        return LoaderPipeline(x)
    if isinstance(x, grain.IterDataset):
        return IterPipeline(x)
    raise TypeError(
        f"Expected a grain.DataLoader or grain.IterDataset; got {type(x).__name__}. A "
        "grain.MapDataset of batches is served batch by batch (GrainMapSource)."
    )


__all__ = [
    "GrainOptions",
    "GrainPipeline",
    "IterPipeline",
    "LoaderPipeline",
    "is_grain_loader",
    "options_for",
    "pipeline_of",
]
