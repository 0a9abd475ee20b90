"""Wrapped datasets follow Keras's iterator lifecycle on every backend (issue #10).

Every test runs the same job on the plain `PyDataset` (served by Keras itself, workers=1)
and on the wrapped one, and asserts that the model saw the same batches. Run under each
`KERAS_BACKEND`: Keras's JAX and PyTorch trainers pull one batch to build the model and
then reset the iterator; TensorFlow does the same under a distribution strategy.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from lifecycle_data import IdDataset, RandomDataset, Seen, identity_model, model

import keras_loadtune as klt
from keras_loadtune import LoaderConfig

pytestmark = [pytest.mark.keras, pytest.mark.timeout(240)]

CONFIGS = {
    "threads": LoaderConfig(workers=2, max_queue_size=3),
    "processes": LoaderConfig(workers=2, max_queue_size=3, use_multiprocessing=True),
}
MODES = pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))


def _fit(data, **kwargs) -> Seen:
    seen = Seen()
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("shuffle", False)
    kwargs["callbacks"] = [seen, *kwargs.get("callbacks", [])]
    model().fit(data, **kwargs)
    return seen


@pytest.fixture
def wrap():
    made = []

    def make(dataset, config=CONFIGS["threads"]):
        wrapped = klt.TunedPyDataset(dataset, config)
        made.append(wrapped)
        return wrapped

    yield make
    for wrapped in made:
        wrapped.close()


@MODES
def test_first_epoch_of_a_fresh_model_trains_on_every_batch(wrap, config):
    plain = _fit(IdDataset(5), epochs=2).train
    assert plain == [[0, 1, 2, 3, 4]] * 2
    assert _fit(wrap(IdDataset(5), config), epochs=2).train == plain


def test_evaluate_on_a_fresh_model_sees_batch_zero(wrap):
    seen_plain, seen_wrapped = Seen(), Seen()
    model().evaluate(IdDataset(4), callbacks=[seen_plain], verbose=0)
    model().evaluate(wrap(IdDataset(4)), callbacks=[seen_wrapped], verbose=0)
    assert seen_plain.test == [[0, 1, 2, 3]]
    assert seen_wrapped.test == seen_plain.test


@MODES
def test_predict_on_an_unbuilt_model_returns_every_row(wrap, config):
    rows = identity_model().predict(wrap(IdDataset(16, batch_size=2), config), verbose=0)
    assert rows.shape == (32, 3)
    np.testing.assert_array_equal(rows[::2, 0], np.arange(16))


def test_validation_steps_restart_the_validation_pass_every_epoch(wrap):
    plain = _fit(IdDataset(3), validation_data=IdDataset(5), validation_steps=2, epochs=3)
    wrapped = _fit(
        wrap(IdDataset(3)), validation_data=wrap(IdDataset(5)), validation_steps=2, epochs=3
    )
    assert plain.test == [[0, 1]] * 3
    assert wrapped.test == plain.test
    assert wrapped.train == plain.train


@MODES
def test_one_object_as_training_and_validation_data(wrap, config):
    plain_ds = IdDataset(10)
    plain = _fit(plain_ds, steps_per_epoch=4, validation_data=plain_ds, epochs=3)
    data = wrap(IdDataset(10), config)
    wrapped = _fit(data, steps_per_epoch=4, validation_data=data, epochs=3)
    assert plain.train == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # Keras ends the pass
    assert wrapped.train == plain.train
    assert wrapped.test == plain.test == [list(range(10))] * 3


class _EvaluateMidEpoch(keras.callbacks.Callback):
    def __init__(self, data, at: int):
        super().__init__()
        self.data, self.at, self.results = data, at, []

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.at:
            self.results.append(self.model.evaluate(self.data, verbose=0))


@MODES
def test_nested_evaluate_from_a_callback_does_not_cut_the_training_epoch(wrap, config):
    data = wrap(IdDataset(10), config)
    nested = _EvaluateMidEpoch(data, at=2)
    seen = _fit(data, epochs=2, callbacks=[nested])
    assert seen.train == [list(range(10))] * 2
    assert len(nested.results) == 2


def test_persistent_iterator_continues_the_pass_like_plain_keras(wrap):
    plain = _fit(IdDataset(10), steps_per_epoch=3, epochs=4)
    wrapped = _fit(wrap(IdDataset(10)), steps_per_epoch=3, epochs=4)
    assert plain.train == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert wrapped.train == plain.train


@MODES
def test_state_changed_by_on_epoch_end_reaches_workers_in_a_resumed_pass(wrap, config):
    # on_epoch_end bumps the offset by 100 (fit's reset before training calls it once):
    # every batch delivered after the hook carries the new offset, in processes too,
    # although the pass (steps_per_epoch < len) goes on. Plain Keras does the same on
    # JAX and PyTorch; on TensorFlow its tf.data prefetch sometimes serves a batch made
    # before the hook (a race), so the rule is asserted directly.
    expected = [[100, 101, 102], [203, 204, 205], [306, 307, 308]]
    if keras.backend.backend() != "tensorflow":
        assert _fit(IdDataset(10, bump_on_epoch_end=100), steps_per_epoch=3, epochs=3).train == (
            expected
        )
    wrapped = _fit(wrap(IdDataset(10, bump_on_epoch_end=100), config), steps_per_epoch=3, epochs=3)
    assert wrapped.train == expected


def test_shuffled_epochs_cover_every_batch_once(wrap):
    seen = _fit(wrap(IdDataset(7)), epochs=3, shuffle=True)
    assert [sorted(epoch) for epoch in seen.train] == [list(range(7))] * 3


def _random_batches(config: LoaderConfig) -> list[np.ndarray]:
    keras.utils.set_random_seed(1234)
    with klt.TunedPyDataset(RandomDataset(6), config) as data:
        return list(identity_model().predict(data, verbose=0)[::2])


def test_set_random_seed_reproduces_process_worker_batches():
    one = _random_batches(LoaderConfig(workers=1, use_multiprocessing=True))
    again = _random_batches(LoaderConfig(workers=1, use_multiprocessing=True))
    more_workers = _random_batches(LoaderConfig(workers=3, use_multiprocessing=True))
    np.testing.assert_array_equal(one, again)
    np.testing.assert_array_equal(one, more_workers)
