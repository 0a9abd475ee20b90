"""The interface the prefetcher drives a worker pool through (threads or processes)."""

from __future__ import annotations

from typing import Any, Protocol


class WorkerPool(Protocol):
    """What `ThreadPool` and `ProcessPool` both provide.

    Constructed as `Pool(source, sink, name)`; reports to the sink from its own threads.
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
