"""One batch of another library's loader, in the structure a `PyDataset` batch has.

A PyTorch `collate_fn` returns lists of tensors, a Grain element may hold JAX arrays;
a `PyDataset` batch is a tuple `(x,)`, `(x, y)` or `(x, y, sample_weight)` (or a dict
of inputs) of NumPy arrays. NumPy is also what the engine moves between processes
through shared memory and counts in `BatchRecord.nbytes`, and what Keras's
`PyDatasetAdapter` turns into the backend's tensors on every backend (on PyTorch too),
so tensors become NumPy arrays here, in the worker. Imports no framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _leaf(value: Any) -> Any:
    root = (type(value).__module__ or "").split(".")[0]
    if root == "torch" and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if root in ("jax", "jaxlib", "tensorflow") and hasattr(value, "__array__"):
        return np.asarray(value)
    return value


def to_numpy(structure: Any) -> Any:
    """`structure` with every tensor replaced by a NumPy array (nesting kept).

    Example:

    >>> to_numpy([np.zeros(2), {"a": 1}])
    [array([0., 0.]), {'a': 1}]
    """
    if isinstance(structure, Mapping):
        return {k: to_numpy(v) for k, v in structure.items()}
    if isinstance(structure, tuple) and hasattr(structure, "_fields"):  # namedtuple
        return type(structure)(*(to_numpy(v) for v in structure))
    if isinstance(structure, (list, tuple)):
        return type(structure)(to_numpy(v) for v in structure)
    return _leaf(structure)


def as_pydataset_batch(batch: Any) -> Any:
    """A loader's batch as a `PyDataset` batch: NumPy arrays, a tuple (or a dict) on top.

    Example:

    >>> as_pydataset_batch([np.ones(1), np.zeros(1)])
    (array([1.]), array([0.]))
    >>> as_pydataset_batch(np.ones(1))
    (array([1.]),)
    """
    batch = to_numpy(batch)
    if isinstance(batch, Mapping):
        return dict(batch)
    if isinstance(batch, (list, tuple)):
        return tuple(batch)
    return (batch,)


__all__ = ["as_pydataset_batch", "to_numpy"]
