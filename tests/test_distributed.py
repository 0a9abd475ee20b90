"""Distributed training on real engines: exactly once per epoch, as with a plain PyDataset.

Each scenario runs in a subprocess (`tests/distributed/*.py`, started with
`sys.executable`) because the backend, the logical devices and the XLA device count must
be set before TensorFlow, JAX or Keras is imported, and a TensorFlow cluster cannot be
torn down inside one process. Each script fits the same tiny model twice, on the plain
`PyDataset` and on the same dataset wrapped by a `LoadTuner` that tunes while it trains,
and reports what the model saw: steps per epoch and, from a metric summed over all
replicas and workers, how many rows of each batch index reached training in each epoch
(`tests/distributed/recording.py`). The plain run is the reference: its tests check the
scenario itself is sound (so a wrapped failure is the wrapper's), and the wrapped run
must match it.

The scripts pick their own backend, so these tests run once, whatever `KERAS_BACKEND`
the suite runs under (marker `distributed`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

SCRIPTS = Path(__file__).parent / "distributed"
POSTGRES_URL = os.environ.get("KLT_TEST_POSTGRES_URL")

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(400)]


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed; install the matching extra to run this test")


def _env(**extra: str) -> dict[str, str]:
    """The parent's environment, minus its backend choice, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_CONFIG")}
    env.update(
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",  # the scenarios are about CPU devices
        **extra,
    )
    return env


def _start(script: str, result: Path, **extra: str) -> tuple[subprocess.Popen, Path]:
    log = result.with_suffix(".log")
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / script)],
            env=_env(KLT_RESULT=str(result), **extra),
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=str(SCRIPTS.parent.parent),
        )
    return proc, log


def _finish(procs: list[tuple[subprocess.Popen, Path]], timeout: float, grace: float) -> list[str]:
    """Waits for the processes; returns, per process, `""` or why it did not end well.

    All must end within `timeout`; once one has ended, the others get `grace` seconds
    more (a TensorFlow worker whose peer died waits in a collective forever). Those still
    running are killed with SIGKILL: TensorFlow ignores SIGTERM there.
    """
    deadline = time.monotonic() + timeout
    try:
        while any(proc.poll() is None for proc, _ in procs) and time.monotonic() < deadline:
            if any(proc.poll() is not None for proc, _ in procs):
                deadline = min(deadline, time.monotonic() + grace)
            time.sleep(0.2)
    finally:
        killed = []
        for proc, _ in procs:
            killed.append(proc.poll() is None)
            if killed[-1]:
                proc.kill()
                proc.wait(10)
    problems = []
    for (proc, log), was_killed in zip(procs, killed):
        if was_killed:
            problems.append(f"killed, still running at the deadline:\n{_tail(log)}")
        elif proc.returncode != 0:
            problems.append(f"exited {proc.returncode}:\n{_tail(log)}")
        else:
            problems.append("")
    return problems


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


def _load(result: Path, problem: str) -> dict:
    """The script's findings; a phase it did not finish gets `{"error": ...}`.

    Scripts write their findings after each phase, so a wrapped run that crashed or hung
    still leaves the plain run's findings for the baseline tests.
    """
    if not result.exists():
        pytest.fail(f"no result from {result.stem}: {problem}")
    data = json.loads(result.read_text())
    if "error" in data:
        pytest.fail(f"{result.stem} failed:\n{data['error']}")
    for phase in ("plain", "wrapped"):
        if phase not in data:
            data[phase] = {"error": problem or "the script ended without this phase"}
    return data


def _run_one(script: str, tmp: Path, timeout: float, **extra: str) -> dict:
    result = tmp / f"{Path(script).stem}.json"
    started = _start(script, result, **extra)
    (problem,) = _finish([started], timeout, grace=0.0)
    return _load(result, problem)


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports nobody listens on (held together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _once_per_epoch(run: dict, batches: int, rows: int, epochs: int, indices: int) -> None:
    """Every epoch trained `batches` steps and each of the `indices` global batch indices
    delivered exactly `rows` rows (0: the batch was lost; more: it was repeated)."""
    assert "error" not in run, run["error"]
    assert run["steps"] == [batches] * epochs, (
        f"steps per epoch: {run['steps']}; rows per batch index: {run['delivered']}"
    )
    expected = [rows] * indices
    for epoch, counts in enumerate(run["delivered"]):
        missing = [i for i, c in enumerate(counts) if c < rows]
        repeated = [i for i, c in enumerate(counts) if c > rows]
        assert counts == expected, (
            f"epoch {epoch}: rows per batch index {counts} (want {rows} each); "
            f"missing {missing}, repeated {repeated}"
        )
    assert len(run["delivered"]) == epochs


# -- tf.distribute.MirroredStrategy over two logical CPU devices ----------------------------
@pytest.fixture(scope="module")
def mirrored(tmp_path_factory) -> dict:
    _require("tensorflow")
    return _run_one("mirrored.py", tmp_path_factory.mktemp("mirrored"), timeout=180)


def test_mirrored_plain_pydataset_trains_every_batch_once(mirrored):
    assert mirrored["replicas"] == 2
    n, b = mirrored["len"], mirrored["batch_size"]
    _once_per_epoch(mirrored["plain"], n, b, mirrored["epochs"], indices=n)


def test_mirrored_wrapped_trains_every_batch_once_like_plain(mirrored):
    n, b = mirrored["len"], mirrored["batch_size"]
    _once_per_epoch(mirrored["wrapped"], n, b, mirrored["epochs"], indices=n)
    assert mirrored["wrapped"]["steps"] == mirrored["plain"]["steps"]


# -- Keras distribution API on JAX: DataParallel over two host devices ---------------------
@pytest.fixture(scope="module")
def jax_data_parallel(tmp_path_factory) -> dict:
    _require("jax")
    return _run_one("jax_data_parallel.py", tmp_path_factory.mktemp("jax"), timeout=180)


def test_jax_data_parallel_plain_pydataset_trains_every_batch_once(jax_data_parallel):
    run = jax_data_parallel
    assert run["replicas"] == 2
    _once_per_epoch(run["plain"], run["len"], run["batch_size"], run["epochs"], run["len"])


def test_jax_data_parallel_wrapped_trains_every_batch_once_like_plain(jax_data_parallel):
    run = jax_data_parallel
    _once_per_epoch(run["wrapped"], run["len"], run["batch_size"], run["epochs"], run["len"])
    assert run["wrapped"]["steps"] == run["plain"]["steps"]


# -- tf.distribute.MultiWorkerMirroredStrategy: two local workers, one shared study --------
WORKERS = 2


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory) -> dict:
    """Both workers' results and the shared study's name (the cluster runs once)."""
    _require("tensorflow")
    if not POSTGRES_URL:
        pytest.skip(
            "KLT_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets "
            "it; locally: export KLT_TEST_POSTGRES_URL=postgresql+psycopg2://user@127.0.0.1/db)"
        )
    tmp = tmp_path_factory.mktemp("multi_worker")
    study_name = f"klt-mwms-{uuid.uuid4().hex[:12]}"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(WORKERS)]}
    started = []
    for index in range(WORKERS):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        started.append(
            _start(
                "multi_worker.py",
                tmp / f"worker{index}.json",
                TF_CONFIG=json.dumps(tf_config),
                KLT_STORAGE=POSTGRES_URL,
                KLT_STUDY_NAME=study_name,
            )
        )
    problems = _finish(started, timeout=240, grace=60)
    results = [_load(tmp / f"worker{i}.json", problems[i]) for i in range(WORKERS)]
    return {"workers": results, "study_name": study_name}


def test_multi_worker_plain_pydataset_trains_every_shard_batch_once(multi_worker):
    for worker in multi_worker["workers"]:
        assert worker["keras_fixed"], (
            "Keras changed: see tests/distributed/keras_multi_worker_fix.py"
        )
        assert worker["replicas"] == WORKERS
        shard, b = worker["shard"], worker["batch_size"]
        # Each worker's batch is split across the workers (TensorFlow's global batch), so
        # every global batch index contributes batch_size / workers rows per delivery.
        _once_per_epoch(worker["plain"], shard, b // WORKERS, worker["epochs"], WORKERS * shard)


def test_multi_worker_wrapped_each_worker_gets_its_shard_exactly_once(multi_worker):
    for worker in multi_worker["workers"]:
        shard, b = worker["shard"], worker["batch_size"]
        _once_per_epoch(worker["wrapped"], shard, b // WORKERS, worker["epochs"], WORKERS * shard)
        assert worker["wrapped"]["steps"] == worker["plain"]["steps"]


def test_multi_worker_tuners_record_their_trials_in_one_study(multi_worker):
    """Both workers' tuners write into the one PostgreSQL study, and nothing else does.

    Stored trials carry no worker or host attribute, so a trial is attributed to a worker
    by what its tuner reported: the same config, state and measured steps/s.
    """
    import optuna

    from keras_loadtune import LoaderConfig
    from keras_loadtune.trial import TrialRecord

    workers = multi_worker["workers"]
    for worker in workers:
        assert "error" not in worker["wrapped"], worker["wrapped"]["error"]
    storage = optuna.storages.RDBStorage(POSTGRES_URL)
    study = optuna.load_study(study_name=multi_worker["study_name"], storage=storage)
    stored = [TrialRecord.from_frozen_trial(t) for t in study.get_trials(deepcopy=False)]

    def measured(config: LoaderConfig, steps_per_s: float | None) -> tuple:
        return (config, None if steps_per_s is None else round(steps_per_s, 6))

    stored_keys = [(*measured(r.config, r.steps_per_s), r.state) for r in stored]
    reported_measured = set()
    per_worker = []
    for worker in workers:
        reported = worker["wrapped"]["trials"]
        keys = [
            (*measured(LoaderConfig.from_dict(t["config"]), t["steps_per_s"]), t["state"])
            for t in reported
        ]
        reported_measured.update(k[:2] for k in keys)
        missing = [k for k in keys if k not in stored_keys]
        per_worker.append(
            {"reported": len(keys), "missing": missing, "decision": worker["wrapped"]["decision"]}
        )
    assert all(w["reported"] >= 1 and not w["missing"] for w in per_worker), (
        f"per worker: {per_worker}; the study holds {len(stored)} trial(s)"
    )
    # Proposals the payoff gate skipped are kept in the study only (`klt_state="skipped"`,
    # see `TuningSession.trials`); every other stored trial must be one a worker ran.
    foreign = [k for k in stored_keys if k[2] != "skipped" and k[:2] not in reported_measured]
    assert not foreign, f"stored trials neither worker measured: {foreign}"


# -- the checker itself: it must reject every lost, repeated or missing batch -------------
@given(
    counts=st.lists(st.integers(0, 3), min_size=1, max_size=6).filter(lambda c: c != [1] * len(c)),
    extra_step=st.integers(-1, 1),
)
def test_once_per_epoch_rejects_any_lost_or_repeated_batch(counts, extra_step):
    n = len(counts)
    good = {"steps": [n, n], "delivered": [[1] * n, [1] * n]}
    _once_per_epoch(good, n, 1, 2, indices=n)  # the reference passes
    with pytest.raises(AssertionError):
        _once_per_epoch({"steps": [n, n], "delivered": [[1] * n, counts]}, n, 1, 2, n)
    if extra_step:
        with pytest.raises(AssertionError):
            _once_per_epoch(
                {"steps": [n, n + extra_step], "delivered": good["delivered"]}, n, 1, 2, n
            )
    with pytest.raises(AssertionError, match="boom"):
        _once_per_epoch({"error": "boom"}, n, 1, 2, n)
