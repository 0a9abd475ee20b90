"""`EpochLog`: the tuner's log lines, held while Keras draws an epoch's progress bar."""

from __future__ import annotations

import logging
import sys
from typing import Any


def ensure_log_handler(logger: logging.Logger, verbose: int) -> None:
    """Makes INFO lines visible when the application configured no logging (as Optuna does).

    Args:
        logger: The tuner's logger.
        verbose: 0 leaves logging alone, 1 shows INFO lines, 2 DEBUG lines too.

    Example:

    >>> ensure_log_handler(logging.getLogger("keras_loadtune.doc"), 0)
    """
    if verbose == 0:
        return
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
    # absl (imported by TensorFlow) puts a handler on the root logger that drops INFO;
    # only an application's own root handlers count as "logging is configured".
    root_handlers = [h for h in logging.getLogger().handlers if type(h).__name__ != "ABSLHandler"]
    if not logger.handlers and not root_handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


class EpochLog(logging.LoggerAdapter):
    r"""The tuner's logger, holding its lines while Keras draws a progress bar.

    A line logged mid-epoch would be glued onto the bar's line (Keras redraws it with
    `\r`); held lines are emitted at the next epoch's start, after the bar finished its
    line, or when training ends. Errors are never held.

    Args:
        target: The logger lines go to.

    Example:

    >>> log = EpochLog(logging.getLogger("keras_loadtune.doc"))
    >>> log.hold = True
    >>> log.warning("held until release()")
    >>> log.release()
    """

    def __init__(self, target: logging.Logger):
        super().__init__(target, {})
        self.hold = False
        self._held: list[tuple[int, Any, tuple, dict]] = []

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.hold and level < logging.ERROR:
            if self.isEnabledFor(level):
                if kwargs.get("exc_info") is True:
                    kwargs["exc_info"] = sys.exc_info()
                self._held.append((level, msg, args, kwargs))
            return
        super().log(level, msg, *args, **kwargs)

    def release(self) -> None:
        held, self._held = self._held, []
        for level, msg, args, kwargs in held:
            self.logger.log(level, msg, *args, **kwargs)


__all__ = ["EpochLog", "ensure_log_handler"]
