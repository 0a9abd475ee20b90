"""What a dataset's code refers to: which packages, which of the user's own modules.

The process machinery reads a dataset's classes before it ships them, to decide what a
worker must import: a framework (then workers keep the trainer's backend), or only light
libraries (then the classes can travel by value and the worker imports none of the user's
modules). This module only reads code objects, globals and closures; it knows no package by
name: the caller passes the package roots it cares about (`_keras` does).

Importing this module has no side effect and imports nothing heavy.

Example:

>>> import numpy as np
>>> root_package(np.zeros(1))
'numpy'
"""

from __future__ import annotations

import os
import sys
import sysconfig
import types
from collections.abc import Iterator
from typing import Any


def root_package(value: Any) -> str:
    """The top-level package of a module, or of the module an object comes from.

    Example:

    >>> import json.decoder
    >>> root_package(json.decoder.JSONDecoder)
    'json'
    """
    if isinstance(value, types.ModuleType):
        name = value.__name__
    else:
        name = getattr(value, "__module__", None)
        if not isinstance(name, str):
            name = type(value).__module__
    return (name or "").split(".")[0]


def code_names(code: types.CodeType) -> Iterator[str]:
    """Global names `code` and the code objects nested in it use."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from code_names(const)


def functions_of(cls: type) -> Iterator[types.FunctionType]:
    """The plain functions a class defines itself (methods, static/class methods, properties)."""
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            yield from (f for f in (value.fget, value.fset) if isinstance(f, types.FunctionType))
        elif isinstance(value, types.FunctionType):
            yield value


def travels_by_value(module_name: str) -> bool:
    """True when cloudpickle sends this module's objects by value (no module to import)."""
    return module_name == "__main__" or module_name not in sys.modules


def function_refers(func: types.FunctionType, roots: frozenset[str]) -> bool:
    """Whether `func`'s globals or closure cells hold an object of a package in `roots`.

    Example:

    ```python
    function_refers(MyDataset.__getitem__, frozenset({"torch"}))  # False for NumPy only
    ```
    """
    names = set(code_names(func.__code__))
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


def _library_paths() -> tuple[str, ...]:
    """Folders of installed packages and of the standard library."""
    paths = sysconfig.get_paths()
    found = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(os.path.realpath(p) + os.sep for p in found if p)


def is_library(module: types.ModuleType) -> bool:
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


_OWN_ROOTS = frozenset({"keras_loadtune", "builtins"})


def user_module(name: str, heavy: frozenset[str]) -> types.ModuleType | None:
    """The module `name` if it is one of the user's own (importable, not a library, not
    ours, not of a package in `heavy`)."""
    module = sys.modules.get(name)
    root = name.split(".")[0]
    if not isinstance(module, types.ModuleType) or root in _OWN_ROOTS or root in heavy:
        return None
    return None if is_library(module) else module


class _LightScan:
    """One walk over what a dataset's code uses: the modules that travel by value, the
    functions seen, and a budget of functions scanned."""

    def __init__(self, modules: set[str], heavy: frozenset[str], budget: int = 500):
        self.modules = modules
        self.heavy = heavy
        self.seen: set[int] = set()
        self.budget = budget

    def code_is_light(self, func: types.FunctionType) -> bool:
        """Whether what `func` uses is light: nothing heavy, no other user module (recursing
        into functions and classes of `modules`, which travel by value with it)."""
        if id(func) in self.seen:
            return True
        self.seen.add(id(func))
        self.budget -= 1
        if self.budget < 0 or function_refers(func, self.heavy):
            return False
        globals_ = func.__globals__
        values = [globals_[n] for n in set(code_names(func.__code__)) if n in globals_]
        values += [c.cell_contents for c in func.__closure__ or () if _has_contents(c)]
        return all(self.value_is_light(value) for value in values)

    def value_is_light(self, value: Any) -> bool:
        if root_package(value) in self.heavy:
            return False
        if isinstance(value, types.ModuleType):
            return value.__name__ in self.modules or is_library(value)
        module = getattr(value, "__module__", None)
        if not isinstance(module, str) or module in ("__main__", "builtins"):
            return True
        if module in self.modules:
            if isinstance(value, types.FunctionType):
                return self.code_is_light(value)
            if isinstance(value, type):
                return all(self.code_is_light(f) for f in functions_of(value))
            return True
        # An object of another module: fine if that module is a library. A function or
        # class of another module of the user's project travels by value too (its module
        # joins `modules`, so it is never imported, nor its top level run, in a worker),
        # when what it uses is light; any other object of such a module would import it.
        other = sys.modules.get(module)
        if other is None or is_library(other):
            return True
        if user_module(module, self.heavy) is None or not isinstance(
            value, (types.FunctionType, type)
        ):
            return False
        self.modules.add(module)
        return self.value_is_light(value)


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def by_value_modules(owner: Any, base: type, heavy: frozenset[str]) -> tuple[str, ...] | None:
    """The user modules whose classes `owner`'s pickle can send by value, or `None` when a
    worker would need a package in `heavy` or would import a user module.

    Looks at `owner`'s classes below `base` (those above it the worker gets otherwise):
    each is defined in `__main__` or in an importable module of the user's project, and
    what its methods use (recursively, for the functions and classes of those modules)
    refers to no package in `heavy` and to no other user module's objects, except
    functions and classes that are light themselves (their module joins the result).

    Args:
        owner: The dataset, an instance of `base`.
        base: The class its pickle names by reference (the rest may travel by value).
        heavy: Root packages a worker must not need.

    Returns:
        `()` for classes all defined in `__main__`; the importable user modules of the
        classes below `base` otherwise; `None` when that is not enough.

    Example:

    ```python
    by_value_modules(mypackage.data.Ds(), PyDataset, frozenset({"keras"}))
    # ('mypackage.data',)
    ```
    """
    mro = type(owner).__mro__
    classes = mro[: mro.index(base)]
    modules: set[str] = set()
    for cls in classes:
        if cls.__module__ == "__main__":
            continue
        if user_module(cls.__module__, heavy) is None:
            return None  # a library's dataset class: the old path
        modules.add(cls.__module__)
    scan = _LightScan(modules, heavy)
    for cls in classes:
        funcs = list(functions_of(cls))
        if cls.__module__ == "__main__":
            if any(function_refers(f, heavy) for f in funcs):
                return None
        elif not all(scan.code_is_light(f) for f in funcs):
            return None
    return tuple(sorted(modules))
