"""A `LoadTuner` that probes and tries configs within a few steps (as the reliability suite's).

The probe starts after `warmup_steps`, past the few batches queued while Keras built the
model, so it measures the loader in steady state; trials last 2 to 4 steps.
"""

from __future__ import annotations

from typing import Any

import keras_loadtune as klt
from keras_loadtune.decision import TunerSettings


def fast_tuner(**kwargs: Any) -> klt.LoadTuner:
    """A thread-only tuner with small limits; `kwargs` go to `LoadTuner` (storage: memory)."""
    settings = TunerSettings(
        cores=2,
        max_thread_workers=4,
        max_process_workers=2,
        queue_size_range=(1, 4),
        max_trials=4,
        max_tuning_steps=200,
        max_tuning_seconds=60.0,
        probe_steps=4,
        skip_steps=0,
        min_trial_steps=2,
        max_trial_steps=4,
        patience=3,
        seed=0,
        modes=("thread",),
    )
    kwargs.setdefault("storage", None)
    kwargs.setdefault("warmup_steps", 4)
    kwargs.setdefault("verbose", 0)
    return klt.LoadTuner(settings=settings, **kwargs)
