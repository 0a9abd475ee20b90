"""The golden trace: every decision of the simulated scenarios, against the stored one.

`benchmarks/golden_trace.py` prints every trial, switch and log line of its scenarios
(deterministic: fake clock, seeded noise). `tests/data/golden_trace.txt` is its accepted
output; a decision change fails here until the file is regenerated
(`python benchmarks/golden_trace.py > tests/data/golden_trace.txt`) in the commit that
explains it. No Keras, no TensorFlow.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "tests" / "data" / "golden_trace.txt"


def _golden_trace_module():
    spec = importlib.util.spec_from_file_location(
        "golden_trace", ROOT / "benchmarks" / "golden_trace.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("golden_trace", module)
    spec.loader.exec_module(module)
    return module


def test_every_simulated_decision_matches_the_stored_trace():
    module = _golden_trace_module()
    actual = [line for name in module.SCENARIOS for line in module.trace(name)]
    expected = EXPECTED.read_text(encoding="utf-8").splitlines()
    diff = list(difflib.unified_diff(expected, actual, "stored", "now", lineterm="", n=1))
    assert not diff, "decisions changed (regenerate the trace if intended):\n" + "\n".join(
        diff[:80]
    )
