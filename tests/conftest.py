"""Shared fixtures: a leak checker for engine threads, worker processes and /dev/shm segments.

Opt in per module with ``pytestmark = pytest.mark.usefixtures("no_leaks")``.

Markers. A test is Keras-facing (marker ``keras``, run once per Keras backend by
``tests/run_all.py``) when it is marked so by hand, when it uses a fixture of
``KERAS_FIXTURES``, or when its module imports Keras, a backend, or a Keras test helper at
module level (``keras_marked`` below decides, so no Keras test can be forgotten by the
per-backend runs). Every other test is backend-independent and runs once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types

import psutil
import pytest

# Module-level imports of these (or of names defined in them) make a test module Keras-facing.
KERAS_MODULES = (
    "keras",
    "tensorflow",
    "jax",
    "torch",
    "keras_datasets",
    "keras_models",
    "reliability.kdata",
    "keras_loadtune.keras_adapter",
)
# Fixtures that import Keras for the test.
KERAS_FIXTURES = frozenset({"keras_ready"})


def _from_keras(value: object) -> bool:
    """Whether `value` is one of `KERAS_MODULES` or was defined in one of them."""
    if isinstance(value, types.ModuleType):
        name = value.__name__
    else:
        try:
            name = getattr(value, "__module__", None)
        except Exception:  # an odd object's attribute access may raise anything
            return False
    if not isinstance(name, str):
        return False
    return any(name == m or name.startswith(m + ".") for m in KERAS_MODULES)


def imports_keras(module: types.ModuleType) -> bool:
    """Whether a test module imported Keras, a backend or a Keras test helper at module level."""
    return any(_from_keras(value) for value in list(vars(module).values()))


def keras_marked(item: pytest.Item, module_cache: dict[str, bool]) -> bool:
    """Whether a collected test is Keras-facing (see the module docstring)."""
    if item.get_closest_marker("keras") is not None:
        return True
    if KERAS_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    module = getattr(item, "module", None)
    if module is None:
        return False
    if module.__name__ not in module_cache:
        module_cache[module.__name__] = imports_keras(module)
    return module_cache[module.__name__]


def pytest_collection_modifyitems(config, items) -> None:
    """Marks every Keras-facing test `keras` (see the module docstring)."""
    cache: dict[str, bool] = {}
    for item in items:
        if item.get_closest_marker("keras") is None and keras_marked(item, cache):
            item.add_marker(pytest.mark.keras)


def xfail_on(*backends: str, reason: str, strict: bool = True) -> pytest.MarkDecorator:
    """`pytest.mark.xfail` on the listed Keras backends only (for Keras test modules).

    `strict=True` (the default) turns a fixed bug into a failure, so the mark cannot go
    stale; `strict=False` only for a test seen both passing and failing under the bug.
    """
    import keras  # only Keras test modules call this

    backend = keras.backend.backend()
    return pytest.mark.xfail(
        backend in backends, reason=f"{reason} [{backend}]", strict=strict, run=True
    )


def pytest_report_header(config) -> str:
    """Names the Keras backend of this run (Keras reads the same variable)."""
    return f"KERAS_BACKEND: {os.environ.get('KERAS_BACKEND', '(unset: tensorflow)')}"


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
    from keras_loadtune.engine import prewarm_processes

    prewarm_processes(keras_datasets.IndexPyDataset(1))


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
    """`LoadTuner(storage="default")` writes `$XDG_CACHE_HOME/keras_loadtune/studies.journal`:
    point XDG_CACHE_HOME at a fresh temp dir per test, so no test writes into the user's
    cache or warm-starts from another test's study."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
