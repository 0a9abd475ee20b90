"""Tests for the `keras-loadtune` command line (`keras_loadtune.cli`, `python -m ...`)."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import optuna
import pytest
from test_report import BEST, make_report, populate

import keras_loadtune
from keras_loadtune import cli
from keras_loadtune.report import TuningReport, load_report

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture
def storage(tmp_path):
    """A SQLite storage with one finished tuning study and one empty foreign study."""
    url = f"sqlite:///{tmp_path / 'klt.db'}"
    populate(
        optuna.create_study(study_name="run1", storage=url, direction="maximize"), make_report()
    )
    optuna.create_study(study_name="unrelated", storage=url)
    return url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("keras-loadtune: error: ")
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------- report


def test_report_lists_studies_as_a_table(capsys, storage):
    code, out, err = run(capsys, "report", "--storage", storage)
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split() == [
        "study", "trials", "decision", "best", "config", "speedup", "limit", "started"
    ]  # fmt: skip
    assert len(rows) == 2
    run1 = next(r for r in rows if r.startswith("run1 "))
    assert " 5 " in run1 and " tuned " in run1 and "4 threads, queue 8" in run1 and "2.9x" in run1
    assert header.index("decision") == run1.index("tuned")


def test_report_list_as_json(capsys, storage):
    code, out, _ = run(capsys, "report", "--storage", storage, "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"run1", "unrelated"}
    assert rows["run1"]["best_config"] == BEST.to_dict()


def test_report_prints_the_same_report_as_the_callback(capsys, storage):
    code, out, err = run(capsys, "report", "--storage", storage, "--study", "run1")
    assert code == 0 and err == ""
    assert out == str(load_report(storage, "run1"))
    assert "Winner:   4 threads, queue 8" in out and "2.9x over your config" in out


def test_report_json_round_trips(capsys, storage):
    code, out, _ = run(capsys, "report", "--storage", storage, "--study", "run1", "--json")
    assert code == 0
    assert TuningReport.from_dict(json.loads(out)) == load_report(storage, "run1")


def test_empty_storage_says_so(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(url)  # an Optuna database with no studies
    code, out, _ = run(capsys, "report", "--storage", url)
    assert code == 0 and out.startswith("no studies in ")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url at all", "cannot parse storage URL"),
        ("nosuchdialect://host/db", "cannot open storage"),
    ],
)
def test_bad_url_is_one_line_and_exit_2(capsys, url, message):
    code, out, err = run(capsys, "report", "--storage", url)
    assert code == 2 and out == ""
    assert message in one_error_line(err)


def test_missing_study_is_one_line_and_exit_2(capsys, storage):
    code, out, err = run(capsys, "report", "--storage", storage, "--study", "ghost")
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "no study named 'ghost'" in line and "run1" in line


def test_missing_study_names_the_storage_and_every_study_there(capsys, storage):
    # Found: `--study nope` answered "no study named 'nope' in default".
    code, _, err = run(capsys, "report", "--storage", storage, "--study", "nope")
    line = one_error_line(err)
    assert code == 2 and storage in line and "run1" in line and "unrelated" in line


def test_study_list_counts_the_trials_its_report_shows(capsys, storage):
    # Found: "trials 9" in the list for a study whose report showed 3 trials, plus
    # "6 sampler proposal(s) not run": proposals told without running are not trials.
    from keras_loadtune.trial import ATTR_NOT_RUN

    study = optuna.load_study(study_name="run1", storage=storage)
    stored = study.trials[0]
    for _ in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                params=stored.params,
                distributions=stored.distributions,
                user_attrs={**stored.user_attrs, ATTR_NOT_RUN: True},
                state=optuna.trial.TrialState.PRUNED,
            )
        )
    shown = len(load_report(storage, "run1").trials)
    code, out, _ = run(capsys, "report", "--storage", storage, "--json")
    row = next(r for r in json.loads(out) if r["name"] == "run1")
    assert code == 0 and row["n_trials"] == shown == len(make_report().trials)
    code, out, _ = run(capsys, "report", "--storage", storage)
    assert f" {shown} " in next(r for r in out.splitlines() if r.startswith("run1 "))


def test_missing_sqlite_file_is_not_created(capsys, tmp_path):
    path = tmp_path / "typo.db"
    for extra in ([], ["--study", "run1"]):
        code, _, err = run(capsys, "report", "--storage", f"sqlite:///{path}", *extra)
        assert code == 2
        assert "no such SQLite file" in one_error_line(err)
    assert not path.exists()


def test_plain_path_gets_a_hint(capsys, storage, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "report", "--storage", "klt.db")
    assert code == 2 and "did you mean sqlite:///klt.db?" in one_error_line(err)


def test_python_dash_m_entry_point_errors_cleanly(tmp_path):
    path = tmp_path / "missing.db"
    proc = subprocess.run(
        [sys.executable, "-m", "keras_loadtune", "report", "--storage", f"sqlite:///{path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no such SQLite file" in one_error_line(proc.stderr)
    assert not path.exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"keras-loadtune {keras_loadtune.__version__}"


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["demo", "--loader", "nope"], ["demo", "--epochs", "0"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    capsys.readouterr()


# ------------------------------------------------------------------------------------ demo


@pytest.fixture
def fake_demo(monkeypatch):
    calls: list[dict] = []
    module = types.ModuleType("keras_loadtune.demo")

    def run_demo(**kwargs):
        calls.append(kwargs)
        return 3

    module.run_demo = run_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keras_loadtune.demo", module)
    return calls


def test_demo_passes_arguments_through(capsys, fake_demo):
    argv = ["demo", "--loader", "gil", "--epochs", "3", "--steps", "7", "--batch-size", "16"]
    code, _, _ = run(capsys, *argv, "--verbose")
    assert code == 3
    assert fake_demo == [dict(loader="gil", epochs=3, steps=7, batch_size=16, verbose=1)]


def test_demo_defaults(capsys, fake_demo):
    run(capsys, "demo")
    assert fake_demo == [dict(loader="latency", epochs=2, steps=60, batch_size=32, verbose=0)]


def test_demo_missing_module_fails_clearly(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_loadtune.demo", None)  # import -> ModuleNotFoundError
    code, _, err = run(capsys, "demo")
    assert code == 2 and "keras_loadtune.demo not found" in one_error_line(err)


def test_demo_missing_dependency_names_it(capsys, monkeypatch):
    def fail(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    monkeypatch.setattr(cli.importlib, "import_module", fail)
    code, _, err = run(capsys, "demo")
    assert code == 2 and "needs tensorflow" in one_error_line(err)


def test_report_reads_the_default_cache_storage_that_load_tuner_writes(capsys):
    from keras_loadtune import storage

    path = storage.default_storage_path()  # under the per-test XDG_CACHE_HOME
    code, _, err = run(capsys, "report")
    assert code == 2 and "no such SQLite file" in one_error_line(err)
    assert not path.exists()  # reading never creates the file
    path.parent.mkdir(parents=True)
    populate(
        optuna.create_study(
            study_name="run1", storage=storage.default_storage_url(), direction="maximize"
        ),
        make_report(),
    )
    for argv in (["report"], ["report", "--storage", "default"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and "run1" in out
