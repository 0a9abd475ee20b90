"""The tests' one home for tuner settings and for a tuner that tunes within a few steps.

- `make_settings`: `TunerSettings` for a policy test (the simulator, a fake clock):
  seeded, with an 8 GiB RAM budget so the host's memory never decides.
- `make_tuner`: a `LoadTuner` for a real fit: in memory (no warm start from another
  test's study), seeded, quiet; by default with `FAST` settings, so a whole probe and
  tuning round fit in a few dozen training steps.

A test that needs another value passes it as an override; nothing else builds its own.
`tests/distributed/` scripts reach `make_tuner` through `tests/distributed/fast_tuner.py`.
"""

from __future__ import annotations

from typing import Any

from keras_loadtune.decision.settings import TunerSettings

GIB = 1 << 30

#: A probe of 4 steps, trials of 2-4 steps, small worker caps, 2 cores.
FAST: dict[str, Any] = dict(
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
)

# `LoadTuner` arguments that are not `TunerSettings` fields.
_TUNER_ONLY = ("warmup_steps", "timeout", "verbose", "storage", "study_name", "sampler")


def make_settings(cores: int = 8, seed: int = 0, **overrides: Any) -> TunerSettings:
    """`TunerSettings` on `cores` cores, seeded, with an 8 GiB RAM budget; `overrides` set
    any other field (`ram_budget_bytes=None`: the host's own budget)."""
    return TunerSettings(**{"cores": cores, "seed": seed, "ram_budget_bytes": 8 * GIB, **overrides})


def make_tuner(*, fast: bool = True, **overrides: Any):
    """A `LoadTuner` in memory (`storage=None`), seeded (`seed=0`), quiet (`verbose=0`).

    Args:
        fast: Use the `FAST` settings (warm-up of 1 step); `False`: the tuner's own
            defaults, as a user gets them.
        **overrides: `LoadTuner` arguments (`storage`, `verbose`, `warmup_steps`,
            `sampler`, `timeout`, `study_name`) or `TunerSettings` fields.
    """
    import keras_loadtune as klt

    kwargs = {"storage": None, "verbose": 0, **overrides}
    if not fast:
        return klt.LoadTuner(**{"seed": 0, **kwargs})
    tuner_args = {k: kwargs.pop(k) for k in _TUNER_ONLY if k in kwargs}
    tuner_args.setdefault("warmup_steps", 1)
    settings = make_settings(**{**FAST, "ram_budget_bytes": None, **kwargs})
    return klt.LoadTuner(settings=settings, **tuner_args)
