"""How Keras is made to drive our engine.

Keras 3 decides the epoch's shuffle order inside `PyDatasetAdapter` and hands it to
the enqueuer it builds; a plain dataset wrapper only ever sees single indices. So
for a `TunedPyDataset` (and only for it) we let Keras build *our* adapter, whose
enqueuer speaks the same start/get/stop protocol Keras already uses to drive its
own `OrderedEnqueuer`:

- `keras.src.trainers.data_adapters.get_data_adapter` is wrapped once: a
  `TunedPyDataset` gets a `TunedPyDatasetAdapter`; everything else goes to Keras
  untouched.
- `TunedPyDatasetAdapter` is Keras's `PyDatasetAdapter` (batch standardisation,
  `class_weight`, tf.data/NumPy/JAX/torch iterators, tensor-spec peeking) with
  `self.enqueuer` set to a `KerasEnqueuer` over the wrapper's `Prefetcher`, which
  receives `fit(shuffle=...)` exactly as Keras's enqueuer would.

`tests/test_keras_internals.py` fails loudly if the Keras internals this relies on
move. Supported: Keras 3.6 to 3.15 (tested on 3.15.1).
"""

from __future__ import annotations

import functools
import random
import threading
import warnings
from typing import TYPE_CHECKING, Any

from keras.src.trainers import data_adapters as _data_adapters
from keras.src.trainers.data_adapters import py_dataset_adapter as _py_dataset_adapter

from keras_loadtune.engine import EndOfPass

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.keras_adapter.dataset import TunedPyDataset

_install_lock = threading.Lock()
_RAN_OUT = r"Your input ran out of data"


def _is_ran_out_filter(entry: tuple) -> bool:
    message = entry[1]
    return message is not None and getattr(message, "pattern", None) == _RAN_OUT


class KerasEnqueuer:
    """Keras's enqueuer protocol (`start`, `stop`, `get`, `is_running`) over a `Prefetcher`.

    One instance per Keras adapter, i.e. per `fit`/`evaluate`/`predict` call. `start()`
    opens a pass (a fresh permutation when `shuffle`) or resumes the one a previous
    `stop()` paused (`steps_per_epoch` shorter than the dataset), so every batch of a
    pass is delivered exactly once.

    A worker's exception ends the stream and is re-raised, original type and message, by
    the next `stop()`, which Keras calls from `on_epoch_end` right after it sees the stream
    end. (Raising inside the generator instead would reach the user as a TensorFlow
    `UnknownError`, as it does with Keras's own enqueuer.)
    """

    def __init__(self, dataset: TunedPyDataset, shuffle: bool):
        self._dataset = dataset
        self._shuffle = shuffle
        self._pass_id: int | None = None
        self._running = False
        self._error: BaseException | None = None

    def is_running(self) -> bool:
        return self._running

    def start(self) -> None:
        if self._running:
            return
        prefetcher = self._dataset._engine()
        if self._pass_id == prefetcher.pass_id and not prefetcher.pass_finished:
            prefetcher.resume()
        else:
            prefetcher.begin_pass(self._order())
            self._pass_id = prefetcher.pass_id
        self._running = True

    def stop(self, drain_queue_and_join: bool = True) -> None:
        del drain_queue_and_join
        if self._running:
            self._running = False
            prefetcher = self._dataset._current_engine()
            if prefetcher is not None and not prefetcher.closed:
                prefetcher.pause()
        if self._error is not None:
            error, self._error = self._error, None
            warnings.filters[:] = [f for f in warnings.filters if not _is_ran_out_filter(f)]
            raise error

    def get(self):  # generator; named as in Keras's protocol
        prefetcher = self._dataset._engine()
        while True:
            try:
                batch = prefetcher.next()
            except EndOfPass:
                return
            except Exception as exc:
                self._error = exc
                # Keras will call this "input ran out of data" before stop() re-raises
                # the real error; that warning would only mislead.
                warnings.filterwarnings("ignore", message=_RAN_OUT, category=UserWarning)
                # Workers of a failed pass are stopped right away: nothing is left behind.
                prefetcher.release_workers(timeout=1.0, force=True)
                return
            yield batch

    def _order(self):
        n = self._dataset.num_batches
        if n is None:
            return None
        if self._shuffle:
            order = list(range(n))
            random.shuffle(order)  # the same RNG Keras's OrderedEnqueuer uses
            return order
        return range(n)


class TunedPyDatasetAdapter(_py_dataset_adapter.PyDatasetAdapter):
    """Keras's `PyDatasetAdapter`, fed by our restartable `Prefetcher`."""

    def __init__(self, x: TunedPyDataset, class_weight: Any = None, shuffle: bool = False):
        # Not calling super().__init__: it would build Keras's own OrderedEnqueuer.
        self.py_dataset = x
        self.class_weight = class_weight
        self.shuffle = shuffle
        self._output_signature = None
        self._within_epoch = False
        self.enqueuer = KerasEnqueuer(x, shuffle)

    def on_epoch_begin(self) -> None:
        if self._within_epoch:
            raise ValueError(
                "`on_epoch_begin` was called twice without `on_epoch_end` having been called."
            )
        self._within_epoch = True
        # The user's hook first, so the state it changes reaches the workers this epoch.
        self.py_dataset.on_epoch_begin()
        self.enqueuer.start()

    def on_epoch_end(self) -> None:
        try:
            self.enqueuer.stop()
        except BaseException:
            self._within_epoch = False
            raise
        self.py_dataset.on_epoch_end()
        self._within_epoch = False


def install() -> None:
    """Routes `TunedPyDataset` inputs to `TunedPyDatasetAdapter`. Idempotent."""
    from keras_loadtune.keras_adapter.dataset import TunedPyDataset

    with _install_lock:
        original = _data_adapters.get_data_adapter
        if getattr(original, "_keras_loadtune", False):
            return

        @functools.wraps(original)
        def get_data_adapter(x, *args, **kwargs):
            if isinstance(x, TunedPyDataset):
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
    if x.num_batches is None and shuffle:
        warnings.warn(
            "`shuffle=True` was passed, but will be ignored since the data `x` was provided "
            "as an infinite PyDataset. The PyDataset is expected to already be shuffled.",
            stacklevel=3,
        )
        shuffle = False
    return TunedPyDatasetAdapter(x, class_weight=class_weight, shuffle=shuffle)
