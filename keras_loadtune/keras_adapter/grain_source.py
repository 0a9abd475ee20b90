"""`GrainMapSource`: a Grain `MapDataset` of batches as a `PyDataset`.

A `grain.MapDataset` with batching inside it (`ds.batch(n)`, or a `map` that returns
whole batches) is random access: batch `i` is `ds[i]` and an epoch is `len(ds)`
batches, in index order (shuffling is part of the dataset: `ds.shuffle(seed)`), exactly
what Keras's `GrainDatasetAdapter` iterates. So it is served like any `PyDataset`, by
the retunable engine, in place of Grain's own `ReadOptions` threads and `mp_prefetch`
processes; every index is produced exactly once per pass whatever the config does.
Elements become NumPy arrays in a tuple (`_batch_structure`).

The user's config is what Keras runs: iterating a `MapDataset`, Grain reads it with its
default `ReadOptions` (16 threads, so 16 batches made at once here), not inline. The
engine runs that many threads with a queue of twice as many batches (Grain's buffer of
500 elements would hold 500 batches of RAM and make the tuner skip 500 steps of refill
after each switch). A bare pipeline then starts no slower than unwrapped.
"""

from __future__ import annotations

from typing import Any

import grain
import keras

from keras_loadtune.keras_adapter._batch_structure import as_pydataset_batch
from keras_loadtune.keras_adapter.input_facts import facts_of


def user_config() -> dict[str, Any]:
    """The `PyDataset` knobs of the config Keras runs a `MapDataset` with: Grain's default
    `ReadOptions` threads, a queue of twice as many batches.

    Example:

    >>> user_config()
    {'workers': 16, 'use_multiprocessing': False, 'max_queue_size': 32}
    """
    threads = int(grain.ReadOptions().num_threads)
    return {"workers": threads, "use_multiprocessing": False, "max_queue_size": 2 * threads}


class GrainMapSource(keras.utils.PyDataset):
    """A finite Grain `MapDataset` whose elements are batches, as a `PyDataset`.

    Usually built by `tuner.wrap(map_dataset)`. `fit`'s `shuffle` does not apply: the
    dataset's own index order is every pass's order, as when Keras iterates it.

    Args:
        dataset: A `grain.MapDataset` with a length (not repeated forever).

    Raises:
        TypeError: `dataset` has no length.

    Example:

    ```python
    ds = grain.MapDataset.source(records).shuffle(seed=0).map(decode).batch(32)
    source = GrainMapSource(ds)
    x, y = source[0]
    ```
    """

    def __init__(self, dataset: Any):
        try:
            n = len(dataset)
        except (TypeError, OverflowError, ValueError):
            n = None
        if n is None or n >= 2**62:
            raise TypeError(
                "This Grain MapDataset has no finite length (repeated forever?): batch "
                "i = ds[i] needs len(ds) batches per epoch. Drop .repeat() and let "
                "fit(epochs=...) repeat it, or pass it to fit() directly."
            )
        super().__init__(**user_config())
        self.dataset = dataset
        self._num_batches = int(n)
        self.input_facts = facts_of(dataset)  # batch size, partial batch (Keras, report)

    @property
    def num_batches(self) -> int:
        return self._num_batches

    def __len__(self) -> int:
        return self._num_batches

    def pass_order(self) -> range:
        """Every pass in index order (the dataset shuffles itself, if it does).

        Example:

        ```python
        list(source.pass_order()) == list(range(len(ds)))
        ```
        """
        return range(self._num_batches)

    def repeats_its_pass(self) -> bool:
        """Every pass is `ds[0] .. ds[n - 1]` (`pass_keys.RepeatedPass`): the next one may
        start while this one drains.

        Example:

        ```python
        GrainMapSource(ds).repeats_its_pass()  # True
        ```
        """
        return True

    def __getitem__(self, index: Any) -> Any:
        element = self.dataset[int(index)]
        if element is None:
            raise ValueError(
                f"Grain element {int(index)} is None (filtered out by .filter()): a "
                "MapDataset served batch by batch needs every index to hold a batch. "
                "Filter before batching in an IterDataset, or pass the dataset to fit() "
                "directly (it is then measured only)."
            )
        return as_pydataset_batch(element)


__all__ = ["GrainMapSource", "user_config"]
