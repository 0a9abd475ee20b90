"""Keras's distribution API on JAX: `DataParallel` over two host CPU devices.

Run as a script (the test does, with `sys.executable`): `KERAS_BACKEND` and
`XLA_FLAGS=--xla_force_host_platform_device_count=2` must be set before JAX and Keras
are imported. Fits the same tiny model first on the plain `PyDataset`, then on the same
dataset wrapped by a `LoadTuner` that tunes while it trains, and emits the steps per
epoch and the rows each batch index delivered per epoch (see `recording.py`).
"""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import keras
from fast_tuner import fast_tuner
from recording import ShardDataset, StepCounter, run_phase, tiny_model

NUM_BATCHES = 12
BATCH = 4
EPOCHS = 3


def run(wrapped: bool) -> dict:
    keras.utils.set_random_seed(0)
    dataset = ShardDataset(NUM_BATCHES, BATCH, delay=0.05, max_queue_size=2)
    callbacks = [StepCounter()]
    if wrapped:
        tuner = fast_tuner()
        dataset = tuner.wrap(dataset, timeout=60.0)
        callbacks.append(tuner)
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
    devices = keras.distribution.list_devices("cpu")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    result = {
        "replicas": len(devices),
        "len": NUM_BATCHES,
        "batch_size": BATCH,
        "epochs": EPOCHS,
    }
    run_phase(result, "plain", lambda: run(wrapped=False))
    run_phase(result, "wrapped", lambda: run(wrapped=True))


if __name__ == "__main__":
    sys.exit(main())
