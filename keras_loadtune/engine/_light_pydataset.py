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

Example:

```python
# trainer side, decided per shipment by `_pickling.SourceShipper`:
uses_only_the_base(dataset)  # True for a NumPy-only dataset defined in __main__
```
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

from keras_loadtune.engine._worker_backends import (
    USER_ENV_VAR,
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


def uses_only_the_base(owner: Any) -> bool:
    """Whether a worker can run `owner` with this stand-in as its Keras base class.

    True when `KERAS_LOADTUNE_WORKER_BACKEND` is unset (or `auto`) and `owner` is a
    Keras `PyDataset` whose classes below `PyDataset` are all
    defined in `__main__` (sent by value: no module of theirs to import), none of
    their methods refers to Keras or a framework (globals and closures), and none of
    its attributes is a Keras or framework object (one level).

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
    base = keras_base(owner)
    if base is None:
        return False
    mro = type(owner).__mro__
    for cls in mro[: mro.index(base)]:
        if cls.__module__ != "__main__":
            return False
        if any(function_refers(f, _HEAVY_ROOTS) for f in functions_of(cls)):
            return False
    attrs = getattr(owner, "__dict__", None)
    if not isinstance(attrs, dict):
        return False
    return not any(root_package(v) in _HEAVY_ROOTS for v in list(attrs.values()))
