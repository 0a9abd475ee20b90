"""Fixtures of the reliability suite: every test is checked for leaked workers, threads, shm."""

from __future__ import annotations

import logging

import pytest

from reliability import faulty
from reliability.helpers import Snapshot, assert_no_leaks


@pytest.fixture(autouse=True)
def no_engine_leaks():
    """Fails a test that leaves worker processes, engine threads or shm segments behind.

    Runs after the test's own fixtures are torn down (wrapped datasets closed). Hung
    worker *threads* cannot be killed, so `faulty.RELEASE_HANGS` lets them go first.
    """
    faulty.RELEASE_HANGS.clear()
    before = Snapshot.take()
    yield
    faulty.RELEASE_HANGS.set()
    assert_no_leaks(before)


@pytest.fixture
def closing():
    """Collects wrapped datasets / prefetchers and closes them after the test."""
    opened = []
    yield opened.append
    for obj in reversed(opened):
        obj.close()


@pytest.fixture
def klt_log(caplog):
    """Captures the `keras_loadtune` logger at INFO and above."""
    caplog.set_level(logging.INFO, logger="keras_loadtune")
    return caplog


@pytest.fixture(scope="session")
def keras_ready():
    """Imports Keras once (TensorFlow import is the slow part)."""
    import keras  # noqa: F401

    from reliability import kdata

    return kdata
