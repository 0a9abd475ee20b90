"""What a dead worker process's report says: how it ended, and whether memory did it.

Owns the wording of `WorkerDiedError` messages' cause (exit code or signal) and the
out-of-memory hint, which is only given when the signal and the memory figures say so.
"""

from __future__ import annotations

import signal

# The OOM hint needs evidence: a worker peak above this share of RAM, or RAM nearly gone.
_OOM_WORKER_SHARE = 0.25
_OOM_AVAILABLE_SHARE = 0.10


def describe_exit(exitcode: int | None) -> str:
    """How a worker process ended, as the end of a sentence ("was killed by signal ...")."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name} ({-exitcode})"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def oom_hint(exitcode: int | None, worker_peak_rss: int) -> str:
    """A hint that the OOM killer did it, only when the signal and memory figures say so.

    Args:
        exitcode: The worker's exit code (`-9` is SIGKILL).
        worker_peak_rss: The worker's last reported peak resident memory, in bytes.

    Returns:
        The hint sentence, or "" when the evidence does not point to memory.

    Example:

    ```python
    oom_hint(-9, 6 * 2**30)  # on an 8 GiB machine: "... out-of-memory killer ..."
    ```
    """
    if exitcode != -signal.SIGKILL:
        return ""
    import psutil

    memory = psutil.virtual_memory()
    big_worker = worker_peak_rss >= _OOM_WORKER_SHARE * memory.total
    low_memory = memory.available < _OOM_AVAILABLE_SHARE * memory.total
    if not (big_worker or low_memory):
        return ""
    return (
        f" It looks like the out-of-memory killer: the worker's peak memory was "
        f"{_gib(worker_peak_rss)} and {_gib(memory.available)} of {_gib(memory.total)} "
        "are available now. Use fewer workers or a smaller max_queue_size, or make "
        "__getitem__ use less memory."
    )
