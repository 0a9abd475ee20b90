"""The distributed scripts' tuner: `tests/tuners.make_tuner`, thread-only.

The scripts run with `tests/distributed/` (not `tests/`) on `sys.path`, so this module puts
`tests/` there and passes the overrides they share. The probe starts after
`warmup_steps=4`, past the few batches queued while Keras built the model, so it measures
the loader in steady state; trials last 2 to 4 steps.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuners import make_tuner


def fast_tuner(**kwargs: Any):
    """`make_tuner` for a distributed script: thread-only, a warm-up of 4 steps;
    `kwargs` go to it (e.g. `storage`, `study_name`)."""
    return make_tuner(**{"modes": ("thread",), "warmup_steps": 4, **kwargs})
