"""`wrap` starts the forkserver at once when the user's own config already uses processes."""

import pytest

pytestmark = pytest.mark.keras


@pytest.mark.parametrize("processes", [True, False])
def test_wrap_prewarms_only_for_a_process_config(monkeypatch, processes):
    from keras_datasets import IndexPyDataset

    from keras_loadtune.keras_adapter import dataset as dataset_module

    calls = []
    monkeypatch.setattr(dataset_module, "_prewarm", lambda source: calls.append(source) or True)
    ds = IndexPyDataset(4, workers=2, use_multiprocessing=processes)
    with dataset_module.wrap(ds):
        pass
    assert calls == ([ds] if processes else [])
