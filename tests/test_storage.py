"""`keras_loadtune.storage`: where studies live by default and which storage arguments run."""

from __future__ import annotations

from pathlib import Path

import pytest

from keras_loadtune import storage


def test_default_storage_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert storage.default_storage_path() == tmp_path / "keras_loadtune" / "studies.journal"
    assert storage.legacy_storage_path() == tmp_path / "keras_loadtune" / "studies.db"
    assert storage.resolve_storage("default") == "default"
    for ignored in ("", "relative/dir"):  # XDG: unset, empty or relative -> ~/.cache
        monkeypatch.setenv("XDG_CACHE_HOME", ignored)
        assert storage.cache_dir() == Path.home() / ".cache" / "keras_loadtune"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert storage.cache_dir() == Path.home() / ".cache" / "keras_loadtune"


def test_the_test_suite_never_uses_the_real_cache():
    assert not str(storage.cache_dir()).startswith(str(Path.home() / ".cache"))


@pytest.mark.parametrize("good", [None, "default", "sqlite:///x.db", "postgresql://u@h/db"])
def test_check_storage_accepts(good):
    storage.check_storage(good)
    assert storage.resolve_storage(None) is None


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (3, TypeError, "storage must be None"),
        (Path("x.db"), TypeError, "PosixPath"),
        ("", ValueError, "storage must be None, 'default' or a storage URL"),
        ("klt.db", ValueError, "did you mean 'sqlite:///klt.db'"),
        ("Default", ValueError, "storage URL"),
    ],
)
def test_check_storage_rejects(bad, error, match):
    with pytest.raises(error, match=match):
        storage.check_storage(bad)


def test_postgresql_url_without_driver_uses_the_installed_psycopg():
    from sqlalchemy.engine import make_url

    chosen = storage.with_installed_driver(make_url("postgresql://u@h/db")).drivername
    assert chosen in ("postgresql+psycopg", "postgresql+psycopg2")
    kept = storage.with_installed_driver(make_url("postgresql+psycopg2://u@h/db"))
    assert kept.drivername == "postgresql+psycopg2"
