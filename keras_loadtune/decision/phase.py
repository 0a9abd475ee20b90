"""The session's vocabulary: `Phase`, the `Event`s of a step, and `StepResult`.

`Phase` and `Event` are `str` enums, so they compare equal to their values
(`Phase.STEADY == "steady"`) and print as them.

Example:

>>> Phase("compute-bound") is Phase.COMPUTE_BOUND
True
>>> StepResult().switch_to is None
True
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from keras_loadtune.config import LoaderConfig


class Phase(str, enum.Enum):
    """Where the session is. A `str` enum: `Phase.TUNING == "tuning"`.

    Verifying a warm start is `TUNING` with `TuningSession.verifying` set (the Keras
    callback compares these values; a separate phase would change what it sees).
    """

    PROBE = "probe"
    TUNING = "tuning"
    STEADY = "steady"
    COMPUTE_BOUND = "compute-bound"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


# Phases in which the session measures (tuning steps and seconds count).
_ACTIVE = (Phase.PROBE, Phase.TUNING)


class Event(str, enum.Enum):
    """What happened during one `observe` (see `StepResult.events`)."""

    TUNING_STARTED = "tuning-started"
    SETTLED = "settled"
    COMPUTE_BOUND = "compute-bound"
    REOPENED = "reopened"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


# The event of entering a phase (`PROBE` again, after a failed warm start, has none).
ENTERED = {
    Phase.TUNING: Event.TUNING_STARTED,
    Phase.STEADY: Event.SETTLED,
    Phase.COMPUTE_BOUND: Event.COMPUTE_BOUND,
    Phase.STOPPED: Event.STOPPED,
}


@dataclass(frozen=True)
class StepResult:
    """The session's answer to one training step.

    Args:
        switch_to: The config the loader must run before the next step, or `None`.
        events: What happened, in order (e.g. `Event.SETTLED`).
    """

    switch_to: LoaderConfig | None = None
    events: tuple[Event, ...] = ()


__all__ = ["ENTERED", "Event", "Phase", "StepResult"]
