"""`InputKind`: which kind of training input `fit` was given, and so which knobs apply.

Keras 3 accepts more than a `PyDataset` (`keras.src.trainers.data_adapters.get_data_adapter`):
a PyTorch `DataLoader`, a Grain dataset or loader, a `tf.data.Dataset`, arrays. Each kind
has its own loader knobs, and only some can be retuned while training runs. `classify`
names the kind from the object's class hierarchy (as Keras's own `is_torch_dataloader`
and friends do), without importing PyTorch, Grain or TensorFlow.
"""

from __future__ import annotations

import enum
from typing import Any


class InputKind(enum.Enum):
    """The kind of a training input, as far as loader tuning is concerned.

    Example:

    >>> classify(lambda: iter([]))
    <InputKind.GENERATOR: 'generator'>
    >>> InputKind.TF_DATA.tunable
    False
    """

    PYDATASET = "pydataset"
    GENERATOR = "generator"  # a zero-argument generator function
    TORCH_DATALOADER = "torch-dataloader"
    GRAIN = "grain"
    TF_DATA = "tf-data"
    OTHER = "other"  # arrays, Python generators, anything else `fit` takes

    @property
    def tunable(self) -> bool:
        """Whether `wrap` can serve this kind so that its loader can be retuned (some
        inputs of a tunable kind are still only measured, e.g. an iterable-style
        `DataLoader`, and a Grain `IterDataset` changes its worker count only at an
        epoch boundary; see `keras_loadtune.keras_adapter.inputs.plan_input`)."""
        return self in (
            InputKind.PYDATASET,
            InputKind.GENERATOR,
            InputKind.TORCH_DATALOADER,
            InputKind.GRAIN,
        )


class RestartPoint(enum.Enum):
    """Where a served input can take a new loader config, so when the tuner may act.

    Example:

    >>> RestartPoint.EPOCH_BOUNDARY.mid_epoch
    False
    """

    ANY_BATCH = "any-batch"  # the engine serves it: a switch at the next batch, exactly once
    EPOCH_BOUNDARY = "epoch-boundary"  # its own iterator: some changes wait for a new pass
    NEVER = "never"  # measured only

    @property
    def mid_epoch(self) -> bool:
        """Whether every config change applies within the pass that is running."""
        return self is RestartPoint.ANY_BATCH


def _bases(x: Any) -> list[tuple[str, str]]:
    return [(c.__name__, c.__module__ or "") for c in type(x).__mro__]


def is_torch_dataloader(x: Any) -> bool:
    """True for a `torch.utils.data.DataLoader` (or a subclass)."""
    return any(n == "DataLoader" and m.startswith("torch.utils.data") for n, m in _bases(x))


def is_grain(x: Any) -> bool:
    """True for a Grain `MapDataset`, `IterDataset` or `DataLoader`."""
    return any(
        n in ("MapDataset", "IterDataset", "DataLoader") and m.startswith("grain")
        for n, m in _bases(x)
    )


def is_grain_map_dataset(x: Any) -> bool:
    """True for a Grain `MapDataset` (random access: `ds[i]`, `len(ds)`)."""
    return any(n == "MapDataset" and m.startswith("grain") for n, m in _bases(x))


def is_tf_data(x: Any) -> bool:
    """True for a `tf.data.Dataset` or a `tf.distribute` distributed dataset."""
    return any(
        (n == "DatasetV2" and m.startswith("tensorflow.python."))
        or (
            n in ("DistributedDataset", "DistributedDatasetsFromFunction")
            and m.startswith("tensorflow.python.")
        )
        for n, m in _bases(x)
    )


def classify(x: Any) -> InputKind:
    """The `InputKind` of a training input.

    Args:
        x: What would be passed to `fit` (or to `tuner.wrap`).

    Returns:
        Its kind; `InputKind.OTHER` for arrays and anything unrecognised.

    Example:

    >>> import numpy as np
    >>> classify(np.zeros((4, 2)))
    <InputKind.OTHER: 'other'>
    """
    if any(n == "PyDataset" and m.startswith("keras") for n, m in _bases(x)):
        return InputKind.PYDATASET
    if is_torch_dataloader(x):
        return InputKind.TORCH_DATALOADER
    if is_grain(x):
        return InputKind.GRAIN
    if is_tf_data(x):
        return InputKind.TF_DATA
    if callable(x) and not isinstance(x, type):
        return InputKind.GENERATOR
    return InputKind.OTHER


__all__ = [
    "InputKind",
    "RestartPoint",
    "classify",
    "is_grain",
    "is_grain_map_dataset",
    "is_tf_data",
    "is_torch_dataloader",
]
