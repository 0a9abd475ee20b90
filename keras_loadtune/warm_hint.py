"""The warm hint: the best config the last run of a workload stored, readable before Optuna.

The stored best of a study is known only once the study is open: Optuna's import and
the storage take 0.2-1 s, too late for the first batches of a fit. The warm hint is a
small JSON file beside the default storage (`warm_hint_path`) that caches, per
storage, workload (class and batches per epoch) and host, the best config the last
run stored and the study it came from (`store_warm_hint`, called by
`persistence.store_report`). `read_warm_hint` reads it with the standard library in
well under a millisecond before the first batch is served; the session still
verifies it against the study itself.

Example:

>>> from keras_loadtune.fingerprint import HostFingerprint
>>> read_warm_hint(None, object(), HostFingerprint(2, 4, "3.11", None, None)) is None
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keras_loadtune.fingerprint import HostFingerprint, WorkloadFingerprint, dataset_class_path
from keras_loadtune.storage import cache_dir, describe, resolve_storage

logger = logging.getLogger("keras_loadtune")

#: Decisions whose best config is worth starting from.
_HINT_DECISIONS = ("tuned", "warm-start", "kept-baseline")
_HINT_FILE = "warm_hints.json"
_HINT_MAX = 256  # entries kept (the most recent)


@dataclass(frozen=True)
class WarmHint:
    """The best config the last run of a workload stored, to start the next one on.

    Args:
        study_name: The study it was stored in.
        config: `LoaderConfig.to_dict()` of the stored best.
        profile: The timing profile it was measured with (`WorkloadFingerprint.profile()`).

    Example:

    >>> WarmHint("klt-DS-0123", {"workers": 4}, None).config["workers"]
    4
    """

    study_name: str
    config: dict[str, Any]
    profile: dict[str, float] | None


def warm_hint_path() -> Any:
    """The warm hint file (`cache_dir() / "warm_hints.json"`).

    Example:

    >>> warm_hint_path().name
    'warm_hints.json'
    """
    return cache_dir() / _HINT_FILE


def warm_hint_key(storage_shown: str, dataset: str, num_batches: int | None, host: Any) -> str:
    """The hint key: a SHA-256 of the storage, the dataset class, its length and the host.

    Example:

    >>> h = HostFingerprint(2, 4, "3.11", None, None)
    >>> len(warm_hint_key("journal:/x", "m.DS", 10, h))
    64
    """
    text = json.dumps(
        {
            "storage": storage_shown,
            "dataset": dataset,
            "num_batches": num_batches,
            "host": host.to_dict(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_hints() -> dict[str, Any]:
    try:
        with open(warm_hint_path(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def store_warm_hint(
    report_dict: Mapping[str, Any],
    *,
    storage_url: str | None,
    study_name: str | None,
    workload: WorkloadFingerprint | None,
    host: HostFingerprint | None,
) -> None:
    """Remember `report_dict`'s best config as the warm hint of a stored study's workload.

    Written only for a stored study (`storage_url`, redacted, set; fingerprints known)
    whose report settled on a measured config (`"tuned"`, `"warm-start"`,
    `"kept-baseline"`); atomically replaced, last writer wins (a hint is verified
    before it is kept).

    Example:

    >>> store_warm_hint({"decision": "tuned"}, storage_url=None, study_name=None,
    ...                 workload=None, host=None)  # in memory: nothing to remember
    """
    best = report_dict.get("best_config")
    if workload is None or host is None or storage_url is None or not isinstance(best, dict):
        return
    if report_dict.get("decision") not in _HINT_DECISIONS:
        return
    key = warm_hint_key(storage_url, workload.dataset, workload.num_batches, host)
    hints = _read_hints()
    hints.pop(key, None)
    hints[key] = {
        "study_name": study_name,
        "config": dict(best),
        "profile": workload.profile(),
    }
    for old in list(hints)[: max(len(hints) - _HINT_MAX, 0)]:
        del hints[old]
    path = warm_hint_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(hints, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def read_warm_hint(storage: str | None, dataset: Any, host: HostFingerprint) -> WarmHint | None:
    """The warm hint for `dataset` in `storage` on `host`, or `None`; never raises.

    Reads only the hint file (no Optuna, no storage, no batch of the dataset).

    Example:

    >>> read_warm_hint(None, object(), HostFingerprint(2, 4, "3.11", None, None)) is None
    True
    """
    try:
        url = resolve_storage(storage)
        if url is None:
            return None
        num_batches = getattr(dataset, "num_batches", None)
        key = warm_hint_key(
            describe(url),
            dataset_class_path(dataset),
            int(num_batches) if isinstance(num_batches, int) else None,
            host,
        )
        entry = _read_hints().get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            return None
        return WarmHint(str(entry["study_name"]), dict(entry["config"]), entry.get("profile"))
    except Exception as exc:  # a hint is an optimisation: never a reason to fail
        logger.debug("keras_loadtune: no warm hint: %s", exc)
        return None


__all__ = [
    "WarmHint",
    "read_warm_hint",
    "store_warm_hint",
    "warm_hint_key",
    "warm_hint_path",
]
