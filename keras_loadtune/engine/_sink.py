"""The interface worker pools report to (implemented by the prefetcher)."""

from __future__ import annotations

from typing import Any, Protocol


class ResultSink(Protocol):
    """Receives results from worker pools, from any thread."""

    def on_result(self, key: Any, batch: Any, wall_s: float, cpu_s: float, nbytes: int) -> None:
        """A batch was produced."""

    def on_error(self, key: Any, exc: BaseException) -> None:
        """`__getitem__` raised `exc` for the task `key`."""

    def on_fatal(self, exc: BaseException) -> None:
        """The pool cannot go on (a worker process died)."""
