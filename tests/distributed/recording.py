"""What the model saw: an index-carrying dataset and a metric that counts delivered rows.

Every row of batch `i` carries its global batch index as its target `y`. The
`DeliveredRows` metric adds, for each training step, one count per row to the slot of
the row's batch index. Keras resets metrics at each epoch start, so an epoch in which
every batch arrived exactly once ends with every slot equal to the batch size, whatever
the distribution strategy (metric variables are summed over replicas and workers).
`StepCounter` records how many steps each epoch trained.

The helpers import only Keras, so one module serves every backend; the scripts in this
folder set the backend and device flags before importing it.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

FEATURES = 3


class ShardDataset(keras.utils.PyDataset):
    """`num_batches` batches of `batch_size` rows; batch `i` is global batch `offset + i`.

    Args:
        num_batches: Batches in this dataset (one worker's shard).
        batch_size: Rows per batch (divisible by the number of replicas).
        offset: Global index of this shard's first batch.
        delay: Seconds each `__getitem__` sleeps (makes training input-bound).
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size`.
    """

    def __init__(
        self,
        num_batches: int,
        batch_size: int,
        offset: int = 0,
        delay: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num = num_batches
        self.batch_size = batch_size
        self.offset = offset
        self.delay = delay

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int):
        if not 0 <= index < self.num:
            raise IndexError(f"batch {index} outside 0..{self.num - 1}")
        if self.delay:
            time.sleep(self.delay)
        rng = np.random.default_rng(self.offset + index)
        x = rng.normal(size=(self.batch_size, FEATURES)).astype("float32")
        y = np.full((self.batch_size, 1), self.offset + index, dtype="float32")
        return x, y


class DeliveredRows(keras.metrics.Metric):
    """Rows delivered to training per global batch index, summed over replicas.

    Args:
        total_batches: Number of global batch indices (all shards together).
    """

    def __init__(self, total_batches: int, name: str = "delivered", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total_batches = total_batches
        self.counts = self.add_variable(
            shape=(total_batches,), initializer="zeros", name="counts", aggregation="sum"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        index = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        hits = ops.sum(ops.one_hot(index, self.total_batches, dtype="float32"), axis=0)
        self.counts.assign_add(hits)

    def result(self):
        return ops.convert_to_tensor(self.counts)

    def reset_state(self):
        self.counts.assign(ops.zeros((self.total_batches,), dtype="float32"))

    def get_config(self):
        return {"total_batches": self.total_batches, "name": self.name}


class StepCounter(keras.callbacks.Callback):
    """Steps trained per epoch and the `DeliveredRows` counts at each epoch end."""

    def __init__(self):
        super().__init__()
        self.steps: list[int] = []
        self.delivered: list[list[int]] = []
        self._current = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current = 0

    def on_train_batch_end(self, batch, logs=None):
        self._current += 1

    def on_epoch_end(self, epoch, logs=None):
        self.steps.append(self._current)
        counts = np.asarray((logs or {}).get("delivered", []), dtype="float64").reshape(-1)
        self.delivered.append([round(float(c)) for c in counts])


def tiny_model(total_batches: int) -> keras.Model:
    """A one-layer regression model whose compiled metrics include `DeliveredRows`."""
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1)])
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss="mse",
        metrics=[DeliveredRows(total_batches)],
    )
    return model


def emit(result: dict, path: str | None = None) -> None:
    """Write the script's findings as JSON to `path` (else `$KLT_RESULT`, else stdout)."""
    path = path or os.environ.get("KLT_RESULT")
    text = json.dumps(result)
    if path:
        with open(path, "w") as fh:
            fh.write(text)
    else:
        print(text, flush=True)


def run_phase(result: dict, phase: str, fit: Callable[[], dict]) -> None:
    """`result[phase] = fit()`, or `{"error": traceback}` if it raised; then `emit(result)`.

    Emitting after each phase leaves the plain run's findings even when the wrapped run
    crashes or hangs (the test kills a hung script).
    """
    try:
        result[phase] = fit()
    except Exception:
        result[phase] = {"error": traceback.format_exc()[-4000:]}
    emit(result)
