"""Keras's own expectations of a `PyDataset`, checked on wrapped datasets, on any backend.

Keras 3.15.1 tests its PyDataset support in `py_dataset_adapter_test.py`,
`epoch_iterator_test.py` and the data cases of `trainer_test.py`. Every behaviour those
check is checked here again (our own tests, not copies) on `klt.TunedPyDataset(ds)` and
on `LoadTuner().wrap(ds)` (the tuner is also a `fit` callback, so it may reconfigure the
loader mid-run), with thread and process workers, shuffled or not, finite or endless.
Where plain Keras defines the answer, the same call on the plain `PyDataset` is run as the
reference: same batches, same counts, same order when not shuffled. The adapter tests'
reference has the same workers, as threads (Keras's own suite does not run plain
multiprocessing on TensorFlow or JAX). The trainer tests' reference is Keras's default
single worker: with several workers, plain Keras restarts a `steps_per_epoch` pass at
every epoch end (its enqueuer is stopped in `on_epoch_end`), which contradicts the step
schedule its own `trainer_test.py` expects; the single worker follows it.

Timing is not tested here (Keras's `test_speedup`): the parallelism it stands for is
checked by counting concurrent `__getitem__` calls; speed claims live in `benchmarks/`.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import keras_datasets as kd  # noqa: E402
from keras.src.trainers import data_adapters, epoch_iterator  # noqa: E402
from keras_models import RecordingModel, StepObserver  # noqa: E402
from tuners import make_tuner  # noqa: E402

import keras_loadtune as klt  # noqa: E402

BACKEND = keras.backend.backend()

pytestmark = [
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:Your input ran out of data:UserWarning"),
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning"),
]

# The dataset's own knobs; a wrapped dataset starts from them.
CONFIGS = {
    "1-thread": {"workers": 1},
    "2-threads": {"workers": 2, "max_queue_size": 4},
    "2-processes": {"workers": 2, "max_queue_size": 4, "use_multiprocessing": True},
}
WRAPPERS = ("TunedPyDataset", "LoadTuner.wrap")
NO_STEPS_PER_EXECUTION = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras has no steps_per_execution > 1 on torch"
)


def _plain_knobs(knobs: dict) -> dict:
    """The adapter reference's knobs: same workers and queue, threads (module docstring)."""
    return {k: v for k, v in knobs.items() if k != "use_multiprocessing"}


def _keras_schedule(num_batches: int, steps_per_epoch: int, epochs: int) -> list[list[int]]:
    """Batch indices per epoch as Keras's EpochIterator schedules a finite dataset.

    One iterator persists across epochs; an epoch ends after `steps_per_epoch` steps or
    when the pass is used up (then the next epoch starts a new pass at index 0).
    """
    cursor, schedule = 0, []
    for _ in range(epochs):
        epoch = []
        while len(epoch) < steps_per_epoch and cursor < num_batches:
            epoch.append(cursor)
            cursor += 1
        if cursor >= num_batches:
            cursor = 0
        schedule.append(epoch)
    return schedule


@pytest.fixture(params=list(CONFIGS))
def knobs(request) -> dict:
    return CONFIGS[request.param]


class Wrapper:
    """Wraps datasets one of the two public ways and closes them after the test."""

    def __init__(self, how: str):
        self.how = how
        self.tuner = None
        self.made: list[klt.TunedPyDataset] = []
        if how == "LoadTuner.wrap":
            self.tuner = make_tuner(fast=False, modes=("thread",))

    def __call__(self, dataset) -> klt.TunedPyDataset:
        wrapped = klt.TunedPyDataset(dataset) if self.tuner is None else self.tuner.wrap(dataset)
        self.made.append(wrapped)
        return wrapped

    @property
    def callbacks(self) -> list:
        """`[tuner]` for tuner-wrapped data (it tunes while `fit` runs), else nothing."""
        return [] if self.tuner is None else [self.tuner]

    def close(self) -> None:
        for wrapped in self.made:
            wrapped.close()


@pytest.fixture(params=WRAPPERS)
def wrap(request):
    wrapper = Wrapper(request.param)
    yield wrapper
    wrapper.close()


def _model(units: int = 2) -> RecordingModel:
    keras.utils.set_random_seed(1)  # same initial weights for the plain and wrapped runs
    model = RecordingModel(units)
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    return model


# -- the data adapter (py_dataset_adapter_test) ------------------------------------------------
def _native(adapter):
    """The backend's own iterator over an adapter, and the tensor class it yields."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return adapter.get_tf_dataset(), tf.Tensor
    if BACKEND == "jax":  # Keras's JAX iterator passes NumPy batches through as NumPy
        return adapter.get_jax_iterator(), np.ndarray
    if BACKEND == "torch":
        import torch

        return adapter.get_torch_dataloader(), torch.Tensor
    return adapter.get_numpy_iterator(), np.ndarray


def _adapter(dataset, shuffle: bool = False, **kwargs):
    return data_adapters.get_data_adapter(dataset, shuffle=shuffle, **kwargs)


def _adapter_batches(dataset, shuffle: bool, limit: int | None = None) -> list[tuple]:
    """(x, y) NumPy batches from the backend iterator, checking Keras's batch contract."""
    iterator, tensor_class = _native(_adapter(dataset, shuffle))
    batches = []
    for batch in iterator:
        assert len(batch) == 2
        bx, by = batch
        assert isinstance(bx, tensor_class) and isinstance(by, tensor_class)
        assert "float32" in str(bx.dtype) and "float32" in str(by.dtype)
        assert tuple(bx.shape) == (16, kd.FEATURES) and tuple(by.shape) == (16, 2)
        batches.append((np.asarray(bx), np.asarray(by)))
        if limit is not None and len(batches) >= limit:
            break
    return batches


def _first(batch) -> int:
    """The first value of a batch's first array (a bare array, `(x,)` or `(x, y)`)."""
    return int(np.asarray(keras.tree.flatten(batch)[0]).flat[0])


def _samples(batches) -> list[int]:
    return [int(v) for _, y in batches for v in y[:, 0]]


@pytest.mark.parametrize("infinite", [False, True], ids=["finite", "infinite"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_adapter_yields_backend_tensors_in_keras_order(wrap, knobs, shuffle, infinite):
    make = lambda **k: kd.SamplePyDataset(128, 16, infinite=infinite, **k)  # noqa: E731
    limit = 16 if infinite else None  # two turns through the 128 samples (8 batches)
    ours = _adapter_batches(wrap(make(**knobs)), shuffle, limit)
    theirs = _adapter_batches(make(**_plain_knobs(knobs)), shuffle, limit)
    seen, reference = _samples(ours), _samples(theirs)
    if shuffle and not infinite:  # Keras shuffles the batch order of a finite dataset
        assert sorted(seen) == sorted(reference) == list(range(128))
        assert seen != list(range(128)), "shuffle=True ignored"
        for _, y in ours:  # whole batches move: each one still holds 16 consecutive samples
            assert list(y[:, 0]) == list(range(int(y[0, 0]), int(y[0, 0]) + 16))
    else:  # ordered, and endless data is never shuffled
        assert seen == reference == list(range(128)) * (2 if infinite else 1)
    inputs = {int(y[0, 0]): x for x, y in theirs}  # the inputs travel with their samples
    for x, y in ours:
        np.testing.assert_array_equal(x, inputs[int(y[0, 0])])


def test_class_weight_becomes_a_third_element_per_sample(wrap, knobs):
    weights = {0: 2.0, 1: 1.0, 2: 3.0}
    ours = list(_native(_adapter(wrap(kd.LabelPyDataset(**knobs)), class_weight=weights))[0])
    theirs = list(_native(_adapter(kd.LabelPyDataset(), class_weight=weights))[0])
    assert len(ours) == len(theirs) == 2
    for batch, reference in zip(ours, theirs):
        assert len(batch) == 3
        x, y, w = (keras.ops.convert_to_numpy(t) for t in batch)
        np.testing.assert_array_equal(w, [weights[int(label)] for label in y])
        for got, want in zip((x, y, w), reference):
            np.testing.assert_array_equal(got, keras.ops.convert_to_numpy(want))


@pytest.mark.parametrize("workers", [1, 4])
def test_thread_workers_load_batches_concurrently_like_keras(wrap, workers):
    peaks = []
    for dataset in (kd.SamplePyDataset(40, 4, delay=0.02, workers=workers, max_queue_size=8),) * 2:
        dataset.peak_concurrency = 0
        source = wrap(dataset) if not peaks else dataset  # ours first, then Keras's own
        for _ in _adapter(source).get_numpy_iterator():
            pass
        peaks.append(dataset.peak_concurrency)
    ours, theirs = peaks
    if workers == 1:
        assert ours == theirs == 1
    else:
        assert ours >= 2 and theirs >= 2, peaks


def test_dict_batches_keep_their_keys(wrap, knobs):
    dataset = kd.SamplePyDataset(40, 4, dict_batches=True, **knobs)
    reference = kd.SamplePyDataset(40, 4, dict_batches=True, **_plain_knobs(knobs))
    wrapped = wrap(dataset)
    for iterator, tensor_class in (
        (_adapter(wrapped).get_numpy_iterator(), np.ndarray),
        _native(_adapter(wrapped)),
    ):
        rows = []
        for batch in iterator:
            assert set(batch) == {"x", "y"}
            assert isinstance(batch["x"], tensor_class) and isinstance(batch["y"], tensor_class)
            assert tuple(batch["x"].shape) == (4, kd.FEATURES) and tuple(batch["y"].shape) == (4, 2)
            rows.extend(int(v) for v in np.asarray(batch["y"])[:, 0])
        theirs = [int(v) for b in _adapter(reference).get_numpy_iterator() for v in b["y"][:, 0]]
        assert rows == theirs == list(range(40))


def test_batches_of_different_shapes_pass_through(wrap, knobs):
    iterator, _ = _native(_adapter(wrap(kd.ShapeShiftingPyDataset(**knobs))))
    shapes = [(tuple(x.shape), tuple(y.shape)) for x, y in iterator]
    assert shapes == list(kd.ShapeShiftingPyDataset.SHAPES)


def _error_after_two(dataset) -> BaseException:
    iterator = iter(_native(_adapter(dataset))[0])
    next(iterator)
    next(iterator)
    with pytest.raises(Exception) as info:  # compared with Keras's own below
        next(iterator)
    return info.value


def test_getitem_error_reaches_the_iterator_as_in_keras(wrap, knobs):
    if keras.backend.backend() == "tensorflow":
        # tf.data would wrap the error in its own type (InvalidArgumentError, as for a
        # plain PyDataset); the wrapped stream ends at the failed batch instead and the
        # adapter's on_epoch_end, which Keras calls right then, raises the original.
        adapter = _adapter(wrap(kd.RaisingPyDataset(**knobs)))
        iterator = iter(_native(adapter)[0])
        next(iterator)
        next(iterator)
        with pytest.raises(StopIteration):
            next(iterator)
        with pytest.raises(ValueError, match="Expected exception"):
            adapter.on_epoch_end()
        return
    ours = _error_after_two(wrap(kd.RaisingPyDataset(**knobs)))
    theirs = _error_after_two(kd.RaisingPyDataset(**_plain_knobs(knobs)))
    assert type(ours) is type(theirs), (type(ours), type(theirs))
    assert "Expected exception" in str(ours)


def test_iterating_the_wrapped_dataset_directly(wrap):
    finite = wrap(kd.SamplePyDataset(48, 16))
    assert len(list(finite)) == 3 == len(list(kd.SamplePyDataset(48, 16)))
    endless = wrap(kd.SamplePyDataset(48, 16, infinite=True))
    firsts = []
    for index, (_, y) in enumerate(endless):
        firsts.append(int(y[0, 0]))
        if index >= 9:
            break
    assert firsts == [0, 16, 32] * 3 + [0]


# -- the epoch iterator (epoch_iterator_test) --------------------------------------------------
def _steps(iterator) -> tuple[list[int], list[int]]:
    """Begin steps and first sample of each batch, for one pass over an EpochIterator."""
    steps, firsts = [], []
    for begin, end, batch in iterator:
        assert begin == end
        steps.append(begin)
        firsts.append(int(np.asarray(batch[0][1])[0, 0]))
    return steps, firsts


def test_epoch_iterator_enumerates_every_step(wrap, knobs):
    ours = epoch_iterator.EpochIterator(x=wrap(kd.SamplePyDataset(100, 16, **knobs)))
    theirs = epoch_iterator.EpochIterator(x=kd.SamplePyDataset(100, 16, **_plain_knobs(knobs)))
    assert _steps(ours) == _steps(theirs) == (list(range(7)), list(range(0, 100, 16)))
    assert _steps(ours.enumerate_epoch()) == _steps(theirs.enumerate_epoch())


def test_epoch_iterator_stops_when_data_runs_out_and_warns(wrap, knobs):
    def steps(dataset):
        iterator = epoch_iterator.EpochIterator(x=dataset, steps_per_epoch=6)
        with pytest.warns(UserWarning, match="ran out of data"):
            return _steps(iterator)

    ours = steps(wrap(kd.SamplePyDataset(64, 16, **knobs)))
    assert ours == steps(kd.SamplePyDataset(64, 16, **_plain_knobs(knobs)))
    assert ours[0] == [0, 1, 2, 3]


@pytest.mark.parametrize("infinite", [False, True], ids=["finite", "infinite"])
def test_epoch_hooks_through_the_epoch_iterator_match_keras(wrap, knobs, infinite):
    def run(dataset, source):
        iterator = epoch_iterator.EpochIterator(x=source, steps_per_epoch=10)
        firsts = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the finite dataset runs out, as in Keras's test
            for _ in range(5):
                firsts.append([_first(b[0]) for _, _, b in iterator])
        return dataset.tracker, firsts

    dataset = kd.HookTrackingPyDataset(infinite, **knobs)
    ours = run(dataset, wrap(dataset))
    plain = kd.HookTrackingPyDataset(infinite, **_plain_knobs(knobs))
    theirs = run(plain, plain)
    assert ours == theirs
    assert theirs[0] == [1, 2] * 5


# -- the trainer (trainer_test) ----------------------------------------------------------------
def _fit(model, data, wrapper=None, **kwargs) -> StepObserver:
    observer = StepObserver()
    callbacks = [observer, *(wrapper.callbacks if wrapper else [])]
    model.fit(data, verbose=0, callbacks=callbacks, **kwargs)
    return observer


def _weights(model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


@pytest.mark.parametrize(
    ("variant", "fit_kwargs"),
    [
        ("finite", {"epochs": 3, "shuffle": False}),
        ("finite", {"epochs": 3, "shuffle": False, "class_weight": {0: 1.0, 1: 2.0}}),
        ("infinite", {"epochs": 3, "steps_per_epoch": 7}),
        ("finite", {"epochs": 3, "shuffle": True}),
    ],
    ids=["ordered", "class-weight", "infinite", "shuffled"],
)
def test_fit_trains_on_what_keras_would(wrap, knobs, variant, fit_kwargs):
    make = lambda **k: kd.SamplePyDataset(40, 8, infinite=variant == "infinite", **k)  # noqa: E731
    ours, theirs = _model(), _model()
    observed = _fit(ours, wrap(make(**knobs)), wrap, **fit_kwargs)
    reference = _fit(theirs, make(), **fit_kwargs)
    assert observed.counts == reference.counts
    seen, expected = ours.samples("train"), theirs.samples("train")
    if fit_kwargs.get("shuffle"):
        per_epoch = [sorted(seen[i : i + 40]) for i in range(0, len(seen), 40)]
        assert per_epoch == [list(range(40))] * 3
    else:
        assert seen == expected
        for got, want in zip(_weights(ours), _weights(theirs)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "steps_per_epoch",
    [10, 5, 9, 11],
    ids=["one-epoch", "two-per-pass", "too-low", "more-than-data"],
)
def test_steps_per_epoch_counts_and_batches_match_keras(wrap, knobs, steps_per_epoch):
    ours, theirs = _model(1), _model(1)
    kwargs = {"epochs": 4, "steps_per_epoch": steps_per_epoch, "shuffle": False}
    observed = _fit(ours, wrap(kd.IndexPyDataset(10, **knobs)), wrap, **kwargs)
    reference = _fit(theirs, kd.IndexPyDataset(10), **kwargs)
    assert observed.counts == reference.counts
    schedule = _keras_schedule(10, steps_per_epoch, 4)
    assert ours.indices("train") == theirs.indices("train") == [i for e in schedule for i in e]
    assert observed.counts["train_batch_end"] == sum(map(len, schedule))


@NO_STEPS_PER_EXECUTION
@pytest.mark.parametrize("steps_per_epoch", [None, 4], ids=["full", "steps_per_epoch"])
def test_steps_per_execution_matches_keras(wrap, steps_per_epoch):
    def run(source, wrapper=None):
        model = _model(1)
        model.compile(optimizer="sgd", loss="mse", run_eagerly=True, steps_per_execution=3)
        kwargs = {"epochs": 2, "steps_per_epoch": steps_per_epoch, "shuffle": False}
        observer = _fit(model, source, wrapper, **kwargs)
        return observer.counts, model.indices("train")

    ours = run(wrap(kd.IndexPyDataset(10, workers=2)), wrap)
    assert ours == run(kd.IndexPyDataset(10))


def test_max_epochs_and_max_steps_per_epoch_apply_to_wrapped_data(wrap):
    ours, theirs = _model(1), _model(1)
    try:
        keras.config.set_max_epochs(2)
        keras.config.set_max_steps_per_epoch(3)
        observed = _fit(ours, wrap(kd.IndexPyDataset(10)), wrap, epochs=4, shuffle=False)
        reference = _fit(theirs, kd.IndexPyDataset(10), epochs=4, shuffle=False)
    finally:
        keras.config.set_max_epochs(None)
        keras.config.set_max_steps_per_epoch(None)
    assert observed.counts == reference.counts
    assert (observed.counts["epoch_begin"], observed.counts["train_batch_begin"]) == (2, 6)
    assert ours.indices("train") == theirs.indices("train")


@pytest.mark.parametrize(
    "steps_per_execution",
    [1, pytest.param(4, marks=NO_STEPS_PER_EXECUTION)],
)
def test_predict_keeps_the_order_of_uneven_batches(wrap, knobs, steps_per_execution):
    def predict(source):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Identity()])
        model.compile(loss="mse", steps_per_execution=steps_per_execution)
        return model.predict(source, verbose=0)

    ours = predict(wrap(kd.UnevenPyDataset(100, **knobs)))
    np.testing.assert_array_equal(ours, predict(kd.UnevenPyDataset(100)))
    np.testing.assert_array_equal(ours[:, 0], np.arange(100, dtype="float32"))


def test_validation_steps_restart_the_validation_data_every_epoch(wrap):
    ours, theirs = _model(1), _model(1)
    kwargs = {"epochs": 3, "validation_steps": 2, "shuffle": False}
    observed = _fit(
        ours, wrap(kd.IndexPyDataset(4)), wrap, validation_data=wrap(kd.IndexPyDataset(5)), **kwargs
    )
    reference = _fit(theirs, kd.IndexPyDataset(4), validation_data=kd.IndexPyDataset(5), **kwargs)
    assert observed.counts == reference.counts
    assert ours.indices("test") == theirs.indices("test") == [0, 1] * 3


def test_endless_validation_data_runs_validation_steps(wrap):
    model = _model(1)
    observer = _fit(
        model,
        wrap(kd.InfinitePyDataset()),
        wrap,
        validation_data=wrap(kd.InfinitePyDataset()),
        steps_per_epoch=3,
        validation_steps=4,
        epochs=1,
        shuffle=False,
    )
    assert (observer.counts["train_batch_end"], observer.counts["test_batch_end"]) == (3, 4)


@pytest.mark.parametrize(
    ("method", "flag", "hook"),
    [
        ("fit", "stop_training", "on_train_batch_end"),
        ("evaluate", "stop_evaluating", "on_test_batch_end"),
        ("predict", "stop_predicting", "on_predict_batch_end"),
    ],
)
def test_stop_flags_end_an_endless_loop(wrap, knobs, method, flag, hook):
    class Stopper(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.count = 0
            setattr(self, hook, self._batch_end)

        def _batch_end(self, batch, logs=None):
            self.count += 1
            if self.count == 5:
                setattr(self.model, flag, True)

    model = _model(1)
    wrapped = wrap(kd.InfinitePyDataset(**knobs))
    for _ in range(2):  # and the same wrapped dataset serves the next call
        stopper = Stopper()
        getattr(model, method)(wrapped, callbacks=[stopper], verbose=0)
        assert stopper.count == 5


def test_an_unbuilt_model_gets_every_batch(wrap, knobs):
    """JAX and torch pull a batch to build the model, then reset the iterator."""
    runs = {}
    for name, make in (
        ("ours", lambda: wrap(kd.IndexPyDataset(5, **knobs))),
        ("theirs", lambda: kd.IndexPyDataset(5)),
    ):
        fit_model, eval_model, predict_model = _model(1), _model(1), _model(1)
        fit_model.fit(make(), epochs=2, shuffle=False, verbose=0)
        eval_model.evaluate(make(), verbose=0)
        rows = predict_model.predict(make(), verbose=0).shape[0]
        runs[name] = (fit_model.indices("train"), eval_model.indices("test"), rows)
    assert runs["ours"] == runs["theirs"] == ([*range(5)] * 2, [*range(5)], 10)


def test_no_validation_iterator_is_left_on_the_model_after_fit(wrap):
    model = _model(1)
    _fit(model, wrap(kd.IndexPyDataset(4)), wrap, validation_data=wrap(kd.IndexPyDataset(3)))
    assert getattr(model, "_eval_epoch_iterator", None) is None


# -- several consumers of one wrapped object (a plain PyDataset serves any number) -------------
def test_one_wrapped_dataset_for_training_and_validation(wrap, knobs):
    ours, theirs = _model(1), _model(1)
    kwargs = {"epochs": 2, "steps_per_epoch": 4, "shuffle": False}
    data = wrap(kd.IndexPyDataset(10, **knobs))
    observed = _fit(ours, data, wrap, validation_data=data, **kwargs)
    plain = kd.IndexPyDataset(10)
    reference = _fit(theirs, plain, validation_data=plain, **kwargs)
    assert observed.counts == reference.counts
    assert ours.indices("train") == theirs.indices("train")
    assert ours.indices("test") == theirs.indices("test")


def test_evaluate_from_a_callback_mid_epoch_leaves_training_whole(wrap):
    def run(model, data, wrapper=None):
        class EvaluateMidEpoch(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == 3:
                    model.evaluate(data, verbose=0)

        observer = StepObserver()
        callbacks = [observer, EvaluateMidEpoch(), *(wrapper.callbacks if wrapper else [])]
        try:
            model.fit(data, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
        except Exception as exc:  # Keras's JAX trainer cannot evaluate inside fit
            return type(exc)
        return observer.counts

    ours, theirs = _model(1), _model(1)
    reference = run(theirs, kd.IndexPyDataset(10))
    assert run(ours, wrap(kd.IndexPyDataset(10)), wrap) == reference
    if isinstance(reference, dict):
        assert ours.indices("train") == theirs.indices("train") == list(range(10)) * 2
        assert ours.indices("test") == theirs.indices("test")
