"""`keras_adapter/input_facts.py`: batch size and partial batch of every input kind, from one
place, answered to Keras as its own adapters do and shown in the report; the tuned
DataLoader arguments to paste (issue #25).
"""

from __future__ import annotations

import grain
import numpy as np
import pytest
import torch
from keras.src.trainers import data_adapters
from keras.src.trainers.data_adapters.grain_dataset_adapter import GrainDatasetAdapter
from keras.src.trainers.data_adapters.torch_data_loader_adapter import TorchDataLoaderAdapter
from torch.utils.data import DataLoader, TensorDataset
from tuners import make_tuner

import keras_loadtune as klt
from keras_loadtune import LoaderConfig
from keras_loadtune.keras_adapter.input_facts import InputFacts, describe_input, facts_of
from keras_loadtune.report import TuningReport

pytestmark = [pytest.mark.keras]


def _torch_loader(n: int, batch_size: int, drop_last: bool = False, **kwargs) -> DataLoader:
    data = TensorDataset(torch.arange(2 * n, dtype=torch.float32).reshape(n, 2))
    return DataLoader(data, batch_size=batch_size, drop_last=drop_last, **kwargs)


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last"), [(34, 16, False), (32, 8, False), (34, 16, True)]
)
def test_a_wrapped_dataloader_answers_keras_as_keras_own_adapter_does(n, batch_size, drop_last):
    loader = _torch_loader(n, batch_size, drop_last)
    own = TorchDataLoaderAdapter(loader)
    with klt.wrap(loader) as wrapped:
        adapter = data_adapters.get_data_adapter(wrapped)
        assert adapter.batch_size == own.batch_size == batch_size
        assert adapter.num_batches == own.num_batches
        partial = None if drop_last else (n % batch_size or None)
        assert adapter.partial_batch_size == partial
        assert adapter.has_partial_batch == (True if partial else None)
        if not drop_last:  # Keras counts a partial batch even when drop_last drops it
            assert adapter.partial_batch_size == (own.partial_batch_size or None)
            assert adapter.has_partial_batch == own.has_partial_batch


def test_grain_facts_come_from_the_batching_itself():
    ds = grain.MapDataset.range(42).map(lambda i: np.full((2,), i, np.float32)).batch(16)
    assert facts_of(ds) == InputFacts(16, 42 % 16)
    assert facts_of(grain.MapDataset.range(42).batch(16, drop_remainder=True)) == InputFacts(16)
    with klt.wrap(ds) as wrapped:
        adapter = data_adapters.get_data_adapter(wrapped)
        assert adapter.batch_size == GrainDatasetAdapter(ds).batch_size == 16
        assert adapter.partial_batch_size == 10 and adapter.has_partial_batch
    iterated = grain.MapDataset.range(42).to_iter_dataset().batch(8)
    assert facts_of(iterated) == InputFacts(8)  # no length: the partial batch is unknown
    sampler = grain.samplers.IndexSampler(
        10, shard_options=grain.sharding.NoSharding(), shuffle=False, num_epochs=1
    )
    loader = grain.DataLoader(
        data_source=list(range(10)), sampler=sampler, operations=[grain.transforms.Batch(4)]
    )
    assert facts_of(loader) == InputFacts(4)
    assert facts_of(np.zeros((4, 2))) == InputFacts() and facts_of(lambda: iter([])) == InputFacts()


def test_the_report_shows_the_batches_and_the_dataloader_arguments_to_paste():
    loader = _torch_loader(34, 16, pin_memory=True)
    with klt.wrap(loader, LoaderConfig(4, 8, use_multiprocessing=True)) as wrapped:
        report = describe_input(TuningReport("kept-baseline", None, None), wrapped)
    assert report.input_facts == {"batch_size": 16, "partial_batch_size": 2}
    assert report.dataloader_kwargs == {
        "num_workers": 4,
        "prefetch_factor": 2,
        "persistent_workers": True,
        "pin_memory": True,
    }
    text = str(report)
    assert "16 samples/batch (the last 2)" in text
    assert "DataLoader(..., num_workers=4, prefetch_factor=2" in text
    again = TuningReport.from_dict(report.to_dict())
    assert again.dataloader_kwargs == report.dataloader_kwargs
    assert again.input_facts == report.input_facts


def test_threads_have_no_dataloader_equivalent_and_the_report_says_so():
    with klt.wrap(_torch_loader(8, 4), LoaderConfig(3, 6)) as wrapped:
        report = describe_input(TuningReport("tuned", None, None), wrapped)
    assert report.dataloader_kwargs["num_workers"] == 3
    assert any("no DataLoader equivalent" in n for n in report.notes)


def test_inputs_other_than_a_dataloader_get_batch_facts_only():
    ds = grain.MapDataset.range(10).batch(4)
    with klt.wrap(ds) as wrapped:
        report = describe_input(TuningReport("kept-baseline", None, None), wrapped)
    assert report.input_facts == {"batch_size": 4, "partial_batch_size": 2}
    assert report.dataloader_kwargs == {} and "DataLoader(" not in str(report)
    unknown = describe_input(TuningReport("not-wrapped", None, None), None)
    assert unknown.input_facts == {} and "samples/batch" not in str(unknown)


def test_a_fit_on_a_wrapped_dataloader_reports_the_arguments_of_the_config_it_ran():
    import keras

    n, batch = 64, 8
    data = TensorDataset(torch.arange(2 * n, dtype=torch.float32).reshape(n, 2), torch.zeros(n, 1))
    loader = DataLoader(data, batch_size=batch)
    tuner = make_tuner(fast=False, probe_steps=4, warmup_steps=0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    wrapped = tuner.wrap(loader)
    try:
        model.fit(wrapped, epochs=2, verbose=0, callbacks=[tuner])
    finally:
        wrapped.close()
    report = tuner.report
    assert report.input_facts["batch_size"] == batch, report.to_dict()
    from keras_loadtune.keras_adapter.torch_config import dataloader_kwargs

    expected = dataloader_kwargs(wrapped.config, pin_memory=loader.pin_memory).kwargs
    assert report.dataloader_kwargs == dict(expected), report.to_dict()
    assert "DataLoader(" in str(report)
