"""Keeping Optuna's own output off the training console: its INFO lines ("A new study
created ...", one per trial), for which keras-loadtune logs its own shorter lines, and
tqdm's notebook warning on importing it.

Optuna imports `tqdm.auto` for its optional progress bar (`optuna/progress_bar.py`). In
a notebook without ipywidgets that import warns `TqdmWarning: IProgress not found`,
about a bar the tuner never shows. This module, which the tuner loads before anything
imports Optuna, imports `tqdm.auto` first with that one warning filtered
(`preload_tqdm_quietly`), so Optuna's import, whenever it comes, warns nothing.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

#: The start of tqdm's warning about a missing ipywidgets (`tqdm.notebook.WARN_NOIPYW`).
IPROGRESS_WARNING = "IProgress not found"


def preload_tqdm_quietly() -> None:
    """Imports `tqdm.auto` in a notebook with tqdm's "IProgress not found" warning
    filtered (nothing outside IPython, or once it is loaded).

    Example:

    >>> preload_tqdm_quietly()  # outside a notebook: does nothing
    """
    if "IPython" not in sys.modules or "tqdm.auto" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=IPROGRESS_WARNING)
        try:
            import tqdm.auto  # noqa: F401
        except Exception:  # pragma: no cover - Optuna will report a broken tqdm itself
            pass


preload_tqdm_quietly()


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Lowers Optuna's verbosity to WARNING inside the block, then restores it.

    Example:

    ```python
    with quiet_optuna():
        study = optuna.create_study(direction="maximize")
    ```
    """
    preload_tqdm_quietly()
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
