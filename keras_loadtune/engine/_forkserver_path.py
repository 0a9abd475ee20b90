"""Imported first by the forkserver: gives it the trainer's `sys.path`.

CPython (3.11 to 3.13) hands the forkserver the parent's `sys.path` but does not
apply it, so a dataset module importable only through a path the trainer added at
run time (a script's own directory, a test folder) silently fails to preload, and
every worker pays the import itself. The trainer puts its `sys.path` in an
environment variable before the forkserver starts; importing this module applies it.
"""

from __future__ import annotations

import json
import os
import sys

ENV_VAR = "KERAS_LOADTUNE_SYS_PATH"


def apply(encoded: str | None) -> None:
    """Puts the trainer's path entries first, keeping the forkserver's own after them."""
    if not encoded:
        return
    try:
        parent = [p for p in json.loads(encoded) if isinstance(p, str)]
    except ValueError:
        return
    sys.path[:] = parent + [p for p in sys.path if p not in parent]


apply(os.environ.get(ENV_VAR))
