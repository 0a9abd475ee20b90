"""`engine/stream.py`: the inline config, the hand-over (`Stream.offer`), switches to inline."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import engine_threads, wait_until
from engine_datasets import IndexDataset, pid_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import EndOfPass, GeneratorFactorySource, Prefetcher
from keras_loadtune.engine.stream import OK

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

INLINE = LoaderConfig(workers=1, max_queue_size=10)
THREADS = LoaderConfig(workers=3, max_queue_size=4)
PROCESSES = LoaderConfig(workers=2, max_queue_size=4, use_multiprocessing=True)


class ThreadNamingDataset(IndexDataset):
    """Remembers which thread made each index (threads and inline only)."""

    def __init__(self, n: int, delay: float = 0.0):
        super().__init__(n, delay)
        self.made_by: dict[int, list[str]] = {}
        self._lock = threading.Lock()

    def __getitem__(self, index: int):
        with self._lock:
            self.made_by.setdefault(index, []).append(threading.current_thread().name)
        return super().__getitem__(index)


def index_of(batch) -> int:
    return int(np.asarray(batch[0]).flat[0])


def drain(pf: Prefetcher, limit: int | None = None) -> list[int]:
    out = []
    while limit is None or len(out) < limit:
        try:
            out.append(index_of(pf.next()))
        except EndOfPass:
            break
    return out


def test_inline_config_is_made_on_the_calling_thread_with_no_worker():
    ds = ThreadNamingDataset(6)
    before = {t.ident for t in engine_threads()}
    with Prefetcher(ds, INLINE, idle_timeout=None) as pf:
        pf.begin_pass(range(6))
        assert ds.made_by == {}  # nothing prefetched: made when asked for
        assert drain(pf, 2) == [0, 1]
        assert set(ds.made_by) == {0, 1}
        assert not pf.has_pool
        assert {t.ident for t in engine_threads()} == before
        assert drain(pf) == [2, 3, 4, 5]
    me = threading.current_thread().name
    assert all(names == [me] for names in ds.made_by.values())


def test_inline_records_the_getitem_time_as_the_wait():
    ds = IndexDataset(5, delay=0.01)
    with Prefetcher(ds, INLINE, idle_timeout=None) as pf:
        pf.begin_pass(range(5))
        drain(pf)
    records = list(pf.stats)
    assert [r.index for r in records] == [0, 1, 2, 3, 4]
    for r in records:
        assert r.config == INLINE and r.producer == INLINE
        assert r.produce_wall_s > 0
        assert r.wait_s >= r.produce_wall_s  # the step waited for the whole __getitem__
        assert r.queue_depth == 0
        assert r.nbytes == 2 * 8 + 8
    assert [r.pass_tail for r in records] == [False, False, False, False, True]
    assert pf.stats.total_wait_s == pytest.approx(sum(r.wait_s for r in records))


def test_inline_ignores_the_timeout_and_the_queue_size():
    ds = IndexDataset(3, delay=0.05)
    with Prefetcher(ds, LoaderConfig(1, 1), timeout=0.01, idle_timeout=None) as pf:
        pf.begin_pass(range(3))
        assert drain(pf) == [0, 1, 2]  # the consumer makes its own batch: nothing to time out


@pytest.mark.parametrize("pool", [THREADS, PROCESSES], ids=["threads", "processes"])
def test_switches_between_inline_and_a_pool_mid_pass_lose_and_repeat_nothing(pool):
    ds = IndexDataset(30, delay=0.01)
    with Prefetcher(ds, INLINE, timeout=10, idle_timeout=None) as pf:
        pf.begin_pass(range(30))
        got = drain(pf, 3)
        pf.reconfigure(pool)
        got += drain(pf, 5)
        assert pf.outstanding, "the test needs batches in flight when going inline"
        pf.reconfigure(INLINE)  # in-flight batches: served if they arrive, else made here
        assert not pf.has_pool
        got += drain(pf, 7)
        pf.reconfigure(pool)
        got += drain(pf, 4)
        pf.reconfigure(INLINE)
        got += drain(pf)
    assert got == list(range(30))


def test_going_inline_makes_the_positions_in_flight_on_the_training_thread():
    ds = ThreadNamingDataset(12, delay=0.2)
    with Prefetcher(ds, LoaderConfig(2, 4), timeout=10, idle_timeout=None) as pf:
        pf.begin_pass(range(12))
        assert drain(pf, 1) == [0]
        pf.reconfigure(INLINE)
        assert drain(pf) == list(range(1, 12))
    me = threading.current_thread().name
    assert all(me in ds.made_by[i] for i in range(6, 12))  # beyond the old window


def test_background_switch_from_inline_keeps_serving_until_the_pool_is_ready():
    ds = IndexDataset(40)
    with Prefetcher(ds, INLINE, timeout=30, idle_timeout=None) as pf:
        pf.begin_pass(range(40))
        got = drain(pf, 2)
        pf.reconfigure(PROCESSES, background=True)
        got += drain(pf, 3)  # inline meanwhile
        assert pf.wait_for_switch(timeout=60)
        assert pf.switch_error is None and pf.config == PROCESSES
        assert pf.worker_pids
        got += drain(pf)
    assert got == list(range(40))
    producers = {r.producer for r in pf.stats}
    assert producers == {INLINE, PROCESSES}


def test_source_change_makes_undelivered_batches_again_inline_and_in_a_pool():
    ds = IndexDataset(8)
    with Prefetcher(ds, THREADS, timeout=10, idle_timeout=None) as pf:
        pf.begin_pass(range(8))
        first = pf.next()
        assert int(first[1][0]) == 0
        ds.on_epoch_end()  # the workers must see epoch 1 from now on
        pf.source_changed()
        rest = [pf.next() for _ in range(3)]
        assert [int(b[1][0]) for b in rest] == [1, 1, 1]
        pf.reconfigure(INLINE)
        ds.on_epoch_end()
        pf.source_changed()
        assert [int(b[1][0]) for b in (pf.next(), pf.next())] == [2, 2]


def test_offer_keeps_only_the_first_result_of_a_position_not_yet_delivered():
    ds = IndexDataset(6)
    with Prefetcher(ds, LoaderConfig(2, 2), timeout=10, idle_timeout=None) as pf:
        stream = pf.open_stream(range(6))
        assert index_of(stream.next()) == 0
        generation = pf.serving.generation
        late = (OK, (np.array([99]), np.array([0])), 0.0, 0.0, 0, generation)
        assert not stream.offer(0, generation, late)  # already delivered
        kept = stream.offer(5, generation, (OK, (np.array([5]), np.array([0])), 0, 0, 0, 0))
        assert kept is True
        assert not stream.offer(5, generation, late)  # a second copy of position 5
        ds.on_epoch_end()
        pf.source_changed()  # older results saw the old source: stale
        assert pf.serving.generation > generation
        assert not stream.offer(4, generation, late)
        assert [index_of(b) for b in stream] == [1, 2, 3, 4, 5]
        stream.close()
        assert not stream.offer(3, pf.serving.generation, late)  # closed


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    n=st.integers(1, 16),
    switches=st.lists(
        st.tuples(st.integers(0, 16), st.sampled_from([INLINE, LoaderConfig(2, 3), THREADS])),
        max_size=5,
    ),
)
def test_any_mix_of_inline_and_thread_configs_delivers_the_pass_once(n, switches):
    ds = ThreadNamingDataset(n)
    with Prefetcher(ds, INLINE, timeout=5, idle_timeout=None) as pf:
        pf.begin_pass(range(n))
        got: list[int] = []
        for at, config in sorted(switches, key=lambda s: s[0]):
            got += drain(pf, max(at - len(got), 0))
            pf.reconfigure(config)
        got += drain(pf)
    assert got == list(range(n))


def test_a_generator_factory_inline_is_one_copy_whichever_thread_asks():
    # TensorFlow's tf.data calls the consumer's generator from changing threads.
    source = GeneratorFactorySource(pid_stream)
    with Prefetcher(source, INLINE, idle_timeout=None) as pf:
        stream = pf.open_stream(None)
        serials = [int(stream.next()[1])]
        box: list = []
        for _ in range(3):
            thread = threading.Thread(target=lambda: box.append(stream.next()))
            thread.start()
            thread.join(10)
        serials += [int(b[1]) for b in box]
        serials.append(int(stream.next()[1]))
    assert serials == [0, 1, 2, 3, 4]


class SwitchingDataset(IndexDataset):
    """Starts a background switch to threads while index `at` is made inline, and waits for it."""

    def __init__(self, n: int, at: int):
        super().__init__(n)
        self.at = at
        self.prefetcher: Prefetcher | None = None

    def __getitem__(self, index: int):
        pf = self.prefetcher
        if index == self.at and pf is not None:
            if pf.config.inline:
                pf.reconfigure(THREADS, background=True)  # publishes from its own thread
                assert pf.wait_for_switch(timeout=10)
            else:  # the new pool's copy arrives after the inline one was delivered
                time.sleep(0.3)
        return super().__getitem__(index)


def test_a_switch_published_while_a_batch_is_made_inline_leaves_nothing_in_flight():
    ds = SwitchingDataset(12, at=3)
    with Prefetcher(ds, INLINE, timeout=10, idle_timeout=None) as pf:
        ds.prefetcher = pf
        pf.begin_pass(range(12))
        assert drain(pf) == list(range(12))
        assert pf.config == THREADS
        # Position 3 was submitted to the new pool while it was being made inline: its
        # copy is dropped, and nothing stays in flight (or idle release would never come).
        assert wait_until(lambda: pf.outstanding == 0, timeout=5)
