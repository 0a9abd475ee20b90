"""Leak and resource probes for the reliability suite (psutil only, no Keras)."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass

import psutil

# The leak probes the whole test suite uses (tests/conftest.py), re-exported here.
from conftest import engine_threads, shm_segments, wait_until, worker_processes

__all__ = ["engine_threads", "shm_segments", "wait_until", "worker_processes"]


def zombies() -> list[int]:
    """Zombie descendants (children nobody reaped)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return found


@dataclass(frozen=True)
class Snapshot:
    """What existed before a test, so a leak is blamed on the test that caused it."""

    pids: frozenset[int]
    threads: frozenset[int]
    shm: frozenset[str]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(
            frozenset(p.pid for p in worker_processes()),
            frozenset(t.ident for t in engine_threads(include_janitor=True)),
            frozenset(shm_segments()),
        )


def leaks(before: Snapshot | None = None, timeout: float = 5.0, janitor: float = 0.0) -> list[str]:
    """What the engine left behind since `before` (empty: nothing).

    Worker processes and engine threads get `timeout` seconds to go. The janitor daemon is
    allowed to stay unless `janitor > 0`, in which case it must exit within that time
    (it ends by itself once no open prefetcher is left).
    """
    before = before or Snapshot(frozenset(), frozenset(), frozenset())

    def procs():
        return [p for p in worker_processes() if p.pid not in before.pids]

    def threads(with_janitor=False):
        return [t for t in engine_threads(with_janitor) if t.ident not in before.threads]

    def segments():
        return [s for s in shm_segments() if s not in before.shm]

    problems = []
    if not wait_until(lambda: not procs(), timeout):
        problems.append(f"worker processes alive: {[p.pid for p in procs()]}")
    if not wait_until(lambda: not threads(), timeout):
        problems.append(f"engine threads alive: {[t.name for t in threads()]}")
    if janitor and not wait_until(lambda: not threads(True), janitor):
        problems.append(f"janitor still running: {[t.name for t in threads(True)]}")
    if not wait_until(lambda: not segments(), 1.0):
        problems.append(f"/dev/shm segments left: {segments()}")
    return problems


def assert_no_leaks(before: Snapshot | None = None, **kwargs) -> None:
    problems = leaks(before, **kwargs)
    assert not problems, "; ".join(problems)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def last_frame(exc: BaseException) -> traceback.FrameSummary:
    """The innermost frame of `exc`'s traceback (where it was raised)."""
    return traceback.extract_tb(exc.__traceback__)[-1]


def notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", []))
