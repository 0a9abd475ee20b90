"""`SessionNotes`: what the tuning session tells the report, and the error that stopped it.

The session never lets an error of its own (Optuna, the policy) reach training: it
notes the error, keeps the best known config and settles (`error`). Every other
warning for the report goes through `add`, logged at the level it is given or not at
all (a note the log already showed in another form).

Example:

>>> notes = SessionNotes()
>>> notes.add("process mode skipped: the dataset cannot run in worker processes")
>>> notes.error(RuntimeError("study gone"), keeping="LoaderConfig(workers=4)")
>>> notes.lines[-1]
'tuning stopped after an error (RuntimeError: study gone); keeping LoaderConfig(workers=4)'
"""

from __future__ import annotations

import logging
from typing import Any


class SessionNotes:
    """Human-readable notes for the report, logged as they are added.

    Args:
        log: Where notes are logged (default: the `keras_loadtune` logger).

    Attributes:
        lines: The notes, in order (the session's `notes`).

    Example:

    >>> import logging
    >>> notes = SessionNotes()
    >>> notes.add("warm start: re-tuning", logging.WARNING); notes.lines
    ['warm start: re-tuning']
    """

    def __init__(self, log: logging.Logger | None = None) -> None:
        self.lines: list[str] = []
        self._log = log if log is not None else logging.getLogger("keras_loadtune")

    def add(self, note: str, level: int | None = None) -> None:
        """Add `note`; log it at `level` too (`None`: not logged).

        Example:

        >>> notes = SessionNotes(); notes.add("a"); notes.add("b"); notes.lines
        ['a', 'b']
        """
        self.lines.append(note)
        if level is not None:
            self._log.log(level, "keras_loadtune: %s", note)

    def error(self, exc: BaseException, *, keeping: Any) -> None:
        """Note that tuning stopped after `exc`, keeping the config `keeping`; logged as a
        warning with the traceback.

        Example:

        >>> notes = SessionNotes(); notes.error(ValueError("x"), keeping="the baseline")
        >>> notes.lines
        ['tuning stopped after an error (ValueError: x); keeping the baseline']
        """
        msg = f"tuning stopped after an error ({type(exc).__name__}: {exc}); keeping {keeping}"
        self.lines.append(msg)
        self._log.warning("keras_loadtune: %s", msg, exc_info=exc)


__all__ = ["SessionNotes"]
