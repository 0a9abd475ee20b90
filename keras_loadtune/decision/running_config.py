"""`RunningConfig`: the config the loader runs, as the session knows it, and its switches.

The session asks the loader to switch (`switch_to` returns the config to apply, or
`None` when the loader already runs it). A switch may fail: until it is acknowledged,
`roll_back` restores the config before it, the one the loader kept. A switch the
session cannot make inside the step that decided it (the loader forgot a failed
config while the session settled) waits as `deferred` for the next step. This is
the one place the session holds the current config.

Example:

>>> from keras_loadtune.config import LoaderConfig
>>> running = RunningConfig(LoaderConfig(1, 10))
>>> running.switch_to(LoaderConfig(4, 8)), running.switch_to(LoaderConfig(4, 8))
(LoaderConfig(workers=4, max_queue_size=8, use_multiprocessing=False), None)
>>> running.roll_back(LoaderConfig(4, 8)); running.config.workers  # the switch failed
1
"""

from __future__ import annotations

from keras_loadtune.config import LoaderConfig


class RunningConfig:
    """The loader's config, the one before the last switch, and a deferred switch.

    Args:
        baseline: The user's config.
        running: The config the loader runs at the start if not `baseline` (a caller
            that started on a stored best before the session existed).
        prestarted: The config the loader was switched to by the caller's first move
            (`decision.first_move`), if any.

    Attributes:
        config: The config the loader runs (as far as the session knows).
        started_running: The loader started on `running`, before the session existed.
        switched_from: The config before the last switch (`None`: no switch yet), whose
            pool the new one was started beside.
        deferred: A switch to make at the next step (`None`: none).

    Example:

    >>> from keras_loadtune.config import LoaderConfig
    >>> RunningConfig(LoaderConfig(), running=LoaderConfig(4, 8)).started_running
    True
    """

    def __init__(
        self,
        baseline: LoaderConfig,
        *,
        running: LoaderConfig | None = None,
        prestarted: LoaderConfig | None = None,
    ) -> None:
        self.config = running if running is not None else (prestarted or baseline)
        self.started_running = running is not None
        self.switched_from: LoaderConfig | None = None
        self.deferred: LoaderConfig | None = None
        self._previous = self.config  # restored if the switch fails

    def switch_to(self, config: LoaderConfig) -> LoaderConfig | None:
        """Switch to `config`; returns it if the loader must reconfigure, else `None`.

        Example:

        >>> from keras_loadtune.config import LoaderConfig
        >>> RunningConfig(LoaderConfig()).switch_to(LoaderConfig()) is None
        True
        """
        if config == self.config:
            return None
        self.switched_from = self._previous = self.config
        self.config = config
        return config

    def acknowledge(self, config: LoaderConfig) -> None:
        """The loader now runs `config`: a later `roll_back(config)` keeps it.

        Example:

        >>> from keras_loadtune.config import LoaderConfig
        >>> running = RunningConfig(LoaderConfig())
        >>> _ = running.switch_to(LoaderConfig(4, 8)); running.acknowledge(LoaderConfig(4, 8))
        >>> running.roll_back(LoaderConfig(4, 8)); running.config.workers
        4
        """
        if config == self.config:
            self._previous = config

    def roll_back(self, config: LoaderConfig) -> None:
        """The switch to `config` failed: the loader kept the config before it.

        Example:

        >>> from keras_loadtune.config import LoaderConfig
        >>> running = RunningConfig(LoaderConfig())
        >>> running.roll_back(LoaderConfig(4, 8)); running.config.workers  # not running it
        1
        """
        if self.config == config:
            self.config = self._previous

    def take_deferred(self) -> LoaderConfig | None:
        """The deferred switch, now made (`None`: none was deferred, or it is current).

        Example:

        >>> from keras_loadtune.config import LoaderConfig
        >>> running = RunningConfig(LoaderConfig())
        >>> running.deferred = LoaderConfig(2, 4)
        >>> running.take_deferred().workers, running.take_deferred()
        (2, None)
        """
        target, self.deferred = self.deferred, None
        return None if target is None else self.switch_to(target)


__all__ = ["RunningConfig"]
