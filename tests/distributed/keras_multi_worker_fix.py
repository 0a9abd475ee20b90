"""Test-side fix for two Keras 3 bugs that stop any `fit` under `MultiWorkerMirroredStrategy`.

Keras 3.15.1 with TensorFlow 2.21 cannot train under `tf.distribute.MultiWorkerMirroredStrategy`
at all, whatever the input (keras-team/keras#20585, tensorflow/tensorflow#72388):

1. `fit` pulls one batch to build the model and averages it over the workers with
   `strategy.reduce("MEAN", batch, axis=None)`, which the collective strategy rejects
   ("Attempt to convert a value (PerReplica...) ... to a Tensor").
2. The per-step logs are averaged with `strategy.reduce("MEAN", value, axis=0)`, which
   fails on scalar logs ("Invalid reduction dimension 0 for input with 0 dimensions").

`apply()` patches both, in this process only, keeping Keras's lifecycle intact: the
model-building pull still happens (and the iterator is still reset after it), only the
batch used for building is this worker's local part; logs are averaged over workers
along a new leading axis. The plain and the wrapped runs both use it, so the comparison
stays fair. When Keras no longer has these internals, nothing is patched.
"""

from __future__ import annotations


def apply() -> bool:
    """Patch the two Keras internals if present; returns whether they were patched."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    needed = ("reduce_per_replica", "_collective_all_reduce_multi_worker", "TensorFlowTrainer")
    if not all(hasattr(trainer, name) for name in needed) or not hasattr(
        trainer.TensorFlowTrainer, "_maybe_symbolic_build"
    ):
        return False
    original_reduce = trainer.reduce_per_replica
    multi_worker = trainer._collective_all_reduce_multi_worker

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", tf.expand_dims(v, 0), axis=0), values
            )
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:  # the same pull as Keras's: one batch, then reset
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], batch
                )
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_per_replica
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    return True
