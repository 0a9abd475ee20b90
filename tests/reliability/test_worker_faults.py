"""Faults inside workers: exceptions, SIGKILL, hangs, wrong return types; threads and processes.

Each case checks what reaches the consumer (`Prefetcher.next()` or `model.fit`), when, and
that nothing is left behind (the autouse `no_engine_leaks` fixture, plus explicit checks
that a failed `fit` releases its workers *without* the user closing anything).
"""

from __future__ import annotations

import signal
import time

import pytest

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import BatchTimeoutError, EndOfPass, Prefetcher, WorkerDiedError
from reliability import faulty
from reliability.faulty import CorruptRecordError, Faulty
from reliability.helpers import Snapshot, assert_no_leaks, notes, worker_processes

pytestmark = pytest.mark.timeout(120)

N = 8
POSITIONS = {"first": 0, "mid": 4, "last": N - 1}
MODES = {"threads": False, "processes": True}


def drain(pf: Prefetcher) -> list[int]:
    """Consumes a pass; returns the indices delivered before an exception (re-raised)."""
    got: list[int] = []
    try:
        while True:
            x, _ = pf.next()
            got.append(int(x[0, 0]))
    except EndOfPass:
        return got
    except BaseException as exc:
        exc.delivered = got  # type: ignore[attr-defined]
        raise


# -- engine level ------------------------------------------------------------------------------
@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize("mode", MODES)
def test_engine_getitem_exception_keeps_type_message_and_index(mode, where, closing):
    at = POSITIONS[where]
    pf = Prefetcher(Faulty(N, at, "raise", big=(where == "mid")), LoaderConfig(2, 4, MODES[mode]))
    closing(pf)
    pf.begin_pass(range(N))
    with pytest.raises(CorruptRecordError) as info:
        drain(pf)
    exc = info.value
    assert str(exc) == f"corrupt record {at}"
    assert f"__getitem__({at})" in notes(exc)
    assert exc.delivered == list(range(at)), "every good batch before the failing one first"


@pytest.mark.parametrize("mode", MODES)
def test_engine_exception_in_a_shuffled_pass_names_the_dataset_index(mode, closing):
    order = [5, 2, 7, 0, 3, 1, 6, 4]
    pf = Prefetcher(Faulty(N, 3, "raise"), LoaderConfig(3, 8, MODES[mode]))
    closing(pf)
    pf.begin_pass(order)
    with pytest.raises(CorruptRecordError, match="corrupt record 3") as info:
        drain(pf)
    assert "__getitem__(3)" in notes(info.value)
    assert info.value.delivered == order[: order.index(3)]


@pytest.mark.parametrize("big", [False, True], ids=["pickled", "shm"])
def test_engine_sigkilled_worker_raises_worker_died_error_within_10s(big, closing, tmp_path):
    stamp = tmp_path / "killed_at"
    ds = Faulty(N, 3, "kill", delay=0.05, big=big, stamp=str(stamp))
    pf = Prefetcher(ds, LoaderConfig(2, 4, True))
    closing(pf)
    pf.begin_pass(range(N))  # starts (and waits for) the workers
    pids = set(pf.worker_pids)
    with pytest.raises(WorkerDiedError) as info:
        drain(pf)
    raised_at = time.time()
    latency = raised_at - float(stamp.read_text())
    exc = info.value
    print(f"\n[faults] SIGKILL (big={big}) -> WorkerDiedError {latency:.3f} s after the kill")
    assert 0 <= latency < 10.0
    assert isinstance(exc, RuntimeError)
    assert exc.pid in pids and exc.exitcode == -signal.SIGKILL and exc.index == 3
    assert f"pid {exc.pid}" in str(exc) and "SIGKILL" in str(exc)
    assert exc.delivered == [0, 1, 2][: len(exc.delivered)]


@pytest.mark.parametrize("mode", MODES)
def test_engine_hanging_worker_raises_batch_timeout_naming_the_index(mode, closing):
    pf = Prefetcher(Faulty(N, 5, "hang"), LoaderConfig(2, 4, MODES[mode]), timeout=1.0)
    closing(pf)
    pf.begin_pass(range(N))
    t0 = time.monotonic()
    with pytest.raises(BatchTimeoutError) as info:
        drain(pf)
    elapsed = time.monotonic() - t0
    assert info.value.index == 5 and info.value.timeout == 1.0
    assert "batch 5" in str(info.value) and "__getitem__(5)" in str(info.value)
    assert info.value.delivered == [0, 1, 2, 3, 4]
    assert elapsed < 1.0 + 3.0, f"took {elapsed:.1f} s for a 1 s timeout"
    faulty.RELEASE_HANGS.set()  # a stuck thread can only leave once __getitem__ returns
    pf.close(timeout=0.5)  # a stuck process is killed after the grace period


# -- through Keras fit -------------------------------------------------------------------------
def _fit_fails(kdata, wrapped, exc_type, **fit_kwargs):
    """Runs a 1-epoch fit that must raise `exc_type`; returns (exc, trained step count)."""
    steps = []
    counter = kdata.keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: steps.append(b)
    )
    t0 = time.monotonic()
    with pytest.raises(exc_type) as info:
        kdata.tiny_model().fit(
            wrapped, epochs=1, verbose=0, shuffle=False, callbacks=[counter], **fit_kwargs
        )
    info.value.elapsed = time.monotonic() - t0  # type: ignore[attr-defined]
    return info.value, len(steps)


@pytest.fixture
def kdata(keras_ready):
    import keras

    keras_ready.keras = keras
    return keras_ready


@pytest.mark.keras
@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize("mode", MODES)
def test_fit_surfaces_worker_exception_after_the_good_batches(kdata, mode, where, closing):
    import keras_loadtune as klt

    at = POSITIONS[where]
    before = Snapshot.take()
    wrapped = klt.wrap(kdata.KerasView(Faulty(N, at, "raise")), LoaderConfig(2, 4, MODES[mode]))
    closing(wrapped)
    exc, trained = _fit_fails(kdata, wrapped, CorruptRecordError)
    assert str(exc) == f"corrupt record {at}"
    assert f"__getitem__({at})" in notes(exc)
    by_stream: dict[int, list[int]] = {}
    for r in wrapped.stats:
        by_stream.setdefault(r.stream, []).append(r.index)
    # A model-building pull (JAX, PyTorch) reads batch 0 on a stream of its own.
    assert ([*by_stream.values()] or [[]])[-1] == list(range(at))
    assert trained == at, "the model trained on every batch before the failing one"
    # A failed fit releases its workers by itself (nobody calls close() after a crash).
    assert_no_leaks(before)


@pytest.mark.keras
def test_fit_surfaces_worker_death(kdata, closing):
    import keras_loadtune as klt

    before = Snapshot.take()
    wrapped = klt.wrap(kdata.KerasView(Faulty(N, 4, "kill")), LoaderConfig(2, 4, True))
    closing(wrapped)
    exc, trained = _fit_fails(kdata, wrapped, WorkerDiedError)
    assert "SIGKILL" in str(exc) and f"pid {exc.pid}" in str(exc)
    assert exc.elapsed < 10.0
    assert trained <= 4
    assert_no_leaks(before)


@pytest.mark.keras
@pytest.mark.parametrize("mode", MODES)
def test_fit_with_a_hanging_worker_times_out_instead_of_hanging(kdata, mode, closing):
    import keras_loadtune as klt

    before = Snapshot.take()
    wrapped = klt.wrap(
        kdata.KerasView(Faulty(N, 3, "hang")), LoaderConfig(2, 4, MODES[mode]), timeout=1.0
    )
    closing(wrapped)
    exc, trained = _fit_fails(kdata, wrapped, BatchTimeoutError)
    if kdata.keras.backend.backend() == "tensorflow" or not MODES[mode]:
        assert exc.index == 3 and "batch 3" in str(exc)
        assert trained == 3
    else:
        # Known limit: JAX's and PyTorch's model-building pull opens a stream whose
        # prefetched batch 3 hangs a worker process; batches the new stream queued on
        # that worker starve, and the timeout names the first of them.
        assert exc.index <= 3 and f"batch {exc.index}" in str(exc)
        assert trained == exc.index
    assert exc.elapsed < 1.0 + 5.0
    if MODES[mode]:
        # The stuck worker process is not left running after fit gave up on it.
        assert_no_leaks(before)
    faulty.RELEASE_HANGS.set()


@pytest.mark.keras
@pytest.mark.parametrize("mode", MODES)
def test_wrong_batch_type_gives_keras_own_error(kdata, mode, closing):
    """Keras validates the batch (`PyDatasetAdapter._standardize_batch`), not us."""
    import keras_loadtune as klt

    plain = kdata.KerasView(Faulty(N, 2, "wrong"), workers=2, use_multiprocessing=False)
    with pytest.raises(Exception) as unwrapped:
        kdata.tiny_model().fit(plain, epochs=1, verbose=0, shuffle=False)
    before = Snapshot.take()
    wrapped = klt.wrap(
        kdata.KerasView(Faulty(N, 2, "wrong")), LoaderConfig(2, 4, MODES[mode]), idle_timeout=0.5
    )
    closing(wrapped)
    exc, trained = _fit_fails(kdata, wrapped, type(unwrapped.value))
    assert "PyDataset.__getitem__() must return a tuple or a dict" in str(exc)
    assert "keras_loadtune" not in str(exc)
    assert trained == 2
    # Keras raised inside its own generator, so our enqueuer never saw the failure: the
    # idle release frees the workers.
    assert_no_leaks(before)
    assert not worker_processes()
