"""`keras_adapter/torch_config.py`: DataLoader knobs to `LoaderConfig` and back (no Keras)."""

from __future__ import annotations

import doctest
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_loadtune import LoaderConfig
from keras_loadtune.keras_adapter import pass_keys, torch_config
from keras_loadtune.keras_adapter.torch_config import config_from_loader, dataloader_kwargs


def test_num_workers_zero_is_one_inline_worker():
    config = config_from_loader(SimpleNamespace(num_workers=0, prefetch_factor=None))
    assert (config.workers, config.use_multiprocessing) == (1, False)
    assert dataloader_kwargs(config).kwargs == {"num_workers": 0}


@given(workers=st.integers(1, 64), prefetch=st.one_of(st.none(), st.integers(1, 16)))
def test_process_configs_round_trip_through_dataloader_kwargs(workers, prefetch):
    config = config_from_loader(SimpleNamespace(num_workers=workers, prefetch_factor=prefetch))
    expected_prefetch = prefetch or torch_config.TORCH_DEFAULT_PREFETCH
    assert config == LoaderConfig(workers, expected_prefetch * workers, True)
    settings = dataloader_kwargs(config)
    assert settings.exact and settings.note == ""
    assert settings.kwargs == {
        "num_workers": workers,
        "prefetch_factor": expected_prefetch,
        "persistent_workers": True,
    }


@given(workers=st.integers(1, 32), queue=st.integers(1, 128))
def test_prefetch_factor_covers_the_queue(workers, queue):
    kwargs = dataloader_kwargs(LoaderConfig(workers, queue, True)).kwargs
    assert kwargs["prefetch_factor"] * workers >= queue  # never fewer batches in flight
    assert (kwargs["prefetch_factor"] - 1) * workers < queue


@given(workers=st.integers(2, 32), queue=st.integers(1, 64))
def test_thread_configs_are_not_expressible_and_say_to_keep_wrap(workers, queue):
    settings = dataloader_kwargs(LoaderConfig(workers, queue, False))
    assert not settings.exact
    assert "tuner.wrap(loader)" in settings.note and settings.kwargs["num_workers"] == workers


def test_bad_config_says_what_it_needs():
    with pytest.raises(TypeError, match="LoaderConfig"):
        dataloader_kwargs({"workers": 2})


@pytest.mark.parametrize("module", [torch_config, pass_keys])
def test_docstring_examples_run(module):
    # keras_adapter modules are left out of tests/test_docs.py; these import no Keras.
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
