"""Everything the engine knows about Keras, in one place: the other modules ask here.

The engine runs any object with `__getitem__`; Keras only matters when a dataset goes
to worker processes, which must unpickle it. This module answers the process
machinery's four questions, and no other module of the engine names Keras:

- **Is this a Keras `PyDataset`?** (`is_keras_dataset`, `keras_base`): read from the
  class's bases and from the Keras module already imported; this module never imports
  Keras itself.
- **Can workers do without Keras?** (`uses_only_the_base`, `by_value_modules`, the
  stand-in `PyDataset`). A worker must unpickle the dataset, and a dataset whose class
  is defined in `__main__` (a script, a notebook) travels by value with cloudpickle,
  its base class by reference: `keras.utils.PyDataset`. Importing that imports all of
  Keras and its backend, 3-6 CPU-seconds on a 2-core machine (`ml_dtypes`, JAX or
  TensorFlow, matplotlib), where the batch itself needs only NumPy. Plain Keras forks
  its workers from the trainer and pays nothing; keras-loadtune never forks the trainer
  (`_start`). So when the dataset's by-value code and its attributes refer to nothing
  of Keras or of a framework (`uses_only_the_base`), the pickler (`_shipping`) sends
  this module's `PyDataset` in place of Keras's as the base. Worker processes then
  start without importing Keras at all. The trainer keeps the real class: only the
  workers' copy of the dataset has this base, and a worker only calls `__getitem__`
  (and `__len__`).

  What the stand-in keeps of Keras's `PyDataset` (3.x): the three loader knobs as
  properties over `_workers`, `_use_multiprocessing`, `_max_queue_size` (the attributes
  `PyDataset.__init__` sets, which travel with the instance), `num_batches`, iteration,
  and the epoch hooks as no-ops. A dataset calling a Keras function in `__getitem__`
  refers to `keras` in its globals, so it is never sent with this base.

  **Datasets of an importable module** (`mypackage/data.py`, which imports Keras at its
  top like most projects) get the same: when their methods, and the functions and
  classes of the same module those use, refer to nothing of Keras or a framework
  (`by_value_modules`, read by `_code_scan`), the pickler sends the module's classes
  and functions *by value* (cloudpickle's `register_pickle_by_value`, for that one
  pickle), like a `__main__` class. The worker then never imports that module: its
  top-level code (the `import keras`, and any side effect such as logging set-up,
  downloads, a GPU allocation) does not run in workers at all. What the methods use
  travels as it was at pickling time: module constants are copied, library modules
  (NumPy, PIL, the standard library) are imported by name. A method that uses another
  module of the user's project keeps the old path (`by_value_modules` is `None`).
- **Which `KERAS_BACKEND` do workers import?** (`worker_backend`, set in the forkserver
  by `apply_in_forkserver`). A dataset only needs `keras.utils.PyDataset` to be
  unpickled, and Keras with its `numpy` backend imports in about a third of the time
  TensorFlow takes. So the forkserver (and every worker) sets `KERAS_BACKEND=numpy`
  before anything imports Keras, unless the dataset needs a framework
  (`needs_framework`: its class's module, the globals its `__main__`-defined methods
  use, or its attributes refer to `tensorflow`, `torch` or `jax`; then workers keep
  the trainer's `KERAS_BACKEND`), or unless the numpy backend cannot import (it needs
  JAX; with TensorFlow alone installed workers keep TensorFlow). `keras.ops` in a
  worker then returns NumPy arrays, which every backend's trainer accepts. Escape
  hatch: the environment variable `KERAS_LOADTUNE_WORKER_BACKEND`: `auto` (default,
  as above), `trainer` (workers use the trainer's backend), or a backend name
  (`numpy`, `tensorflow`, `jax`, `torch`) forced for every worker.
- **Which Keras module does the forkserver preload?** (`preload_modules`).

Importing this module has no side effect and imports nothing heavy.

Example:

```python
# trainer side, decided per shipment by `_shipping.SourceShipper`:
uses_only_the_base(dataset)  # True for a NumPy-only dataset defined in __main__
worker_backend(dataset)      # "numpy": workers import Keras's numpy backend, if any
```
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

from keras_loadtune.engine.process import _code_scan

KERAS_PACKAGE = "keras"
BACKEND_ENV_VAR = "KERAS_BACKEND"  # Keras's own
USER_ENV_VAR = "KERAS_LOADTUNE_WORKER_BACKEND"
ENV_VAR = "KERAS_LOADTUNE_FORKSERVER_BACKEND"  # trainer -> forkserver, set by the engine
BACKENDS = ("numpy", "tensorflow", "jax", "torch")
FRAMEWORKS = frozenset({"tensorflow", "tf_keras", "torch", "jax", "jaxlib"})
# What a dataset's by-value code may not refer to for the stand-in to be enough.
HEAVY_ROOTS = FRAMEWORKS | {KERAS_PACKAGE}
_PYDATASET_MODULE = "keras.src.trainers.data_adapters.py_dataset_adapter"


# -- is it a Keras dataset ---------------------------------------------------------------------
def is_keras_dataset(owner: Any) -> bool:
    """Whether a base class of `owner`'s class comes from Keras (by module name).

    Example:

    >>> is_keras_dataset([1, 2])
    False
    """
    return any(
        getattr(c, "__module__", "").split(".")[0] == KERAS_PACKAGE for c in type(owner).__mro__[1:]
    )


def keras_base(owner: Any) -> type | None:
    """Keras's `PyDataset` class if `owner` is an instance of it (Keras already imported).

    Example:

    >>> keras_base(object()) is None
    True
    """
    keras_module = sys.modules.get(_PYDATASET_MODULE)
    base = getattr(keras_module, "PyDataset", None)
    return base if isinstance(base, type) and isinstance(owner, base) else None


# -- the stand-in base -------------------------------------------------------------------------
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
    return _code_scan.by_value_modules(owner, base, HEAVY_ROOTS)


def uses_only_the_base(owner: Any) -> bool:
    """Whether a worker can run `owner` with the stand-in as its Keras base class.

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
    return not any(_code_scan.root_package(v) in HEAVY_ROOTS for v in list(attrs.values()))


def light_pickle(owner: Any) -> tuple[type, tuple[str, ...]] | None:
    """What a pickle of `owner` sends so that workers import no Keras, if they can.

    Args:
        owner: The dataset.

    Returns:
        Keras's `PyDataset` class (the pickle names `stand_in` in its place) and the
        user modules to send by value (`by_value_modules`); `None` when workers need
        the real Keras (`uses_only_the_base` is False).

    Example:

    ```python
    plan = light_pickle(dataset)  # (keras PyDataset, ("mypackage.data",)) or None
    ```
    """
    if not uses_only_the_base(owner):
        return None
    base = keras_base(owner)
    return None if base is None else (base, by_value_modules(owner) or ())


def preload_modules(owner: Any) -> list[str]:
    """The Keras modules the forkserver imports for `owner` before it forks a worker.

    `["keras"]` when `owner` is a Keras dataset whose workers unpickle the real base
    (Keras is imported in the trainer, and the stand-in is not enough); `[]` otherwise.

    Example:

    >>> preload_modules(object())
    []
    """
    if is_keras_dataset(owner) and KERAS_PACKAGE in sys.modules and not uses_only_the_base(owner):
        return [KERAS_PACKAGE]
    return []


# -- the workers' backend ----------------------------------------------------------------------
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
    root_package = _code_scan.root_package
    classes = [owner] if isinstance(owner, types.FunctionType) else type(owner).__mro__
    for cls in classes:
        module_name = getattr(cls, "__module__", None) or ""
        if module_name.split(".")[0] in (KERAS_PACKAGE, "builtins", "keras_loadtune"):
            continue
        if _code_scan.travels_by_value(module_name):
            funcs = (
                [cls] if isinstance(cls, types.FunctionType) else list(_code_scan.functions_of(cls))
            )
            if any(_code_scan.function_refers(f, FRAMEWORKS) for f in funcs):
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
        os.environ[BACKEND_ENV_VAR] = backend
