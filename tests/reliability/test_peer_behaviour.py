"""What Keras's own PyDataset tests check (py_dataset_adapter_test.py), on wrapped datasets.

`tests/test_keras_adapter_dataset.py` covers these cases in thread mode (and epoch hooks in
process mode); here each case runs in threads *and* processes, and compares with the unwrapped
dataset under Keras's own enqueuer where Keras defines the answer. Process workers serve
`reliability.faulty` datasets (numpy only), so they start in milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_loadtune import LoaderConfig
from reliability.faulty import CorruptRecordError, Faulty

pytestmark = [
    pytest.mark.keras,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:Your input ran out of data:UserWarning"),
]

MODES = {"threads": LoaderConfig(2, 4, False), "processes": LoaderConfig(2, 4, True)}


@pytest.fixture(params=list(MODES))
def config(request):
    return MODES[request.param]


@pytest.fixture
def wrap(closing):
    import keras_loadtune as klt

    def _wrap(ds, config, **kwargs):
        from reliability.kdata import KerasView

        wrapped = klt.wrap(KerasView(ds), config, **kwargs)
        closing(wrapped)
        return wrapped

    return _wrap


def _adapter(dataset, **kwargs):
    """The data adapter Keras builds for `dataset` (ours for a wrapped one)."""
    from keras.src.trainers.data_adapters import get_data_adapter

    return get_data_adapter(dataset, **kwargs)


def _epoch(adapter) -> list:
    adapter.on_epoch_begin()
    batches = list(adapter.get_numpy_iterator())
    adapter.on_epoch_end()
    return batches


def test_basic_flow_order_with_and_without_shuffle(keras_ready, wrap, config):
    """Keras: unshuffled is index order; shuffled is a permutation, not index order."""
    n = 12
    wrapped = wrap(Faulty(n), config)
    plain = _adapter(wrapped, shuffle=False)
    for _ in range(2):
        assert [int(x[0, 0]) for x, _ in _epoch(plain)] == list(range(n))
    shuffled = _adapter(wrapped, shuffle=True)
    orders = [[int(x[0, 0]) for x, _ in _epoch(shuffled)] for _ in range(3)]
    for order in orders:
        assert sorted(order) == list(range(n))
    assert any(order != list(range(n)) for order in orders)
    assert [r.index for r in wrapped.stats][: 2 * n] == list(range(n)) * 2


def test_infinite_dataset_continues_across_epochs(keras_ready, wrap, config):
    """Keras: an infinite PyDataset keeps counting across epochs of a fit (no restart at 0);
    a new fit builds a new iterator, which starts at 0 as Keras's own adapter's does."""
    kdata = keras_ready
    wrapped = wrap(Faulty(None), config)
    kdata.tiny_model().fit(wrapped, epochs=3, steps_per_epoch=4, verbose=0, shuffle=False)
    other = LoaderConfig(1, 2, not config.use_multiprocessing)
    wrapped.reconfigure(other)
    kdata.tiny_model().fit(wrapped, epochs=2, steps_per_epoch=3, verbose=0, shuffle=False)
    streams: dict[int, list[int]] = {}
    for r in wrapped.stats:
        streams.setdefault(r.stream, []).append(r.index)
    # A model-building pull (JAX, PyTorch) reads batch 0 on a stream of its own.
    training = [s for s in streams.values() if s != [0]]
    assert training == [list(range(12)), list(range(6))]
    assert {r.config for r in wrapped.stats} == {config, other}


def test_epoch_hooks_once_per_epoch_like_keras(keras_ready, wrap, config):
    kdata = keras_ready
    epochs = 3
    reference = Faulty(4)
    kdata.tiny_model().fit(kdata.KerasView(reference), epochs=epochs, verbose=0)
    ds = Faulty(4)
    wrapped = wrap(ds, config)
    kdata.tiny_model().fit(wrapped, epochs=epochs, verbose=0)
    assert (ds.begins, ds.ends) == (reference.begins, reference.ends)
    # Keras's JAX and torch trainers add one pass of their own (the model-building pull).
    assert ds.begins == epochs + (keras_ready.keras.backend.backend() != "tensorflow")
    # y carries the epoch counter as the worker saw it: hooks' state reached the workers.
    epochs_seen = kdata.EpochMarks(wrapped)
    kdata.tiny_model().fit(wrapped, epochs=1, verbose=0, shuffle=False, callbacks=[epochs_seen])
    batches = _epoch(_adapter(wrapped, shuffle=False))
    assert {float(y[0, 0]) for _, y in batches} == {float(ds.epoch - 1)}


def test_exception_reported_after_the_good_batches(keras_ready, wrap, config):
    """Keras: two good batches, then the error with its message and its own type.

    A NumPy/JAX/torch iterator raises it at the failing batch, as Keras's own adapter
    does; a tf.data consumer's stream ends there and `on_epoch_end` raises it instead
    (`tests/test_keras_peer.py`), so it reaches `fit` as itself, not as a TensorFlow
    error; `test_worker_faults` checks it via `fit`.
    """
    wrapped = wrap(Faulty(4, 2, "raise"), config)
    adapter = _adapter(wrapped, shuffle=False)
    adapter.on_epoch_begin()
    good = []
    with pytest.raises(CorruptRecordError, match="corrupt record 2"):
        for x, _ in adapter.get_numpy_iterator():
            good.append(int(x[0, 0]))
    assert good == [0, 1]
    adapter.on_epoch_end()  # nothing left to raise


def test_dict_batches_with_varying_batch_size(keras_ready, wrap, config):
    kdata = keras_ready
    wrapped = wrap(Faulty(6, rows=None, as_dict=True), config)
    model = kdata.tiny_model(dict_input=True)
    model.fit(wrapped, epochs=1, verbose=0, shuffle=False)
    batches = _epoch(_adapter(wrapped, shuffle=False))
    assert [x["features"].shape for x, _ in batches] == [(1 + i % 3, 4) for i in range(6)]
    assert [int(x["features"][0, 0]) for x, _ in batches] == list(range(6))


def test_batches_of_different_shapes(keras_ready, wrap, config):
    """Keras's `test_with_different_shapes`: feature width and rows change per batch."""
    wrapped = wrap(Faulty(3, rows=None, width=None), config)
    theirs = _epoch(_adapter(keras_ready.KerasView(Faulty(3, rows=None, width=None))))
    ours = _epoch(_adapter(wrapped, shuffle=False))
    assert [x.shape for x, _ in ours] == [x.shape for x, _ in theirs] == [(1, 4), (2, 5), (3, 6)]
    for (a, b), (c, d) in zip(ours, theirs):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_class_weight_trains_like_the_unwrapped_dataset(keras_ready, wrap, config):
    kdata = keras_ready
    weights = {0: 0.5, 1: 4.0}
    reference = kdata.tiny_model()
    initial = reference.get_weights()
    theirs = reference.fit(
        kdata.KerasView(Faulty(6, labels=True)),
        epochs=2,
        shuffle=False,
        class_weight=weights,
        verbose=0,
    ).history["loss"]
    model = kdata.tiny_model()
    model.set_weights(initial)
    ours = model.fit(
        wrap(Faulty(6, labels=True), config),
        epochs=2,
        shuffle=False,
        class_weight=weights,
        verbose=0,
    ).history["loss"]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    adapter = _adapter(wrap(Faulty(2, labels=True), config), shuffle=False, class_weight=weights)
    for _, y, sw in _epoch(adapter):
        np.testing.assert_allclose(sw, np.where(y[:, 0] > 0.5, 4.0, 0.5))
