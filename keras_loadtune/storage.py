"""Where studies live: the default file, URL checks, URL redaction, and one opener.

`persistence` (writing studies during training) and `report` (reading them back)
both open Optuna storage through `open_storage`, with one connect-timeout policy
(`CONNECT_TIMEOUT_S`), one retry rule for racing table creation, and one way to
show a URL (`redact_url`). Neither of them imports the other.

- `storage="default"` is an Optuna *journal file*
  (`$XDG_CACHE_HOME/keras_loadtune/studies.journal`, `JournalFileBackend`): opening
  it costs about a millisecond and needs no SQLAlchemy (whose import and the RDB
  storage's schema check cost 0.4-0.7 s per fit on 2 cores). Several processes may
  append to it at once (Optuna's file lock). Before this the default was the SQLite
  file `studies.db` (`legacy_storage_path`): reading `"default"` still shows its
  studies (`open_storage(..., create=False)`).
- A URL (`sqlite:///...`, `postgresql://...`) is an RDB storage (`open_rdb`), e.g. a
  fleet's shared database.
- `open_rdb(url, create=True)` (writing) creates a missing SQLite file and its
  folder, and the tables;
- `open_rdb(url, create=False)` (reading) creates nothing: a SQLite URL naming a
  missing file, a folder or a non-Optuna database is a `StorageError`.

Optuna and SQLAlchemy are imported lazily, inside the functions that need them.

Example:

>>> redact_url("postgresql://klt:secret@db/klt")
'postgresql://klt:***@db/klt'
>>> resolve_storage(None) is None
True
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import optuna

#: The `storage` value that means "the journal file in the user's cache directory".
DEFAULT_STORAGE = "default"
#: How the default storage is shown (reports, `StudyHandle.storage_url`).
JOURNAL_PREFIX = "journal:"
#: Seconds to wait for a database server to accept a connection (read and write).
CONNECT_TIMEOUT_S = 5
#: Seconds a SQLite writer waits for another process's lock.
SQLITE_LOCK_TIMEOUT_S = 30
# Attempts at creating the tables of a fresh database that another process creates too.
_ATTEMPTS = 3
_SERVER_BACKENDS = ("postgresql", "mysql", "mariadb")
_PASSWORD_RE = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@]*:)(?P<pw>[^@]*)(?P<at>@)")
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class StorageError(RuntimeError):
    """An Optuna storage URL cannot be parsed, reached or read.

    The message is one line meant for the user (no traceback needed).
    """


class StudyNotFoundError(StorageError, LookupError):
    """The storage is fine but holds no study of that name."""


def redact_url(url: str | None) -> str | None:
    """Hide the password of a database URL (`postgresql://u:secret@h/db` -> `postgresql://u:***@h/db`).

    Example:

    >>> redact_url("sqlite:///klt.db")
    'sqlite:///klt.db'
    """
    if url is None:
        return None
    return _PASSWORD_RE.sub(lambda m: m.group("head") + "***" + m.group("at"), url, count=1)


def first_line(exc: BaseException, *, with_type: bool = True) -> str:
    """The first line of an exception's message, for one-line notes and errors.

    Example:

    >>> first_line(ValueError("bad\\nmore"))
    'ValueError: bad'
    >>> first_line(ValueError("bad"), with_type=False)
    'bad'
    """
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if with_type else lines[0]


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/keras_loadtune`, or `~/.cache/keras_loadtune` (XDG rules:
    an unset, empty or relative `XDG_CACHE_HOME` is ignored).

    Example:

    >>> cache_dir().name
    'keras_loadtune'
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "keras_loadtune"


def default_storage_path() -> Path:
    """The journal file `storage="default"` stands for (not created by this call).

    Example:

    >>> default_storage_path().name
    'studies.journal'
    """
    return cache_dir() / "studies.journal"


def legacy_storage_path() -> Path:
    """The SQLite file that was the default storage before the journal file.

    Example:

    >>> legacy_storage_path().name
    'studies.db'
    """
    return cache_dir() / "studies.db"


def default_storage_url() -> str:
    """`sqlite:///<legacy_storage_path()>`: the former default, still read as `"default"`.

    Example:

    >>> default_storage_url().startswith("sqlite:///")
    True
    """
    return f"sqlite:///{legacy_storage_path()}"


def shown_default() -> str:
    """How the default storage is shown: `journal:<default_storage_path()>`.

    Example:

    >>> shown_default().startswith("journal:")
    True
    """
    return f"{JOURNAL_PREFIX}{default_storage_path()}"


def check_storage(storage: Any) -> None:
    """Validate a `storage` argument up front (types and obvious mistakes only).

    Whether the storage can be reached is only known when it is opened.

    Args:
        storage: `None`, `"default"` or a storage URL.

    Raises:
        TypeError: Not a string or `None`.
        ValueError: An empty string, or neither `"default"` nor a URL (`scheme://...`).

    Example:

    >>> check_storage("sqlite:///klt.db")
    """
    if storage is None:
        return
    if not isinstance(storage, str):
        raise TypeError(
            "storage must be None (in memory), 'default' (a SQLite file in the cache "
            f"directory) or an Optuna storage URL; got {type(storage).__name__}."
        )
    if storage == DEFAULT_STORAGE:
        return
    if not _URL_RE.match(storage):
        hint = f" (did you mean 'sqlite:///{storage}'?)" if storage.strip() else ""
        raise ValueError(
            "storage must be None, 'default' or a storage URL like 'sqlite:///klt.db' or "
            f"'postgresql://user@host/db'; got {storage!r}{hint}."
        )


def resolve_storage(storage: str | None) -> str | None:
    """The storage for a `storage` argument: `None` (in memory), `"default"` (the
    journal file, see `open_storage`) or the URL.

    Example:

    >>> resolve_storage("sqlite:///klt.db")
    'sqlite:///klt.db'
    """
    check_storage(storage)
    return storage


def with_installed_driver(parsed: Any) -> Any:
    """`postgresql://` means psycopg (3) to SQLAlchemy >= 2.1, psycopg2 to older ones:
    pick whichever of the two is installed.

    Example:

    >>> from sqlalchemy.engine import make_url
    >>> with_installed_driver(make_url("sqlite:///klt.db")).drivername
    'sqlite'
    """
    import importlib.util

    if parsed.drivername != "postgresql":
        return parsed
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return parsed.set(drivername=driver)
    return parsed


def describe(storage: Any) -> str:
    """How to show a storage (URL or storage object) to the user, password hidden.

    Example:

    >>> describe("postgresql://u:pw@h/db")
    'postgresql://u:***@h/db'
    """
    if storage == DEFAULT_STORAGE:
        return shown_default()
    if isinstance(storage, str):
        return redact_url(storage) or ""
    url = getattr(storage, "url", None)
    return redact_url(url) if isinstance(url, str) else type(storage).__name__  # type: ignore[return-value]


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
        raise StorageError(
            f"{path} is not a readable SQLite database: {first_line(exc, with_type=False)}"
        ) from exc
    if not rows:
        raise StorageError(
            f"{path} is a SQLite file but not an Optuna storage (no 'studies' table)"
        )


def open_rdb(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """Open an Optuna RDB storage: the one opener and timeout policy of the package.

    Args:
        url: A SQLAlchemy database URL, or `"default"`.
        create: Writing (`True`): create a missing SQLite file, its folder and the
            tables, retrying when another process creates them at the same time.
            Reading (`False`): create nothing; errors become one-line `StorageError`s.

    Raises:
        StorageError: Reading only: unparseable URL, missing or non-Optuna SQLite file,
            missing driver, unreachable server.
        Exception: Writing: whatever Optuna / SQLAlchemy raised.

    Example:

    >>> open_rdb("sqlite:////nonexistent/klt.db", create=False)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
        ...
    keras_loadtune.storage.StorageError: no such SQLite file: /nonexistent/klt.db
    """
    import optuna
    from sqlalchemy.engine import make_url

    if url == DEFAULT_STORAGE:
        url = default_storage_url()
    shown = describe(url)
    try:
        parsed = with_installed_driver(make_url(url))
    except Exception as exc:
        if create:
            raise
        hint = ""
        if "://" not in url and os.path.exists(url):
            hint = f" (did you mean sqlite:///{url}?)"
        raise StorageError(f"cannot parse storage URL {shown!r}{hint}") from exc
    backend = parsed.get_backend_name()
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        database = parsed.database or ""
        in_memory = not database or database == ":memory:"
        if not create and not in_memory:
            _check_sqlite_file(_sqlite_path(database), shown)
        elif create and not in_memory and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        if create:
            engine_kwargs["connect_args"] = {"timeout": SQLITE_LOCK_TIMEOUT_S}
    elif backend in _SERVER_BACKENDS:
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        engine_kwargs["pool_pre_ping"] = True
    rendered = parsed.render_as_string(hide_password=False)
    if not create:
        try:
            return optuna.storages.RDBStorage(
                rendered, engine_kwargs=engine_kwargs or None, skip_table_creation=True
            )
        except ImportError as exc:
            raise StorageError(
                f"no database driver for {backend} storage {shown!r}: "
                f"{first_line(exc, with_type=False)}"
            ) from exc
        except Exception as exc:
            raise StorageError(
                f"cannot open storage {shown!r}: {first_line(exc, with_type=False)}"
            ) from exc
    last: Exception | None = None
    for attempt in range(_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(rendered, engine_kwargs=engine_kwargs)
        except Exception as exc:
            # Two processes creating the tables of a fresh database at once can collide
            # (duplicate type/table); the loser finds them there on the next attempt.
            text = str(exc).lower()
            if not any(k in text for k in ("already exists", "duplicate", "unique")):
                raise
            last = exc
            time.sleep(0.1 * (attempt + 1))
    assert last is not None
    raise last


def open_journal(path: Path, *, create: bool = True) -> optuna.storages.BaseStorage:
    """Open an Optuna journal file storage (no SQLAlchemy).

    Args:
        path: The journal file.
        create: Writing: create the file and its folder. Reading: a missing file is a
            `StorageError` and nothing is created.

    Example:

    >>> open_journal(Path("/nonexistent/x.journal"), create=False)
    ... # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
        ...
    keras_loadtune.storage.StorageError: no such journal file: /nonexistent/x.journal
    """
    import optuna.storages
    import optuna.storages.journal

    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise StorageError(f"no such journal file: {path}; nothing was created")
    try:
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend)
    except Exception as exc:
        if create:
            raise
        raise StorageError(
            f"cannot read journal file {path}: {first_line(exc, with_type=False)}"
        ) from exc


def _merged(*sources: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """An in-memory storage holding the studies of `sources` (the first one wins a name)."""
    import optuna

    merged = optuna.storages.InMemoryStorage()
    seen: set[str] = set()
    for source in sources:
        for summary in optuna.get_all_study_summaries(source, include_best_trial=False):
            if summary.study_name in seen:
                continue
            seen.add(summary.study_name)
            optuna.copy_study(
                from_study_name=summary.study_name,
                from_storage=source,
                to_storage=merged,
            )
    return merged


def _read_default() -> optuna.storages.BaseStorage:
    """The default storage for reading: the journal, the former SQLite file, or both."""
    journal, legacy = default_storage_path(), legacy_storage_path()
    found = [p for p in (journal, legacy) if p.exists()]
    if not found:
        raise StorageError(
            f"no such SQLite file: {legacy} nor journal file: {journal} (the default "
            "storage: LoadTuner has stored nothing here yet); nothing was created"
        )
    opened = [
        open_journal(journal, create=False)
        if p == journal
        else open_rdb(default_storage_url(), create=False)
        for p in found
    ]
    if len(opened) == 1:
        return opened[0]
    from keras_loadtune._optuna_logging import quiet_optuna

    with quiet_optuna():
        return _merged(*opened)


def open_storage(storage: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """Open the storage a `storage` argument names: the one opener of the package.

    Args:
        storage: `"default"` (the journal file `default_storage_path()`), or an Optuna
            RDB URL (`sqlite:///klt.db`, `postgresql://...`, see `open_rdb`), or, for
            reading, the path of a journal file.
        create: Writing (`True`): create what is missing. Reading (`False`): create
            nothing; `"default"` then also shows the studies of the former default
            SQLite file (`legacy_storage_path()`), if there is one.

    Raises:
        StorageError: Reading only: see `open_rdb` and `open_journal`.
        Exception: Writing: whatever Optuna / SQLAlchemy raised.

    Example:

    >>> open_storage("sqlite:////nonexistent/klt.db", create=False)
    ... # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
        ...
    keras_loadtune.storage.StorageError: no such SQLite file: /nonexistent/klt.db
    """
    if storage == DEFAULT_STORAGE:
        return open_journal(default_storage_path()) if create else _read_default()
    if storage.startswith(JOURNAL_PREFIX):
        return open_journal(Path(storage[len(JOURNAL_PREFIX) :]), create=create)
    if not create and not _URL_RE.match(storage) and storage.endswith(".journal"):
        return open_journal(Path(storage), create=False)
    return open_rdb(storage, create=create)


__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_STORAGE",
    "JOURNAL_PREFIX",
    "SQLITE_LOCK_TIMEOUT_S",
    "StorageError",
    "StudyNotFoundError",
    "cache_dir",
    "check_storage",
    "default_storage_path",
    "default_storage_url",
    "describe",
    "first_line",
    "legacy_storage_path",
    "open_journal",
    "open_rdb",
    "open_storage",
    "redact_url",
    "resolve_storage",
    "shown_default",
    "with_installed_driver",
]
