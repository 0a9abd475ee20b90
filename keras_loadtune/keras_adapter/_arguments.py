"""`tuner_settings`: the `TunerSettings` a `LoadTuner` runs with, from its keyword knobs.

`LoadTuner` takes the most used `TunerSettings` fields as keyword arguments (plus two
older names kept as aliases); a full `settings` object is the base they override.
Errors name the argument the user passed, aliases included.

Example:

>>> tuner_settings(None, max_workers=4).max_thread_workers
4
"""

from __future__ import annotations

from typing import Any

from keras_loadtune.decision.settings import TunerSettings

# Older LoadTuner argument names, kept as aliases of the TunerSettings field names.
ALIASES = {"max_workers": "max_thread_workers", "ram_budget": "ram_budget_bytes"}


def tuner_settings(settings: TunerSettings | None, **knobs: Any) -> TunerSettings:
    """`settings` (default `TunerSettings()`) with the knobs that are not `None` replaced.

    Args:
        settings: The base settings, or `None`.
        **knobs: `TunerSettings` field names or their aliases (`max_workers`,
            `ram_budget`); `None` leaves a field as it is. `queue_size_range` and
            `modes` may be any sequence.

    Returns:
        The settings to run with.

    Raises:
        TypeError: `settings` is not a `TunerSettings`, or a field and its alias are
            both given.
        ValueError: A knob is out of range (the message names the argument passed).

    Example:

    >>> tuner_settings(None, probe_steps=30, seed=None).probe_steps
    30
    """
    if settings is not None and not isinstance(settings, TunerSettings):
        raise TypeError(f"settings must be a TunerSettings or None; got {type(settings).__name__}.")
    passed_aliases = {alias for alias in ALIASES if knobs.get(alias) is not None}
    for alias in passed_aliases:
        field = ALIASES[alias]
        if knobs.get(field) is not None:
            raise TypeError(f"Pass {field} or its alias {alias}, not both.")
        knobs[field] = knobs[alias]
    for alias in ALIASES:
        knobs.pop(alias, None)
    if knobs.get("queue_size_range"):
        knobs["queue_size_range"] = tuple(knobs["queue_size_range"])
    else:
        knobs["queue_size_range"] = None
    if knobs.get("modes") is not None:
        knobs["modes"] = tuple(knobs["modes"])
    overrides = {k: v for k, v in knobs.items() if v is not None}
    base = settings or TunerSettings()
    try:
        return base.replace(**overrides) if overrides else base
    except (TypeError, ValueError) as exc:
        # Name the argument the user passed (an alias, if that is what it was).
        message = str(exc).replace("TunerSettings.", "LoadTuner ")
        for alias in passed_aliases:
            message = message.replace(ALIASES[alias], alias)
        raise type(exc)(message) from None


__all__ = ["ALIASES", "tuner_settings"]
