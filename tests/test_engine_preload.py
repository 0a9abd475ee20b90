"""The forkserver really preloads the dataset's module, even one found via a runtime path."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys

    from keras_loadtune import LoaderConfig
    from keras_loadtune.engine import Prefetcher

    if __name__ == "__main__":
        # Only the trainer adds this path (as pytest does for test folders): re-running
        # this script in the forkserver as __mp_main__ does not import farmod.
        sys.path.insert(0, {moddir!r})
        import farmod

        with Prefetcher(farmod.Probe(), LoaderConfig(2, 2, True)) as pf:
            pf.begin_pass([0, 1])
            for _ in range(2):
                imported_in, worker = pf.next()
                print("preloaded" if imported_in != worker else "imported-by-worker")
    """
)

MODULE = textwrap.dedent(
    """
    import os

    IMPORTED_IN = os.getpid()

    class Probe:
        def __getitem__(self, index):
            return IMPORTED_IN, os.getpid()
    """
)


def _run(tmp_path, env_extra=None):
    moddir = tmp_path / "elsewhere"
    moddir.mkdir()
    (moddir / "farmod.py").write_text(MODULE)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(moddir=str(moddir)))
    env = {"PATH": "/usr/bin:/bin", **(env_extra or {})}
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_module_on_a_runtime_sys_path_is_preloaded_by_the_forkserver(tmp_path):
    assert _run(tmp_path) == ["preloaded", "preloaded"]


def test_preload_can_be_turned_off(tmp_path):
    assert _run(tmp_path, {"KERAS_LOADTUNE_PRELOAD": "0"}) == [
        "imported-by-worker",
        "imported-by-worker",
    ]
