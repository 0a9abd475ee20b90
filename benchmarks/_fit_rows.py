"""One row of the real-fit benchmark (`real_fits.py`): what it runs, and how a child runs it.

A *workload* (`Workload`) is what a user trains: a dataset kind, a model kind, epochs x
steps, and how many fits one process runs. A *row* (`Row`) is how it is loaded: plain
Keras with the user's config, a static config of a grid, the batches already in memory
(the floor), or keras-loadtune with its default storage or `storage=None`.

The parent (`real_fits.py`) imports only this module's light top (no Keras): the specs,
their JSON form and `python_work`. A child (`real_fit_script.py`, a user's training
script) calls `child_main`, which imports Keras, runs the row's fit(s) and prints one
`RESULT {json}` line: the wall seconds of every fit and, for keras-loadtune rows, what
its report said (config, decision, `Limit`, `Net`, advice).

Example:

```python
spec = RowSpec(Workload(DatasetKind.LATENCY, ModelKind.SMALL_CNN, 3, 150,
                        {"latency_s": 0.04}), Row("threads 8", RowKind.STATIC, workers=8))
RowSpec.from_json(spec.to_json()) == spec   # True: what the child gets
```
"""

from __future__ import annotations

import enum
import gc
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

RESULT_PREFIX = "RESULT "
BATCH = 64  # rows per batch, every workload


class DatasetKind(enum.Enum):
    """Which loader a workload uses (where its class lives matters for process pools)."""

    LATENCY = "latency"  # keras_loadtune.synthetic.LatencyDataset: a sleep per batch
    PYTHON_MAIN = "python-main"  # pure-Python work, class in the script's __main__
    PYTHON_MODULE = "python-module"  # the same work, class in fit_datasets (imports keras)
    IO = "io"  # fit_datasets.IoDataset: a 30 ms read, then decode
    TEXT = "text"  # fit_datasets.TextDataset: generate and tokenise text in Python


class ModelKind(enum.Enum):
    """Which model a workload trains."""

    SMALL_CNN = "small-cnn"  # keras_loadtune.synthetic.small_cnn on 32x32x3 images
    TINY_DENSE = "tiny-dense"  # two Dense layers on 16 features
    TEXT = "text"  # fit_datasets.text_model: embedding, pooling, dense


class RowKind(enum.Enum):
    """How a row loads its data."""

    USER = "user"  # plain Keras, the user's config (Keras's default: 1 thread)
    STATIC = "static"  # plain Keras, one config of the static grid
    FLOOR = "floor"  # plain Keras, batches already in memory
    TUNER = "tuner"  # keras-loadtune from the user's config, default storage
    TUNER_NO_STORAGE = "tuner-no-storage"  # keras-loadtune, storage=None (diagnostic)


TUNED = (RowKind.TUNER, RowKind.TUNER_NO_STORAGE)


@dataclass(frozen=True)
class Workload:
    """What a user trains.

    Args:
        dataset: The loader.
        model: The model.
        epochs: Epochs per fit.
        steps: Batches per epoch.
        params: Loader parameters (`latency_s`, `python_s`).
        fits: Fits per process, each with a new model (and a new tuner).
    """

    dataset: DatasetKind
    model: ModelKind
    epochs: int
    steps: int
    params: dict[str, float] = field(default_factory=dict)
    fits: int = 1


@dataclass(frozen=True)
class Row:
    """How one row loads the workload.

    Args:
        label: Shown in the table.
        kind: See `RowKind`.
        workers: For `STATIC`: Keras's `workers`.
        processes: For `STATIC`: Keras's `use_multiprocessing`.
        reuses_storage: For a tuner row: run right after the previous row of its unit,
            with the same `XDG_CACHE_HOME` (a warm start), instead of a fresh one.
    """

    label: str
    kind: RowKind
    workers: int = 1
    processes: bool = False
    reuses_storage: bool = False


@dataclass(frozen=True)
class RowSpec:
    """What one child process runs: a workload loaded one way."""

    workload: Workload
    row: Row

    def to_json(self) -> str:
        """The spec as the child's command-line argument."""
        data = {"workload": asdict(self.workload), "row": asdict(self.row)}
        data["workload"]["dataset"] = self.workload.dataset.value
        data["workload"]["model"] = self.workload.model.value
        data["row"]["kind"] = self.row.kind.value
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RowSpec:
        """Inverse of `to_json`."""
        data = json.loads(text)
        w, r = data["workload"], data["row"]
        workload = Workload(
            DatasetKind(w["dataset"]),
            ModelKind(w["model"]),
            int(w["epochs"]),
            int(w["steps"]),
            {k: float(v) for k, v in w["params"].items()},
            int(w["fits"]),
        )
        row = Row(
            r["label"],
            RowKind(r["kind"]),
            int(r["workers"]),
            bool(r["processes"]),
            bool(r["reuses_storage"]),
        )
        return cls(workload, row)


def python_work(seconds: float) -> int:
    """Pure-Python busy work holding the GIL for about `seconds` of this thread's CPU
    (CPU, not wall: on a busy machine it still costs the same work)."""
    end = time.thread_time() + seconds
    acc = 0
    while time.thread_time() < end:
        for k in range(2000):
            acc = (acc + k * k) % 1000003
    return acc


def tabular_batch(index: int) -> tuple[Any, Any]:
    """Batch `index` of the tabular workloads: 16 float features, one float target."""
    import numpy as np

    rng = np.random.default_rng(index)
    return rng.random((BATCH, 16), dtype=np.float32), rng.random((BATCH, 1), dtype=np.float32)


# ============================================================================ child side
def _make_dataset(spec: RowSpec, main_dataset: type | None, **kwargs: Any) -> Any:
    import fit_datasets

    from keras_loadtune import synthetic

    w = spec.workload
    n = w.steps
    if w.dataset is DatasetKind.LATENCY:
        return synthetic.LatencyDataset(
            n, latency_s=w.params["latency_s"], batch_size=BATCH, **kwargs
        )
    if w.dataset is DatasetKind.PYTHON_MAIN:
        if main_dataset is None:
            raise ValueError("the python-main workload needs the script's __main__ dataset class")
        return main_dataset(n, python_s=w.params["python_s"], **kwargs)
    if w.dataset is DatasetKind.PYTHON_MODULE:
        return fit_datasets.PythonWorkDataset(n, python_s=w.params["python_s"], **kwargs)
    if w.dataset is DatasetKind.IO:
        return fit_datasets.IoDataset(n, latency_s=w.params["latency_s"], **kwargs)
    if w.dataset is DatasetKind.TEXT:
        return fit_datasets.TextDataset(n, **kwargs)
    raise AssertionError(f"unhandled dataset kind {w.dataset}")


def _make_model(kind: ModelKind) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    if kind is ModelKind.SMALL_CNN:
        from keras_loadtune.synthetic import small_cnn

        return small_cnn()
    if kind is ModelKind.TINY_DENSE:
        model = keras.Sequential(
            [keras.Input((16,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
        )
        model.compile("adam", "mse")
        return model
    if kind is ModelKind.TEXT:
        import fit_datasets

        return fit_datasets.text_model()
    raise AssertionError(f"unhandled model kind {kind}")


def _floor_dataset(spec: RowSpec, main_dataset: type | None) -> Any:
    """The workload's own batches, computed before the clock starts and cycled."""
    from scenarios import InMemoryDataset

    source = _make_dataset(spec, main_dataset)
    distinct = min(spec.workload.steps, 16)
    return InMemoryDataset([source[i] for i in range(distinct)], spec.workload.steps)


def _report_lines(text: str) -> dict[str, str | None]:
    """The `Limit:`, `Net:` and `Epochs:` lines of a rendered report (`None` if absent)."""
    found: dict[str, str | None] = {"limit": None, "net": None, "epochs": None}
    for line in text.splitlines():
        head, _, rest = line.strip().partition(":")
        key = head.lower()
        if key in found and found[key] is None and rest:
            found[key] = rest.strip()
    return found


def _tuned_fit(spec: RowSpec, main_dataset: type | None) -> tuple[float, dict[str, Any]]:
    """One keras-loadtune fit; the clock includes building the tuner (its imports) and
    closing the wrapped dataset."""
    import side_by_side as sbs

    model = _make_model(spec.workload.model)
    dataset = _make_dataset(spec, main_dataset)
    storage = "default" if spec.row.kind is RowKind.TUNER else None
    gc.collect()  # as `timed_fit` does for the plain rows, outside the clock (0.2 s)
    start = time.perf_counter()
    import keras_loadtune as klt

    tuner = klt.LoadTuner(storage=storage, verbose=0)
    with tuner.wrap(dataset) as train:
        run = sbs.timed_fit(model, train, spec.workload.epochs, callbacks=[tuner], collect=False)
    wall = time.perf_counter() - start
    report = tuner.report
    limit = report.limit
    info: dict[str, Any] = {
        "config": str(tuner.best_config) if tuner.best_config is not None else "(none)",
        "processes": bool(tuner.best_config and tuner.best_config.use_multiprocessing),
        "decision": report.decision,
        "limit_reached": None if limit is None else limit.reached,
        "net_speedup": report.net_speedup,
        "advice": list(report.advice),
        "notes": list(report.notes),
        **_report_lines(str(report)),
        "epochs": epoch_seconds(run.info["clock"]),
    }
    return wall, info


def epoch_seconds(clock: Any) -> list[float]:
    """Per epoch of a `side_by_side.StepTimes` clock: seconds from its begin to its last
    step's end (the first epoch includes tracing)."""
    return [ends[-1] - begin for begin, ends in zip(clock.epoch_begins, clock.batch_ends) if ends]


def _plain_fit(spec: RowSpec, main_dataset: type | None) -> tuple[float, list[float]]:
    import side_by_side as sbs

    row = spec.row
    model = _make_model(spec.workload.model)
    if row.kind is RowKind.FLOOR:
        dataset = _floor_dataset(spec, main_dataset)
    elif row.kind is RowKind.USER:
        dataset = _make_dataset(spec, main_dataset)  # Keras's defaults: the user's config
    else:
        dataset = _make_dataset(
            spec, main_dataset, workers=row.workers, use_multiprocessing=row.processes
        )
    run = sbs.timed_fit(model, dataset, spec.workload.epochs)
    return run.wall_s, epoch_seconds(run.info["clock"])


def run_row(spec: RowSpec, main_dataset: type | None = None) -> dict[str, Any]:
    """Runs the row's fits in this process.

    Args:
        spec: What to run.
        main_dataset: The script's `__main__` dataset class (for `PYTHON_MAIN`).

    Returns:
        `{"walls": [seconds per fit], "epochs": [per fit, seconds per epoch],
        "reports": [per fit, tuner rows only]}`.
    """
    walls: list[float] = []
    epochs: list[list[float]] = []
    reports: list[dict[str, Any]] = []
    for _ in range(spec.workload.fits):
        if spec.row.kind in TUNED:
            wall, info = _tuned_fit(spec, main_dataset)
            epochs.append(info.pop("epochs"))
            reports.append(info)
        else:
            wall, per_epoch = _plain_fit(spec, main_dataset)
            epochs.append(per_epoch)
        walls.append(wall)
    return {"walls": walls, "epochs": epochs, "reports": reports}


def child_main(argv: list[str], main_dataset: type | None = None) -> int:
    """Entry point of a child: `argv[0]` is a `RowSpec` in JSON; prints `RESULT {json}`."""
    spec = RowSpec.from_json(argv[0])
    result = run_row(spec, main_dataset)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The child's `RESULT` payload, or `None` when it printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None
