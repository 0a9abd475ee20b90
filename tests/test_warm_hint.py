"""`keras_loadtune.warm_hint`: the best config of a workload's last run, kept beside the
storage and read back before Optuna is imported."""

from __future__ import annotations

import pytest

from keras_loadtune import storage, warm_hint
from keras_loadtune.fingerprint import HostFingerprint, WorkloadFingerprint, dataset_class_path

HOST = HostFingerprint(2, 4, "3.11", None, None)
BEST = {"workers": 4, "max_queue_size": 8, "use_multiprocessing": False}


class DS:
    num_batches = 12


def _store(report: dict, *, host: HostFingerprint = HOST, url: str | None = "default") -> None:
    shown = None if url is None else storage.describe(storage.resolve_storage(url))
    work = WorkloadFingerprint(dataset_class_path(DS()), DS.num_batches, "?", 30.0, 0.1)
    warm_hint.store_warm_hint(
        report, storage_url=shown, study_name="klt-DS-0123", workload=work, host=host
    )


def test_a_stored_best_is_read_back_for_the_same_workload_storage_and_host():
    _store({"decision": "tuned", "best_config": BEST})
    hint = warm_hint.read_warm_hint("default", DS(), HOST)
    assert hint == warm_hint.WarmHint("klt-DS-0123", BEST, {"produce_ms": 30.0, "cpu_ratio": 0.1})
    assert warm_hint.warm_hint_path().exists()


def test_no_hint_for_another_host_length_or_storage_or_in_memory():
    _store({"decision": "tuned", "best_config": BEST})
    other_host = HostFingerprint(8, 4, "3.11", None, None)
    assert warm_hint.read_warm_hint("default", DS(), other_host) is None
    longer = DS()
    longer.num_batches = 13  # the same class, another length
    assert warm_hint.read_warm_hint("default", longer, HOST) is None
    assert warm_hint.read_warm_hint("sqlite:///other.db", DS(), HOST) is None
    assert warm_hint.read_warm_hint(None, DS(), HOST) is None
    assert warm_hint.read_warm_hint("default", DS(), HOST) is not None  # the one stored


@pytest.mark.parametrize(
    "report",
    [
        {"decision": "compute-bound", "best_config": BEST},  # nothing was measured
        {"decision": "tuned", "best_config": None},
    ],
)
def test_only_a_settled_measured_best_is_stored(report):
    _store(report)
    assert not warm_hint.warm_hint_path().exists()
    _store({"decision": "tuned", "best_config": BEST}, url=None)  # an in-memory study
    assert not warm_hint.warm_hint_path().exists()


def test_a_broken_hint_file_reads_as_no_hint():
    path = warm_hint.warm_hint_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json", encoding="utf-8")
    assert warm_hint.read_warm_hint("default", DS(), HOST) is None
    _store({"decision": "tuned", "best_config": BEST})  # and the next run rewrites it
    assert warm_hint.read_warm_hint("default", DS(), HOST).config == BEST
