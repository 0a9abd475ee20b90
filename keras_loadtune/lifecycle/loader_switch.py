"""`LoaderSwitch`: the `decision.driver.Applier` for the dataset a `LoadTuner` trains on.

Mid-fit, a switch starts the new pool in the background (`reconfigure(config,
background=True)`): the current pool keeps serving, so no step waits seconds for
worker processes to start. The switch is therefore over only later; `poll()`
says when (the driver runs with `acknowledge=False` and polls it before each step):
a start that finished, once, or one that failed (found by `StepMeter`), once. After training,
switches are immediate (`background = False`): nothing is left to stall.

Example:

>>> import logging
>>> from keras_loadtune import LoaderConfig
>>> class Data:
...     config, pending_config = LoaderConfig(), None
...     def reconfigure(self, config, background=False):
...         self.config = config
>>> switch = LoaderSwitch(Data(), logging.getLogger("x"))
>>> switch.reconfigure(LoaderConfig(workers=4))
>>> switch.acted, switch.started()
(True, LoaderConfig(workers=4, max_queue_size=10, use_multiprocessing=False))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.driver import SwitchOutcome
from keras_loadtune.engine import DatasetNotPicklableError


def _no_failures() -> tuple[LoaderConfig | None, str] | None:
    return None


class LoaderSwitch:
    """Switches a wrapped dataset's loader for the driver; remembers that it acted.

    Args:
        dataset: The `TunedPyDataset` (anything with `config`, `pending_config` and
            `reconfigure(config, background=...)`).
        log: Where a failed switch is reported besides the session's own note.
        failures: `(config, note)` of a switch that failed since the last call, once
            (`StepMeter.new_switch_failure`); `config` is `None` when unknown.

    Example:

    >>> import logging
    >>> from keras_loadtune import LoaderConfig
    >>> class Data:
    ...     config, pending_config = LoaderConfig(), None
    >>> LoaderSwitch(Data(), logging.getLogger("x")).reconfigure(LoaderConfig())  # no-op
    """

    def __init__(
        self,
        dataset: Any,
        log: logging.Logger | logging.LoggerAdapter,
        failures: Callable[[], tuple[LoaderConfig | None, str] | None] = _no_failures,
    ) -> None:
        self.dataset = dataset
        self._failures = failures
        self.background = True
        self.acted = False  # the next step follows the tuner's action (its work, a switch)
        self._log = log
        self._starting: LoaderConfig | None = None

    def reconfigure(self, config: LoaderConfig) -> None:
        """Start switching to `config` (nothing if the loader already runs it).

        Raises:
            Exception: What the dataset raised; the driver reports it to the session.
        """
        ds = self.dataset
        if config == ds.config:
            return
        self.acted = True
        try:
            ds.reconfigure(config, background=self.background)
        except DatasetNotPicklableError:
            raise
        except Exception as exc:
            self._log.warning("keras_loadtune: could not switch the loader to %s: %s", config, exc)
            raise
        self._starting = config

    def poll(self) -> SwitchOutcome:
        """Where the last switch stands (`Driver.poll` reports it to the session).

        Example:

        >>> import logging
        >>> class Data:
        ...     config, pending_config = LoaderConfig(), LoaderConfig(workers=2)
        >>> LoaderSwitch(Data(), logging.getLogger("x")).poll().pending
        True
        """
        if self.dataset.pending_config is not None:
            return SwitchOutcome(pending=True)
        failed, reason = None, None
        failure = self._failures()
        if failure is not None:
            failed, reason = failure
            if failed is None:  # nothing to tell the session: the log says it
                self._log.warning("keras_loadtune: %s", reason)
        return SwitchOutcome(started=self.started(), failed=failed, reason=reason)

    def started(self) -> LoaderConfig | None:
        """The config a switch finished starting since the last call (once), else `None`."""
        starting = self._starting
        if starting is None or self.dataset.pending_config is not None:
            return None
        self._starting = None
        return starting if self.dataset.config == starting else None


__all__ = ["LoaderSwitch"]
