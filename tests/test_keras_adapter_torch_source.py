"""`keras_adapter/torch_source.py`: a PyTorch `DataLoader` served batch by batch (issue #25).

The wrapped loader must give, pass after pass, exactly the batches the unwrapped loader
gives with the same seed, in its order (its sampler's, never Keras's `shuffle`), while
the loader is reconfigured at random steps between inline, threads and processes: 0
batches lost, duplicated or reordered. Keras's own `EpochIterator` drives the wrapped
loader (with `shuffle=True`, `fit`'s default), so the test covers the adapter too.
"""

from __future__ import annotations

import random

import keras
import numpy as np
import pytest
import torch
from config_strategies import thread_configs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served_epochs import served_epochs
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, SubsetRandomSampler
from tuners import make_tuner

import keras_loadtune as klt
from keras_loadtune import LoaderConfig
from keras_loadtune.keras_adapter.dataset import TunedPyDataset
from keras_loadtune.keras_adapter.torch_source import TorchLoaderSource

pytestmark = [pytest.mark.keras, pytest.mark.timeout(600)]


class Items(torch.utils.data.Dataset):
    """Sample `i` is `(x=[i, i], y=2i)` as tensors; a float sample weight when asked."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([i, i], dtype=torch.float32), torch.tensor([2.0 * i])


class Stream(IterableDataset):
    def __iter__(self):
        yield from (torch.tensor([float(i)]) for i in range(4))


def _loader(kind: str, n: int, batch_size: int, drop_last: bool, seed: int, **kw) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    ds = Items(n)
    if kind == "shuffle":
        return DataLoader(
            ds, batch_size=batch_size, shuffle=True, drop_last=drop_last, generator=g, **kw
        )
    if kind == "sequential":
        return DataLoader(ds, batch_size=batch_size, drop_last=drop_last, **kw)
    if kind == "batch_sampler":  # a custom batch sampler over a random subset
        subset = list(range(0, n, 2)) or [0]
        sampler = BatchSampler(SubsetRandomSampler(subset, generator=g), batch_size, drop_last)
        return DataLoader(ds, batch_sampler=sampler, **kw)
    assert kind == "unbatched"  # batch_size=None: one sample per step, no collation
    return DataLoader(ds, batch_size=None, shuffle=True, generator=g, **kw)


def _ids(x) -> list[float]:
    x = np.asarray(x)
    return x[:, 0].tolist() if x.ndim == 2 else [float(x[0])]


def _expected(loader: DataLoader, epochs: int) -> list[list[list[float]]]:
    return [[_ids(x) for x, _ in loader] for _ in range(epochs)]


def _served(wrapped, epochs: int, reconfigure_at: dict) -> list[list[list[float]]]:
    return served_epochs(wrapped, epochs, reconfigure_at, _ids)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(["shuffle", "sequential", "batch_sampler", "unbatched"]),
    n=st.integers(1, 30),
    batch_size=st.integers(1, 6),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**16),
    plan=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 8), thread_configs), min_size=20, max_size=30
    ),
)
def test_threads_and_inline_serve_the_loaders_batches_exactly_once(
    kind, n, batch_size, drop_last, seed, plan
):
    epochs = 3
    expected = _expected(_loader(kind, n, batch_size, drop_last, seed), epochs)
    reconfigure_at = {(e, s): c for e, s, c in plan}
    with klt.wrap(_loader(kind, n, batch_size, drop_last, seed)) as wrapped:
        assert _served(wrapped, epochs, reconfigure_at) == expected


def test_twenty_switches_across_inline_threads_and_processes_lose_nothing():
    rng = random.Random(25)
    configs = [
        LoaderConfig(workers=1, max_queue_size=1),
        LoaderConfig(workers=3, max_queue_size=4),
        LoaderConfig(workers=2, max_queue_size=3, use_multiprocessing=True),
        LoaderConfig(workers=1, max_queue_size=2, use_multiprocessing=True),
    ]
    epochs, n, batch_size = 4, 45, 4  # 12 batches per epoch
    reconfigure_at = {
        (e, s): rng.choice(configs) for e in range(epochs) for s in rng.sample(range(11), 6)
    }
    assert len(reconfigure_at) >= 20
    expected = _expected(_loader("shuffle", n, batch_size, False, 7, num_workers=2), epochs)
    with klt.wrap(_loader("shuffle", n, batch_size, False, 7, num_workers=2)) as wrapped:
        assert wrapped.config == LoaderConfig(workers=2, max_queue_size=4, use_multiprocessing=True)
        served = _served(wrapped, epochs, reconfigure_at)
        producers = {r.producer.mode for r in wrapped.stats if r.producer is not None}
    assert served == expected
    assert producers == {"thread", "process"}  # both kinds of pool really served batches


def test_persistent_workers_draw_the_workers_seed_once_as_pytorch_does():
    expected = _expected(
        _loader("shuffle", 17, 3, False, 5, num_workers=1, persistent_workers=True), 3
    )
    with klt.wrap(_loader("shuffle", 17, 3, False, 5, num_workers=1, persistent_workers=True)) as w:
        assert _served(w, 3, {}) == expected


def test_peeking_at_batches_does_not_move_the_loaders_rng():
    expected = _expected(_loader("shuffle", 10, 3, False, 1), 2)
    with klt.wrap(_loader("shuffle", 10, 3, False, 1)) as wrapped:
        first = [wrapped[i] for i in range(3)]  # what Keras does for tensor specs
        torch.manual_seed(0)  # peeks must not depend on, or move, the global RNG either
        assert _served(wrapped, 2, {}) == expected
    assert all(isinstance(x, np.ndarray) and x.shape[1] == 2 for x, _ in first)


def test_batches_are_numpy_tuples_and_dicts_stay_dicts():
    class Dicts(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.tensor([float(i)]), "w": torch.tensor(1.0)}

    source = TorchLoaderSource(DataLoader(Dicts(), batch_size=2))
    batch = source[source.pass_order()[1]]
    assert set(batch) == {"x", "w"}
    assert isinstance(batch["x"], np.ndarray) and batch["x"][:, 0].tolist() == [2.0, 3.0]
    x, y = TorchLoaderSource(DataLoader(Items(3), batch_size=2))[0]
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)


@pytest.mark.parametrize(
    ("loader", "why"),
    [
        (DataLoader(Stream(), batch_size=2), "IterableDataset"),
        (DataLoader(Items(4), batch_size=2, worker_init_fn=print), "worker_init_fn"),
    ],
)
def test_loaders_that_cannot_be_served_batch_by_batch_are_returned_unchanged(loader, why):
    tuner = make_tuner(fast=False)
    assert tuner.wrap(loader) is loader
    assert any(why in note for note in tuner.report.notes)
    with pytest.raises(TypeError, match=why):
        TorchLoaderSource(loader)


def test_the_dataset_class_points_a_loader_to_wrap():
    with pytest.raises(TypeError, match=r"tuner\.wrap"):
        TunedPyDataset(DataLoader(Items(4), batch_size=2))


def test_fit_trains_on_the_loaders_batches_with_the_tuner():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    tuner = make_tuner(fast=False, probe_steps=3, max_trials=2)
    train = tuner.wrap(_loader("shuffle", 40, 8, False, 3))
    val = tuner.wrap(_loader("sequential", 16, 8, False, 0))
    try:
        history = model.fit(train, validation_data=val, epochs=2, callbacks=[tuner], verbose=0)
    finally:
        train.close()
        val.close()
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["val_loss"]).all()
    assert tuner.report.decision != "not-wrapped"
    assert train.stats.delivered >= 10  # every training batch went through the engine


def test_drawing_a_pass_does_not_look_like_a_changed_dataset():
    # Process workers get the source again only when its fingerprint changes (an epoch
    # hook); drawing a pass advances the sampler's RNG, which must not re-ship it.
    from keras_loadtune.engine.process import fingerprint

    source = TorchLoaderSource(_loader("shuffle", 12, 3, False, 0))
    before = fingerprint(source)
    keys = [source.pass_order() for _ in range(2)]
    assert [k.indices for k in keys[0]] != [k.indices for k in keys[1]]  # reshuffled
    assert before is not None and fingerprint(source) == before
