"""Reading `LoadTuner` studies back from Optuna storage (Optuna and SQLAlchemy imported lazily)."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from typing import TYPE_CHECKING, Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.report import _format
from keras_loadtune.trial import TrialRecord, params_to_config

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from keras_loadtune.report import TuningReport

#: Study user attr where `LoadTuner` keeps `report.to_dict()` (minus `"trials"`).
STUDY_ATTR_REPORT = "klt_report"

_CONNECT_TIMEOUT_S = 10


class StorageError(RuntimeError):
    """An Optuna storage URL cannot be parsed, reached or read.

    The message is one line meant for the user (no traceback needed).
    """


class StudyNotFoundError(StorageError, LookupError):
    """The storage is fine but holds no study of that name."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _describe(storage: Any) -> str:
    if isinstance(storage, str):
        return _format.redact_url(storage) or ""
    url = getattr(storage, "url", None)
    return _format.redact_url(url) if isinstance(url, str) else type(storage).__name__  # type: ignore[return-value]


def _sqlite_path(database: str) -> str:
    """The file path of a SQLite URL's database part (handles `file:` URIs)."""
    if database.startswith("file:"):
        database = urllib.parse.unquote(database[len("file:") :].split("?", 1)[0])
    return database


def _check_sqlite_file(path: str, shown: str) -> None:
    """Fail clearly (and create nothing) unless `path` is an existing Optuna SQLite file."""
    if not os.path.exists(path):
        raise StorageError(f"no such SQLite file: {path} (from {shown}); nothing was created")
    if os.path.isdir(path):
        raise StorageError(f"{path} is a directory, not a SQLite file (from {shown})")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'studies'"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(f"{path} is not a readable SQLite database: {_first_line(exc)}") from exc
    if not rows:
        raise StorageError(
            f"{path} is a SQLite file but not an Optuna storage (no 'studies' table)"
        )


def open_storage(storage: str | optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """Open an Optuna storage for reading, with one-line errors and no side effects on disk.

    Unlike `optuna.storages.RDBStorage`, a SQLite URL naming a missing file is an error
    (no empty database is created), and no tables are created in an existing database.
    A `BaseStorage` instance is returned unchanged.

    Args:
        storage: A SQLAlchemy database URL (`sqlite:///klt.db`, `postgresql://...`)
            or an Optuna storage object.

    Raises:
        StorageError: Unparseable URL, missing/non-Optuna SQLite file, missing driver,
            unreachable server.

    Example:

    ```python
    from keras_loadtune.report import open_storage
    storage = open_storage("sqlite:///klt.db")
    ```
    """
    if not isinstance(storage, str):
        return storage
    import optuna
    from sqlalchemy.engine import make_url

    from keras_loadtune import persistence

    if storage == persistence.DEFAULT_STORAGE:  # what LoadTuner(storage="default") uses
        storage = persistence.default_storage_url()
    shown = _describe(storage)
    try:
        url = persistence.with_installed_driver(make_url(storage))
    except Exception as exc:
        hint = ""
        if "://" not in storage and os.path.exists(storage):
            hint = f" (did you mean sqlite:///{storage}?)"
        raise StorageError(f"cannot parse storage URL {shown!r}{hint}") from exc
    backend = url.get_backend_name()
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        database = url.database or ""
        if database and database != ":memory:":
            _check_sqlite_file(_sqlite_path(database), shown)
    elif backend in ("postgresql", "mysql", "mariadb"):
        engine_kwargs["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT_S}
    try:
        return optuna.storages.RDBStorage(
            url.render_as_string(hide_password=False),
            engine_kwargs=engine_kwargs or None,
            skip_table_creation=True,
        )
    except ImportError as exc:
        raise StorageError(
            f"no database driver for {backend} storage {shown!r}: {_first_line(exc)}"
        ) from exc
    except Exception as exc:
        raise StorageError(f"cannot open storage {shown!r}: {_first_line(exc)}") from exc


def list_studies(storage_url: str | optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """The studies in a storage, one JSON-ready dict each.

    Keys: `name`, `n_trials`, `decision` (from the stored report; `None` for studies
    not written by `LoadTuner` or still tuning), `best_config` (a `LoaderConfig.to_dict()`
    or `None`), `speedup` (or `None`) and `datetime` (ISO start time or `None`).

    Raises:
        StorageError: the storage cannot be opened or read (see `open_storage`).

    Example:

    ```python
    from keras_loadtune.report import list_studies
    for s in list_studies("sqlite:///klt.db"):
        print(s["name"], s["decision"], s["best_config"])
    ```
    """
    import optuna

    storage = open_storage(storage_url)
    try:
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    except Exception as exc:
        raise StorageError(
            f"cannot read studies from {_describe(storage_url)!r}: {_first_line(exc)}"
        ) from exc
    rows: list[dict[str, Any]] = []
    for summary in summaries:
        stored = summary.user_attrs.get(STUDY_ATTR_REPORT)
        stored = stored if isinstance(stored, dict) else {}
        best = stored.get("best_config")
        if best is None and summary.best_trial is not None:
            try:
                best = params_to_config(summary.best_trial.params).to_dict()
            except (KeyError, TypeError, ValueError):
                best = None
        base_sps, best_sps = stored.get("baseline_steps_per_s"), stored.get("best_steps_per_s")
        speedup = None
        if _format.is_number(base_sps) and _format.is_number(best_sps) and base_sps > 0:
            speedup = float(best_sps) / float(base_sps)
        start = summary.datetime_start
        rows.append(
            {
                "name": summary.study_name,
                "n_trials": summary.n_trials,
                "decision": stored.get("decision"),
                "best_config": best,
                "speedup": speedup,
                "datetime": start.isoformat(timespec="seconds") if start else None,
            }
        )
    return rows


def load_report(storage_url: str | optuna.storages.BaseStorage, study_name: str) -> TuningReport:
    """Load one study from storage and rebuild its `TuningReport`.

    Raises:
        StorageError: the storage cannot be opened or read.
        StudyNotFoundError: no study of that name (the message lists the ones there).

    Example:

    ```python
    from keras_loadtune.report import load_report
    print(load_report("sqlite:///klt.db", "resnet-input"))
    ```
    """
    import optuna

    from keras_loadtune.report import TuningReport

    storage = open_storage(storage_url)
    shown = _describe(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as exc:
        try:
            names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, False))
        except Exception:  # pragma: no cover - listing is only a hint
            names = []
        there = f"studies there: {', '.join(names)}" if names else "it holds no studies"
        raise StudyNotFoundError(f"no study named {study_name!r} in {shown}; {there}") from exc
    except Exception as exc:
        raise StorageError(
            f"cannot load study {study_name!r} from {shown}: {_first_line(exc)}"
        ) from exc
    return TuningReport.from_study(
        study, storage_url=shown if isinstance(storage_url, str) else None
    )


def report_from_study(
    cls: type[TuningReport], study: optuna.Study, *, storage_url: str | None = None
) -> TuningReport:
    """Implementation of `TuningReport.from_study`."""
    from optuna.trial import TrialState

    records: list[TrialRecord] = []
    running = unparsable = 0
    durations: list[float] = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (TrialState.RUNNING, TrialState.WAITING):
            running += 1
            continue
        try:
            records.append(TrialRecord.from_frozen_trial(trial))
        except (KeyError, TypeError, ValueError):
            unparsable += 1
            continue
        if trial.datetime_start and trial.datetime_complete:
            durations.append((trial.datetime_complete - trial.datetime_start).total_seconds())

    extra_notes: list[str] = []
    if running:
        extra_notes.append(f"{running} trial(s) still running in storage; not shown")
    if unparsable:
        extra_notes.append(f"{unparsable} trial(s) without loader params; not shown")

    stored = study.user_attrs.get(STUDY_ATTR_REPORT)
    if isinstance(stored, dict) and "decision" in stored:
        data = dict(stored)
        data["trials"] = []
        report = cls.from_dict(data)
        report.trials = records
    else:
        report = _derive_in_progress(cls, records, durations)
        extra_notes.insert(
            0,
            f"study has no {STUDY_ATTR_REPORT!r} attribute (tuning still running or "
            "interrupted); figures derived from the stored trials",
        )
    report.notes = [*report.notes, *extra_notes]
    if report.study_name is None:
        report.study_name = study.study_name
    if report.storage_url is None and storage_url is not None:
        report.storage_url = _format.redact_url(storage_url)
    return report


def _derive_in_progress(
    cls: type[TuningReport], records: list[TrialRecord], durations: list[float]
) -> TuningReport:
    def measured(t: TrialRecord) -> bool:
        return t.state == "complete" and _format.is_number(t.steps_per_s)

    baseline = next((t for t in records if t.source == "baseline" and measured(t)), None)
    baseline = baseline or next((t for t in records if t.source == "baseline"), None)
    done = [t for t in records if measured(t)]
    best = max(done, key=lambda t: float(t.steps_per_s)) if done else None  # type: ignore[arg-type]
    base_cfg: LoaderConfig | None = baseline.config if baseline else None
    return cls(
        decision="in-progress",
        baseline_config=base_cfg,
        best_config=best.config if best else None,
        trials=records,
        probe_wait_fraction=baseline.wait_fraction if baseline else None,
        baseline_steps_per_s=baseline.steps_per_s if baseline else None,
        best_steps_per_s=best.steps_per_s if best else None,
        tuning_seconds=float(sum(durations)),
        tuning_steps=sum(t.steps for t in records),
    )
