"""Runs the whole test suite the way CI does, and says per stage what passed.

Stages, each its own ``pytest`` process (a Keras backend is fixed once per process):

- ``core``: the backend-independent tests (engine, decision, report, docs, CLI), once;
- ``tensorflow``, ``jax``, ``torch``: the Keras-facing tests (marker ``keras``, set by
  ``tests/conftest.py``) under ``KERAS_BACKEND`` = that backend;
- ``distributed``: the subprocess tests that pick their own backend (marker
  ``distributed``), once.

A stage with no test selected (pytest exit code 5) counts as passed. Each stage runs in
its own process group under a wall-clock limit, so a hung stage is killed and reported
instead of hanging CI. The exit code is 0 only if every stage passed. Arguments after
``--`` go to every pytest call.

Example:
    ```bash
    .venv/bin/python tests/run_all.py                       # what CI runs
    .venv/bin/python tests/run_all.py --stages jax torch -- -x tests/test_keras_peer.py
    ```
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
NO_TESTS = 5  # pytest's exit code when nothing was selected


@dataclass(frozen=True)
class Stage:
    """One pytest process: a marker expression and, for Keras stages, a backend."""

    name: str
    markers: str
    backend: str | None = None


STAGES = (
    Stage("core", "not keras and not distributed"),
    *(Stage(b, "keras and not distributed", b) for b in BACKENDS),
    Stage("distributed", "distributed"),
)


@dataclass(frozen=True)
class Outcome:
    """What one stage did: exit code, seconds, and the counts from its JUnit report."""

    stage: Stage
    returncode: int
    seconds: float
    counts: dict[str, int]
    timed_out: bool = False

    @property
    def passed(self) -> bool:
        return not self.timed_out and self.returncode in (0, NO_TESTS)

    def line(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        if self.timed_out:
            verdict = "FAILED (killed at its time limit)"
        elif self.returncode == NO_TESTS:
            verdict = "passed (no tests selected)"
        elif not self.passed:
            verdict = f"FAILED (pytest exit code {self.returncode})"
        counts = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
        return f"{self.stage.name:>11}: {verdict}, {counts or 'no tests'}, {self.seconds:.0f} s"


def _counts(junit: Path) -> dict[str, int]:
    """Passed/failed/error/skipped counts from a pytest JUnit XML report (empty if none)."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    return {
        "passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
        "failed": total["failures"],
        "errors": total["errors"],
        "skipped/xfailed": total["skipped"],
    }


def run_stage(stage: Stage, pytest_args: list[str], limit: float) -> Outcome:
    """Runs one stage's pytest in its own process group, killed after `limit` seconds."""
    env = dict(os.environ)
    if stage.backend is not None:
        env["KERAS_BACKEND"] = stage.backend
    print(f"\n=== tests: {stage.name} (-m {stage.markers!r}) ===", flush=True)
    with tempfile.TemporaryDirectory(prefix="klt-tests-") as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            stage.markers,
            f"--junitxml={junit}",
            *pytest_args,
        ]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        timed_out = False
        try:
            returncode = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
        except BaseException:  # Ctrl-C: do not leave the stage's processes behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        seconds = time.monotonic() - start
        return Outcome(stage, returncode, seconds, _counts(junit), timed_out)


def main(argv: list[str] | None = None) -> int:
    """Runs the chosen stages in order; returns 0 only if all of them passed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [s.name for s in STAGES]
    parser.add_argument("--stages", nargs="+", choices=names, default=names, metavar="STAGE")
    parser.add_argument(
        "--stage-timeout",
        type=float,
        default=1200.0,
        help="seconds each stage may run before it is killed (default 1200)",
    )
    args = parser.parse_args(argv)
    outcomes = [
        run_stage(stage, pytest_args, args.stage_timeout)
        for stage in STAGES
        if stage.name in args.stages
    ]
    print("\n=== tests: summary ===")
    for outcome in outcomes:
        print(outcome.line())
    total = sum(o.seconds for o in outcomes)
    failed = [o.stage.name for o in outcomes if not o.passed]
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all passed'} ({total:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
