"""The stored study's host fingerprint names the Keras backend and the accelerator kind.

A config tuned on TensorFlow/CPU must not be reused for a JAX or GPU run (issue #10, 8).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from keras_loadtune import fingerprint

SCRIPT = (
    "import json, sys; from keras_loadtune import fingerprint; "
    "h = fingerprint.host_fingerprint(2); "
    "print(json.dumps([h.to_dict(), 'tensorflow' in sys.modules]))"
)


def _fingerprint(backend: str) -> tuple[dict, bool]:
    env = {**os.environ, "KERAS_BACKEND": backend}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    host, imported_tf = json.loads(out.stdout.strip().splitlines()[-1])
    return host, imported_tf


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_host_fingerprint_names_the_backend_without_importing_it(backend):
    host, imported_tf = _fingerprint(backend)
    assert host["backend"] == backend
    assert host["accelerator"] == "cpu"
    assert not imported_tf


def test_backends_get_different_studies():
    tf_host = fingerprint.HostFingerprint(**_fingerprint("tensorflow")[0])
    jax_host = fingerprint.HostFingerprint(**_fingerprint("jax")[0])
    assert tf_host != jax_host
    assert tf_host.to_dict() != jax_host.to_dict()


def test_accelerator_kind_is_cpu_when_no_backend_is_loaded():
    assert fingerprint.accelerator_kind("no-such-backend") == "cpu"
