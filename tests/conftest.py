"""Shared fixtures: a leak checker for engine threads, worker processes and /dev/shm segments.

Opt in per module with ``pytestmark = pytest.mark.usefixtures("no_leaks")``.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import psutil
import pytest

ENGINE_THREAD_PREFIX = "keras_loadtune"
JANITOR_THREAD = "keras_loadtune-janitor"
SHM_DIR = "/dev/shm"


def pytest_collection_finish(session) -> None:
    """When Keras tests were collected, let the forkserver preload their dataset module.

    This is what the engine does for users (it preloads the module defining the dataset's
    class, so worker processes start in milliseconds instead of importing TensorFlow each,
    several seconds on a busy 2-core machine). The forkserver starts once per session, so
    it is warmed here, before the first test (an engine test) would start it without that
    module. Engine-only runs do not import `keras_datasets` and skip this.
    """
    keras_datasets = sys.modules.get("keras_datasets")
    if keras_datasets is None:
        return
    from keras_loadtune.engine import _processes

    prewarm = getattr(_processes, "prewarm", None)
    if prewarm is not None:
        prewarm(keras_datasets.IndexPyDataset(1))


def shm_segments() -> list[str]:
    """Shared-memory segments created for *this* process's prefetchers (`klt_<our pid>_*`).

    Only our own pid's prefix is checked so that other test runs on the same machine cannot
    make this one fail.
    """
    prefix = f"klt_{os.getpid()}_"
    try:
        return sorted(name for name in os.listdir(SHM_DIR) if name.startswith(prefix))
    except OSError:  # pragma: no cover - no /dev/shm on this platform
        return []


def worker_processes() -> list[psutil.Process]:
    """Live worker processes of this test process.

    Workers are forked from the multiprocessing forkserver, so they are *grandchildren* of
    the test process; the forkserver and the resource tracker (direct children) are
    legitimately persistent and are not counted.
    """
    me = os.getpid()
    found = []
    for proc in psutil.Process(me).children(recursive=True):
        try:
            if proc.ppid() != me and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def engine_threads(include_janitor: bool = False) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(ENGINE_THREAD_PREFIX) and (include_janitor or t.name != JANITOR_THREAD)
    ]


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Polls `predicate` until it is true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)


def leaks(
    ignore_pids: frozenset[int] = frozenset(),
    ignore_threads: frozenset[int] = frozenset(),
    ignore_shm: frozenset[str] = frozenset(),
    janitor_wait: float = 3.0,
) -> list[str]:
    """Describes what engine resources are still alive (empty list: nothing leaked).

    The `ignore_*` sets hold what was already there before the test (another test's leak
    is reported by that test, not blamed on every later one).
    """

    def procs() -> list[psutil.Process]:
        return [p for p in worker_processes() if p.pid not in ignore_pids]

    def threads(include_janitor: bool = False) -> list[threading.Thread]:
        return [t for t in engine_threads(include_janitor) if t.ident not in ignore_threads]

    def segments() -> list[str]:
        return [s for s in shm_segments() if s not in ignore_shm]

    problems: list[str] = []
    non_daemon = [t.name for t in threads(include_janitor=True) if not t.daemon]
    if non_daemon:
        problems.append(f"non-daemon engine threads: {non_daemon}")
    if not wait_until(lambda: not procs(), timeout=5.0):
        problems.append(f"worker processes still alive: {[(p.pid, p.name()) for p in procs()]}")
    if not wait_until(lambda: not threads(), timeout=5.0):
        problems.append(f"engine threads still alive: {[t.name for t in threads()]}")
    # The janitor is a daemon that ends on its own once no open prefetcher remains.
    if not wait_until(lambda: not threads(include_janitor=True), timeout=janitor_wait):
        names = [t.name for t in threads(include_janitor=True)]
        problems.append(f"engine threads still alive after {janitor_wait} s: {names}")
    if segments():
        problems.append(f"shared-memory segments left in {SHM_DIR}: {segments()}")
    return problems


@pytest.fixture
def no_leaks():
    """Fails the test if it leaves worker processes, engine threads or shm segments behind."""
    pids = frozenset(p.pid for p in worker_processes())
    threads = frozenset(t.ident for t in engine_threads(include_janitor=True))
    shm = frozenset(shm_segments())
    yield
    problems = leaks(pids, threads, shm)
    assert not problems, "; ".join(problems)


# --- persistence: keep the default study storage out of the real ~/.cache ---------------
@pytest.fixture(autouse=True)
def _isolated_study_cache(tmp_path_factory, monkeypatch):
    """`LoadTuner(storage="default")` writes `$XDG_CACHE_HOME/keras_loadtune/studies.db`:
    point XDG_CACHE_HOME at a fresh temp dir per test, so no test writes into the user's
    cache or warm-starts from another test's study."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
