"""How Keras is made to drive our engine.

Keras 3 decides the epoch's shuffle order inside `PyDatasetAdapter` and builds the
iterator that feeds training from `PyDatasetAdapter._get_iterator()`. For a
`TunedPyDataset` (and only for it) we let Keras build *our* adapter:

- `keras.src.trainers.data_adapters.get_data_adapter` is wrapped once: a
  `TunedPyDataset` gets a `TunedPyDatasetAdapter`; everything else goes to Keras
  untouched.
- `TunedPyDatasetAdapter` is Keras's `PyDatasetAdapter` (batch standardisation,
  `class_weight`, tf.data/NumPy/JAX/torch iterators, tensor-spec peeking) whose
  enqueuer opens a new engine *stream* for every iterator Keras creates.

Streams follow Keras's iterator lifecycle on every backend, because Keras itself
decides when an iterator is new: a model-building pull followed by `reset()` (JAX,
PyTorch, `tf.distribute`), a new epoch without `steps_per_epoch`, a new `evaluate`
or `predict` each get a new iterator and so a new pass; a persistent iterator under
`steps_per_epoch` keeps its pass across epochs, exactly as with a plain `PyDataset`
served by `workers=1`. Every consumer (training, validation, a nested `evaluate`
from a callback) reads its own stream of one shared worker pool.

`tests/test_keras_internals.py` fails loudly if the Keras internals this relies on
move. Supported: Keras 3.6 to 3.15 (tested on 3.15.1).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import threading
import warnings
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from keras.src.trainers import data_adapters as _data_adapters
from keras.src.trainers.data_adapters import py_dataset_adapter as _py_dataset_adapter

from keras_loadtune.engine import EndOfPass, Stream
from keras_loadtune.engine.sources import GeneratorFactorySource
from keras_loadtune.keras_adapter.input_facts import served_facts

_install_lock = threading.Lock()
_RAN_OUT = r"Your input ran out of data"
_consumer_ids = itertools.count(1)


def _is_ran_out_filter(entry: tuple) -> bool:
    message = entry[1]
    return message is not None and getattr(message, "pattern", None) == _RAN_OUT


class TunedPyDataset(Protocol):
    """What the adapter needs from a wrapped dataset (`dataset.TunedPyDataset` provides it).

    A Protocol, not an import of `dataset.py`, which imports this module to install
    the routing: so the adapter layer has no import circle.

    Example:

    ```python
    ds: TunedPyDataset = klt.wrap(my_dataset)
    stream = ds._open_stream(range(ds.num_batches), start=0, seed=1, consumer=1)
    ```
    """

    @property
    def num_batches(self) -> int | None:
        """Batches per epoch (None: infinite)."""
        ...

    def _open_stream(
        self, order: Sequence[int] | None, *, start: int, seed: int | None, consumer: int
    ) -> Stream:
        """A new engine stream over `order`."""
        ...

    def _streams_opened(self) -> int:
        """Streams opened so far (a seed counter)."""
        ...

    @property
    def config(self) -> Any:
        """The active `LoaderConfig`."""
        ...

    def _starts_passes_early(self, *, shuffled: bool) -> bool:
        """Whether a consumer's next pass starts while its current one drains."""
        ...

    def _open_next_pass(self, consumer: int, order: Sequence[int], seed: int | None) -> None:
        """Starts `consumer`'s next pass over `order` now (if one is due)."""
        ...

    def release_workers(self, timeout: float = 5.0) -> None:
        """Stops idle workers."""
        ...

    def on_epoch_begin(self) -> None:
        """The wrapped dataset's epoch hook."""
        ...

    def on_epoch_end(self) -> None:
        """The wrapped dataset's epoch hook."""
        ...


def trainer_seed(counter: int) -> int:
    """A seed derived from the trainer's Python and NumPy RNG state, without consuming it.

    After `keras.utils.set_random_seed(s)` the same sequence of Keras calls gives the
    same seeds run to run; `counter` (streams opened so far) keeps consecutive epochs of
    an unshuffled dataset from repeating the same augmentation.
    """
    digest = hashlib.blake2b(digest_size=8)
    digest.update(repr(random.getstate()).encode())
    digest.update(np.random.get_state()[1].tobytes())
    digest.update(counter.to_bytes(8, "little"))
    return int.from_bytes(digest.digest(), "little") >> 1


class StreamEnqueuer:
    """Keras's enqueuer protocol (`start`, `get`, `stop`, `is_running`) over engine streams.

    Keras's `PyDatasetAdapter` builds each iterator it hands to a trainer from
    `enqueuer.get()` (its `_finite_enqueuer_generator` / `_infinite_enqueuer_generator`
    standardise the batches, so a bad batch fails inside Keras's own code, as with a
    plain `PyDataset`). Every `get()` opens a new stream: one iterator, one pass. With an
    enqueuer set, Keras's `get_tf_dataset` also skips its own `tf.data` prefetch, which
    would pull batches before the step asks for them, hide the wait from the engine's
    measurement, and serve batches made before an epoch hook ran.
    """

    def __init__(self, adapter: TunedPyDatasetAdapter):
        self._adapter = adapter

    def start(self) -> None:
        pass  # streams start on the first get()

    def stop(self, drain_queue_and_join: bool = True) -> None:
        del drain_queue_and_join  # a stream ends when its iterator is dropped

    def is_running(self) -> bool:
        return True

    def get(self):
        return self._adapter._stream_batches()


class TunedPyDatasetAdapter(_py_dataset_adapter.PyDatasetAdapter):
    """Keras's `PyDatasetAdapter`, fed by streams of our restartable `Prefetcher`.

    One instance per Keras `EpochIterator` (one `fit`'s training data, its validation
    data, one `evaluate` or `predict` call). `consumer_id` tags the engine records of
    every stream it opens, so the tuner measures only the training consumer.

    A worker's exception is raised at its batch, original type and message, as with a
    plain `PyDataset`. For a `tf.data` consumer (the TensorFlow backend) it ends the
    stream instead and is re-raised by `on_epoch_end`, which Keras calls right after it
    sees the stream end: raised inside the generator it would reach the user as a
    TensorFlow `InvalidArgumentError`, as it does with a plain `PyDataset`.
    """

    def __init__(self, x: TunedPyDataset, class_weight: Any = None, shuffle: bool = False):
        # Not calling super().__init__: it would build Keras's own OrderedEnqueuer.
        self.py_dataset = x
        self.class_weight = class_weight
        self.shuffle = shuffle
        self.enqueuer = StreamEnqueuer(self)
        self._output_signature = None
        self._within_epoch = False
        self._error: BaseException | None = None
        self._fed_to_tf_data = False
        self.consumer_id = next(_consumer_ids)
        self.streams_opened = 0
        self._facts = served_facts(x)  # a DataLoader's or Grain dataset's batch facts
        _remember(self)

    # Keras's own adapters answer these for a DataLoader or Grain dataset; so do we.
    @property
    def batch_size(self) -> int | None:
        return self._facts.batch_size

    @property
    def has_partial_batch(self) -> bool | None:
        return self._facts.has_partial_batch

    @property
    def partial_batch_size(self) -> int | None:
        return self._facts.partial_batch_size

    def _stream_batches(self):
        """A new pass (engine stream) for every iterator Keras builds; raw batches."""
        ds = self.py_dataset
        order = self._order()
        # An infinite dataset's new iterator starts at index 0, as Keras's own does.
        stream = ds._open_stream(
            order, start=0, seed=trainer_seed(ds._streams_opened()), consumer=self.consumer_id
        )
        self.streams_opened += 1
        failed = False
        # A source whose every pass is the same starts the next one once this pass's last
        # positions are submitted (`TunedPyDataset.plan_passes`): its workers would idle.
        early = order is not None and ds._starts_passes_early(shuffled=self.shuffle)
        try:
            while True:
                try:
                    batch = stream.next()
                except EndOfPass:
                    return
                except Exception as exc:
                    failed = True
                    if not self._fed_to_tf_data:
                        raise  # NumPy/JAX/torch iterators: at that batch, as Keras's own
                    self._fail(exc)
                    return
                if early and stream.delivered + ds.config.max_queue_size >= len(order):
                    early = False
                    seed = trainer_seed(ds._streams_opened())
                    ds._open_next_pass(self.consumer_id, order, seed)
                yield batch
        finally:
            stream.close()
            if failed:  # nothing is left running after a failed pass
                ds.release_workers(timeout=1.0)

    def get_tf_dataset(self):
        # tf.data would turn an exception raised in the generator into its own error
        # type; for this consumer a failure ends the stream and on_epoch_end re-raises it.
        self._fed_to_tf_data = True
        return super().get_tf_dataset()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        # Keras will call this "input ran out of data" before on_epoch_end re-raises
        # the real error; that warning would only mislead.
        warnings.filterwarnings("ignore", message=_RAN_OUT, category=UserWarning)

    def _order(self):
        n = self.py_dataset.num_batches
        if n is None:
            return None
        if self.shuffle:
            order = list(range(n))
            random.shuffle(order)  # the same RNG Keras's own adapter uses
            return order
        return range(n)

    def on_epoch_begin(self) -> None:
        if self._within_epoch:
            raise ValueError(
                "`on_epoch_begin` was called twice without `on_epoch_end` having been called."
            )
        self._within_epoch = True
        self.py_dataset.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self._within_epoch = False
        if self._error is not None:
            error, self._error = self._error, None
            warnings.filters[:] = [f for f in warnings.filters if not _is_ran_out_filter(f)]
            raise error
        self.py_dataset.on_epoch_end()


_recent_adapters: list[weakref.ref] = []
_recent_lock = threading.Lock()


def _remember(adapter: TunedPyDatasetAdapter) -> None:
    with _recent_lock:
        _recent_adapters[:] = [r for r in _recent_adapters if r() is not None][-63:]
        _recent_adapters.append(weakref.ref(adapter))


def live_adapters() -> list[TunedPyDatasetAdapter]:
    """The adapters Keras built for wrapped datasets that are still alive, oldest first.

    `LoadTuner` finds the training consumer among them: the one whose stream serves the
    first training step. (Reading `fit`'s frame instead would keep its locals, tf.data
    iterators included, alive until interpreter exit, where TensorFlow then fails to
    finalise them.)
    """
    with _recent_lock:
        adapters = [r() for r in _recent_adapters]
    return [a for a in adapters if a is not None]


def install(dataset_cls: type) -> None:
    """Routes instances of `dataset_cls` to `TunedPyDatasetAdapter`. Idempotent."""
    with _install_lock:
        original = _data_adapters.get_data_adapter
        if getattr(original, "_keras_loadtune", False):
            return

        @functools.wraps(original)
        def get_data_adapter(x, *args, **kwargs):
            if isinstance(x, dataset_cls):
                return _tuned_adapter(x, *args, **kwargs)
            return original(x, *args, **kwargs)

        get_data_adapter._keras_loadtune = True  # type: ignore[attr-defined]
        get_data_adapter._keras_loadtune_original = original  # type: ignore[attr-defined]
        _data_adapters.get_data_adapter = get_data_adapter


def _tuned_adapter(
    x: TunedPyDataset,
    y: Any = None,
    sample_weight: Any = None,
    batch_size: Any = None,
    steps_per_epoch: Any = None,
    shuffle: bool = False,
    class_weight: Any = None,
    **kwargs: Any,
) -> TunedPyDatasetAdapter:
    """Mirrors Keras's checks for PyDataset inputs, then builds our adapter."""
    del batch_size, steps_per_epoch, kwargs
    for name, value, what in (
        ("y", y, "the targets"),
        ("sample_weight", sample_weight, "the sample weights"),
    ):
        if value is not None:
            raise ValueError(
                f"When providing `x` as a PyDataset, `{name}` should not be passed. "
                f"Instead, {what} should be included as part of the PyDataset. Received: "
                f"{name}={type(value).__name__}"
            )
    # A wrapped generator function has no length by nature: `fit`'s default
    # `shuffle=True` was not the user's doing, so Keras's warning about an infinite
    # PyDataset (a class the user never wrote) is not raised for it.
    generated = isinstance(getattr(x, "_source", None), GeneratorFactorySource)
    if x.num_batches is None and shuffle:
        if not generated:
            warnings.warn(
                "`shuffle=True` was passed, but will be ignored since the data `x` was "
                "provided as an infinite PyDataset. The PyDataset is expected to already "
                "be shuffled.",
                stacklevel=3,
            )
        shuffle = False
    return TunedPyDatasetAdapter(x, class_weight=class_weight, shuffle=shuffle)
