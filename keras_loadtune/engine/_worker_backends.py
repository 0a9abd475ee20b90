"""Which Keras backend worker processes import (see `_process_start` for why).

Importing this module has no side effect and imports nothing heavy.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

USER_ENV_VAR = "KERAS_LOADTUNE_WORKER_BACKEND"
ENV_VAR = "KERAS_LOADTUNE_FORKSERVER_BACKEND"  # trainer -> forkserver, set by the engine
BACKENDS = ("numpy", "tensorflow", "jax", "torch")
FRAMEWORKS = frozenset({"tensorflow", "tf_keras", "torch", "jax", "jaxlib"})


def root_package(value: Any) -> str:
    """The top-level package of a module, or of the module an object comes from."""
    if isinstance(value, types.ModuleType):
        name = value.__name__
    else:
        name = getattr(value, "__module__", None)
        if not isinstance(name, str):
            name = type(value).__module__
    return (name or "").split(".")[0]


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def functions_of(cls: type) -> Iterator[types.FunctionType]:
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            yield from (f for f in (value.fget, value.fset) if isinstance(f, types.FunctionType))
        elif isinstance(value, types.FunctionType):
            yield value


def _by_value(module_name: str) -> bool:
    """True when cloudpickle sends this module's objects by value (no module to import)."""
    return module_name == "__main__" or module_name not in sys.modules


def function_refers(func: types.FunctionType, roots: frozenset[str] = FRAMEWORKS) -> bool:
    """Whether `func`'s globals or closure cells hold an object of a package in `roots`."""
    names = set(_code_names(func.__code__))
    globals_ = func.__globals__
    if any(root_package(globals_[n]) in roots for n in names if n in globals_):
        return True
    cells = func.__closure__ or ()
    return any(root_package(_cell_value(c)) in roots for c in cells)


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # empty cell
        return None


def needs_framework(owner: Any) -> bool:
    """Whether unpickling or running `owner` in a worker uses TensorFlow, PyTorch or JAX.

    Looks at what the worker will get: the module of each of the dataset's classes
    (scanned whole: a worker imports it), the globals and closures that methods of
    classes defined in `__main__` use (cloudpickle sends those by value), and the
    dataset's attributes (one level). A miss is harmless for the dataset's own code (its
    imports still run in the worker); only `keras.ops` would then compute with NumPy.

    Args:
        owner: The dataset, or a generator factory.

    Returns:
        True when workers should keep the trainer's Keras backend.

    Example:

    ```python
    needs_framework(MyDataset())  # False for a NumPy-only loader
    ```
    """
    classes = [owner] if isinstance(owner, types.FunctionType) else type(owner).__mro__
    for cls in classes:
        module_name = getattr(cls, "__module__", None) or ""
        if module_name.split(".")[0] in ("keras", "builtins", "keras_loadtune"):
            continue
        if _by_value(module_name):
            funcs = [cls] if isinstance(cls, types.FunctionType) else list(functions_of(cls))
            if any(function_refers(f) for f in funcs):
                return True
        else:
            module = sys.modules[module_name]
            if any(root_package(v) in FRAMEWORKS for v in list(vars(module).values())):
                return True
    attrs = getattr(owner, "__dict__", None)
    if isinstance(attrs, dict):
        return any(root_package(v) in FRAMEWORKS for v in list(attrs.values()))
    return False


def worker_backend(owner: Any) -> str | None:
    """The `KERAS_BACKEND` worker processes get, or None to keep the trainer's.

    Args:
        owner: The dataset, or a generator factory.

    Returns:
        `USER_ENV_VAR` when it names a backend; None for `trainer`; otherwise
        (`auto`, the default) `"numpy"` unless `needs_framework(owner)` or the numpy
        backend cannot import (no JAX installed).

    Example:

    ```python
    os.environ[ENV_VAR] = worker_backend(dataset) or ""
    ```
    """
    choice = os.environ.get(USER_ENV_VAR, "auto").strip().lower()
    if choice == "trainer":
        return None
    if choice in BACKENDS:
        return choice
    if not numpy_backend_importable() or needs_framework(owner):
        return None
    return "numpy"


def numpy_backend_importable() -> bool:
    """Whether Keras's numpy backend can import here (it needs JAX for its convolutions).

    With TensorFlow alone installed (`tensorflow-cpu`), workers keep the trainer's backend.

    Example:

    ```python
    numpy_backend_importable()  # False without jax installed
    ```
    """
    try:
        return importlib.util.find_spec("jax") is not None
    except (ImportError, ValueError):
        return False


def apply_in_forkserver() -> None:
    """Forkserver side: sets `KERAS_BACKEND` from `ENV_VAR`, before anything imports Keras.

    Example:

    ```python
    apply_in_forkserver()  # first thing the forkserver does (`_forkserver_init`)
    ```
    """
    backend = os.environ.get(ENV_VAR)
    if backend in BACKENDS:
        os.environ["KERAS_BACKEND"] = backend
