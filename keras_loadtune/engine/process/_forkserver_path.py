"""How the trainer's `sys.path` reaches the forkserver (applied by `_forkserver_init`).

CPython (3.11 to 3.13) hands the forkserver the parent's `sys.path` but does not
apply it, so a dataset module importable only through a path the trainer added at
run time (a script's own directory, a test folder) silently fails to preload, and
every worker pays the import itself. The trainer puts its `sys.path` in an
environment variable before the forkserver starts; the forkserver's first preloaded
module applies it. Importing this module has no side effect.
"""

from __future__ import annotations

import json
import sys

ENV_VAR = "KERAS_LOADTUNE_SYS_PATH"


def apply(encoded: str | None) -> None:
    """Puts the trainer's path entries first, keeping the forkserver's own after them.

    Args:
        encoded: The JSON list the trainer stored in `ENV_VAR` (None or invalid: no-op).

    Example:

    ```python
    apply(os.environ.get(ENV_VAR))
    ```
    """
    if not encoded:
        return
    try:
        parent = [p for p in json.loads(encoded) if isinstance(p, str)]
    except ValueError:
        return
    sys.path[:] = parent + [p for p in sys.path if p not in parent]
