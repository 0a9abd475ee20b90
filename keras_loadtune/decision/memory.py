"""`MemoryBudget`: how much memory the loader may add, measured and predicted.

`settings.ram_budget_bytes` is the memory the loader may add on top of the process
tree's RSS measured when the probe ends (`probe_rss`). A measured RSS is over
budget by `excess(rss)`; a config's predicted excess comes from the pipeline model
(`analytical.extra_rss_bytes`, itself from the engine's `held_batches`), relative to
the baseline whose memory the probe measured. Once a process trial has been measured,
the RSS of one worker process is solved from the model (`learn_process_rss`).

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision.settings import TunerSettings
>>> budget = MemoryBudget(TunerSettings(ram_budget_bytes=100), LoaderConfig(), lambda: 1000)
>>> budget.mark_probe()
1000
>>> budget.excess(1150)
50.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision import analytical
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import LoaderProfile


class MemoryBudget:
    """The RAM budget of one session.

    Args:
        settings: Holds `ram_budget_bytes`.
        baseline: The user's config (what ran when `probe_rss` was read).
        rss_probe: Returns the process tree's resident bytes.
        log: Where a failing probe is logged (debug).

    Example:

    >>> b = MemoryBudget(TunerSettings(ram_budget_bytes=10), LoaderConfig(), lambda: 5)
    >>> b.excess(None)  # nothing measured: never over
    0.0
    """

    def __init__(
        self,
        settings: TunerSettings,
        baseline: LoaderConfig,
        rss_probe: Callable[[], int],
        log: logging.Logger | None = None,
    ) -> None:
        self._budget = int(settings.ram_budget_bytes)  # type: ignore[arg-type]
        self._baseline = baseline
        self._probe = rss_probe
        self._log = log if log is not None else logging.getLogger("keras_loadtune")
        self.probe_rss: int | None = None
        self.process_rss: int | None = None

    def read(self) -> int | None:
        """The RSS now, or `None` if the probe failed (a failure never stops tuning)."""
        try:
            return int(self._probe())
        except Exception as exc:
            self._log.debug("keras_loadtune: RSS probe failed: %s", exc)
            return None

    def mark_probe(self) -> int | None:
        """Read the RSS the budget is relative to (the baseline running); returns it."""
        self.probe_rss = self.read()
        return self.probe_rss

    def excess(self, rss: int | None) -> float:
        """Bytes by which `rss` is over the budget (<= 0: within it)."""
        if rss is None or self.probe_rss is None:
            return 0.0
        return float(rss - self.probe_rss - self._budget)

    def predicted_excess(self, config: LoaderConfig, profile: LoaderProfile | None) -> float:
        """Bytes by which the model predicts `config` over the budget (<= 0: within it)."""
        if profile is None:
            return 0.0
        extra = analytical.extra_rss_bytes(
            config, profile.batch_nbytes, process_rss_bytes=self.process_rss
        )
        base = analytical.extra_rss_bytes(
            self._baseline, profile.batch_nbytes, process_rss_bytes=self.process_rss
        )
        return float(extra - base - self._budget)

    def learn_process_rss(
        self, config: LoaderConfig, rss: int, profile: LoaderProfile | None
    ) -> bool:
        """Solve the memory model for the RSS of one worker process; True if learned."""
        if not config.use_multiprocessing or self.probe_rss is None or profile is None:
            return False
        base = self._baseline
        nbytes = profile.batch_nbytes
        coef = config.workers - (base.workers if base.use_multiprocessing else 0)
        if coef <= 0:
            return False
        const = analytical.extra_rss_bytes(config, nbytes, process_rss_bytes=0)
        const -= analytical.extra_rss_bytes(base, nbytes, process_rss_bytes=0)
        per_process = (rss - self.probe_rss - const) / coef
        if per_process <= 0:
            return False
        self.process_rss = int(per_process)
        return True


__all__ = ["MemoryBudget"]
