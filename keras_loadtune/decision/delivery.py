"""Delivery rounds: the steps a switch's refill and a trial's window must span.

`n = in_flight(config)` batches are produced at once (`keras_loadtune.engine.arithmetic`),
so a config that cannot keep up delivers in *rounds*: about `n` batches every
`produce_wall_s`, handed out in a burst at the step's speed, then a wait. A window must
span whole rounds to measure a rate (two of them: `window_steps`), and the refill after
a switch (the first wait, then the burst of what the workers made meanwhile, then the
batches the previous config left) is skipped (`refill_steps`).

A config with more batches in flight than the step consumes while one batch is
produced has no such rounds: its queue stays full and it delivers at the step's speed.
Its burst-and-wait cycle is then at most one production time of steps, the loader's
*depth* `produce_wall_s / step_compute_s`. `round_cap` turns a profile and a step
estimate into that bound (with `ROUND_MARGIN` for an optimistic step estimate and the
loader's jitter), and the two functions above take it: 256 threads of a loader whose
depth is 40 skipped and measured `2 + 256 + 2 x 256` steps, more than a 180-step fit
(a Grain `MapDataset` of remote reads), where `2 + 2 x 62` steps show the same rate.
The planner gives no cap for a CPU-heavy loader: its production time grows with the
threads that contend for the cores, so the probe's depth does not bound it.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision.settings import TunerSettings
>>> from keras_loadtune.measurement import LoaderProfile
>>> cap = round_cap(LoaderProfile(0.12, 0.003, 0.03, 1 << 16, 0.0), 0.003)
>>> cap
61
>>> window_steps(TunerSettings(min_trial_steps=8, max_trial_steps=40), LoaderConfig(256, 256), cap)
(122, 122)
>>> window_steps(TunerSettings(min_trial_steps=8, max_trial_steps=40), LoaderConfig(256, 256))
(512, 512)
"""

from __future__ import annotations

import math

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.engine.arithmetic import held_batches, in_flight
from keras_loadtune.measurement import LoaderProfile

# A round is bounded by this many times the loader's depth (plus one step): a step
# estimate that is still optimistic, or a slower batch, stretches the cycle.
ROUND_MARGIN = 1.5


def round_cap(profile: LoaderProfile | None, step_compute_s: float | None) -> int | None:
    """The most steps a delivery round spans whatever the config, or `None`: unbounded.

    `ceil(ROUND_MARGIN x produce_wall_s x (1 + jitter_cv) / step_compute_s) + 1`: the
    steps the trainer takes while one batch is produced, with a margin.

    Args:
        profile: The loader's measured profile (`None`: not measured, no bound).
        step_compute_s: The step's compute estimate (`None` or <= 0: no bound).

    Example:

    >>> round_cap(LoaderProfile(0.04, 0.004, 0.1, 1 << 16, 0.0), 0.010)
    7
    >>> round_cap(None, 0.010) is None
    True
    """
    if profile is None or not step_compute_s or step_compute_s <= 0:
        return None
    if profile.produce_wall_s <= 0:
        return None
    depth = profile.produce_wall_s * (1.0 + max(profile.jitter_cv, 0.0)) / step_compute_s
    return math.ceil(ROUND_MARGIN * depth) + 1


def round_steps(config: LoaderConfig, cap: int | None = None) -> int:
    """Steps one delivery round of `config` spans: `in_flight(config)`, at most `cap`.

    Example:

    >>> round_steps(LoaderConfig(workers=256, max_queue_size=256), cap=61)
    61
    >>> round_steps(LoaderConfig(workers=6, max_queue_size=12), cap=61)
    6
    """
    n = in_flight(config)
    return n if cap is None else max(1, min(n, cap))


def refill_steps(
    settings: TunerSettings,
    config: LoaderConfig,
    previous: LoaderConfig | None = None,
    cap: int | None = None,
) -> int:
    """Steps to ignore after (re)starting the loader with `config` (from `previous`).

    A restarted loader first makes the trainer wait (the refill), then hands out the
    batches its workers built meanwhile at compute speed: a burst that would overstate
    throughput. The engine also keeps the batches the previous config had produced or
    started (up to `held_batches(previous)` of them) and serves them first. So skip
    `skip_steps` plus the larger of `in_flight(config)` and `held_batches(previous)`.
    A config that delivers faster than the step (`in_flight(config) > cap`) serves its
    burst, and the held batches, at the rate it keeps: one capped round is skipped.

    Args:
        settings: `skip_steps`.
        config: The config the loader (re)starts with.
        previous: The config it ran before (`None`: a cold start).
        cap: `round_cap` of the loader, or `None`.

    Example:

    >>> refill_steps(TunerSettings(skip_steps=2), LoaderConfig(workers=4, max_queue_size=3))
    5
    >>> refill_steps(TunerSettings(skip_steps=2), LoaderConfig(4, 3), previous=LoaderConfig(2, 20))
    22
    >>> refill_steps(TunerSettings(skip_steps=2), LoaderConfig(256, 256), LoaderConfig(16, 32), 61)
    63
    """
    held = held_batches(previous) if previous is not None else 0
    n = in_flight(config)
    if cap is not None and n > cap:
        return settings.skip_steps + min(max(n, held), cap)
    return settings.skip_steps + max(n, held)


def window_steps(
    settings: TunerSettings, config: LoaderConfig, cap: int | None = None
) -> tuple[int, int]:
    """`(min, max)` measured steps of a trial window under `config`.

    Deliveries come in rounds of `round_steps(config, cap)` steps (a burst of ready
    batches, then a wait), so a window shorter than a round can miss the wait. Windows
    span at least two rounds.

    Args:
        settings: `min_trial_steps`, `max_trial_steps`.
        config: The trial's config.
        cap: `round_cap` of the loader, or `None`.

    Example:

    >>> window_steps(TunerSettings(min_trial_steps=8, max_trial_steps=40), LoaderConfig(6, 6))
    (12, 40)
    """
    low = max(settings.min_trial_steps, 2 * round_steps(config, cap))
    return low, max(settings.max_trial_steps, low)


__all__ = ["ROUND_MARGIN", "refill_steps", "round_cap", "round_steps", "window_steps"]
