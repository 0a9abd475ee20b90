"""How worker processes start: the start method, `__main__` kept out, the forkserver.

Start method: `forkserver` (falling back to `spawn` where the platform lacks it).
`fork` is never used: forking a trainer whose TensorFlow runtime already runs
threads can copy a held lock into the child and deadlock it (CPython 3.12+ warns
about exactly this). The forkserver is a separate process started once, that
never runs a training step; every worker is forked from it.

Workers never import the user's `__main__` (a script without a main guard, a
notebook, `python -c`): the dataset travels with cloudpickle (`_shipping`), by value
where its class lives in `__main__`; the forkserver does not preload `__main__`; and
the workers' Popen drops the two keys of CPython's preparation data that would run
the main script again (`init_main_from_path`, `init_main_from_name`).

Cost: a worker must import whatever unpickling the dataset imports; for a
`keras.utils.PyDataset` that is Keras, and with it the trainer's backend (TensorFlow:
about 5 CPU-seconds per worker on a 2-core machine, over 10 s when the cores are
busy). Three things make a worker start in tens of milliseconds instead (what each
needs to know of Keras, `_keras` answers):

- **Preload.** The forkserver imports, once, before it forks any worker: `keras`
  when the dataset is a Keras `PyDataset` (also for a class defined in `__main__`,
  which has no module to preload), and the module that defines the dataset's class
  when it is importable (not `__main__`). It only imports; it never builds a model
  or runs an op. `KERAS_LOADTUNE_PRELOAD=0` turns the preload off (each worker then
  imports on its own).
- **Keras's `numpy` backend in workers** (`_keras.worker_backend`): the forkserver,
  and with it every worker, imports Keras with its `numpy` backend, about a third of
  TensorFlow's import, unless the dataset needs a framework.
- **No Keras at all** for a NumPy-only dataset defined in `__main__`, or in a module
  of the user's project whose methods use nothing of Keras (the module may import
  Keras at its top): its pickle names a stand-in for Keras's `PyDataset` base and
  sends the module's classes by value (`_keras.uses_only_the_base`), so the forkserver
  preloads neither Keras nor that module and workers import none; a worker then
  starts in the time it takes to import NumPy.

The forkserver starts once per program with the preload and backend of the first
dataset that needs it; `prewarm()` starts it in the background (at `wrap` when the
user's config already uses processes, and when the tuner expects a process trial).
"""

from __future__ import annotations

import functools
import importlib
import json
import multiprocessing
import os
import sys
import threading
import types
from multiprocessing import spawn
from typing import Any

from keras_loadtune.engine.process import _forkserver_path, _keras

START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
_preload_done = False
# What the forkserver imports first, by name (never here: the first one ignores SIGINT).
FORKSERVER_INIT_MODULE = f"{__package__}._forkserver_init"
WORKER_MODULE = f"{__package__}._worker"
_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_POPEN_MODULES = {
    "forkserver": "multiprocessing.popen_forkserver",
    "spawn": "multiprocessing.popen_spawn_posix"
    if os.name == "posix"
    else "multiprocessing.popen_spawn_win32",
}


# -- never import __main__ in a worker -------------------------------------------------------
class _SpawnWithoutMain:
    """`multiprocessing.spawn`, except that preparation data never re-imports `__main__`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(spawn, name)

    @staticmethod
    def get_preparation_data(name: str) -> dict[str, Any]:
        data = spawn.get_preparation_data(name)
        for key in _MAIN_KEYS:
            data.pop(key, None)
        return data


@functools.cache
def _popen_class() -> type:
    """CPython's Popen for our start method, its `_launch` seeing `_SpawnWithoutMain`.

    `_launch` is CPython's own code object, run with a copy of its module's globals in
    which the name `spawn` is ours: nothing global is patched, and other users of
    multiprocessing in the same program are unaffected. `tests/test_engine_processes.py`
    pins the one thing this relies on (`_launch` reads `spawn.get_preparation_data`).
    """
    base = importlib.import_module(_POPEN_MODULES[START_METHOD]).Popen
    launch = base._launch
    namespace = {**launch.__globals__, "spawn": _SpawnWithoutMain()}
    patched = types.FunctionType(
        launch.__code__, namespace, launch.__name__, launch.__defaults__, launch.__closure__
    )
    return type("Popen", (base,), {"_launch": patched, "__module__": __name__})


class WorkerProcess(multiprocessing.get_context(START_METHOD).Process):  # type: ignore[misc]
    """A process of our start method that never runs the user's main script."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _popen_class()(process_obj)


# -- forkserver --------------------------------------------------------------------------------
def _owner(source: Any) -> Any:
    return getattr(source, "factory", source)  # GeneratorFactorySource wraps a callable


def _preload_modules(source: Any) -> list[str]:
    """Modules the forkserver imports once, before it forks any worker (in this order).

    Never `__main__`: a worker must not run the user's script.
    """
    modules = [FORKSERVER_INIT_MODULE, WORKER_MODULE]
    if os.environ.get("KERAS_LOADTUNE_PRELOAD", "1") == "0":
        return modules
    owner = _owner(source)
    modules += _keras.preload_modules(owner)  # workers unpickle the real base: Keras
    light = _keras.is_keras_dataset(owner) and _keras.uses_only_the_base(owner)
    if light:
        return modules  # its classes travel by value: no module of the user's to import
    module = getattr(owner, "__module__", None) or type(owner).__module__
    if module and module not in ("__main__", "builtins") and module in sys.modules:
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if getattr(sys.modules[module], "__file__", None) != main_file or main_file is None:
            modules.append(module)
    return modules


def forkserver_context(source: Any) -> multiprocessing.context.BaseContext:
    global _preload_done
    ctx = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver" and not _preload_done:
        # Takes effect when the forkserver starts (first worker of the program); the
        # forkserver inherits the environment, which carries our sys.path to it.
        os.environ[_forkserver_path.ENV_VAR] = json.dumps(sys.path)
        backend = _keras.worker_backend(_owner(source))
        if backend is None:
            os.environ.pop(_keras.ENV_VAR, None)
        else:
            os.environ[_keras.ENV_VAR] = backend
        ctx.set_forkserver_preload(_preload_modules(source))
        _preload_done = True
    return ctx


def prewarm(source: Any) -> bool:
    """Starts the forkserver (and its one-time imports) now, in the background.

    The first process-mode start then costs milliseconds instead of the seconds the
    forkserver spends importing the dataset's module.

    Args:
        source: The dataset; its class's module is what the forkserver preloads.

    Returns:
        False when the start method is not forkserver (nothing to warm).

    Example:

    ```python
    prewarm(dataset)  # at callback set-up, long before a switch to processes
    ```
    """
    if START_METHOD != "forkserver":
        return False
    global _prewarm_thread
    forkserver_context(source)
    from multiprocessing import forkserver

    thread = threading.Thread(
        target=forkserver.ensure_running, name="keras_loadtune-prewarm", daemon=True
    )
    thread.start()
    _prewarm_thread = thread
    return True


# The thread that started the forkserver (`prewarm`); once it has ended, the forkserver
# runs with its preloads imported and a pool starts in forks and dataset loads.
_prewarm_thread: threading.Thread | None = None


# A cold pool whose workers import no Keras (`_keras.uses_only_the_base`): forkserver start
# (NumPy, cloudpickle, the engine) plus forks; measured 0.2 s wall on 2 idle cores
# (`benchmarks/cold_pool.py`), with a margin for a busy machine.
LIGHT_POOL_START_S = 0.5
# A pool from a forkserver that already runs (prewarmed, its preloads imported, Keras
# included for a dataset that needs it): forks and the dataset's load; measured 0.04 s
# for a light dataset on 2 idle cores (`benchmarks/cold_pool.py`, prewarmed row), with a
# margin for a dataset that takes longer to load.
WARM_POOL_START_S = 0.2


def cold_start_estimate_s(source: Any) -> float | None:
    """Seconds a first process pool for `source` is expected to take, if known here.

    Known when the forkserver is already running (prewarmed: `WARM_POOL_START_S`), or
    when its workers import no Keras (a NumPy-only dataset defined in `__main__` or in a
    user module: `_keras.uses_only_the_base`); `None` otherwise (the tuner's own prior
    applies until a pool was measured).

    Args:
        source: The dataset.

    Returns:
        `WARM_POOL_START_S`, `LIGHT_POOL_START_S`, or None.

    Example:

    ```python
    cold_start_estimate_s(main_defined_numpy_dataset)  # 0.5
    ```
    """
    if START_METHOD != "forkserver":
        return None
    thread = _prewarm_thread
    if thread is not None and not thread.is_alive():
        return WARM_POOL_START_S
    if not _keras.uses_only_the_base(_owner(source)):
        return None
    return LIGHT_POOL_START_S
