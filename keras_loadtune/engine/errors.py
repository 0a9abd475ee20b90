"""Errors raised by the engine. Each one says what happened and what to do."""

from __future__ import annotations


class WorkerDiedError(RuntimeError):
    """A worker process ended without finishing its batch (killed by a signal, crashed, exited).

    Attributes:
        pid: The worker's process id.
        exitcode: Its exit code; negative values are `-signal` (`-9` is SIGKILL).
        index: The dataset index it was producing, if known.
    """

    def __init__(self, message: str, *, pid: int, exitcode: int | None, index: int | None):
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.index = index


class DatasetNotPicklableError(TypeError):
    """The dataset cannot be sent to worker processes, so process mode cannot run.

    Raised before any worker starts. Classes defined in `__main__`, a notebook or an
    interactive session are fine (they travel by value); what cannot be copied to another
    process is an open file, a lock, a socket or a client held in an attribute. Open
    those lazily in `__getitem__` (store the path or address instead), or use threads
    (`use_multiprocessing=False`). The message names the attribute at fault.
    """


class BatchTimeoutError(TimeoutError):
    """A batch took longer than the configured per-batch timeout.

    Attributes:
        index: The dataset index that did not arrive in time.
        timeout: The timeout in seconds.
    """

    def __init__(self, message: str, *, index: int, timeout: float):
        super().__init__(message)
        self.index = index
        self.timeout = timeout


class PrefetcherClosedError(RuntimeError):
    """The prefetcher (or the wrapped dataset) was closed; create a new one to keep going."""
