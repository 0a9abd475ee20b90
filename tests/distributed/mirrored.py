"""`tf.distribute.MirroredStrategy` over two logical CPU devices: plain vs wrapped.

Run as a script (the test does, with `sys.executable`): the logical devices must be
configured before TensorFlow initialises. Fits the same tiny model, built in
`strategy.scope()`, first on the plain `PyDataset`, then on the same dataset wrapped by
a `LoadTuner` that tunes while it trains, and emits the steps per epoch and the rows
each batch index delivered per epoch (see `recording.py`).
"""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
from fast_tuner import fast_tuner  # noqa: E402
from recording import ShardDataset, StepCounter, run_phase, tiny_model  # noqa: E402

NUM_BATCHES = 12
BATCH = 4
EPOCHS = 3


def run(strategy: tf.distribute.Strategy, wrapped: bool) -> dict:
    keras.utils.set_random_seed(0)
    dataset = ShardDataset(NUM_BATCHES, BATCH, delay=0.05, max_queue_size=2)
    callbacks = [StepCounter()]
    if wrapped:
        tuner = fast_tuner()
        dataset = tuner.wrap(dataset, timeout=60.0)
        callbacks.append(tuner)
    with strategy.scope():
        model = tiny_model(NUM_BATCHES)
    model.fit(dataset, epochs=EPOCHS, callbacks=callbacks, verbose=0)
    counter = callbacks[0]
    out = {"steps": counter.steps, "delivered": counter.delivered}
    if wrapped:
        report = tuner.report
        out["decision"] = report.decision
        out["configs"] = [t.config.to_dict() for t in report.trials]
    return out


def main() -> None:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "len": NUM_BATCHES,
        "batch_size": BATCH,
        "epochs": EPOCHS,
    }
    run_phase(result, "plain", lambda: run(strategy, wrapped=False))
    run_phase(result, "wrapped", lambda: run(strategy, wrapped=True))


if __name__ == "__main__":
    sys.exit(main())
