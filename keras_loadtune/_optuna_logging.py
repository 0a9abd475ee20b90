"""Keeping Optuna's own INFO lines ("A new study created ...", one per trial) off the
training console: keras-loadtune logs its own, shorter lines instead."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Lowers Optuna's verbosity to WARNING inside the block, then restores it.

    Example:

    ```python
    with quiet_optuna():
        study = optuna.create_study(direction="maximize")
    ```
    """
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
