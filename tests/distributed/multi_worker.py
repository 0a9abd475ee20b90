"""One worker of a `tf.distribute.MultiWorkerMirroredStrategy` cluster on 127.0.0.1.

Run as a script, one process per worker (the test starts both, with `sys.executable`).
Environment: `TF_CONFIG` (cluster and this worker's index; read by TensorFlow at start),
`KLT_STORAGE` and `KLT_STUDY_NAME` (the Optuna study both workers' tuners share),
`KLT_RESULT` (where to write the findings). Each worker reads only its own shard: its
dataset's batch `i` is global batch `index * SHARD + i`. Fits the same tiny model first
on the plain shard, then on the shard wrapped by this worker's own `LoadTuner`, and
emits steps per epoch, rows delivered per global batch index per epoch (summed over both
workers, see `recording.py`) and the trials its tuner ran.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_multi_worker_fix
import tensorflow as tf
from fast_tuner import fast_tuner
from recording import ShardDataset, StepCounter, emit, run_phase, tiny_model

SHARD = 12  # batches per worker
BATCH = 4
EPOCHS = 3


def run(strategy: tf.distribute.Strategy, index: int, workers: int, wrapped: bool) -> dict:
    keras.utils.set_random_seed(0)
    dataset = ShardDataset(SHARD, BATCH, offset=index * SHARD, delay=0.15, max_queue_size=2)
    callbacks = [StepCounter()]
    tuner = None
    if wrapped:
        tuner = fast_tuner(
            storage=os.environ["KLT_STORAGE"], study_name=os.environ["KLT_STUDY_NAME"]
        )
        dataset = tuner.wrap(dataset, timeout=60.0)
        callbacks.append(tuner)
    with strategy.scope():
        model = tiny_model(SHARD * workers)
    model.fit(dataset, epochs=EPOCHS, callbacks=callbacks, verbose=0)
    counter = callbacks[0]
    out = {"steps": counter.steps, "delivered": counter.delivered}
    if tuner is not None:
        report = tuner.report.to_dict()
        out["decision"] = report["decision"]
        out["notes"] = report["notes"]
        out["epoch_wait_fractions"] = report["epoch_wait_fractions"]
        out["trials"] = report["trials"]
    return out


def main() -> None:
    cluster = json.loads(os.environ["TF_CONFIG"])
    index = int(cluster["task"]["index"])
    workers = len(cluster["cluster"]["worker"])
    result: dict = {"worker": index, "shard": SHARD, "batch_size": BATCH, "epochs": EPOCHS}
    try:
        result["keras_fixed"] = keras_multi_worker_fix.apply()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        result["replicas"] = strategy.num_replicas_in_sync
    except Exception:
        result["error"] = traceback.format_exc()[-4000:]
        emit(result)
        os._exit(1)
    run_phase(result, "plain", lambda: run(strategy, index, workers, wrapped=False))
    run_phase(result, "wrapped", lambda: run(strategy, index, workers, wrapped=True))
    # Exit now: after a collective failed on the other worker, TensorFlow's teardown can
    # hang (and it ignores SIGTERM).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
