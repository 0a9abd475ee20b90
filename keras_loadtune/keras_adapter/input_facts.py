"""`InputFacts`: the batch size and partial batch of a training input, from one place.

Keras's own adapters answer `batch_size`, `has_partial_batch` and `partial_batch_size`
(`TorchDataLoaderAdapter` from the loader, `GrainDatasetAdapter` from a peek); a wrapped
input goes through `_hooks.TunedPyDatasetAdapter`, which answers the same from the
`InputFacts` its source carries, and the report shows them. `facts_of` reads them from
the input's own settings, without making a batch and without importing a framework
the input does not come from.

Example:

>>> InputFacts(32, 8).has_partial_batch
True
>>> InputFacts(32).to_dict()
{'batch_size': 32}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from keras_loadtune.config import LoaderConfig
from keras_loadtune.keras_adapter.input_kind import InputKind, classify

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.keras_adapter.torch_config import DataLoaderSettings
    from keras_loadtune.report import TuningReport


@dataclass(frozen=True)
class InputFacts:
    """What an input says about its batches (None: unknown, or not applicable).

    Args:
        batch_size: Samples per full batch.
        partial_batch_size: Samples in the last batch of a pass when it is smaller than
            `batch_size` (None: no partial batch, or not known).

    Example:

    >>> InputFacts(16, 2).to_dict()
    {'batch_size': 16, 'partial_batch_size': 2}
    """

    batch_size: int | None = None
    partial_batch_size: int | None = None

    @property
    def has_partial_batch(self) -> bool | None:
        """True when the last batch is smaller; None otherwise (Keras's convention)."""
        return True if self.partial_batch_size else None

    def to_dict(self) -> dict[str, int]:
        """The known facts only (for the report)."""
        return {
            k: v
            for k, v in (
                ("batch_size", self.batch_size),
                ("partial_batch_size", self.partial_batch_size),
            )
            if v is not None
        }


def _length(x: Any) -> int | None:
    try:
        n = len(x)
    except (TypeError, ValueError, OverflowError, NotImplementedError):
        return None
    return n if 0 <= n < 2**62 else None


def _facts(batch_size: Any, length: int | None, drop_last: bool) -> InputFacts:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        return InputFacts()
    partial = None if drop_last or length is None else (length % batch_size) or None
    return InputFacts(batch_size, partial)


def _torch_facts(loader: Any) -> InputFacts:
    dataset = getattr(loader, "dataset", None)
    return _facts(
        getattr(loader, "batch_size", None),
        _length(dataset),
        bool(getattr(loader, "drop_last", False)),
    )


def _grain_facts(x: Any) -> InputFacts:
    """From the outermost batching of a Grain pipeline: `ds.batch(n)` or a DataLoader's
    `Batch` operation. A partial batch is known for a `MapDataset` only (a length)."""
    if hasattr(x, "_operations") and hasattr(x, "_data_source"):  # grain.DataLoader
        batches = [op for op in x._operations if type(op).__name__ == "Batch"]
        if len(batches) != 1:
            return InputFacts()
        return _facts(getattr(batches[0], "batch_size", None), None, True)
    node, seen = x, 0
    while node is not None and seen < 1000:
        name = type(node).__name__
        if name in ("BatchMapDataset", "BatchIterDataset"):
            drop = bool(getattr(node, "_drop_remainder", False))
            parents = getattr(node, "parents", ())
            length = _length(parents[0]) if name == "BatchMapDataset" and parents else None
            return _facts(getattr(node, "_batch_size", None), length, drop)
        if name == "InterleaveIterDataset":  # mp_prefetch: batches are per worker
            return InputFacts()
        parents = getattr(node, "parents", ())
        node = parents[0] if len(parents) == 1 else None
        seen += 1
    return InputFacts()


def facts_of(x: Any) -> InputFacts:
    """The `InputFacts` of a training input (unknown for kinds that do not say).

    Args:
        x: A PyTorch `DataLoader`, a Grain dataset or `DataLoader`, or anything else.

    Returns:
        Its facts; `InputFacts()` when nothing is known.

    Example:

    >>> facts_of(lambda: iter([]))
    InputFacts(batch_size=None, partial_batch_size=None)
    """
    kind = classify(x)
    if kind is InputKind.TORCH_DATALOADER:
        return _torch_facts(x)
    if kind is InputKind.GRAIN:
        return _grain_facts(x)
    return InputFacts()


def served_facts(dataset: Any) -> InputFacts:
    """The facts of what a wrapped dataset serves: its source's `input_facts`
    (`TorchLoaderSource`, `GrainMapSource`, `GrainIterSource`), else unknown.

    Example:

    ```python
    served_facts(klt.wrap(torch_loader)).batch_size  # the loader's batch_size
    ```
    """
    for candidate in (dataset, getattr(dataset, "dataset", None)):
        facts = getattr(candidate, "input_facts", None)
        if isinstance(facts, InputFacts):
            return facts
    return InputFacts()


@runtime_checkable
class ExportsLoaderArguments(Protocol):
    """A source that can say which arguments of its own loader run a config
    (`TorchLoaderSource`).

    Example:

    ```python
    isinstance(TorchLoaderSource(loader), ExportsLoaderArguments)  # True
    ```
    """

    def dataloader_kwargs(self, config: LoaderConfig) -> DataLoaderSettings:
        """The loader's keyword arguments that run `config`."""
        ...


def describe_input(report: TuningReport, dataset: Any) -> TuningReport:
    """`report` with what its training input says: `input_facts` (the Profile line's
    batch size and partial batch) and, for a wrapped PyTorch `DataLoader`, the
    `dataloader_kwargs` of the config in use (with a note when it has no exact
    DataLoader equivalent). The same for every kind of input.

    Args:
        report: The report as built from the session.
        dataset: The training data as served (`TunedPyDataset`, `GrainIterSource`, or
            None when unknown).

    Returns:
        A new report (`report` is not changed).

    Example:

    ```python
    report = describe_input(build_report(...), lifecycle.train_dataset)
    report.dataloader_kwargs  # {'num_workers': 4, 'prefetch_factor': 2, ...}
    ```
    """
    changes: dict[str, Any] = {"input_facts": served_facts(dataset).to_dict()}
    source, config = getattr(dataset, "dataset", None), getattr(dataset, "config", None)
    if isinstance(source, ExportsLoaderArguments) and isinstance(config, LoaderConfig):
        settings = source.dataloader_kwargs(config)
        changes["dataloader_kwargs"] = dict(settings.kwargs)
        if settings.note and settings.note not in report.notes:
            changes["notes"] = [*report.notes, settings.note]
    return dataclasses.replace(report, **changes)


__all__ = ["ExportsLoaderArguments", "InputFacts", "describe_input", "facts_of", "served_facts"]
