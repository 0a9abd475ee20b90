"""The worker pool as the engine sees it: the `WorkerPool` interface and `Serving`."""

from __future__ import annotations

from dataclasses import dataclass
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

    @property
    def inline(self) -> bool:
        """True when batches are made on the consumer's thread (no pool, inline config)."""
        return self.pool is None and self.config.inline
