"""Fast tuner settings: a whole probe + tuning round fits in a few dozen training steps."""

from __future__ import annotations

from typing import Any


def fast_tuner(**overrides: Any):
    """A `LoadTuner` that probes 4 steps and measures each trial for 2-4 steps."""
    import keras_loadtune as klt
    from keras_loadtune.decision import TunerSettings

    settings = dict(
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
    )
    tuner_kwargs = {
        k: overrides.pop(k)
        for k in ("verbose", "warmup_steps", "sampler", "timeout", "storage")
        if k in overrides
    }
    settings.update(overrides)
    tuner_kwargs.setdefault("verbose", 1)
    tuner_kwargs.setdefault("warmup_steps", 1)
    tuner_kwargs.setdefault("storage", None)  # in memory: no warm start between tests
    sampler = tuner_kwargs.pop("sampler", None)
    return klt.LoadTuner(settings=TunerSettings(**settings), sampler=sampler, **tuner_kwargs)
