"""Machine resources the tuner must respect: CPU cores and memory (psutil only).

Example:

```python
from keras_loadtune.decision import resources

resources.available_cores()      # e.g. 16 (respects CPU affinity / taskset)
resources.default_ram_budget()   # 50% of the RAM available right now, in bytes
resources.process_tree_rss()     # RSS of this process + its worker processes
```
"""

from __future__ import annotations

import os

import psutil

# Share of the currently available RAM the tuner may commit (tf.data's AUTOTUNE uses 50%).
DEFAULT_RAM_FRACTION = 0.5


def available_cores() -> int:
    """Logical CPU cores this process may run on.

    Uses `os.sched_getaffinity` where the platform has it (so `taskset`, cgroups
    cpusets and Slurm allocations are respected), else `psutil.cpu_count(logical=True)`.

    Example:

    ```python
    from keras_loadtune.decision.resources import available_cores

    available_cores() >= 1  # True
    ```
    """
    count: int | None = None
    if hasattr(os, "sched_getaffinity"):
        try:
            count = len(os.sched_getaffinity(0))
        except OSError:  # pragma: no cover - platform-specific
            count = None
    if not count:
        count = psutil.cpu_count(logical=True)
    return max(int(count or 1), 1)


def default_ram_budget(fraction: float = DEFAULT_RAM_FRACTION) -> int:
    """Bytes the loader may add on top of the trainer: `fraction` of available RAM.

    Example:

    ```python
    from keras_loadtune.decision.resources import default_ram_budget

    default_ram_budget(0.25) > 0  # True
    ```
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"default_ram_budget: fraction must be in (0, 1]; got {fraction!r}.")
    return int(psutil.virtual_memory().available * fraction)


def process_tree_rss(pid: int | None = None) -> int:
    """Resident memory of a process and all its descendants, in bytes.

    Pages shared between a parent and forked workers count once per process (this
    is RSS, not USS), so the figure over-estimates a forked pool: a safe side for
    a memory budget. Processes that exit while being read are skipped.

    Args:
        pid: Root process; `None` means the current process.

    Example:

    ```python
    from keras_loadtune.decision.resources import process_tree_rss

    process_tree_rss() > 0  # True
    ```
    """
    root = psutil.Process(pid)
    total = root.memory_info().rss
    try:
        children = root.children(recursive=True)
    except psutil.Error:  # pragma: no cover - racy platform errors
        children = []
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return int(total)
