"""`SessionStarter`: builds the tuning session and opens its study off the training thread.

Importing Optuna and opening the study's storage (a SQLite file, a database over the
network) take seconds: done inside a step they would stall training and count as
compute, and an import inside a step kept the step's frames (fit's tf.data
iterators) alive until interpreter exit. A background thread does both while
training goes on at the current config; `poll` hands the session over on the first
step after it is ready.

Example:

>>> import logging
>>> from keras_loadtune.decision.settings import TunerSettings
>>> starter = SessionStarter(TunerSettings(), None, None, logging.getLogger("x"))
>>> starter.study_handle is None
True
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from keras_loadtune import persistence
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.resources import process_tree_rss
from keras_loadtune.decision.session import TuningSession, default_sampler
from keras_loadtune.decision.settings import TunerSettings


def _none() -> int | None:
    return None


class SessionStarter:
    """Starts one `TuningSession` at a time on a daemon thread.

    Args:
        settings: The tuner's settings.
        storage: Where trials are kept (see `keras_loadtune.persistence`); `None` in memory.
        study_name: The study to use in `storage` (`None`: derived from the workload).
        log: The logger the session writes to.
        steps_left: Training steps left in this fit (`None` if unknown).
        fit_steps: Steps of one fit (`None` if unknown): a stored study is expected
            to serve one more fit of this length.

    Example:

    >>> import logging
    >>> from keras_loadtune.decision.settings import TunerSettings
    >>> SessionStarter(TunerSettings(), "default", None, logging.getLogger("x")).reset()
    """

    def __init__(
        self,
        settings: TunerSettings,
        storage: str | None,
        study_name: str | None,
        log: logging.Logger | logging.LoggerAdapter,
        steps_left: Callable[[], int | None] = _none,
        fit_steps: Callable[[], int | None] = _none,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.study_name = study_name
        self.study_handle: persistence.StudyHandle | None = None
        self._log = log
        self._steps_left = steps_left
        self._fit_steps = fit_steps
        self._thread: threading.Thread | None = None
        self._box: list = []

    def reset(self, *, forget_study: bool = False) -> None:
        """Forget a start in flight (its result is dropped); the next `poll` starts anew."""
        self._thread = None
        if forget_study:
            self.study_handle = None

    def poll(self, dataset: Any) -> TuningSession | None:
        """The session for `dataset`'s current config, or `None` while it is starting.

        The first call starts the thread. A session built for a config the loader no
        longer runs (the user reconfigured meanwhile) is dropped and started again.

        Raises:
            Whatever building the session raised (the caller gives up tuning).
        """
        thread = self._thread
        if thread is None:
            self._box = box = []  # this start's result only, whatever races
            thread = self._thread = threading.Thread(
                target=self._start,
                args=(dataset, dataset.config, box),
                name="keras_loadtune-session",
                daemon=True,
            )
            thread.start()
            return None
        if thread.is_alive():
            return None
        self._thread = None
        result = self._box[0] if self._box else None
        if isinstance(result, BaseException):
            raise result
        if result is not None and result.baseline != dataset.config:
            return None
        return result

    def _start(self, dataset: Any, config: LoaderConfig, box: list) -> None:
        try:
            session = TuningSession(
                config,
                self.settings,
                study=self._open_study(dataset),
                rss_probe=process_tree_rss,
                process_mode_available="process" in self.settings.modes,
                probe_in_steady_state=True,  # the stock prefetched during tracing is drained
                logger=self._log,
                steps_left=self._steps_left,
                reuse_steps=self._reuse_steps(),
                workload_profile=self._workload_profile(),
            )
            session.prepare_study()  # Optuna's import and the study: here, not in a step
            box.append(session)
        except BaseException as exc:  # reported on the training thread
            box.append(exc)

    def _open_study(self, dataset: Any) -> Any:
        """The Optuna study to tune in (`None`: the session's own, in memory); never raises."""
        if self.storage is None:
            return None
        try:
            workload = persistence.workload_fingerprint(dataset, list(dataset.stats))
            host = persistence.host_fingerprint(self.settings.cores)
            sampler = default_sampler(self.settings)
        except Exception as exc:  # pragma: no cover - fingerprints read only our own data
            note = f"storage not used ({type(exc).__name__}: {exc}); tuned in memory"
            self._log.warning("keras_loadtune: %s", note)
            self.study_handle = persistence.StudyHandle(None, self.study_name, None, note)
            return None
        self.study_handle = persistence.open_study(
            self.storage, self.study_name, workload=workload, host=host, sampler=sampler
        )
        return self.study_handle.live

    def _reuse_steps(self) -> int:
        """A stored study is expected to serve one more fit of this length."""
        handle = self.study_handle
        if handle is None or handle.study is None:
            return 0
        return self._fit_steps() or 0

    def _workload_profile(self) -> dict[str, float] | None:
        """The timing profile the study was opened for (stamped on trials, matched)."""
        workload = getattr(self.study_handle, "workload", None)
        return workload.profile() if workload is not None else None


__all__ = ["SessionStarter"]
