"""`Driver`: the one loop that runs a `TuningSession` over a loader.

Per counted training step the caller builds one `Observation` and calls
`Driver.step(observation)`, which does, in this order:

1. **observe** - `session.observe_startup(config, seconds)` for each start-up in
   `observation.startups`, then `session.observe_loader(observation.records)`, then
   `session.observe(observation.sample)`;
2. **decide** - the session's `StepResult(switch_to, events)`;
3. **apply** - if `switch_to` is not `None`, `applier.reconfigure(switch_to)`;
4. **acknowledge** - `session.acknowledge(config)` if it returned, or
   `session.mark_failed(config, describe(exc))` (default `"<ExceptionType>: <message>"`)
   if it raised; a failed switch never propagates: the loader keeps its previous
   config and the session may propose another one at the next step. An applier that
   only starts the switch (the Keras loader starts a new pool in the background) is
   driven with `acknowledge=False`: its caller acknowledges, or reports the failure,
   once the start is over.

An applier that switches in the background may also implement `poll()`, returning a
`SwitchOutcome`: `Driver.poll()` asks it before each step, acknowledges a switch whose
start is over or reports a failed one to the session (once), and says whether a
switch is still starting (the previous config then serves: no step of it is observed).
The session's lifecycle stays in the driver; its caller only reports and applies.

`Driver.finish(reason)` calls `session.stop(reason)` and applies the final config the
same way. The `StepResult` is returned so the caller can react to its `events`
(log the report when `Event.SETTLED` arrives, and so on) instead of diffing phases.

`Applier` is the protocol for what runs the loader: `reconfigure(config)` switches it
before the next step and raises on failure (its return value is ignored). Both
`TunedPyDataset` and `simulator.SimulatedPipeline` implement it. Start-up seconds
come back through the next `Observation` (the engine records them in
`LoaderStats.startups`), not through the return value.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision import TunerSettings, TuningSession
>>> from keras_loadtune.measurement import StepSample
>>> class Loader:
...     def reconfigure(self, config):
...         self.config = config
>>> session = TuningSession(LoaderConfig(), TunerSettings(cores=4, probe_steps=4, skip_steps=0))
>>> driver = Driver(session, Loader())
>>> results = [driver.step(Observation(StepSample(0.0, 0.01))) for _ in range(5)]
>>> [str(e) for r in results for e in r.events]
['compute-bound']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.phase import StepResult
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.measurement import StepSample


@dataclass(frozen=True)
class SwitchOutcome:
    """Where a background switch stands, as an applier's `poll()` reports it.

    Args:
        pending: A switch is still starting (the previous config serves).
        started: The config a switch finished starting on, once; else `None`.
        failed: The config a switch failed to start, once; else `None`.
        reason: Why it failed (with `failed`).

    Example:

    >>> SwitchOutcome().pending
    False
    """

    pending: bool = False
    started: LoaderConfig | None = None
    failed: LoaderConfig | None = None
    reason: str | None = None


class Applier(Protocol):
    """Runs the loader: `reconfigure(config)` before the next step, raising on failure."""

    def reconfigure(self, config: LoaderConfig) -> Any:
        """Switch the loader to `config`; raise if it cannot run it."""
        ...


@dataclass(frozen=True)
class Observation:
    """What one counted training step showed.

    Args:
        sample: The step's wait and total time.
        records: Producer records of the batches delivered since the last observation
            (`produce_wall_s`, `produce_cpu_s`, `nbytes`).
        startups: `(config, seconds)` of the loader start-ups since the last observation.

    Example:

    >>> Observation(StepSample(0.0, 0.01)).records
    ()
    """

    sample: StepSample
    records: Sequence[Any] = ()
    startups: Sequence[tuple[LoaderConfig, float]] = ()


def describe_failure(exc: Exception) -> str:
    """The default reason a failed switch is reported with: `"<ExceptionType>: <message>"`.

    Example:

    >>> describe_failure(RuntimeError("no room"))
    'RuntimeError: no room'
    """
    return f"{type(exc).__name__}: {exc}"


class Driver:
    """Observe -> decide -> apply -> acknowledge, one step at a time (see the module docs).

    Args:
        session: The session that decides.
        applier: What runs the loader.
        acknowledge: Acknowledge a switch as soon as `applier.reconfigure` returns.
            False for an applier that only starts the switch: the caller then calls
            `session.acknowledge` (or `session.mark_failed`) once the start is over.
        describe: The failure reason given to `session.mark_failed` for an exception
            `applier.reconfigure` raised.

    Example:

    >>> from keras_loadtune.decision import TunerSettings
    >>> class Loader:
    ...     def reconfigure(self, config): pass
    >>> Driver(TuningSession(LoaderConfig(), TunerSettings()), Loader()).finish("done") is None
    True
    """

    def __init__(
        self,
        session: TuningSession,
        applier: Applier,
        *,
        acknowledge: bool = True,
        describe: Callable[[Exception], str] = describe_failure,
    ) -> None:
        self.session = session
        self.applier = applier
        self.acknowledge = acknowledge
        self.describe = describe

    def step(self, observation: Observation) -> StepResult:
        """Run one iteration of the loop; returns the session's `StepResult`."""
        session = self.session
        for config, seconds in observation.startups:
            session.observe_startup(config, seconds)
        session.observe_loader(observation.records)
        result = session.observe(observation.sample)
        if result.switch_to is not None:
            self.apply(result.switch_to)
        return result

    def poll(self) -> bool:
        """Report the end of a background switch to the session; True while one starts.

        An applier without `poll()` switches at once: always False.

        Example:

        >>> from keras_loadtune.decision import TunerSettings
        >>> class Background:
        ...     def reconfigure(self, config): pass
        ...     def poll(self): return SwitchOutcome(failed=LoaderConfig(8), reason="no RAM")
        >>> session = TuningSession(LoaderConfig(), TunerSettings())
        >>> Driver(session, Background(), acknowledge=False).poll()
        False
        """
        poll = getattr(self.applier, "poll", None)
        if poll is None:
            return False
        outcome = poll()
        if outcome.failed is not None:
            self.session.mark_failed(outcome.failed, outcome.reason or "the switch failed")
        if outcome.started is not None:
            self.session.acknowledge(outcome.started)
        return outcome.pending

    def apply(self, config: LoaderConfig) -> bool:
        """Reconfigure the loader; acknowledge or report the failure. False if it raised."""
        try:
            self.applier.reconfigure(config)
        except Exception as exc:
            self.session.mark_failed(config, self.describe(exc))
            return False
        if self.acknowledge:
            self.session.acknowledge(config)
        return True

    def finish(self, reason: str) -> LoaderConfig | None:
        """Stop the session and apply its final config; returns that config if switched."""
        final = self.session.stop(reason)
        if final is not None and self.apply(final):
            return final
        return None


__all__ = ["Applier", "Driver", "Observation", "SwitchOutcome", "describe_failure"]
