"""The engine on its own (no Keras, no TensorFlow): delivery, errors, crashes, leaks."""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import engine_threads, pid_alive, shm_segments, wait_until
from engine_datasets import (
    BigFailingDataset,
    BigSuicidalDataset,
    FailingDataset,
    HangingDataset,
    IndexDataset,
    JitterDataset,
    LockHoldingDataset,
    RecordingDataset,
    SuicidalDataset,
    count_to_three,
    pid_stream,
)

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import (
    BatchTimeoutError,
    DatasetNotPicklableError,
    EndOfPass,
    GeneratorFactorySource,
    Prefetcher,
    PrefetcherClosedError,
    WorkerDiedError,
)
from keras_loadtune.engine.process import _transfer
from keras_loadtune.engine.records import batch_nbytes

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent

THREADS = LoaderConfig(workers=3, max_queue_size=4)
PROCESSES = LoaderConfig(workers=2, max_queue_size=4, use_multiprocessing=True)
INLINE = LoaderConfig(workers=1)  # Keras's default: made on the consumer's thread
MODES = pytest.mark.parametrize("config", [THREADS, PROCESSES], ids=["threads", "processes"])
ALL_MODES = pytest.mark.parametrize(
    "config", [INLINE, THREADS, PROCESSES], ids=["inline", "threads", "processes"]
)


def index_of(batch) -> int:
    return int(np.asarray(batch[0]).flat[0])


def drain(pf: Prefetcher, limit: int | None = None) -> list[int]:
    """Indices of the batches `next()` returns until the pass ends (or `limit` batches)."""
    out: list[int] = []
    while limit is None or len(out) < limit:
        try:
            out.append(index_of(pf.next()))
        except EndOfPass:
            break
    return out


# -- import hygiene --------------------------------------------------------------------------
def test_engine_never_imports_tensorflow_or_keras():
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from engine_datasets import IndexDataset
        from keras_loadtune import LoaderConfig
        from keras_loadtune.engine import EndOfPass, Prefetcher

        def main():
            for mp in (False, True):
                ds = IndexDataset(6)
                with Prefetcher(ds, LoaderConfig(workers=2, use_multiprocessing=mp)) as pf:
                    pf.begin_pass(range(6))
                    got = []
                    while True:
                        try:
                            got.append(int(pf.next()[0][0]))
                        except EndOfPass:
                            break
                assert got == list(range(6)), got
            heavy = sorted(m for m in ("tensorflow", "keras", "optuna") if m in sys.modules)
            print("HEAVY", heavy)

        if __name__ == "__main__":
            main()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


# -- delivery ---------------------------------------------------------------------------------
@ALL_MODES
def test_in_order_and_shuffled_passes_are_exact(config):
    ds = JitterDataset(24)
    with Prefetcher(ds, config) as pf:
        pf.begin_pass(range(24))
        assert drain(pf) == list(range(24))
        with pytest.raises(EndOfPass):
            pf.next()  # stays finished
        order = list(np.random.default_rng(0).permutation(24))
        pf.begin_pass(order)
        assert drain(pf) == order
        assert [r.index for r in pf.stats][-24:] == order
        assert pf.stats.delivered == 48


def test_begin_pass_drops_the_rest_of_an_unfinished_pass():
    ds = IndexDataset(10)
    with Prefetcher(ds, THREADS) as pf:
        pf.begin_pass(range(10))
        assert drain(pf, 3) == [0, 1, 2]
        pf.begin_pass([9, 8, 7])
        assert drain(pf) == [9, 8, 7]


def test_infinite_stream_continues_where_the_last_delivered_index_stopped():
    ds = JitterDataset(5)  # the length is irrelevant for a stream
    with Prefetcher(ds, LoaderConfig(workers=4, max_queue_size=8)) as pf:
        pf.begin_pass(None)
        assert drain(pf, 7) == list(range(7))
        assert not pf.pass_finished
        pf.begin_pass(None)  # prefetched 7..14 are dropped, the stream goes on at 7
        assert drain(pf, 3) == [7, 8, 9]
        pf.reconfigure(LoaderConfig(workers=1, max_queue_size=2))
        pf.begin_pass(None)
        assert drain(pf, 2) == [10, 11]


def test_pause_and_resume_keep_the_pass():
    ds = RecordingDataset(12, delay=0.002)
    with Prefetcher(ds, LoaderConfig(workers=2, max_queue_size=3)) as pf:
        pf.begin_pass(range(12))
        pass_id = pf.pass_id
        assert drain(pf, 4) == [0, 1, 2, 3]
        pf.pause()
        time.sleep(0.1)
        requested = len(ds.calls)
        time.sleep(0.1)
        # Paused: nothing new is requested beyond what was already in flight.
        assert len(ds.calls) == requested
        assert max(ds.calls) <= 4 + 3
        pf.resume()
        assert pf.pass_id == pass_id
        assert drain(pf) == list(range(4, 12))
        assert sorted(ds.calls) == list(range(12))  # each index produced once


def test_next_before_begin_pass_and_after_close():
    pf = Prefetcher(IndexDataset(3), THREADS)
    with pytest.raises(RuntimeError, match="begin_pass"):
        pf.next()
    pf.close()
    pf.close()  # idempotent
    with pytest.raises(PrefetcherClosedError):
        pf.begin_pass(range(3))
    with pytest.raises(PrefetcherClosedError):
        pf.reconfigure(LoaderConfig(workers=2))


def test_constructor_and_reconfigure_validate_their_arguments():
    with pytest.raises(TypeError, match="LoaderConfig"):
        Prefetcher(IndexDataset(3), {"workers": 2})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        Prefetcher(IndexDataset(3), THREADS, timeout=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        Prefetcher(IndexDataset(3), THREADS, idle_timeout=-1)
    with Prefetcher(IndexDataset(3), THREADS) as pf, pytest.raises(TypeError, match="LoaderConfig"):
        pf.reconfigure(4)  # type: ignore[arg-type]


# -- errors -----------------------------------------------------------------------------------
@ALL_MODES
def test_getitem_error_keeps_type_and_message_after_earlier_batches(config):
    ds = FailingDataset(10, fail_at=6, delay=0.002)
    with Prefetcher(ds, config) as pf:
        pf.begin_pass(range(10))
        assert drain(pf, 6) == [0, 1, 2, 3, 4, 5]
        with pytest.raises(KeyError, match="cannot load sample 6") as info:
            pf.next()
        notes = "\n".join(getattr(info.value, "__notes__", []))
        assert "__getitem__(6)" in notes
        assert config.mode in notes
        assert drain(pf) == [7, 8, 9]  # the pass goes on after the failed batch


def test_error_in_a_shuffled_pass_names_the_dataset_index_not_the_position():
    ds = FailingDataset(8, fail_at=2)
    with Prefetcher(ds, THREADS) as pf:
        pf.begin_pass([5, 2, 7])
        assert drain(pf, 1) == [5]
        with pytest.raises(KeyError) as info:
            pf.next()
        assert "__getitem__(2)" in "\n".join(info.value.__notes__)


def test_sigkilled_worker_raises_worker_died_error_naming_pid_and_signal():
    ds = SuicidalDataset(20, kill_at=5)
    with Prefetcher(ds, PROCESSES) as pf:
        pf.begin_pass(range(20))
        pids = set(pf.worker_pids)
        assert len(pids) == 2
        t0 = time.monotonic()
        delivered = []
        with pytest.raises(WorkerDiedError) as info:
            while True:
                delivered.append(index_of(pf.next()))
        assert time.monotonic() - t0 < 10
        err = info.value
        assert isinstance(err, RuntimeError)
        assert err.pid in pids
        assert str(err.pid) in str(err)
        assert "SIGKILL" in str(err)
        assert err.exitcode == -signal.SIGKILL
        assert err.index == 5
        assert delivered == list(range(len(delivered))) and len(delivered) <= 5
    assert not any(pid_alive(p) for p in pids)


def test_hanging_worker_with_timeout_raises_batch_timeout_error_naming_the_index():
    ds = HangingDataset(10, hang_at=3)
    pf = Prefetcher(ds, PROCESSES, timeout=1.0)
    try:
        pf.begin_pass(range(10))
        pids = pf.worker_pids
        assert drain(pf, 3) == [0, 1, 2]
        t0 = time.monotonic()
        with pytest.raises(BatchTimeoutError, match=r"batch 3 did not arrive within 1 s") as info:
            pf.next()
        assert 0.9 <= time.monotonic() - t0 < 5
        assert info.value.index == 3
        assert info.value.timeout == 1.0
        assert isinstance(info.value, TimeoutError)
    finally:
        pf.close(timeout=1.0)
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5)


@pytest.mark.parametrize("dataset_cls", [LockHoldingDataset])  # a lambda ships by value now
def test_unpicklable_dataset_refuses_processes_and_keeps_the_old_config(dataset_cls):
    ds = dataset_cls(12)
    with Prefetcher(ds, THREADS) as pf:
        pf.begin_pass(range(12))
        assert drain(pf, 4) == [0, 1, 2, 3]
        with pytest.raises(DatasetNotPicklableError, match=dataset_cls.__name__) as info:
            pf.reconfigure(PROCESSES)
        assert isinstance(info.value, TypeError)
        assert "use_multiprocessing=False" in str(info.value)
        assert pf.config == THREADS
        assert pf.worker_pids == []
        assert drain(pf) == list(range(4, 12))
    with pytest.raises(DatasetNotPicklableError):
        Prefetcher(dataset_cls(3), PROCESSES).begin_pass(range(3))


# -- pools: start-up, resize, release ---------------------------------------------------------
def test_startup_records_measure_process_startup_and_resizes():
    ds = IndexDataset(30, delay=0.001)
    with Prefetcher(ds, LoaderConfig(workers=2)) as pf:
        assert pf.stats.startups == []  # pools start lazily
        pf.begin_pass(range(30))
        drain(pf, 5)
        pf.reconfigure(LoaderConfig(workers=4))  # +2 threads
        drain(pf, 5)
        pf.reconfigure(LoaderConfig(workers=2))  # shrinking starts nothing
        drain(pf, 5)
        pf.reconfigure(LoaderConfig(workers=2, use_multiprocessing=True))
        drain(pf, 5)
        pf.reconfigure(LoaderConfig(workers=3, use_multiprocessing=True))
        assert drain(pf) == list(range(20, 30))
        records = pf.stats.startups
    assert [(r.config.mode, r.config.workers, r.workers_started) for r in records] == [
        ("thread", 2, 2),
        ("thread", 4, 2),
        ("process", 2, 2),
        ("process", 3, 1),
    ]
    assert all(r.seconds > 0 for r in records)
    # A process start (fork + unpickle + handshake) costs more than starting threads.
    assert records[2].seconds > records[0].seconds
    assert [r.at for r in records] == sorted(r.at for r in records)


def test_worker_processes_die_on_close():
    ds = IndexDataset(8)
    pf = Prefetcher(ds, LoaderConfig(workers=3, use_multiprocessing=True))
    pf.begin_pass(range(8))
    drain(pf, 2)
    pids = pf.worker_pids
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    pf.close()
    assert not any(pid_alive(p) for p in pids)
    assert pf.worker_pids == []
    assert pf.closed


def test_resize_in_place_keeps_surviving_worker_processes():
    ds = JitterDataset(40)
    with Prefetcher(ds, LoaderConfig(workers=3, use_multiprocessing=True)) as pf:
        pf.begin_pass(range(40))
        before = set(pf.worker_pids)
        got = drain(pf, 10)
        pf.reconfigure(LoaderConfig(workers=1, max_queue_size=2, use_multiprocessing=True))
        got += drain(pf, 10)
        after = set(pf.worker_pids)
        assert len(after) == 1 and after <= before
        pf.reconfigure(LoaderConfig(workers=2, max_queue_size=8, use_multiprocessing=True))
        got += drain(pf)
        assert got == list(range(40))
        assert wait_until(lambda: sum(pid_alive(p) for p in before) == 1)


@MODES
def test_idle_timeout_releases_workers_and_the_pass_continues(config):
    ds = IndexDataset(12)
    with Prefetcher(ds, config, idle_timeout=0.3) as pf:
        pf.begin_pass(range(12))
        assert drain(pf, 5) == [0, 1, 2, 3, 4]
        pids = pf.worker_pids
        assert wait_until(
            lambda: not pf.has_pool and not any(pid_alive(p) for p in pids), timeout=5
        ), "workers were not released"
        assert not [t for t in engine_threads() if "-thread-" in t.name]
        assert drain(pf) == list(range(5, 12))
        assert pf.worker_pids != pids or not pids


def test_busy_consumer_is_not_released_while_work_is_in_flight():
    ds = IndexDataset(4, delay=0.8)
    with Prefetcher(ds, LoaderConfig(workers=2, max_queue_size=1), idle_timeout=0.2) as pf:
        pf.begin_pass(range(4))
        time.sleep(0.5)  # idle consumer, but a batch is being produced
        assert pf.has_pool
        assert drain(pf, 1) == [0]


# -- shared memory ----------------------------------------------------------------------------
def test_big_arrays_travel_through_shared_memory_and_small_ones_do_not():
    big = IndexDataset(6, shape=(256, 256))  # 512 KiB of int64
    assert big[0][0].nbytes >= _transfer.SHM_THRESHOLD_BYTES
    with Prefetcher(big, PROCESSES) as pf:
        pf.begin_pass(range(6))
        batches = [pf.next() for _ in range(6)]
        assert [index_of(b) for b in batches] == list(range(6))
        for i, (x, epoch) in enumerate(batches):
            assert isinstance(x.base, mmap.mmap), "big array was not mapped from shared memory"
            np.testing.assert_array_equal(x, np.full((256, 256), i))
            assert not isinstance(epoch.base, mmap.mmap)
        assert [r.nbytes for r in pf.stats] == [256 * 256 * 8 + 8] * 6
        assert shm_segments() == []  # names are unlinked as soon as they are mapped
    small = IndexDataset(3, shape=(8,))
    with Prefetcher(small, PROCESSES) as pf:
        pf.begin_pass(range(3))
        x, _ = pf.next()
        assert not isinstance(x.base, mmap.mmap)


def test_no_shm_segments_remain_after_an_error():
    ds = BigFailingDataset(12, fail_at=4)
    with Prefetcher(ds, LoaderConfig(workers=2, max_queue_size=8, use_multiprocessing=True)) as pf:
        pf.begin_pass(range(12))
        assert drain(pf, 4) == [0, 1, 2, 3]
        with pytest.raises(ValueError, match="corrupt record 4"):
            pf.next()
    assert shm_segments() == []


def test_no_shm_segments_remain_after_a_sigkill():
    ds = BigSuicidalDataset(30, kill_at=9, delay=0.01)
    with Prefetcher(ds, LoaderConfig(workers=3, max_queue_size=12, use_multiprocessing=True)) as pf:
        pf.begin_pass(range(30))
        with pytest.raises(WorkerDiedError):
            drain(pf)
    assert shm_segments() == []


def test_no_shm_segments_remain_when_closed_with_batches_in_flight():
    ds = IndexDataset(40, shape=(256, 256))
    pf = Prefetcher(ds, LoaderConfig(workers=2, max_queue_size=16, use_multiprocessing=True))
    pf.begin_pass(range(40))
    drain(pf, 1)
    time.sleep(0.2)  # workers finish batches nobody reads
    pf.close()
    assert shm_segments() == []


def test_transfer_round_trip_of_nested_batches():
    enc = _transfer.Encoder(_transfer.segment_prefix(os.getpid(), 999), threshold=1024)
    batch = {
        "img": np.arange(4096, dtype=np.float32).reshape(64, 64),
        "meta": [np.arange(3), ("label", np.ones(512))],  # 4 KiB float64: shm
        "obj": np.array([{"a": 1}], dtype=object),  # object arrays are never put in shm
    }
    payload = pickle.loads(pickle.dumps(enc.encode(batch)))
    assert len(shm_segments()) == 2
    out = _transfer.decode(payload)
    assert shm_segments() == []
    np.testing.assert_array_equal(out["img"], batch["img"])
    np.testing.assert_array_equal(out["meta"][0], batch["meta"][0])
    assert out["meta"][1][0] == "label"
    np.testing.assert_array_equal(out["meta"][1][1], batch["meta"][1][1])
    assert out["obj"][0] == {"a": 1}
    assert batch_nbytes(batch) == batch_nbytes(out)
    # discard() unlinks the segments of a payload that will never be decoded.
    _transfer.discard(enc.encode(batch))
    assert shm_segments() == []


# -- generator factories ----------------------------------------------------------------------
def test_generator_factory_source_restarts_an_exhausted_iterator():
    src = GeneratorFactorySource(count_to_three)
    assert [int(src[i][0]) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(TypeError, match="callable"):
        GeneratorFactorySource(42)  # type: ignore[arg-type]
    clone = pickle.loads(pickle.dumps(src))  # thread-local iterators are not pickled
    assert int(clone[0][0]) == 0


def test_generator_factory_in_threads_and_processes():
    src = GeneratorFactorySource(pid_stream)
    with Prefetcher(src, LoaderConfig(workers=1)) as pf:
        pf.begin_pass(None)
        serials = [int(pf.next()[1]) for _ in range(5)]
        assert serials == [0, 1, 2, 3, 4]  # inline: the caller's own iterator, in order
    with Prefetcher(src, LoaderConfig(workers=2, use_multiprocessing=True)) as pf:
        pf.begin_pass(None)
        pids = set(pf.worker_pids)
        got = [pf.next() for _ in range(12)]
    by_pid: dict[int, list[int]] = {}
    for pid, serial in (map(int, b) for b in got):
        by_pid.setdefault(pid, []).append(serial)
    assert set(by_pid) <= pids
    for serials in by_pid.values():  # every worker runs its own copy of the generator
        assert serials == list(range(len(serials)))


def test_thread_pool_close_waits_for_a_busy_worker_thread():
    ds = IndexDataset(2, delay=0.5)
    pf = Prefetcher(ds, LoaderConfig(workers=2))
    pf.begin_pass(range(2))
    time.sleep(0.05)
    pf.close(timeout=5)
    assert not [t for t in threading.enumerate() if t.name.startswith("keras_loadtune-thread")]


@MODES
def test_forced_release_with_work_in_flight_loses_and_repeats_nothing(config):
    ds = IndexDataset(16, delay=0.05)
    with Prefetcher(ds, config, idle_timeout=None) as pf:
        pf.begin_pass(range(16))
        assert drain(pf, 2) == [0, 1]
        assert pf.outstanding, "the test needs batches in flight"
        assert pf.release_workers() is False  # never drops in-flight work on its own
        assert pf.release_workers(timeout=1.0, force=True) is True
        assert pf.worker_pids == []
        assert drain(pf) == list(range(2, 16))


def test_worker_ids_and_segment_names_are_never_reused_across_pools():
    """A retired pool unlinks its workers' segments by name prefix: a newer pool's worker
    must never share that prefix, or its batches vanish before the trainer reads them."""
    ds = IndexDataset(30, shape=(256, 256))  # 512 KiB: travels through shared memory
    with Prefetcher(ds, LoaderConfig(2, 4, True)) as pf:
        pf.begin_pass(range(30))
        got = drain(pf, 5)
        first = set(pf.serving.pool._workers)
        pf.reconfigure(LoaderConfig(2, 4, False))
        got += drain(pf, 5)
        pf.reconfigure(LoaderConfig(2, 4, True))
        second = set(pf.serving.pool._workers)
        got += drain(pf)
        assert got == list(range(30))
    assert first and second and not first & second


def test_records_flag_the_end_of_pass_stretch_where_workers_have_nothing_left():
    with Prefetcher(IndexDataset(10), LoaderConfig(2, 4)) as pf:
        pf.begin_pass(range(10))
        drain(pf)
        tails = [r.pass_tail for r in pf.stats]
        # After delivering position p, positions up to p + 1 + queue are submitted.
        assert tails == [p >= 10 - 4 - 1 for p in range(10)]
        pf.begin_pass(None)  # an infinite stream has no tail
        drain(pf, 5)
        assert not any(r.pass_tail for r in pf.stats.batches_since(10))


def test_a_stream_closed_by_the_garbage_collector_under_the_lock_does_not_deadlock():
    # Found in CI (TensorFlow, the Keras lifecycle property test hung for good): an
    # abandoned Keras iterator is a generator whose `finally` closes its stream; the
    # garbage collector ran it inside `_top_up`, on the thread that held the
    # prefetcher's lock, and `close()` waited for that lock forever.
    import gc

    with Prefetcher(IndexDataset(12), THREADS, timeout=5) as pf:

        def batches():
            stream = pf.open_stream(list(range(12)))
            try:
                yield from stream
            finally:
                stream.close()

        abandoned = batches()
        next(abandoned)
        cycle: list = [abandoned]
        cycle.append(cycle)  # only the cycle collector can finalize it
        del abandoned, cycle
        other = pf.open_stream(list(range(12)))
        collected = threading.Event()

        def collect_under_the_lock() -> None:
            # As inside a top-up, when an allocation triggers a collection: the pool
            # controller's lock and a stream's lock held.
            with pf._control._lock, other._cond:
                gc.collect()
            collected.set()

        thread = threading.Thread(target=collect_under_the_lock, daemon=True)
        thread.start()
        thread.join(10)
        assert collected.is_set(), "closing a stream from a finalizer deadlocked"
        assert [int(b[0][0]) for b in other] == list(range(12))
        assert pf.open_streams == 1  # the abandoned stream is gone
