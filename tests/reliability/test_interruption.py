"""Training interrupted mid-tuning-trial (Ctrl-C, a crashing callback), then resumed.

After the interruption the workers must be released (idle release, `idle_timeout=0.5`),
and a new `fit` on the same wrapped dataset must deliver every batch exactly once per
epoch, with the tuner still attached.
"""

from __future__ import annotations

import pytest
from tuners import make_tuner

from keras_loadtune import LoaderConfig
from reliability.faulty import Faulty
from reliability.helpers import Snapshot, assert_no_leaks, engine_threads, worker_processes

pytestmark = [pytest.mark.keras, pytest.mark.timeout(120)]

N = 16
BASELINE = LoaderConfig(1, 1)
INTERRUPTS = {
    "ctrl-c": lambda: KeyboardInterrupt(),
    "callback-error": lambda: RuntimeError("a user callback crashed"),
}
MODES = {"threads": ("thread",), "processes": ("process",)}
# A latency-bound loader for thread trials; a GIL-bound one for process trials (the tuner
# never tries processes for a latency-bound loader).
LOADERS = {"threads": {"delay": 0.01}, "processes": {"cpu": 0.01}}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_interrupted_during_a_tuning_trial_then_fit_again(keras_ready, closing, interrupt, mode):
    import keras

    kdata = keras_ready
    before = Snapshot.take()
    # The subject is the interruption, not the decision: every trial pays and any wait
    # counts (on a loaded 2-core machine the probe once read this loader as
    # compute-bound, so no trial ran in 150 epochs).
    tuner = make_tuner(
        modes=MODES[mode],
        max_trials=8,
        patience=8,
        verbose=0,
        payoff_ratio=0.0,
        wait_threshold=0.0005,
    )
    wrapped = tuner.wrap(kdata.KerasView(Faulty(N, **LOADERS[mode])), BASELINE, idle_timeout=0.5)
    closing(wrapped)
    exc = INTERRUPTS[interrupt]()

    class Interrupter(keras.callbacks.Callback):
        """Raises as soon as the tuner runs a trial config (mid-trial, mid-epoch)."""

        fired_on = None

        def on_train_batch_end(self, batch, logs=None):
            if tuner.phase == "tuning" and wrapped.config != BASELINE and 0 < batch < N - 1:
                type(self).fired_on = (batch, wrapped.config)
                raise exc

    model = kdata.tiny_model()
    # A long fit (the interruption ends it): a process trial must be worth its start-up.
    try:
        model.fit(wrapped, epochs=150, verbose=0, callbacks=[tuner, Interrupter()])
    except type(exc):
        pass
    else:  # say why no trial config ran mid-epoch
        pytest.fail(f"the fit was never interrupted:\n{tuner.report}\nnotes: {tuner.report.notes}")
    batch, config = Interrupter.fired_on
    assert 0 < batch < N - 1, "interrupted mid-epoch"
    assert config.mode == MODES[mode][0]
    delivered_before = wrapped.stats.delivered

    # Nobody closed anything: the idle release must free the workers by itself.
    assert_no_leaks(before, timeout=5.0)
    assert not worker_processes()
    assert not engine_threads()

    marks = kdata.EpochMarks(wrapped)
    history = model.fit(wrapped, epochs=2, verbose=0, callbacks=[tuner, marks])
    assert len(history.history["loss"]) == 2
    per_epoch = kdata.epochs_of(wrapped, marks.marks)
    assert marks.marks[0] == delivered_before
    assert [sorted(e) for e in per_epoch] == [list(range(N))] * 2, per_epoch
    print(
        f"\n[interrupt] {interrupt}/{mode}: fired at batch {batch} on {config}; "
        f"refit epochs delivered {[len(e) for e in per_epoch]} of {N}, lost 0, duplicated 0"
    )
    assert_no_leaks(before, timeout=5.0)
