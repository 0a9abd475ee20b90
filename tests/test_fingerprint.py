"""`keras_loadtune.fingerprint`: what a workload and a host are, and the study name they give."""

from __future__ import annotations

import sys
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from keras_loadtune import fingerprint


class FakeDataset:
    """Indexable like a PyDataset, without Keras."""

    num_batches = 150

    def __init__(self, dtype=np.float32):
        self.dtype = dtype
        self.reads = 0

    def __getitem__(self, index):
        self.reads += 1
        return np.zeros((32, 8), self.dtype), {"label": np.zeros(32, np.int32)}


def _records(wall_s: float, cpu_s: float, n: int = 40):
    return [SimpleNamespace(produce_wall_s=wall_s, produce_cpu_s=cpu_s) for _ in range(n)]


def test_workload_fingerprint_reads_one_batch_and_keeps_the_profile_out_of_the_key():
    ds = FakeDataset()
    fp = fingerprint.workload_fingerprint(ds, _records(0.041, 0.001))
    assert ds.reads == 1
    assert fp.dataset == f"{__name__}.FakeDataset" and fp.class_name == "FakeDataset"
    assert fp.num_batches == 150
    assert fp.batch == "((32, 8) float32, {label: (32,) int32})"
    assert fp.profile() == {"produce_ms": 41.0, "cpu_ratio": pytest.approx(0.024, abs=1e-3)}
    host = fingerprint.host_fingerprint()
    name = fingerprint.study_name_for(fp, host)
    # The timing profile is stored, never hashed: a batch time on any rounding edge
    # (the issue's ~45 ms) and a changed loader give the same study; the warm start
    # matches the profile with a tolerance instead.
    for wall in (0.0449, 0.0451, 0.038, 0.160):
        other = fingerprint.workload_fingerprint(ds, _records(wall, 0.001))
        assert other == fp and fingerprint.study_name_for(other, host) == name
    assert fingerprint.workload_fingerprint(FakeDataset(np.float16), _records(0.04, 0)) != fp
    assert (
        fingerprint.study_name_for(fingerprint.workload_fingerprint(FakeDataset(np.float16)), host)
        != name
    )


def test_workload_fingerprint_of_unknowns():
    class Broken:
        def __getitem__(self, index):
            raise OSError("no batch for you")

    def factory():
        yield np.zeros(3)

    fp = fingerprint.workload_fingerprint(Broken())
    assert (fp.batch, fp.num_batches, fp.profile()) == ("?", None, None)
    fp = fingerprint.workload_fingerprint(factory, first_batch=np.zeros((2, 3), np.uint8))
    assert fp.dataset.endswith("factory") and fp.batch == "(2, 3) uint8"
    assert fingerprint.batch_structure([np.zeros(2)]) == "((2,) float64,)"
    assert fingerprint.batch_structure(None) == "None"


def test_host_fingerprint_is_this_machine_without_importing_tensorflow():
    before = "tensorflow" in sys.modules
    host = fingerprint.host_fingerprint()
    assert ("tensorflow" in sys.modules) == before
    assert host.cores >= 1 and host.ram_gib >= 0
    assert host.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert host.keras and host.tensorflow  # the dev install has both
    assert fingerprint.host_fingerprint(cores=3).cores == 3


def test_study_name_is_stable_and_changes_with_workload_or_host():
    workload = fingerprint.WorkloadFingerprint("m.DS", 150, "((32, 8) float32,)", 5, 0.5)
    host = fingerprint.HostFingerprint(8, 16, "3.11", "2.21.0", "3.15.1")
    name = fingerprint.study_name_for(workload, host)
    again = fingerprint.WorkloadFingerprint("m.DS", 150, "((32, 8) float32,)", 9, 0.1)
    assert name == fingerprint.study_name_for(again, host)  # the profile is not hashed
    assert name.startswith("klt-DS-") and len(name) == len("klt-DS-") + 12
    assert name[-12:] == fingerprint.fingerprint_hash(workload, host)[:12]
    assert fingerprint.study_name_for(replace(workload, num_batches=151), host) != name
    other_host = fingerprint.HostFingerprint(16, 16, "3.11", "2.21.0", "3.15.1")
    assert fingerprint.study_name_for(workload, other_host) != name
    odd = fingerprint.WorkloadFingerprint("m.f.<locals>.My DS", None, "?", None, None)
    assert fingerprint.study_name_for(odd, host).startswith("klt-My_DS-")


def test_dataset_class_path_unwraps_a_tuned_dataset():
    class Tuned:  # what a `TunedPyDataset` shows: `dataset` and `reconfigure`
        dataset = FakeDataset()

        def reconfigure(self, config):
            pass

    assert fingerprint.dataset_class_path(Tuned()) == f"{__name__}.FakeDataset"
    assert fingerprint.dataset_class_path(FakeDataset) == f"{__name__}.FakeDataset"
    assert fingerprint.workload_fingerprint(Tuned(), first_batch=0).dataset.endswith("FakeDataset")
