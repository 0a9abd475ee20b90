"""Tests for `keras_loadtune._optuna_logging`: importing Optuna through the tuner in a
notebook without ipywidgets shows no tqdm "IProgress not found" warning (issue #23)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A fake Jupyter kernel (what tqdm.autonotebook checks), then Optuna's import with every
# warning recorded; prints the warnings that mention IProgress.
_SCRIPT = """
import sys, types, warnings
ipython = types.ModuleType("IPython")
class ZMQInteractiveShell: pass
ipython.get_ipython = lambda: ZMQInteractiveShell()
sys.modules["IPython"] = ipython
sys.modules["ipykernel"] = types.ModuleType("ipykernel")
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    if {through_tuner}:
        import keras_loadtune._optuna_logging
    import optuna
print([str(w.message)[:40] for w in seen if "IProgress" in str(w.message)])
"""


def _iprogress_warnings(through_tuner: bool) -> str:
    script = _SCRIPT.format(through_tuner=through_tuner)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_optuna_imported_after_the_tuner_warns_nothing_about_iprogress():
    pytest.importorskip("tqdm")
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover
        pytest.skip("ipywidgets installed: tqdm has nothing to warn about")
    assert "IProgress" in _iprogress_warnings(through_tuner=False)  # the warning exists
    assert _iprogress_warnings(through_tuner=True) == "[]"
