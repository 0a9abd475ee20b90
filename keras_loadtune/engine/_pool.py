"""The worker pool as the engine sees it: `WorkerPool`, `Serving` and the `PoolState` cell."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from keras_loadtune.config import LoaderConfig


class WorkerPool(Protocol):
    """What `ThreadPool` and `ProcessPool` both provide.

    Constructed as `Pool(source, sink, name)`; reports to the sink from its own threads,
    never while holding a lock of its own (so a sink may take a stream's lock, and a
    stream may submit while holding it: see the lock order in `stream.py`).
    Only `ProcessPool` has `update_source`: threads read the trainer's own dataset
    object, so a change to it needs nothing shipped.

    Example:

    ```python
    pool: WorkerPool = ProcessPool(dataset, sink, "keras_loadtune")
    pool.resize(2)
    pool.submit(key, index, seed)
    pool.close(timeout=5.0)
    ```
    """

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (empty for threads)."""
        ...

    def resize(self, workers: int) -> int:
        """Reaches `workers` workers; returns how many were started."""
        ...

    def submit(self, key: Any, index: int, seed: int | None = None) -> None:
        """Queues `source[index]`; the result goes to the sink under `key`."""
        ...

    def cancel_pending(self) -> None:
        """Forgets queued tasks that no worker has started, where possible."""
        ...

    def close(self, timeout: float = 5.0) -> list[Any]:
        """Stops all workers; returns threads still stuck after `timeout`."""
        ...


@dataclass(frozen=True, slots=True)
class Serving:
    """What serves the streams now: the pool, its config and its generation.

    Replaced as a whole, never changed, so one attribute read gives a consistent
    triple: a stream that submits to `pool` tags the task with `generation`.

    Args:
        pool: The live pool, or None (an inline config, or workers released or not
            started yet).
        config: The active `LoaderConfig`.
        generation: Bumped by every new pool, resize, switch or source change.

    Example:

    ```python
    serving = Serving(None, LoaderConfig(), 0)
    serving.inline   # True: batches are made on the consumer's thread
    ```
    """

    pool: WorkerPool | None
    config: LoaderConfig
    generation: int
    # True when batches are made on the consumer's thread (no pool, an inline config);
    # a field, not a property: the consumer reads it on every batch.
    inline: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inline", self.pool is None and self.config.inline)


class PoolState:
    """The cell streams read on every batch: what serves, why it broke, whether it is closed.

    Written by `PoolControl` only; streams read the attributes directly, with no call
    and no lock (one attribute read is atomic, and `serving` is replaced as a whole).
    The same idea as tf.data's `SharedState`: the knob the controller moves is the cell
    the data path reads.

    Args:
        serving: The pool serving now.

    Example:

    ```python
    state = PoolState(Serving(None, LoaderConfig(), 0))
    state.serving.inline, state.fatal, state.closed   # (True, None, False)
    ```
    """

    __slots__ = ("closed", "fatal", "serving")

    def __init__(self, serving: Serving):
        self.serving = serving
        self.fatal: BaseException | None = None
        self.closed = False
