"""`GrainCpu`: the CPU time Grain's own threads and worker processes spend.

Grain produces elements on threads it starts (`ReadOptions.num_threads`: threads named
`grain-prefetch_<i>`, `grain-thread-prefetch-...`) and in worker processes
(`mp_prefetch`, `grain.DataLoader(worker_count)`), none of which the thread iterating
the pipeline sees. `GrainCpu.read()` returns the CPU seconds they spent since the last
read, so `GrainIterSource` can apportion it over the batches delivered meanwhile.

- **Threads:** every live thread whose name starts with `grain-`, read through its
  Linux per-thread CPU clock (`clock_gettime` of the thread's `native_id`: one system
  call per thread; a thread that ended reads as an error, unless a new thread of this
  process took its id, which reads as a new thread); elsewhere through
  `psutil.Process().threads()`. A thread counts from 0 when first seen (Grain starts
  them with each iterator); one that ended since the last read loses the CPU it spent
  after that read.
- **Worker processes:** the children of this process that appear after
  `expect_workers(n)` (their pids were not children before), found by scanning the
  children until `n` are found (at most `_WORKER_SCANS` scans), then read with
  `psutil`. A worker counts from its CPU when first seen, or from
  `start_worker_clocks()` (called when its pass delivers its first batch), so its start
  (spawning, imports, building the pipeline) is left out: that is a restart's cost,
  which the first batch's wait records, not a batch's. A worker that ended since the
  last read (its pass's data done, or closed) loses the CPU it spent after that read.

Grain threads of another pipeline iterated at the same time in this process are
counted too (they cannot be told apart by name).

Example:

```python
cpu = GrainCpu()
cpu.expect_workers(2)            # before building an mp_prefetch pipeline's iterator
...                              # the pipeline runs
seconds = cpu.read()             # CPU of Grain's threads and the 2 workers since then
```
"""

from __future__ import annotations

import sys
import threading
import time

import psutil

# Grain names its threads so (`prefetch.py`: `thread_name_prefix="grain-prefetch"`,
# `name=f"grain-thread-prefetch-{self}"`).
THREAD_PREFIX = "grain-"
# Scans of this process's children (each lists /proc) to find the workers of a pass.
_WORKER_SCANS = 20
_LINUX = sys.platform.startswith("linux")


def _thread_clock(native_id: int) -> int:
    """Linux's CPU clock id of thread `native_id` (`MAKE_THREAD_CPUCLOCK(tid, SCHED)`,
    what glibc's `pthread_getcpuclockid` returns)."""
    return (~native_id << 3) | 6


def thread_cpu_s(native_id: int) -> float | None:
    """CPU seconds thread `native_id` of this process has spent (`None`: it ended, or
    this is not Linux, whose per-thread clocks this reads).

    Example:

    ```python
    thread_cpu_s(threading.get_native_id())  # this thread's, as time.thread_time()
    ```
    """
    if not _LINUX:  # pragma: no cover - not Linux
        return None
    try:
        return time.clock_gettime(_thread_clock(native_id))
    except OSError:
        return None


class GrainCpu:
    """CPU seconds of Grain's threads in this process and of a pass's worker processes.

    Not thread-safe: one caller at a time (`GrainIterSource` reads it under its lock).

    Example:

    ```python
    cpu = GrainCpu()
    it = iter(grain.MapDataset.range(64).map(busy).to_iter_dataset().batch(8))
    batches = list(it)
    cpu.read() > 0  # the grain-prefetch threads ran `busy`
    ```
    """

    def __init__(self) -> None:
        self._threads: dict[int, float] = {}  # native_id -> CPU seconds at the last read
        self._workers: dict[int, tuple[psutil.Process, float]] = {}  # pid -> (p, CPU)
        self._children_before: set[int] = set()
        self._missing_workers = 0
        self._scans_left = 0

    def expect_workers(self, count: int) -> None:
        """A pass with `count` worker processes is about to start: its workers are the
        children that appear from now on (the previous pass's are forgotten)."""
        self._workers.clear()
        self._missing_workers = max(int(count), 0)
        self._scans_left = _WORKER_SCANS if count > 0 else 0
        if count > 0:
            self._children_before = {p.pid for p in _children()}

    def start_worker_clocks(self) -> None:
        """The expected workers have started (their pass delivered its first batch):
        their CPU counts from now, their start left out (finding them if need be)."""
        self._find_workers()
        for pid, (process, last) in list(self._workers.items()):
            seconds = _process_cpu_s(process)
            self._workers[pid] = (process, last if seconds is None else seconds)

    def read(self) -> float:
        """CPU seconds Grain's threads and the expected workers spent since the last read
        (a thread or worker first seen now counts as described in the module)."""
        return self._read_threads() + self._read_workers()

    def _read_threads(self) -> float:
        now: dict[int, float] = {}
        if _LINUX:
            for thread in threading.enumerate():
                tid = thread.native_id
                if tid is None or not thread.name.startswith(THREAD_PREFIX):
                    continue
                seconds = thread_cpu_s(tid)
                if seconds is not None:
                    now[tid] = seconds
        else:  # pragma: no cover - not Linux
            grain_ids = {
                t.native_id for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)
            }
            try:
                rows = psutil.Process().threads()
            except (psutil.Error, OSError):
                rows = []
            now = {r.id: r.user_time + r.system_time for r in rows if r.id in grain_ids}
        before = self._threads
        spent = sum(max(s - before.get(tid, 0.0), 0.0) for tid, s in now.items())
        self._threads = now
        return spent

    def _read_workers(self) -> float:
        self._find_workers()
        spent = 0.0
        for pid, (process, last) in list(self._workers.items()):
            seconds = _process_cpu_s(process)
            if seconds is None:  # ended: its CPU since the last read is lost
                del self._workers[pid]
                continue
            spent += max(seconds - last, 0.0)
            self._workers[pid] = (process, seconds)
        return spent

    def _find_workers(self) -> None:
        if self._missing_workers > 0 and self._scans_left > 0:
            self._scans_left -= 1
            for process in _children():
                pid = process.pid
                if pid in self._children_before or pid in self._workers:
                    continue
                if _is_helper(process):  # multiprocessing's resource tracker, forkserver
                    self._children_before.add(pid)
                    continue
                seconds = _process_cpu_s(process)
                if seconds is not None:
                    self._workers[pid] = (process, seconds)
                    self._missing_workers -= 1


def _children() -> list[psutil.Process]:
    try:
        return psutil.Process().children()
    except (psutil.Error, OSError):
        return []


def _is_helper(process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline())
    except (psutil.Error, OSError):
        return True  # gone or unreadable: not a worker to read
    return "resource_tracker" in command or "forkserver" in command


def _process_cpu_s(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except (psutil.Error, OSError):
        return None
    return float(times.user + times.system)


__all__ = ["THREAD_PREFIX", "GrainCpu", "thread_cpu_s"]
