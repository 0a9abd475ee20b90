"""A pass whose order the *source* draws, and keys that carry each batch's sample indices.

The engine serves a pass as an ordered list of keys and hands `key = order[position]`
to a worker, which calls `source[key]` (`engine/prefetcher.py`). For a PyTorch
`DataLoader` the order of an epoch is the loader's own: its `batch_sampler` yields the
sample indices of every batch, drawn once per pass on the trainer's side (a
`RandomSampler` reshuffles on every `iter()`). Worker processes hold a copy of the
source shipped once per pool, so they cannot look up a list drawn after they started.
The key therefore carries what the worker needs: a `BatchKey` is the batch's position
(an `int`, so seeds, records and error messages keep treating it as an index) plus the
sample indices of that batch. A reconfiguration resubmits the same key, so a batch made
again by a new pool is the same batch, and exactly-once delivery holds in every mode.

Imports nothing heavy: worker processes unpickle `BatchKey` with every task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


class BatchKey(int):
    """A batch position that carries the sample indices of that batch.

    Example:

    >>> key = BatchKey(3, (12, 5, 40))
    >>> int(key), key.indices
    (3, (12, 5, 40))
    >>> import pickle
    >>> pickle.loads(pickle.dumps(key)).indices
    (12, 5, 40)
    """

    indices: tuple[Any, ...]

    def __new__(cls, position: int, indices: Sequence[Any]) -> BatchKey:
        key = super().__new__(cls, position)
        key.indices = tuple(indices)
        return key

    def __reduce__(self) -> tuple:
        return (BatchKey, (int(self), self.indices))


class PassKeys(Sequence):
    """The keys of one pass, in delivery order: `BatchKey(i, batches[i])`.

    Args:
        batches: The sample indices of each batch of the pass (for a loader without
            batching, one index per position).

    Example:

    >>> keys = PassKeys([[3, 1], [0, 2]])
    >>> len(keys), int(keys[1]), keys[1].indices
    (2, 1, (0, 2))
    """

    def __init__(self, batches: Sequence[Sequence[Any]]):
        self._batches = [tuple(b) for b in batches]

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, position: Any) -> Any:
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        return BatchKey(position, self._batches[position])


@runtime_checkable
class OwnPassOrder(Protocol):
    """A source that draws the order of each pass itself (Keras must not shuffle it).

    `TunedPyDataset` asks it for a new order whenever Keras opens an iterator (one pass),
    on the trainer's side, instead of using Keras's `shuffle` order.

    Example:

    ```python
    class Source(keras.utils.PyDataset):
        def pass_order(self):
            return PassKeys(list(self.loader.batch_sampler))
    ```
    """

    def pass_order(self) -> Sequence[Any]:
        """The keys of a new pass, in delivery order."""
        ...


@runtime_checkable
class RepeatedPass(Protocol):
    """A source whose every pass is the same keys in the same order, and whose epoch hooks
    change nothing (a Grain `MapDataset`: batch `i` is `ds[i]` in every epoch).

    Its next pass is known before the current one ends, so `TunedPyDataset` may start
    it while the current pass drains (`TunedPyDataset.plan_passes`): the workers that
    would idle through the last batches of an epoch make the first ones of the next.

    Example:

    ```python
    class Source(keras.utils.PyDataset):
        def repeats_its_pass(self) -> bool:
            return True
    ```
    """

    def repeats_its_pass(self) -> bool:
        """Whether every pass is the same (`False`: do not start one early)."""
        ...


__all__ = ["BatchKey", "OwnPassOrder", "PassKeys", "RepeatedPass"]
