"""`TorchLoaderSource`: a map-style PyTorch `DataLoader` as a batch-level `PyDataset`.

Batch `i` of a pass is `loader.collate_fn([loader.dataset[j] for j in batches[i]])`,
where `batches` is what the loader's own `batch_sampler` yields for that pass. The
order is drawn once per pass on the trainer's side (`pass_order`), exactly as one
`iter(loader)` draws it: the seed an iterator draws for its workers first (once per
loader with `persistent_workers`), then the sampler; so a `RandomSampler` with the
user's `generator` gives the unwrapped loader's order, pass after pass, and `drop_last`,
custom samplers and batch samplers are honoured. Each key handed to a worker carries
its batch's sample indices (`pass_keys.BatchKey`), so threads, processes (which hold a
copy of this source shipped once per pool) and inline serving all produce the same
batch for a position, before and after any reconfiguration.

Batches are returned as NumPy arrays in a tuple (`_batch_structure`); Keras turns them
into the backend's tensors, on the PyTorch backend too.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import keras
import numpy as np

from keras_loadtune.config import LoaderConfig
from keras_loadtune.keras_adapter._batch_structure import as_pydataset_batch
from keras_loadtune.keras_adapter.input_facts import facts_of
from keras_loadtune.keras_adapter.pass_keys import BatchKey, PassKeys
from keras_loadtune.keras_adapter.torch_config import (
    DataLoaderSettings,
    config_from_loader,
    dataloader_kwargs,
)

_PEEK = 8  # batches of a reference pass kept for Keras's tensor-spec peeks


def map_style_problem(loader: Any) -> str | None:
    """Why `loader` cannot be served batch by batch (None: it can).

    Example:

    ```python
    map_style_problem(DataLoader(MyIterable()))  # "an IterableDataset: ..."
    ```
    """
    import torch.utils.data as torch_data

    if isinstance(loader.dataset, torch_data.IterableDataset):
        return (
            "its dataset is an IterableDataset, which has no random access: a restart "
            "would repeat or skip items, so it is measured only"
        )
    if getattr(loader, "worker_init_fn", None) is not None:
        return (
            "it has a worker_init_fn, which keras-loadtune's workers would not run as "
            "PyTorch does (worker ids, get_worker_info()); remove it (process workers "
            "seed Python's random and NumPy per batch) or open per-worker resources "
            "lazily in __getitem__, then wrap again; until then it is measured only"
        )
    try:
        len(loader)
    except TypeError:
        return (
            "its sampler has no len(), so an epoch's length is unknown; give the sampler "
            "a __len__ and wrap again; until then it is measured only"
        )
    return None


class _SamplerPasses:
    """Trainer-side: draws each pass's batches from the loader (never shipped).

    `__slots__` and no `__dict__`: the engine's change fingerprint sees it by identity
    only, so drawing a pass (which advances the sampler's RNG) never looks like a
    change of the source that would re-ship it to worker processes.
    """

    __slots__ = ("_loader", "_passes", "_peeked")

    def __init__(self, loader: Any):
        self._loader = loader
        self._passes = 0
        self._peeked: list[tuple] = []

    def _index_sampler(self) -> Any:
        loader = self._loader
        return loader.batch_sampler if loader.batch_sampler is not None else loader.sampler

    def draw(self) -> PassKeys:
        """The keys of a new pass, drawn as `iter(loader)` would draw them."""
        import torch

        loader = self._loader
        if self._passes == 0 or not (loader.persistent_workers and loader.num_workers > 0):
            # Every new `iter(loader)` draws its workers' base seed before the sampler
            # runs; drawn here too, so the sampler sees the RNG state it would see.
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
        self._passes += 1
        return PassKeys([_as_indices(b) for b in self._index_sampler()])

    def peek(self, position: int) -> tuple:
        """Sample indices of batch `position` of a reference pass, drawn with every RNG
        it touches restored afterwards (Keras peeks at batches for tensor specs)."""
        if position >= len(self._peeked):
            self._peeked = self._reference(max(position + 1, _PEEK))
        if position >= len(self._peeked):
            raise IndexError(f"batch {position} out of range ({len(self._peeked)} batches)")
        return self._peeked[position]

    def _reference(self, count: int) -> list[tuple]:
        import torch

        sampler = self._index_sampler()
        generators = [
            g
            for g in (
                self._loader.generator,
                getattr(sampler, "generator", None),
                getattr(getattr(sampler, "sampler", None), "generator", None),
            )
            if isinstance(g, torch.Generator)
        ]
        states = [g.get_state() for g in generators]
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                return [_as_indices(b) for b in itertools.islice(iter(sampler), count)]
            finally:
                for g, state in zip(generators, states):
                    g.set_state(state)
                random.setstate(py_state)
                np.random.set_state(np_state)


def _as_indices(batch: Any) -> tuple:
    if isinstance(batch, (list, tuple)):
        return tuple(batch)
    if hasattr(batch, "tolist") and getattr(batch, "ndim", 0) > 0:
        return tuple(batch.tolist())
    return (batch,)  # no auto-batching: one sample index per position


class TorchLoaderSource(keras.utils.PyDataset):
    """A map-style `torch.utils.data.DataLoader` as a `PyDataset` of whole batches.

    Usually built by `tuner.wrap(loader)`, which serves it through the retunable engine.
    Its `workers` / `max_queue_size` / `use_multiprocessing` start from the loader's
    `num_workers` and `prefetch_factor` (`torch_config.config_from_loader`). `fit`'s
    `shuffle` does not apply: the loader's sampler orders every pass, as when Keras
    iterates the loader itself.

    Args:
        loader: A `DataLoader` over a map-style dataset, without `worker_init_fn`.

    Raises:
        TypeError: `loader` is not a `DataLoader`, or cannot be served batch by batch
            (the message says why and what to do).

    Example:

    ```python
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)
    source = TorchLoaderSource(loader)
    keys = source.pass_order()     # one epoch, in the loader's order
    x, y = source[keys[0]]         # NumPy arrays
    ```
    """

    def __init__(self, loader: Any):
        import torch.utils.data as torch_data

        if not isinstance(loader, torch_data.DataLoader):
            raise TypeError(f"loader must be a torch DataLoader; got {type(loader).__name__}.")
        problem = map_style_problem(loader)
        if problem is not None:
            raise TypeError(f"Cannot serve this DataLoader batch by batch: {problem}.")
        config = config_from_loader(loader)
        super().__init__(
            workers=config.workers,
            use_multiprocessing=config.use_multiprocessing,
            max_queue_size=config.max_queue_size,
        )
        self.dataset = loader.dataset
        self.collate_fn = loader.collate_fn
        self.batched = loader.batch_sampler is not None
        self._num_batches = len(loader)
        self._passes = _SamplerPasses(loader)
        self.input_facts = facts_of(loader)  # batch size, partial batch (Keras, report)
        self.pin_memory = bool(getattr(loader, "pin_memory", False))

    @property
    def num_batches(self) -> int:
        return self._num_batches

    def __len__(self) -> int:
        return self._num_batches

    def pass_order(self) -> PassKeys:
        """The keys of a new pass (one epoch), in the loader's order.

        Example:

        ```python
        len(source.pass_order()) == len(loader)
        ```
        """
        if self._passes is None:
            raise RuntimeError("pass_order() runs on the trainer's side only.")
        return self._passes.draw()

    def dataloader_kwargs(self, config: LoaderConfig) -> DataLoaderSettings:
        """The `DataLoader` arguments that run `config` without keras-loadtune (the
        loader's own `pin_memory` kept); see `torch_config.dataloader_kwargs`.

        Example:

        ```python
        source.dataloader_kwargs(tuner.best_config).kwargs
        # {'num_workers': 4, 'prefetch_factor': 2, 'persistent_workers': True,
        #  'pin_memory': False}
        ```
        """
        return dataloader_kwargs(config, pin_memory=self.pin_memory)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, BatchKey):
            indices = key.indices
        elif self._passes is not None:
            indices = self._passes.peek(int(key))  # Keras peeking at batch shapes
        else:
            raise TypeError(
                f"TorchLoaderSource in a worker got a plain index {key!r}; expected a BatchKey."
            )
        if self.batched:
            batch = self.collate_fn([self.dataset[i] for i in indices])
        else:
            batch = self.collate_fn(self.dataset[indices[0]])
        return as_pydataset_batch(batch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_passes"] = None  # the loader and its sampler stay with the trainer
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


__all__ = ["TorchLoaderSource", "map_style_problem"]
