"""Property test: any schedule of reconfigurations delivers exactly the pass, in order.

Hypothesis draws a dataset size, a sequence of passes (in order, shuffled, infinite
streams; finished or abandoned part-way) and, for every pass, reconfigurations at random
delivery boundaries, including before the first and after the last batch. The model is
simple: a finite pass delivers `order[:taken]`; an infinite stream delivers consecutive
indices starting after the last index any stream delivered.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_datasets import JitterDataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import EndOfPass, Prefetcher

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]

configs = st.builds(
    LoaderConfig,
    # 1 worker without processes is inline (made on the consumer's thread): drawn often.
    workers=st.one_of(st.just(1), st.integers(1, 8)),
    max_queue_size=st.integers(1, 16),
    # Mostly threads: a process pool costs ~0.1 s to start.
    use_multiprocessing=st.sampled_from([False, False, False, False, True]),
)


@st.composite
def schedules(draw):
    n = draw(st.integers(1, 20))
    passes = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["in_order", "shuffled", "infinite"]))
        if kind == "in_order":
            order = list(range(n))
        elif kind == "shuffled":
            order = draw(st.permutations(range(n)))
        else:
            order = None
        length = n if order is None else len(order)
        # Finite passes are usually finished; sometimes abandoned part-way.
        taken = draw(st.sampled_from([length, length, draw(st.integers(0, length))]))
        # (boundary, config): reconfigure before the `boundary`-th delivery of this pass.
        events = draw(
            st.lists(st.tuples(st.integers(0, taken), configs), max_size=4).map(
                lambda evs: sorted(evs, key=lambda e: e[0])
            )
        )
        passes.append((order, taken, events))
    return n, draw(configs), passes


def _index(batch) -> int:
    return int(np.asarray(batch[0]).flat[0])


@settings(
    max_examples=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=False,
)
@given(schedules())
def test_any_reconfiguration_schedule_delivers_exactly_the_pass(schedule):
    n, initial, passes = schedule
    stream_next = 0
    config = initial
    # A per-batch timeout turns a lost batch into a failure instead of a hang.
    with Prefetcher(JitterDataset(n), initial, timeout=5, idle_timeout=None) as pf:
        for order, taken, events in passes:
            pf.begin_pass(order)
            if order is None:
                expected = list(range(stream_next, stream_next + taken))
            else:
                expected = list(order[:taken])
            delivered: list[int] = []
            pending = list(events)
            for step in range(taken + 1):
                while pending and pending[0][0] == step:
                    config = pending.pop(0)[1]
                    pf.reconfigure(config)
                if step < taken:
                    delivered.append(_index(pf.next()))
            assert delivered == expected, (order, events, pf.config)
            if order is not None and taken == len(order):
                with pytest.raises(EndOfPass):
                    pf.next()
                assert pf.pass_finished
            if order is None and taken:
                stream_next = delivered[-1] + 1
            if taken:
                records = pf.stats.batches_since(pf.stats.delivered - taken)
                assert [r.index for r in records] == expected
            assert pf.config == config


@st.composite
def interleavings(draw):
    """Several concurrent streams, read in a random interleaving, with random switches."""
    n = draw(st.integers(1, 12))
    streams = []
    for _ in range(draw(st.integers(2, 4))):
        kind = draw(st.sampled_from(["in_order", "shuffled", "infinite"]))
        order = (
            None
            if kind == "infinite"
            else (list(range(n)) if kind == "in_order" else draw(st.permutations(range(n))))
        )
        length = n if order is None else len(order)
        taken = draw(st.sampled_from([length, draw(st.integers(0, length))]))
        start = draw(st.integers(0, 5)) if order is None else 0
        streams.append((order, taken, start))
    # The reader's moves: which stream to read next, or a switch (and whether in the
    # background), or closing a stream early.
    moves = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("read"), st.integers(0, len(streams) - 1)),
                st.tuples(st.just("switch"), configs, st.booleans()),
            ),
            max_size=40,
        )
    )
    return n, draw(configs), streams, moves


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(interleavings())
def test_concurrent_streams_each_deliver_exactly_their_pass(case):
    """Any number of consumers share one pool; each gets its own pass, exactly once."""
    n, initial, specs, moves = case
    with Prefetcher(JitterDataset(n), initial, timeout=5, idle_timeout=None) as pf:
        streams = [pf.open_stream(order, start=start) for order, _, start in specs]
        delivered: list[list[int]] = [[] for _ in specs]

        def read(i: int) -> None:
            if len(delivered[i]) < specs[i][1]:
                delivered[i].append(_index(streams[i].next()))

        for move in moves:
            if move[0] == "read":
                read(move[1])
            else:
                pf.reconfigure(move[1], background=move[2])
        for i in range(len(specs)):  # finish every stream
            while len(delivered[i]) < specs[i][1]:
                read(i)
        pf.wait_for_switch(timeout=10)
        for i, (order, taken, start) in enumerate(specs):
            expected = list(range(start, start + taken)) if order is None else list(order[:taken])
            assert delivered[i] == expected, (i, order, moves)
            if order is not None and taken == len(order):
                with pytest.raises(EndOfPass):
                    streams[i].next()
            streams[i].close()
        per_stream = {s.id: [] for s in streams}
        for record in pf.stats:
            per_stream[record.stream].append(record.index)
        assert [per_stream[s.id] for s in streams] == delivered
