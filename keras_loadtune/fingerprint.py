"""Fingerprints of a workload and a host: what a tuning study is named after.

A study is named `klt-<dataset class>-<12 hex>` (`study_name_for`), the hex being a
SHA-256 (`fingerprint_hash`) of the workload's *structure* (`WorkloadFingerprint`:
dataset class, batches per epoch, shapes and dtypes of the first batch) and of the
host (`HostFingerprint`: cores, RAM in GiB, Python, TensorFlow and Keras versions,
Keras backend, accelerator kind). The timing profile (median ms to produce a batch,
its CPU share, `produce_profile`) is *never hashed*: it jitters from run to run. It is
stored beside the study (`WorkloadFingerprint.profile()`) and matched with a tolerance
(`decision.warm_start.profiles_match`), so two runs of one workload share one study
and a changed loader does not warm-start from the old one. Nothing here imports
TensorFlow or Optuna.

Example:

>>> work = WorkloadFingerprint("m.DS", 150, "((32, 8) float32,)", 5.0, 0.1)
>>> host = HostFingerprint(8, 16, "3.11", None, "3.15.1")
>>> study_name_for(work, host)[:7], len(fingerprint_hash(work, host))
('klt-DS-', 64)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger("keras_loadtune")

# Records (the most recent) the produce-time profile is taken from.
_PROFILE_RECORDS = 32


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


def dataset_class_path(dataset: Any) -> str:
    """`module.qualname` of a dataset's class, or of a generator factory function; a
    `TunedPyDataset` (anything with `dataset` and `reconfigure`) is unwrapped first.

    Example:

    >>> from collections import OrderedDict
    >>> dataset_class_path(OrderedDict()), dataset_class_path(len)
    ('collections.OrderedDict', 'builtins.builtin_function_or_method')
    """
    inner = getattr(dataset, "dataset", None)
    obj = inner if inner is not None and hasattr(dataset, "reconfigure") else dataset
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
        dataset=dataset_class_path(dataset),
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


__all__ = [
    "HostFingerprint",
    "WorkloadFingerprint",
    "accelerator_kind",
    "batch_structure",
    "dataset_class_path",
    "fingerprint_hash",
    "host_fingerprint",
    "keras_backend",
    "produce_profile",
    "study_name_for",
    "workload_fingerprint",
]
