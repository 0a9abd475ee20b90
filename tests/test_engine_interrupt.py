"""Ctrl-C while a process pool starts is raised at once and leaves no worker behind."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "scripts" / "sigint_during_pool_start.py"


def test_ctrl_c_during_a_slow_pool_start_raises_within_a_second_and_ends_the_workers():
    # Each worker takes 30 s to load the dataset; SIGINT arrives 1 s into the start.
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "30", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["delay"] is not None, f"the start was not interrupted: {result}\n{out.stderr}"
    assert result["delay"] < 1.0
    assert result["left"] == []
    assert "Traceback" not in out.stderr, out.stderr
