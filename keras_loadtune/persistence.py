"""Tuning studies in a storage: open one, tune in a working copy, write trials and the report back.

`LoadTuner` records every trial in an Optuna study. By default the study is kept in
an Optuna journal file in the user's cache directory (`keras_loadtune.storage`
resolves where), so a later run of the same workload on the same kind of machine
starts from the best config found before (warm start) instead of tuning again; a
fleet of hosts can share one study through a database URL. The study's name comes
from the workload and host fingerprints (`keras_loadtune.fingerprint`), which are
stored as study user attrs (`klt_workload`, `klt_host`), readable in
optuna-dashboard.

- **Opening** (`open_study`) never raises: an unreachable or broken storage gives one
  warning and an in-memory study, and `StudyHandle.note` says so for the report.
- **Tuning** happens in an in-memory working copy (`attach_working_copy`): every
  ask/tell costs microseconds, not a database round trip inside a training step.
- **Writing back** (`sync_trials`, `store_report`) returns an error line instead of
  raising; `store_report` also leaves the warm hint (`keras_loadtune.warm_hint`) for
  the next run's first batches.

Several processes may tune into one study at once: studies are created with
`optuna.create_study(load_if_exists=True)`, and trials are written through Optuna's
journal or RDB storage (the journal file and SQLite wait for locks; PostgreSQL
handles concurrent writers). What opening and writing cost is kept in
`StudyHandle.costs_s` for the report.

Example:

```python
from keras_loadtune import fingerprint, persistence

host = fingerprint.host_fingerprint()
work = fingerprint.workload_fingerprint(my_pydataset)
handle = persistence.open_study("default", None, workload=work, host=host)
handle.study, handle.note   # an optuna.Study named 'klt-MyDataset-3f2a9c01b7de', None
```
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keras_loadtune._optuna_logging import quiet_optuna
from keras_loadtune.fingerprint import (
    HostFingerprint,
    WorkloadFingerprint,
    fingerprint_hash,
    study_name_for,
)
from keras_loadtune.storage import describe, first_line, open_storage, resolve_storage
from keras_loadtune.trial import (
    STUDY_ATTR_FINGERPRINT,
    STUDY_ATTR_HOST,
    STUDY_ATTR_REPORT,
    STUDY_ATTR_WORKLOAD,
)
from keras_loadtune.warm_hint import store_warm_hint

if TYPE_CHECKING:  # pragma: no cover
    import optuna

logger = logging.getLogger("keras_loadtune")

_MAX_NAME = 512


# ------------------------------------------------------------------------- names


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
        store_warm_hint(
            data,
            storage_url=handle.storage_url,
            study_name=handle.study_name,
            workload=handle.workload,
            host=handle.host,
        )
    except Exception as exc:
        return f"could not store the report in study {handle.study_name!r}: {first_line(exc)}"
    finally:
        handle.add_cost("persist", time.perf_counter() - started)
    return None


__all__ = [
    "StudyHandle",
    "attach_working_copy",
    "check_study_name",
    "open_study",
    "store_report",
    "sync_trials",
]
