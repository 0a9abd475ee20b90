"""Reading `LoadTuner` studies back from Optuna storage (Optuna and SQLAlchemy imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keras_loadtune import storage as _stores
from keras_loadtune.report._model import TuningReport
from keras_loadtune.storage import (
    StorageError,
    StudyNotFoundError,
    describe,
    first_line,
)
from keras_loadtune.trial import STUDY_ATTR_REPORT, params_to_config

if TYPE_CHECKING:  # pragma: no cover
    import optuna


def open_storage(storage: str | optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """Open an Optuna storage for reading, with one-line errors and no side effects on disk.

    Unlike `optuna.storages.RDBStorage`, a SQLite URL naming a missing file is an error
    (no empty database is created), and no tables are created in an existing database.
    A `BaseStorage` instance is returned unchanged. `"default"` is the file
    `LoadTuner(storage="default")` writes (and the former default SQLite file).
    See `keras_loadtune.storage.open_storage`.

    Args:
        storage: A SQLAlchemy database URL (`sqlite:///klt.db`, `postgresql://...`),
            `"default"`, or an Optuna storage object.

    Raises:
        StorageError: Unparseable URL, missing/non-Optuna SQLite file, missing driver,
            unreachable server.

    Example:

    >>> open_storage("sqlite:////nonexistent/klt.db")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
        ...
    keras_loadtune.storage.StorageError: no such SQLite file
    """
    if not isinstance(storage, str):
        return storage
    return _stores.open_storage(storage, create=False)


def list_studies(storage_url: str | optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """The studies in a storage, one JSON-ready dict each.

    Keys: `name`, `n_trials` (the trials its report shows: sampler proposals told
    without running are not counted), `decision` (from the stored report; `None` for studies
    not written by `LoadTuner` or still tuning), `best_config` (a `LoaderConfig.to_dict()`
    or `None`), `speedup` (or `None`), `limit` (the machine limit's `to_dict()`, or
    `None`) and `datetime` (ISO start time or `None`).

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
            f"cannot read studies from {describe(storage_url)!r}: "
            f"{first_line(exc, with_type=False)}"
        ) from exc
    from keras_loadtune.report._model import stored_trials

    rows: list[dict[str, Any]] = []
    for summary in summaries:
        try:  # the trials its report shows (sampler proposals not run are not trials)
            study_id = storage.get_study_id_from_name(summary.study_name)
            shown = stored_trials(storage.get_all_trials(study_id, deepcopy=False))
            n_trials = len(shown.records)
        except Exception:  # pragma: no cover - a count is only shown
            n_trials = summary.n_trials
        stored = summary.user_attrs.get(STUDY_ATTR_REPORT)
        stored = stored if isinstance(stored, dict) else {}
        best = stored.get("best_config")
        if best is None and summary.best_trial is not None:
            try:
                best = params_to_config(summary.best_trial.params).to_dict()
            except (KeyError, TypeError, ValueError):
                best = None
        speedup, limit = _stored_figures(stored)
        start = summary.datetime_start
        rows.append(
            {
                "name": summary.study_name,
                "n_trials": n_trials,
                "decision": stored.get("decision"),
                "best_config": best,
                "speedup": speedup,
                "limit": limit,
                "datetime": start.isoformat(timespec="seconds") if start else None,
            }
        )
    return rows


def _stored_figures(stored: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
    """`(speedup, limit dict)` of a stored report, read through `TuningReport` itself (so
    the list and the report never disagree); `(None, None)` when unreadable."""
    if "decision" not in stored:
        return None, None
    try:
        report = TuningReport.from_dict({**stored, "trials": []})
    except (KeyError, TypeError, ValueError):
        return None, None
    return report.speedup, report.limit.to_dict() if report.limit is not None else None


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

    storage = open_storage(storage_url)
    shown = describe(storage_url)
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
            f"cannot load study {study_name!r} from {shown}: {first_line(exc, with_type=False)}"
        ) from exc
    return TuningReport.from_study(
        study, storage_url=shown if isinstance(storage_url, str) else None
    )
