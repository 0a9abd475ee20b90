"""`keras_loadtune.persistence`: opening studies, the working copy, writing trials and the
report back (the fingerprints: test_fingerprint.py; where studies live: test_storage.py)."""

from __future__ import annotations

import socket
import sys

import optuna
import pytest

from keras_loadtune import fingerprint, persistence, storage
from keras_loadtune.report import STUDY_ATTR_REPORT
from keras_loadtune.trial import STUDY_ATTR_FINGERPRINT, STUDY_ATTR_HOST, STUDY_ATTR_WORKLOAD

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _fp(**changes):
    workload = fingerprint.WorkloadFingerprint("m.DS", 150, "((32, 8) float32,)", 5, "io")
    host = fingerprint.HostFingerprint(8, 16, "3.11", "2.21.0", "3.15.1")
    fields = {**workload.to_dict(), **changes}
    return fingerprint.WorkloadFingerprint(**fields), host


# ------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("bad", "error"),
    [(1, TypeError), ("", ValueError), ("  ", ValueError), ("x" * 513, ValueError)],
)
def test_check_study_name_rejects(bad, error):
    with pytest.raises(error, match="study_name"):
        persistence.check_study_name(bad)


# ----------------------------------------------------------------------------- opening


def test_open_study_creates_the_default_journal_file_and_tags_the_study():
    workload, host = _fp()
    path = storage.default_storage_path()
    assert not path.exists()
    handle = persistence.open_study("default", None, workload=workload, host=host)
    assert handle.note is None and path.exists()
    assert not storage.legacy_storage_path().exists()  # no SQLite file any more
    assert handle.study_name == fingerprint.study_name_for(workload, host)
    assert handle.storage_url == f"journal:{path}"
    assert {"storage open", "study load"} <= set(handle.costs_s)
    assert all(v >= 0 for v in handle.costs_s.values())
    attrs = handle.study.user_attrs
    assert attrs[STUDY_ATTR_WORKLOAD] == workload.to_dict()
    assert attrs[STUDY_ATTR_HOST] == host.to_dict()
    assert attrs[STUDY_ATTR_FINGERPRINT] == fingerprint.fingerprint_hash(workload, host)
    # Reopening loads the same study (load_if_exists), e.g. from a second process.
    handle.study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    again = persistence.open_study("default", None, workload=workload, host=host)
    assert len(again.study.trials) == 1 and again.study.direction.name == "MAXIMIZE"


def test_explicit_study_name_overrides_the_fingerprint(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'k.db'}"
    workload, host = _fp()
    handle = persistence.open_study(url, "my-run", workload=workload, host=host)
    assert handle.study_name == "my-run" and handle.study.study_name == "my-run"
    other = persistence.open_study(url, "my-run", workload=_fp(num_batches=9)[0], host=host)
    assert other.study is not None  # first writer's tags stay
    tags = other.study.user_attrs[STUDY_ATTR_WORKLOAD]
    assert tags["num_batches"] == 150


def test_none_storage_is_in_memory_and_writes_nothing(tmp_path):
    handle = persistence.open_study(None, None, workload=_fp()[0], host=_fp()[1])
    assert handle.study is None and handle.storage_url is None and handle.note is None
    assert handle.study_name.startswith("klt-DS-")
    assert not storage.default_storage_path().exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "url",
    [
        "nosuchdb://somewhere/db",
        "postgresql+psycopg2://klt:hunter2@127.0.0.1:{port}/klt",
        "sqlite:////proc/no/such/dir/k.db",
    ],
    ids=["unknown-dialect", "server-down", "unwritable-path"],
)
def test_unusable_storage_falls_back_to_memory_with_one_warning(url, caplog):
    url = url.format(port=_closed_port())
    with caplog.at_level("WARNING", logger="keras_loadtune"):
        handle = persistence.open_study(url, "s")
    assert handle.study is None and handle.storage_url is None
    assert handle.note.startswith("storage unreachable (") and handle.note.endswith(
        "; tuned in memory"
    )
    assert "hunter2" not in handle.note
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and handle.note in warnings[0].getMessage()


def test_a_minimizing_study_of_that_name_is_not_used(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    optuna.create_study(study_name="taken", storage=url, direction="minimize")
    handle = persistence.open_study(url, "taken")
    assert handle.study is None and "does not maximize" in handle.note


def test_store_report_drops_trials_and_reports_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    handle = persistence.open_study(url, "r")
    assert persistence.store_report(handle, {"decision": "tuned", "trials": [1, 2]}) is None
    assert handle.study.user_attrs[STUDY_ATTR_REPORT] == {"decision": "tuned"}
    assert persistence.store_report(None, {}) is None
    assert persistence.store_report(persistence.StudyHandle(None, "x", None), {}) is None

    class Down:
        study_name = "r"

        def set_user_attr(self, key, value):
            raise RuntimeError("connection lost")

    error = persistence.store_report(persistence.StudyHandle(Down(), "r", url), {})
    assert (
        error.startswith("could not store the report in study 'r'") and "connection lost" in error
    )


def _stored_trial(workers: int, steps_per_s: float) -> optuna.trial.FrozenTrial:
    from keras_loadtune import LoaderConfig
    from keras_loadtune.trial import TrialRecord, config_to_params

    record = TrialRecord(
        0, LoaderConfig(workers, 8), "complete", "sampler", steps_per_s=steps_per_s
    )
    return optuna.trial.create_trial(
        params=config_to_params(record.config),
        distributions={
            "workers": optuna.distributions.IntDistribution(1, 64),
            "max_queue_size": optuna.distributions.IntDistribution(1, 64),
            "mode": optuna.distributions.CategoricalDistribution(("thread", "process")),
        },
        value=steps_per_s,
        user_attrs=record.optuna_user_attrs(),
    )


def test_tuning_happens_in_a_working_copy_synced_back_once(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = persistence.open_study(url, "shared")
    first.study.add_trials([_stored_trial(2, 10.0), _stored_trial(4, 20.0)])

    handle = persistence.open_study(url, "shared")
    live = handle.live
    assert live is handle.working and live is not handle.study
    assert isinstance(live._storage, optuna.storages.InMemoryStorage)
    assert [t.params["workers"] for t in live.trials] == [2, 4]  # history copied in

    live.add_trial(_stored_trial(6, 30.0))
    running = live.ask()  # an unfinished trial is not written
    assert len(handle.study.trials) == 2  # nothing reached storage mid-training
    assert persistence.sync_trials(handle) is None
    assert [t.params["workers"] for t in handle.study.trials] == [2, 4, 6]
    assert persistence.sync_trials(handle) is None  # idempotent
    assert len(handle.study.trials) == 3
    live.tell(running, 1.0)
    live.add_trial(_stored_trial(8, 40.0))
    persistence.sync_trials(handle)
    assert [t.value for t in handle.study.trials][3:] == [1.0, 40.0]


def test_sync_errors_are_reported_not_raised(tmp_path):
    handle = persistence.open_study(f"sqlite:///{tmp_path / 's.db'}", "shared")
    handle.live.add_trial(_stored_trial(3, 12.0))

    def down(trials):
        raise RuntimeError("database is gone")

    handle.study.add_trials = down
    error = persistence.sync_trials(handle)
    assert error is not None and "database is gone" in error and "1 trial" in error
    assert handle.written == 0


def test_the_default_storage_needs_no_sqlalchemy(tmp_path):
    # SQLAlchemy's import and the RDB schema check were most of the default storage's
    # fixed cost per fit; the journal file needs neither.
    import subprocess

    code = (
        "import sys; from keras_loadtune import persistence as p; "
        "from keras_loadtune.fingerprint import HostFingerprint, WorkloadFingerprint; "
        "w = WorkloadFingerprint('m.DS', 3, '?'); "
        "h = HostFingerprint(2, 4, '3.11', None, None); "
        "handle = p.open_study('default', None, workload=w, host=h); "
        "assert handle.study is not None, handle.note; "
        "print('sqlalchemy' in sys.modules, sorted(handle.costs_s))"
    )
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split(maxsplit=1)
    assert out[0] == "False"
    assert "optuna import" in out[1] and "storage open" in out[1]


def test_reading_default_shows_the_journal_and_the_former_sqlite_file():
    from keras_loadtune.storage import StorageError, open_storage

    with pytest.raises(StorageError, match="no such SQLite file"):
        open_storage("default", create=False)
    assert not storage.default_storage_path().exists()  # reading created nothing
    storage.legacy_storage_path().parent.mkdir(parents=True)
    old = optuna.create_study(
        study_name="old", storage=storage.default_storage_url(), direction="maximize"
    )
    old.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    names = {
        s.study_name for s in optuna.get_all_study_summaries(open_storage("default", create=False))
    }
    assert names == {"old"}
    workload, host = _fp()
    new = persistence.open_study("default", None, workload=workload, host=host)
    read = open_storage("default", create=False)
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(read)}
    assert set(summaries) == {"old", new.study_name}
    assert summaries["old"].n_trials == 1


def test_storage_costs_add_up_persist_writes(tmp_path):
    workload, host = _fp()
    handle = persistence.open_study("default", None, workload=workload, host=host)
    assert "persist" not in handle.costs_s
    trial = handle.live.ask()
    trial.suggest_int("workers", 1, 4)
    handle.live.tell(trial, 2.0)
    assert persistence.sync_trials(handle) is None
    first = handle.costs_s["persist"]
    assert first > 0
    assert persistence.store_report(handle, {"decision": "tuned"}) is None
    assert handle.costs_s["persist"] > first
    assert handle.total_cost_s == pytest.approx(sum(handle.costs_s.values()))
