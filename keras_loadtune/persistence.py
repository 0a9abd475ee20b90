"""Where tuning studies live and what they are called.

`LoadTuner` records every trial in an Optuna study. By default the study is kept in a
SQLite file in the user's cache directory, so a later run of the same workload on the
same kind of machine starts from the best config found before (warm start) instead
of tuning again; a fleet of hosts can share one study through a database URL.

- **Where** (`resolve_storage`): `storage=None` keeps the study in memory (nothing is
  written); `"default"` is the Optuna journal file
  `$XDG_CACHE_HOME/keras_loadtune/studies.journal`, or
  `~/.cache/keras_loadtune/studies.journal` when `XDG_CACHE_HOME` is unset, empty or
  relative (XDG base directory rules; no SQLAlchemy: see `keras_loadtune.storage`);
  any other string is an Optuna / SQLAlchemy storage URL (`sqlite:///path.db`,
  `postgresql://user:pw@host/db`, ...).
- **What it is called** (`study_name_for`): `klt-<dataset class>-<12 hex>`, the hex
  being a SHA-256 of the workload's *structure* (dataset class, batches per epoch,
  shapes and dtypes of the first batch) and of the host fingerprint (cores, RAM in GiB,
  Python, TensorFlow and Keras versions, Keras backend, accelerator kind). Both
  fingerprints are stored as study user attrs (`klt_workload`, `klt_host`), readable
  in optuna-dashboard. The timing profile (median ms to produce a batch, its CPU
  share) is *never hashed*: it jitters from run to run. It is stored as an attribute
  (`WorkloadFingerprint.profile()`, on every trial as `klt_profile`) and matched with
  a tolerance (`decision.warm_start.profiles_match`), so two runs of one workload
  share one study and a changed loader does not warm-start from the old one.
- **Opening** (`open_study`) never raises: an unreachable or broken storage gives one
  warning and an in-memory study, and `StudyHandle.note` says so for the report.

Several processes may tune into one study at once: studies are created with
`optuna.create_study(load_if_exists=True)`, and trials are written through Optuna's
journal or RDB storage (the journal file and SQLite wait for locks; PostgreSQL
handles concurrent writers). During a fit the session asks and tells in an in-memory
working copy (`attach_working_copy`); `sync_trials` writes the new trials back.
What opening and writing cost is kept in `StudyHandle.costs_s` for the report.

Example:

```python
from keras_loadtune import persistence

persistence.default_storage_path()        # ~/.cache/keras_loadtune/studies.db
host = persistence.host_fingerprint()
work = persistence.workload_fingerprint(my_pydataset)
name = persistence.study_name_for(work, host)   # 'klt-MyDataset-3f2a9c01b7de'
handle = persistence.open_study("default", name, workload=work, host=host)
handle.study, handle.note                 # an optuna.Study, None when all went well
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import sys
import time
import types
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from keras_loadtune._optuna_logging import quiet_optuna
from keras_loadtune.storage import (
    CONNECT_TIMEOUT_S,
    DEFAULT_STORAGE,
    SQLITE_LOCK_TIMEOUT_S,
    cache_dir,
    check_storage,
    default_storage_path,
    default_storage_url,
    describe,
    first_line,
    legacy_storage_path,
    open_rdb,
    open_storage,
    redact_url,
    resolve_storage,
    with_installed_driver,
)
from keras_loadtune.trial import (
    STUDY_ATTR_FINGERPRINT,
    STUDY_ATTR_HOST,
    STUDY_ATTR_REPORT,
    STUDY_ATTR_WORKLOAD,
)

if TYPE_CHECKING:  # pragma: no cover
    import optuna

logger = logging.getLogger("keras_loadtune")

_MAX_NAME = 512
# Records (the most recent) the produce-time profile is taken from.
_PROFILE_RECORDS = 32
# Attempts to create the RDB storage (concurrent first-time table creation can race).


# ----------------------------------------------------------------------------- where


def check_study_name(study_name: Any) -> None:
    """Validate a `study_name` argument: `None` or a non-empty string of at most 512 chars.

    Raises:
        TypeError: Not a string or `None`.
        ValueError: Empty, blank or too long.
    """
    if study_name is None:
        return
    if not isinstance(study_name, str):
        raise TypeError(f"study_name must be a str or None; got {type(study_name).__name__}.")
    if not study_name.strip() or len(study_name) > _MAX_NAME:
        raise ValueError(
            f"study_name must be a non-empty string of at most {_MAX_NAME} characters; "
            f"got {study_name!r}."
        )


# ---------------------------------------------------------------------- fingerprints


@dataclass(frozen=True)
class WorkloadFingerprint:
    """What the input pipeline is, coarsely enough that a rerun matches.

    Args:
        dataset: `module.qualname` of the dataset class (or generator factory).
        num_batches: Batches per epoch (`None`: infinite or unknown).
        batch: Shapes and dtypes of the first batch's arrays, e.g.
            `"((32, 32, 32, 3) float32, (32,) int32)"` (`"?"` when unknown).
        produce_ms: Median ms to produce a batch (`None`: unknown); not hashed.
        cpu_ratio: Share of that time spent on CPU, in [0, 1] (`None`: unknown); not
            hashed.
    """

    dataset: str
    num_batches: int | None
    batch: str
    produce_ms: float | None = field(default=None, compare=False)
    cpu_ratio: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def structure(self) -> dict[str, Any]:
        """What the study key hashes: the class, the length, the batch structure."""
        return {"dataset": self.dataset, "num_batches": self.num_batches, "batch": self.batch}

    def profile(self) -> dict[str, float] | None:
        """The timing profile (`produce_ms`, `cpu_ratio`), `None` when unknown."""
        if self.produce_ms is None or self.cpu_ratio is None:
            return None
        return {"produce_ms": float(self.produce_ms), "cpu_ratio": float(self.cpu_ratio)}

    @property
    def class_name(self) -> str:
        """The dataset class's own name (the last part of its qualname)."""
        return self.dataset.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class HostFingerprint:
    """What the machine is: hosts with equal fingerprints share what was learned."""

    cores: int
    ram_gib: int
    python: str
    tensorflow: str | None
    keras: str | None
    backend: str = "tensorflow"
    accelerator: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def keras_backend() -> str:
    """The Keras backend in use (`KERAS_BACKEND` or Keras's config), without importing it."""
    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            return str(keras.backend.backend())
        except Exception:  # pragma: no cover - a half-imported keras
            pass
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def accelerator_kind(backend: str) -> str:
    """ "cpu", or the kind of the first accelerator the backend sees (e.g. "gpu", "tpu").

    Asks only a backend that is already imported, so it never imports TensorFlow.
    """
    try:
        if backend == "jax" and "jax" in sys.modules:
            return str(sys.modules["jax"].default_backend())
        if backend == "torch" and "torch" in sys.modules:
            return "gpu" if sys.modules["torch"].cuda.is_available() else "cpu"
        if backend == "tensorflow" and "tensorflow" in sys.modules:
            devices = sys.modules["tensorflow"].config.list_physical_devices()
            kinds = {d.device_type.lower() for d in devices} - {"cpu"}
            return sorted(kinds)[0] if kinds else "cpu"
    except Exception:  # pragma: no cover - a broken driver is not our error
        pass
    return "cpu"


def _version(module: str, *distributions: str) -> str | None:
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib import metadata

    for dist in distributions:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def host_fingerprint(cores: int | None = None) -> HostFingerprint:
    """This machine's fingerprint (TensorFlow is not imported for it)."""
    import psutil

    from keras_loadtune.decision.resources import available_cores

    backend = keras_backend()
    return HostFingerprint(
        cores=int(cores if cores is not None else available_cores()),
        ram_gib=round(psutil.virtual_memory().total / 2**30),
        python=".".join(platform.python_version_tuple()[:2]),
        tensorflow=_version("tensorflow", "tensorflow", "tensorflow-cpu", "tf-nightly"),
        keras=_version("keras", "keras", "keras-nightly"),
        backend=backend,
        accelerator=accelerator_kind(backend),
    )


def batch_structure(batch: Any, _depth: int = 0) -> str:
    """Shapes and dtypes of a batch's arrays as one string (nested tuples/lists/dicts)."""
    if _depth > 8:
        return "..."
    if isinstance(batch, Mapping):
        items = sorted(batch.items(), key=lambda kv: str(kv[0]))
        inner = ", ".join(f"{k}: {batch_structure(v, _depth + 1)}" for k, v in items)
        return "{" + inner + "}"
    if isinstance(batch, (tuple, list)):
        inner = ", ".join(batch_structure(v, _depth + 1) for v in batch)
        return "(" + inner + ("," if len(batch) == 1 else "") + ")"
    shape, dtype = getattr(batch, "shape", None), getattr(batch, "dtype", None)
    if shape is not None and dtype is not None:
        dims = tuple(None if d is None else int(d) for d in tuple(shape))
        name = getattr(dtype, "name", None) or str(dtype)
        return f"{dims} {name}"
    if batch is None:
        return "None"
    return type(batch).__name__


def _class_path(obj: Any) -> str:
    """`module.qualname` of a dataset's class, or of a generator factory function."""
    is_function = isinstance(obj, (types.FunctionType, types.MethodType))
    target = obj if is_function or isinstance(obj, type) else type(obj)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{target.__qualname__}"


def produce_profile(records: Iterable[Any]) -> tuple[float | None, float | None]:
    """`(median ms to produce a batch, median CPU share)` of batch records (`None`s if none).

    Example:

    >>> from types import SimpleNamespace as R
    >>> produce_profile([R(produce_wall_s=0.04, produce_cpu_s=0.01)] * 3)
    (40.0, 0.25)
    """
    recent = list(records)[-_PROFILE_RECORDS:]
    walls = sorted(float(r.produce_wall_s) for r in recent)
    cpus = sorted(float(r.produce_cpu_s) for r in recent)
    if not walls:
        return None, None
    wall = walls[len(walls) // 2]
    cpu = cpus[len(cpus) // 2]
    ratio = min(max(cpu / wall, 0.0), 1.0) if wall > 0 else 0.0
    return round(max(wall * 1000.0, 1e-3), 3), round(ratio, 3)


def workload_fingerprint(
    dataset: Any,
    records: Iterable[Any] = (),
    *,
    first_batch: Any = None,
    num_batches: int | None = None,
) -> WorkloadFingerprint:
    """Fingerprint of an input pipeline.

    Args:
        dataset: The user's dataset (a `PyDataset` or generator factory); a
            `TunedPyDataset` is unwrapped.
        records: Recent `BatchRecord`s (`produce_wall_s`, `produce_cpu_s`) for the
            produce-time profile (stored, not hashed); none leaves it unknown.
        first_batch: The first batch, if already at hand; otherwise `dataset[0]` is
            read once (a failure leaves the structure unknown).
        num_batches: Batches per epoch; default `dataset.num_batches` / `len(dataset)`.
    """
    inner = getattr(dataset, "dataset", None)
    source = inner if inner is not None and hasattr(dataset, "reconfigure") else dataset
    if num_batches is None:
        try:
            num_batches = getattr(dataset, "num_batches", None)
            if num_batches is None and hasattr(dataset, "__len__"):
                num_batches = len(dataset)
        except Exception:  # infinite / unknown length
            num_batches = None
    if first_batch is None:
        try:
            first_batch = dataset[0]
        except Exception as exc:  # pragma: no cover - depends on the user's dataset
            logger.debug("keras_loadtune: could not read batch 0 for the fingerprint: %s", exc)
    structure = "?" if first_batch is None else batch_structure(first_batch)
    produce_ms, cpu_ratio = produce_profile(records)
    return WorkloadFingerprint(
        dataset=_class_path(source),
        num_batches=int(num_batches) if isinstance(num_batches, int) else None,
        batch=structure,
        produce_ms=produce_ms,
        cpu_ratio=cpu_ratio,
    )


def fingerprint_hash(workload: WorkloadFingerprint, host: HostFingerprint) -> str:
    """SHA-256 (hex) of the workload's structure and the host fingerprint (canonical
    JSON); the timing profile is left out (see the module docs)."""
    text = json.dumps(
        {"workload": workload.structure(), "host": host.to_dict()}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def study_name_for(workload: WorkloadFingerprint, host: HostFingerprint) -> str:
    """`klt-<dataset class>-<first 12 hex of fingerprint_hash>`."""
    cls = re.sub(r"[^A-Za-z0-9_.\-]+", "_", workload.class_name).strip("_") or "dataset"
    return f"klt-{cls[:64]}-{fingerprint_hash(workload, host)[:12]}"


# ------------------------------------------------------------------------- opening


@dataclass
class StudyHandle:
    """What `open_study` opened.

    Args:
        study: The Optuna study, or `None` when the session should make its own
            in-memory one (`storage=None`, or the storage could not be used).
        study_name: The study's name (`None` when in memory and unnamed).
        storage_url: The storage URL with its password redacted (`None` in memory).
        note: Why the study is in memory although storage was asked for, for the report.
        workload: The workload fingerprint it was opened for (its `profile()` stamps
            the trials and filters the warm start).
        host: The host fingerprint it was opened for (keys the warm hint).
        costs_s: Seconds spent on the storage, by part: `"optuna import"`,
            `"storage open"`, `"study load"` (create or load, tag, working copy) and
            `"persist"` (all `sync_trials` and `store_report` writes so far), for the
            report's `Cost`.

    Example:

    >>> StudyHandle(None, None, None).costs_s
    {}
    """

    study: optuna.Study | None
    study_name: str | None
    storage_url: str | None
    note: str | None = None
    working: optuna.Study | None = None
    copied: int = 0
    written: int = 0
    workload: WorkloadFingerprint | None = None
    costs_s: dict[str, float] = field(default_factory=dict)
    host: HostFingerprint | None = None

    def add_cost(self, part: str, seconds: float) -> None:
        """Add `seconds` to `costs_s[part]`.

        Example:

        >>> h = StudyHandle(None, None, None)
        >>> h.add_cost("persist", 0.5); h.add_cost("persist", 0.25); h.costs_s
        {'persist': 0.75}
        """
        self.costs_s[part] = self.costs_s.get(part, 0.0) + float(seconds)

    @property
    def total_cost_s(self) -> float:
        """All of `costs_s`, in seconds.

        Example:

        >>> StudyHandle(None, None, None, costs_s={"a": 0.5, "b": 0.25}).total_cost_s
        0.75
        """
        return float(sum(self.costs_s.values()))

    @property
    def live(self) -> optuna.Study | None:
        """The study to ask/tell in during training: the in-memory working copy if any."""
        return self.working if self.working is not None else self.study


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """The writer's storage (kept for callers of the old name): `storage.open_rdb(url)`."""
    return open_rdb(url, create=True)


def open_study(
    storage: str | None,
    study_name: str | None,
    *,
    workload: WorkloadFingerprint | None = None,
    host: HostFingerprint | None = None,
    sampler: Any = None,
) -> StudyHandle:
    """Open (or create) the study `study_name` in `storage`; never raises.

    Args:
        storage: `None` (in memory), `"default"` or a storage URL.
        study_name: The study's name; `None` names it from the fingerprints (needs both).
        workload, host: Fingerprints, stored as study user attrs.
        sampler: The sampler for the study (default: Optuna's).

    Returns:
        A `StudyHandle`. On any error (unreachable server, missing driver, a study of
        that name that minimizes...) one warning is logged and `handle.study` is
        `None` (the caller tunes in memory); `handle.note` says why.
    """
    costs: dict[str, float] = {}
    started = time.perf_counter()
    already = "optuna" in sys.modules
    import optuna

    if not already:
        costs["optuna import"] = time.perf_counter() - started
    if study_name is None and workload is not None and host is not None:
        study_name = study_name_for(workload, host)
    url = resolve_storage(storage)
    if url is None:
        return StudyHandle(None, study_name, None, workload=workload, costs_s=costs)
    shown = describe(url)
    try:
        started = time.perf_counter()
        opened = open_storage(url, create=True)
        costs["storage open"] = time.perf_counter() - started
        started = time.perf_counter()
        with quiet_optuna():
            study = optuna.create_study(
                storage=opened,
                study_name=study_name,
                direction="maximize",
                sampler=sampler,
                load_if_exists=True,
            )
        if [d.name for d in study.directions] != ["MAXIMIZE"]:
            raise ValueError(f"study {study.study_name!r} does not maximize one objective")
        _tag(study, workload, host)
    except Exception as exc:
        note = f"storage unreachable ({shown}: {first_line(exc)}); tuned in memory"
        logger.warning("keras_loadtune: %s", note)
        return StudyHandle(None, study_name, None, note, workload=workload, costs_s=costs)
    handle = StudyHandle(
        study, study.study_name, shown, workload=workload, costs_s=costs, host=host
    )
    try:
        attach_working_copy(handle, sampler)
    except Exception as exc:  # the stored study stays usable directly
        logger.debug("keras_loadtune: no working copy of %s: %s", study.study_name, exc)
    handle.add_cost("study load", time.perf_counter() - started)
    return handle


def attach_working_copy(handle: StudyHandle, sampler: Any = None) -> None:
    """Gives `handle` an in-memory copy of its stored study to tune in.

    Every ask/tell of a live tuning session then costs microseconds instead of a
    database round trip inside the training step, and a storage that goes down
    mid-training cannot stall it. The stored finished trials are copied in (the
    sampler and the warm start see the whole history); `sync_trials` writes the new
    ones back when tuning settles and when training ends.

    Example:

    ```python
    handle = open_study("default", None, workload=w, host=h)   # attaches the copy
    session = TuningSession(baseline, settings, study=handle.live)
    ...
    sync_trials(handle)
    ```
    """
    import optuna

    stored = handle.study
    if stored is None:
        return
    finished = [t for t in stored.get_trials(deepcopy=False) if t.state.is_finished()]
    with quiet_optuna():
        working = optuna.create_study(
            direction="maximize", sampler=sampler, study_name=stored.study_name
        )
    working.add_trials(finished)
    handle.working = working
    handle.copied = len(finished)
    handle.written = 0


def sync_trials(handle: StudyHandle | None) -> str | None:
    """Writes the working copy's new finished trials to the stored study, in order.

    Idempotent: each trial is written once. Returns an error line instead of raising.
    """
    if handle is None or handle.study is None or handle.working is None:
        return None
    trials = handle.working.get_trials(deepcopy=False)[handle.copied + handle.written :]
    new = []
    for trial in trials:
        if not trial.state.is_finished():
            break
        new.append(trial)
    if not new:
        return None
    started = time.perf_counter()
    try:
        handle.study.add_trials(new)
    except Exception as exc:
        return (
            f"could not store {len(new)} trial(s) in study {handle.study_name!r}: {first_line(exc)}"
        )
    finally:
        handle.add_cost("persist", time.perf_counter() - started)
    handle.written += len(new)
    return None


def _tag(
    study: optuna.Study, workload: WorkloadFingerprint | None, host: HostFingerprint | None
) -> None:
    """Store the fingerprints as study user attrs (first writer wins)."""
    if workload is None or host is None:
        return
    attrs = study.user_attrs
    digest = fingerprint_hash(workload, host)
    if STUDY_ATTR_FINGERPRINT not in attrs:
        study.set_user_attr(STUDY_ATTR_WORKLOAD, workload.to_dict())
        study.set_user_attr(STUDY_ATTR_HOST, host.to_dict())
        study.set_user_attr(STUDY_ATTR_FINGERPRINT, digest)
    elif attrs[STUDY_ATTR_FINGERPRINT] != digest:
        logger.info(
            "keras_loadtune: study %r was recorded for another workload or host; its best "
            "config is verified before it is kept",
            study.study_name,
        )


def store_report(handle: StudyHandle | None, report_dict: Mapping[str, Any]) -> str | None:
    """Write a report (its `to_dict()`, `"trials"` dropped) into the study user attr
    `STUDY_ATTR_REPORT`; returns an error line instead of raising."""
    if handle is None or handle.study is None or handle.storage_url is None:
        return None
    data = {k: v for k, v in report_dict.items() if k != "trials"}
    started = time.perf_counter()
    try:
        handle.study.set_user_attr(STUDY_ATTR_REPORT, data)
        store_warm_hint(handle, data)
    except Exception as exc:
        return f"could not store the report in study {handle.study_name!r}: {first_line(exc)}"
    finally:
        handle.add_cost("persist", time.perf_counter() - started)
    return None


# ------------------------------------------------------------------------ warm hint
#
# The stored best of a study is known only once the study is open: Optuna's import and
# the storage take 0.2-1 s, too late for the first batches of a fit. The warm hint is a
# small JSON file beside the default storage that caches, per storage, workload (class
# and batches per epoch) and host, the best config the last run stored and the study it
# came from. Read with the standard library in well under a millisecond before the
# first batch is served; the session still verifies it against the study itself.

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


def store_warm_hint(handle: StudyHandle, report_dict: Mapping[str, Any]) -> None:
    """Remember `report_dict`'s best config as the warm hint of `handle`'s workload.

    Written only for a stored study whose report settled on a measured config
    (`"tuned"`, `"warm-start"`, `"kept-baseline"`); atomically replaced, last writer
    wins (a hint is verified before it is kept).
    """
    workload, host, shown = handle.workload, handle.host, handle.storage_url
    best = report_dict.get("best_config")
    if workload is None or host is None or shown is None or not isinstance(best, dict):
        return
    if report_dict.get("decision") not in _HINT_DECISIONS:
        return
    key = warm_hint_key(shown, workload.dataset, workload.num_batches, host)
    hints = _read_hints()
    hints.pop(key, None)
    hints[key] = {
        "study_name": handle.study_name,
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
        inner = getattr(dataset, "dataset", None)
        source = inner if inner is not None and hasattr(dataset, "reconfigure") else dataset
        num_batches = getattr(dataset, "num_batches", None)
        key = warm_hint_key(
            describe(url),
            _class_path(source),
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
    # Re-exported from `keras_loadtune.storage` and `keras_loadtune.trial` (moved there).
    "CONNECT_TIMEOUT_S",
    "DEFAULT_STORAGE",
    "SQLITE_LOCK_TIMEOUT_S",
    "STUDY_ATTR_FINGERPRINT",
    "STUDY_ATTR_HOST",
    "STUDY_ATTR_REPORT",
    "STUDY_ATTR_WORKLOAD",
    "HostFingerprint",
    "StudyHandle",
    "WarmHint",
    "WorkloadFingerprint",
    "attach_working_copy",
    "batch_structure",
    "cache_dir",
    "check_storage",
    "check_study_name",
    "default_storage_path",
    "default_storage_url",
    "describe",
    "fingerprint_hash",
    "first_line",
    "host_fingerprint",
    "legacy_storage_path",
    "open_storage",
    "open_study",
    "produce_profile",
    "read_warm_hint",
    "redact_url",
    "resolve_storage",
    "store_report",
    "store_warm_hint",
    "study_name_for",
    "sync_trials",
    "warm_hint_key",
    "warm_hint_path",
    "with_installed_driver",
    "workload_fingerprint",
]
