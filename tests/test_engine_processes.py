"""Process workers that never surprise (issue #11): no `__main__` re-import, Ctrl-C, idle
deaths, shipping the dataset only when it changed, per-batch seeds. No TensorFlow here.
"""

from __future__ import annotations

import itertools
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import pid_alive, shm_segments, wait_until, worker_processes
from engine_datasets import IndexDataset, SuicidalDataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import (
    DatasetNotPicklableError,
    EndOfPass,
    Prefetcher,
    WorkerDiedError,
)
from keras_loadtune.engine._threads import ThreadPool
from keras_loadtune.engine.process import ProcessPool, _death, _shipping, _start

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("no_leaks")]

SCRIPTS = Path(__file__).parent / "scripts"
PROCESSES = LoaderConfig(2, 4, True)


@pytest.fixture
def closing():
    """Closes what the test registers (returns it), before the leak check runs."""
    opened = []

    def register(obj):
        opened.append(obj)
        return obj

    yield register
    for obj in reversed(opened):
        obj.close()


class Sink:
    """A `ResultSink` that collects everything for the test to look at."""

    def __init__(self) -> None:
        self.results: queue.Queue = queue.Queue()
        self.fatal: list[BaseException] = []

    def on_result(self, key, batch, wall_s, cpu_s, nbytes) -> None:
        self.results.put((key, batch))

    def on_error(self, key, exc) -> None:
        self.results.put((key, exc))

    def on_fatal(self, exc) -> None:
        self.fatal.append(exc)

    def take(self, n: int, timeout: float = 30.0) -> dict:
        return dict(self.results.get(timeout=timeout) for _ in range(n))


def drain(pf: Prefetcher) -> list:
    got = []
    while True:
        try:
            got.append(pf.next())
        except EndOfPass:
            return got


def run_script(args: list[str], env_extra: dict[str, str], **kwargs) -> subprocess.Popen:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env_extra}
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            continue
    return found


# -- workers never import __main__ -------------------------------------------------------------
def test_popen_launch_still_reads_spawn_preparation_data():
    """Pins the CPython internal the no-`__main__` Popen relies on."""
    popen = _start._popen_class()
    names = popen.__mro__[1]._launch.__code__.co_names
    assert "spawn" in names and "get_preparation_data" in names
    assert popen._launch.__globals__["spawn"].get_preparation_data is not None
    original = _start.spawn.get_preparation_data("x")
    ours = _start._SpawnWithoutMain().get_preparation_data("x")
    assert set(_start._MAIN_KEYS) & set(original), "pytest's __main__ would be imported"
    assert not set(_start._MAIN_KEYS) & set(ours)
    assert ours["sys_path"] == original["sys_path"]


def test_forkserver_never_preloads_main():
    modules = _start._preload_modules(IndexDataset(1))
    assert "__main__" not in modules
    assert modules[0] == "keras_loadtune.engine.process._forkserver_init"
    assert modules[-1] == "engine_datasets"


@pytest.mark.parametrize("how", ["script", "python -c"])
def test_script_without_main_guard_runs_its_body_exactly_once(how, tmp_path):
    log = tmp_path / "body.log"
    script = SCRIPTS / "unguarded_main.py"
    args = [str(script)] if how == "script" else ["-c", script.read_text()]
    proc = run_script(args, {"KLT_BODY_LOG": str(log)}, cwd=str(tmp_path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(log.read_text().splitlines()) == 1, "the script's body ran in a worker"
    squares = " ".join(str(i * i) for i in range(8))
    assert out.splitlines() == [f"{squares} | True"] * 2
    assert "Traceback" not in err


def test_class_defined_in_a_function_goes_by_value(closing):
    def make():
        class Local:  # not importable from anywhere: only by value can it reach a worker
            def __getitem__(self, index):
                return index * 3, os.getpid()

        return Local()

    pf = closing(Prefetcher(make(), PROCESSES))
    pf.begin_pass(range(6))
    got = drain(pf)
    assert [v for v, _ in got] == [0, 3, 6, 9, 12, 15]
    assert {pid for _, pid in got} <= set(pf.worker_pids)


def test_unpicklable_dataset_is_refused_before_any_worker_starts(tmp_path):
    class HoldsAFile:
        def __init__(self, path):
            self.path = path
            self.handle = open(path, "w")  # noqa: SIM115 - the point of the test

        def __getitem__(self, index):
            return index

    ds = HoldsAFile(tmp_path / "f.txt")
    before = {p.pid for p in worker_processes()}
    try:
        with pytest.raises(DatasetNotPicklableError) as info:
            ProcessPool(ds, Sink(), "keras_loadtune-test")
    finally:
        ds.handle.close()
    message = str(info.value)
    assert "HoldsAFile.handle" in message and "TextIOWrapper" in message
    assert "use_multiprocessing=False" in message
    assert {p.pid for p in worker_processes()} == before


# -- Ctrl-C and deaths -------------------------------------------------------------------------
def test_sigint_to_the_process_group_then_a_second_full_pass(tmp_path):
    proc = run_script(
        [str(SCRIPTS / "sigint_group.py")], {}, cwd=str(tmp_path), start_new_session=True
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("READY"):
                break
        assert lines and lines[-1] == "READY", (lines, proc.stderr.read())
        workers = [int(p) for p in lines[0].split()[1:]]
        assert len(workers) == 2
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["INTERRUPTED", "SECOND True True"], err
    assert "Traceback" not in err and "WorkerDiedError" not in err
    assert wait_until(lambda: not session_processes(proc.pid), timeout=10), [
        (p.pid, p.name()) for p in session_processes(proc.pid)
    ]


def test_sigint_while_the_forkserver_imports_prints_no_traceback(tmp_path):
    (tmp_path / "slowmod.py").write_text(
        "import os, time\n"
        "if os.environ.get('KLT_TRAINER_PID') != str(os.getpid()):\n"
        "    open(os.environ['KLT_MARKER'], 'w').close()\n"
        "    time.sleep(3)  # a heavy import (Keras) outside the trainer\n"
        "class Echo:\n"
        "    def __getitem__(self, index):\n"
        "        return index\n"
    )
    marker = tmp_path / "importing"
    env = {"KLT_MODULE_DIR": str(tmp_path), "KLT_MARKER": str(marker)}
    script = SCRIPTS / "sigint_during_preload.py"
    proc = run_script([str(script)], env, cwd=str(tmp_path), start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        assert wait_until(marker.exists, timeout=30), proc.stderr.read()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["INTERRUPTED", "THREADS True", "PROCESSES True"]
    assert "Traceback" not in err, err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_worker_killed_while_idle_is_replaced_on_next_use(sig, closing):
    pf = closing(Prefetcher(IndexDataset(10), PROCESSES))
    pf.begin_pass(range(10))
    assert [int(x[0]) for x, _ in drain(pf)] == list(range(10))
    victim, survivor = pf.worker_pids
    os.kill(victim, sig)
    assert wait_until(lambda: not pid_alive(victim), timeout=10)
    pf.begin_pass(range(10))  # at once: the pool may not even have seen the death yet
    assert [int(x[0]) for x, _ in drain(pf)] == list(range(10))
    assert survivor in pf.worker_pids and victim not in pf.worker_pids
    assert len(pf.worker_pids) == 2


def test_death_with_a_batch_in_flight_names_signal_and_batch_without_oom_guess(closing):
    pf = closing(Prefetcher(SuicidalDataset(8, kill_at=3), LoaderConfig(2, 2, True)))
    pf.begin_pass(range(8))
    with pytest.raises(WorkerDiedError) as info:
        drain(pf)
    message = str(info.value)
    assert info.value.index == 3 and "batch 3" in message
    assert "SIGKILL" in message and f"pid {info.value.pid}" in message
    assert "out-of-memory" not in message, "this machine has plenty of memory left"


def test_oom_hint_only_for_sigkill_with_memory_evidence():
    total = psutil.virtual_memory().total
    assert "out-of-memory" in _death.oom_hint(-signal.SIGKILL, total)
    assert _death.oom_hint(-signal.SIGKILL, 1 << 20) == ""
    assert _death.oom_hint(-signal.SIGTERM, total) == ""
    assert _death.oom_hint(0, total) == ""


# -- ship the dataset only when it changed ----------------------------------------------------
class Holder:
    """A dataset with a big array (16 MiB), a small index array and a scalar."""

    def __init__(self) -> None:
        self.big = np.arange(2 * 2**20, dtype=np.float64)
        self.order = np.arange(1000)
        self.epoch = 0

    def __getitem__(self, index: int):
        return self.epoch, int(self.order[index]), float(self.big[index * 1000])


def pool_segments(pool: ProcessPool) -> list[str]:
    return [s for s in shm_segments() if s.startswith(pool._shipper._prefix)]


_KEYS = itertools.count()


def ask(pool: ProcessPool, sink: Sink, index: int):
    key = next(_KEYS)  # keys travel through pipes: compared by value
    pool.submit(key, index)
    return sink.take(1)[key]


def test_unchanged_dataset_is_not_pickled_again_and_big_arrays_move_once():
    ds, sink = Holder(), Sink()
    pool = ProcessPool(ds, sink, "keras_loadtune-test")
    try:
        pool.resize(2)
        assert pool.source_pickles == 1 and pool.source_bytes_copied == ds.big.nbytes
        for version in (0, 0, 1, 2):  # same version: skipped; new version, same state: no pickle
            pool.update_source(ds, version)
        assert pool.source_pickles == 1
        ds.epoch = 5  # a small field changed
        pool.update_source(ds, 3)
        assert pool.source_pickles == 2
        assert pool.source_bytes_copied == ds.big.nbytes, "the big array was copied again"
        assert ask(pool, sink, 7) == (5, 7, 7000.0)
        ds.order[:] = ds.order[::-1].copy()  # shuffled in place, as on_epoch_end often does
        pool.update_source(ds, 4)
        assert pool.source_pickles == 3
        assert ask(pool, sink, 0) == (5, 999, 0.0)
        ds.big = ds.big * 2  # a new big array: copied once, the old segment goes
        pool.update_source(ds, 5)
        assert pool.source_bytes_copied == 2 * ds.big.nbytes
        assert ask(pool, sink, 3) == (5, 996, 6000.0)
        assert wait_until(lambda: len(pool_segments(pool)) == 1, timeout=10)
        assert not sink.fatal
    finally:
        pool.close()
    assert pool_segments(pool) == []


def test_version_unchanged_skips_even_a_changed_dataset():
    """The caller's version is the contract: same version, nothing is looked at."""
    ds, sink = Holder(), Sink()
    pool = ProcessPool(ds, sink, "keras_loadtune-test")
    try:
        pool.resize(1)
        pool.update_source(ds, 1)
        ds.epoch = 9
        pool.update_source(ds, 1)
        assert pool.source_pickles == 1
        assert ask(pool, sink, 0)[0] == 0
        pool.update_source(ds, None)  # None: always check
        assert ask(pool, sink, 0)[0] == 9
    finally:
        pool.close()


def test_workers_share_the_big_array_and_writes_stay_private():
    class Writer(Holder):
        def __getitem__(self, index):
            before = float(self.big[0])
            self.big[0] = -1.0  # a worker's write must not reach the others or the trainer
            return before, self.big.flags.writeable

    ds, sink = Writer(), Sink()
    pool = ProcessPool(ds, sink, "keras_loadtune-test")
    try:
        pool.resize(2)
        keys = [next(_KEYS) for _ in range(2)]
        for k in keys:
            pool.submit(k, 0)
        results = sink.take(2)
        assert all(results[k][1] is True for k in keys)
        assert results[keys[0]][0] == 0.0 or results[keys[1]][0] == 0.0
        assert ds.big[0] == 0.0
    finally:
        pool.close()


_values = st.one_of(
    st.integers(-(2**40), 2**40),
    st.text(max_size=8),
    st.lists(st.integers(0, 100), max_size=6),
    st.builds(lambda xs: np.array(xs, dtype=np.int32), st.lists(st.integers(0, 9), max_size=6)),
)


def _different(value):
    if isinstance(value, np.ndarray):
        return np.append(value, 1) if value.size == 0 else value + 1
    if isinstance(value, list):
        return [*value, 1]
    if isinstance(value, str):
        return value + "x"
    return value + 1


@given(attrs=st.dictionaries(st.sampled_from("abcdef"), _values, min_size=1), data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fingerprint_changes_exactly_when_a_value_changes(attrs, data):
    obj = type("State", (), {})()
    obj.__dict__.update(attrs)
    first = _shipping.fingerprint(obj)
    assert first is not None and _shipping.fingerprint(obj) == first
    name = data.draw(st.sampled_from(sorted(attrs)))
    value = getattr(obj, name)
    if isinstance(value, (list, np.ndarray)) and len(value) and data.draw(st.booleans()):
        value[0] = value[0] + 1  # in place
    else:
        setattr(obj, name, _different(value))
    assert _shipping.fingerprint(obj) != first


@given(sizes=st.lists(st.sampled_from([0, 10, 2**20 - 8, 2**20, 3 * 2**20]), max_size=4))
@settings(max_examples=15, deadline=None)
def test_shipping_round_trips_arrays_around_the_shared_memory_threshold(sizes):
    rng = np.random.default_rng(len(sizes))
    arrays = [rng.integers(0, 255, n, dtype=np.uint8) for n in sizes]
    shipper = _shipping.SourceShipper(f"klt_{os.getpid()}_dtest_")
    try:
        shipment = shipper.ship({"arrays": arrays, "tag": "x"})
        assert len(shipment.segments) == sum(n >= _shipping.OUT_OF_BAND_MIN_BYTES for n in sizes)
        loaded = _shipping.load(shipment)
        assert loaded["tag"] == "x"
        assert all(np.array_equal(a, b) for a, b in zip(arrays, loaded["arrays"], strict=True))
        del loaded
    finally:
        shipper.close()
    assert not [s for s in shm_segments() if "_dtest_" in s]


# -- seeds -------------------------------------------------------------------------------------
class RandomAugment:
    def __getitem__(self, index):
        return index, random.random(), float(np.random.rand()), os.getpid()


def _seeded_run(workers: int) -> tuple[dict, set]:
    sink = Sink()
    pool = ProcessPool(RandomAugment(), sink, "keras_loadtune-test")
    try:
        pool.resize(workers)
        keys = list(range(12))
        for k in keys:
            pool.submit(k, k, seed=1000 + k)
        results = sink.take(len(keys))
    finally:
        pool.close()
    return {k: v[:3] for k, v in results.items()}, {v[3] for v in results.values()}


def test_seeds_make_batches_independent_of_worker_count_and_run():
    one, pids_one = _seeded_run(1)
    three, pids_three = _seeded_run(3)
    assert len(pids_one) == 1 and len(pids_three) > 1
    assert one == three
    assert len({v[1] for v in one.values()}) == 12, "every index draws its own numbers"


def test_thread_pool_keeps_the_protocol_and_ignores_seeds():
    sink = Sink()
    pool = ThreadPool(IndexDataset(4), sink, "keras_loadtune-test")
    try:
        assert pool.resize(2) == 2 and pool.pids == []
        pool.submit("k", 3, seed=5)
        assert int(sink.take(1)["k"][0][0]) == 3
    finally:
        assert pool.close() == []
    for gone in ("check_health", "mode", "workers"):
        assert not hasattr(ThreadPool, gone) and not hasattr(ProcessPool, gone)
    assert not hasattr(ThreadPool, "update_source"), "threads read the dataset itself"


def test_no_collector_thread_left_when_the_pool_refuses_the_dataset():
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(DatasetNotPicklableError):
        ProcessPool(type("L", (), {"lock": threading.Lock()})(), Sink(), "keras_loadtune-test")
    time.sleep(0.05)
    assert {t.ident for t in threading.enumerate()} <= before
