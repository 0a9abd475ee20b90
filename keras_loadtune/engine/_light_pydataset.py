"""A stand-in for `keras.utils.PyDataset` in worker processes that need nothing else of Keras.

Why: a worker must unpickle the dataset, and a dataset whose class is defined in
`__main__` (a script, a notebook) travels by value with cloudpickle, its base class
by reference: `keras.utils.PyDataset`. Importing that imports all of Keras and its
backend, 3-6 CPU-seconds on a 2-core machine (`ml_dtypes`, JAX or TensorFlow,
matplotlib), where the batch itself needs only NumPy. Plain Keras forks its workers
from the trainer and pays nothing; keras-loadtune never forks the trainer
(`_process_start`).

So when the dataset's by-value code and its attributes refer to nothing of Keras or
of a framework (`uses_only_the_base`), the pickler (`_pickling`) sends this class in
place of Keras's `PyDataset` as the base. Worker processes then start without
importing Keras at all. The trainer keeps the real class: only the workers' copy of
the dataset has this base, and a worker only calls `__getitem__` (and `__len__`).

What the stand-in keeps of Keras's `PyDataset` (3.x): the three loader knobs as
properties over `_workers`, `_use_multiprocessing`, `_max_queue_size` (the attributes
`PyDataset.__init__` sets, which travel with the instance), `num_batches`, iteration,
and the epoch hooks as no-ops. A dataset calling a Keras function in `__getitem__`
refers to `keras` in its globals, so it is never sent with this base.

**Datasets of an importable module** (`mypackage/data.py`, which imports Keras at its
top like most projects) get the same: when their methods, and the functions and
classes of the same module those use, refer to nothing of Keras or a framework
(`by_value_modules`), the pickler sends the module's classes and functions *by value*
(cloudpickle's `register_pickle_by_value`, for that one pickle), like a `__main__`
class. The worker then never imports that module: its top-level code (the
`import keras`, and any side effect such as logging set-up, downloads, a GPU
allocation) does not run in workers at all, where before it ran in the forkserver
and in each worker. What the methods use travels as it was at pickling time: module
constants are copied, library modules (NumPy, PIL, the standard library) are imported
by name. A method that uses another module of the user's project (which the worker
would have to import and run) keeps the old path (`by_value_modules` is `None`).

Example:

```python
# trainer side, decided per shipment by `_pickling.SourceShipper`:
uses_only_the_base(dataset)  # True for a NumPy-only dataset defined in __main__
```
"""

from __future__ import annotations

import os
import sys
import sysconfig
import types
from collections.abc import Iterator
from typing import Any

from keras_loadtune.engine._worker_backends import (
    USER_ENV_VAR,
    _code_names,
    function_refers,
    functions_of,
    root_package,
)

# What a dataset's by-value code may not refer to for the stand-in to be enough.
_HEAVY_ROOTS = frozenset({"keras", "tensorflow", "tf_keras", "torch", "jax", "jaxlib"})


class PyDataset:
    """Keras's `PyDataset` as a worker process sees it: knobs, length, items."""

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    @property
    def workers(self) -> int:
        return getattr(self, "_workers", 1)

    @workers.setter
    def workers(self, value: int) -> None:
        self._workers = value

    @property
    def use_multiprocessing(self) -> bool:
        return getattr(self, "_use_multiprocessing", False)

    @use_multiprocessing.setter
    def use_multiprocessing(self, value: bool) -> None:
        self._use_multiprocessing = value

    @property
    def max_queue_size(self) -> int:
        return getattr(self, "_max_queue_size", 10)

    @max_queue_size.setter
    def max_queue_size(self, value: int) -> None:
        self._max_queue_size = value

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    @property
    def num_batches(self) -> int | None:
        return len(self) if hasattr(type(self), "__len__") else None

    def on_epoch_begin(self) -> None:
        pass

    def on_epoch_end(self) -> None:
        pass


def stand_in() -> type:
    """This module's `PyDataset` (what a pickle names in place of Keras's).

    Example:

    >>> stand_in().__name__
    'PyDataset'
    """
    return PyDataset


def keras_base(owner: Any) -> type | None:
    """Keras's `PyDataset` class if `owner` is an instance of it (Keras already imported)."""
    keras_module = sys.modules.get("keras.src.trainers.data_adapters.py_dataset_adapter")
    base = getattr(keras_module, "PyDataset", None)
    return base if isinstance(base, type) and isinstance(owner, base) else None


def _library_paths() -> tuple[str, ...]:
    """Folders of installed packages and of the standard library."""
    paths = sysconfig.get_paths()
    found = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(os.path.realpath(p) + os.sep for p in found if p)


def _is_library(module: types.ModuleType) -> bool:
    """A module imported by name in a worker is harmless: an installed package, the
    standard library, a built-in; never a module of the user's project."""
    name = module.__name__.split(".")[0]
    if name in sys.builtin_module_names or name in sys.stdlib_module_names:
        return True
    path = getattr(module, "__file__", None)
    if not path:
        return True  # a namespace or built-in module: nothing of the user's runs
    real = os.path.realpath(path)
    return any(real.startswith(p) for p in _library_paths()) or "site-packages" in real


def _user_module(name: str) -> types.ModuleType | None:
    """The module `name` if it is one of the user's own (importable, not a library)."""
    module = sys.modules.get(name)
    if not isinstance(module, types.ModuleType) or name.split(".")[0] in _OWN_ROOTS:
        return None
    return None if _is_library(module) else module


_OWN_ROOTS = frozenset({"keras_loadtune", "keras", "builtins"})


def _code_refers_only_to(
    func: types.FunctionType, modules: set[str], seen: set[int], budget: list[int]
) -> bool:
    """Whether what `func` uses is light: nothing heavy, no other user module (recursing
    into functions and classes of `modules`, which travel by value with it)."""
    if id(func) in seen:
        return True
    seen.add(id(func))
    budget[0] -= 1
    if budget[0] < 0 or function_refers(func, _HEAVY_ROOTS):
        return False
    globals_ = func.__globals__
    values = [globals_[n] for n in set(_code_names(func.__code__)) if n in globals_]
    values += [c.cell_contents for c in func.__closure__ or () if _has_contents(c)]
    return all(_value_is_light(value, modules, seen, budget) for value in values)


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _value_is_light(value: Any, modules: set[str], seen: set[int], budget: list[int]) -> bool:
    if root_package(value) in _HEAVY_ROOTS:
        return False
    if isinstance(value, types.ModuleType):
        return value.__name__ in modules or _is_library(value)
    module = getattr(value, "__module__", None)
    if not isinstance(module, str) or module in ("__main__", "builtins"):
        return True
    if module in modules:
        if isinstance(value, types.FunctionType):
            return _code_refers_only_to(value, modules, seen, budget)
        if isinstance(value, type):
            return all(_code_refers_only_to(f, modules, seen, budget) for f in functions_of(value))
        return True
    # An object of another module: fine if that module is a library. A function or
    # class of another module of the user's project travels by value too (its module
    # joins `modules`, so it is never imported, nor its top level run, in a worker),
    # when what it uses is light; any other object of such a module would import it.
    other = sys.modules.get(module)
    if other is None or _is_library(other):
        return True
    if _user_module(module) is None or not isinstance(value, (types.FunctionType, type)):
        return False
    modules.add(module)
    return _value_is_light(value, modules, seen, budget)


def by_value_modules(owner: Any) -> tuple[str, ...] | None:
    """The user modules whose classes `owner`'s pickle sends by value, or `None` when the
    worker would need the real Keras or would import a user module (see the module docs).

    Args:
        owner: A Keras `PyDataset` (Keras already imported).

    Returns:
        `()` for classes all defined in `__main__`; the importable user modules of the
        classes below `PyDataset` otherwise; `None` when the stand-in is not enough.

    Example:

    ```python
    by_value_modules(MainDataset())        # (): nothing to register
    by_value_modules(mypackage.data.Ds())  # ('mypackage.data',)
    ```
    """
    base = keras_base(owner)
    if base is None:
        return None
    mro = type(owner).__mro__
    classes = mro[: mro.index(base)]
    modules: set[str] = set()
    for cls in classes:
        if cls.__module__ == "__main__":
            continue
        if _user_module(cls.__module__) is None:
            return None  # a library's dataset class: the old path
        modules.add(cls.__module__)
    seen: set[int] = set()
    budget = [500]  # functions scanned at most
    for cls in classes:
        funcs = list(functions_of(cls))
        if cls.__module__ == "__main__":
            if any(function_refers(f, _HEAVY_ROOTS) for f in funcs):
                return None
        elif not all(_code_refers_only_to(f, modules, seen, budget) for f in funcs):
            return None
    return tuple(sorted(modules))


def uses_only_the_base(owner: Any) -> bool:
    """Whether a worker can run `owner` with this stand-in as its Keras base class.

    True when `KERAS_LOADTUNE_WORKER_BACKEND` is unset (or `auto`) and `owner` is a
    Keras `PyDataset` whose classes below `PyDataset` are defined in `__main__` or in
    the user's own importable modules (then sent by value, `by_value_modules`), none
    of their methods refers to Keras or a framework (globals and closures), and none
    of its attributes is a Keras or framework object (one level).

    Args:
        owner: The dataset.

    Returns:
        False whenever the real Keras might be needed.

    Example:

    ```python
    uses_only_the_base(MainDataset())  # True: NumPy only, defined in __main__
    ```
    """
    if os.environ.get(USER_ENV_VAR, "auto").strip().lower() != "auto":
        return False  # the user chose the workers' Keras backend: import the real Keras
    if by_value_modules(owner) is None:
        return False
    attrs = getattr(owner, "__dict__", None)
    if not isinstance(attrs, dict):
        return False
    return not any(root_package(v) in _HEAVY_ROOTS for v in list(attrs.values()))
