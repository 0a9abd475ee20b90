"""`keras_adapter/grain_cpu.py` and the CPU a `GrainIterSource` records (issue #25).

Grain produces on its own threads and worker processes, which the thread iterating the
pipeline does not see. These tests check that their CPU reaches the records the tuner
reads (`produce_cpu_s`), so a GIL-bound pure-Python Grain pipeline looks CPU-heavy and
leads the tuner to consider worker processes, while a sleeping one does not. CPU time
is compared with CPU time (a fixed amount of work), never with a clock: no figure here
depends on the machine's speed or load.
"""

from __future__ import annotations

import threading
import time

import grain
import numpy as np
import pytest
from conftest import wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_loadtune import LoaderConfig
from keras_loadtune.decision.first_move import first_move
from keras_loadtune.decision.probe import ProbeVerdict
from keras_loadtune.decision.process_policy import CPU_HEAVY_RATIO
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.keras_adapter.grain_cpu import GrainCpu, thread_cpu_s
from keras_loadtune.keras_adapter.grain_iter_source import GrainIterSource
from keras_loadtune.measurement import StepSample, loader_profile, window_stats

pytestmark = [pytest.mark.timeout(300)]

_BUSY_ITERATIONS = 60_000


def _busy(i):
    """A fixed amount of pure-Python work (it holds the GIL)."""
    total = 0
    for k in range(_BUSY_ITERATIONS):
        total += k ^ i
    return np.asarray([i, total % 7])


def _sleepy(i):
    time.sleep(0.02)  # a remote read: wall time, next to no CPU
    return np.asarray([i, 0])


def _reference_cpu_s(items: int) -> float:
    """The CPU seconds `items` calls of `_busy` take on this thread."""
    started = time.thread_time()
    for i in range(items):
        _busy(i)
    return time.thread_time() - started


def _pipeline(fn, n: int, threads: int, workers: int = 0):
    ds = grain.MapDataset.range(n).map(fn)
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2))
    ds = ds.batch(2)
    if workers:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(workers, per_worker_buffer_size=1))
    return ds


def _records(source: GrainIterSource, pause_s: float = 0.0) -> list:
    """The records of one pass, with `pause_s` between batches (a training step: Grain's
    threads fill their buffer meanwhile, so the wait, not the CPU, shrinks under load)."""
    iterator = iter(source)
    try:
        for _ in iterator:
            time.sleep(pause_s)
    finally:
        iterator.close()
    return list(source.stats)


# ------------------------------------------------------------------------------ GrainCpu
def test_thread_cpu_is_read_from_a_live_thread_and_none_from_an_ended_one():
    me = threading.get_native_id()
    before = thread_cpu_s(me)
    _busy(0)
    after = thread_cpu_s(me)
    assert before is not None and after is not None and after > before
    ended = threading.Thread(target=_busy, args=(1,))
    ended.start()
    ended.join()  # the OS thread ends just after: its clock then reads as an error
    assert wait_until(lambda: thread_cpu_s(ended.native_id) is None)


def test_the_cpu_of_grains_threads_is_read():
    cpu = GrainCpu()
    cpu.read()
    iterator = iter(_pipeline(_busy, 24, threads=2))
    try:
        batches = list(iterator)
        spent = cpu.read()  # the grain-prefetch threads ran every `_busy`
    finally:
        iterator.close()
    assert len(batches) == 12
    assert spent >= 0.5 * _reference_cpu_s(24)
    assert cpu.read() < spent  # each read counts what ran since the last one


def test_threads_that_are_not_grains_are_not_counted():
    cpu = GrainCpu()
    cpu.read()
    other = threading.Thread(target=lambda: [_busy(i) for i in range(8)], name="not-grain")
    other.start()
    other.join()
    assert cpu.read() == 0.0


def test_the_cpu_of_grains_worker_processes_is_read():
    cpu = GrainCpu()
    cpu.expect_workers(2)
    cpu.read()
    iterator = iter(_pipeline(_busy, 48, threads=1, workers=2))
    try:
        first = next(iterator)
        cpu.start_worker_clocks()  # their start (spawn, imports) is left out
        cpu.read()
        rest, spent = [], 0.0
        for batch in iterator:  # read after each batch, as GrainIterSource does at most
            rest.append(batch)
            spent += cpu.read()
    finally:
        iterator.close()
    assert 1 + len(rest) == 24 and np.asarray(first).shape == (2, 2)
    # The workers ran most of the remaining 46 items (a worker's CPU after the last
    # read before it ended is lost); the trainer's process only moved their batches.
    assert spent >= 0.3 * _reference_cpu_s(46)


# ------------------------------------------------------------------ GrainIterSource records
def test_a_busy_map_on_grains_threads_gives_records_with_its_cpu():
    records = _records(GrainIterSource(_pipeline(_busy, 40, threads=2)), pause_s=0.03)
    assert len(records) == 20
    total = sum(r.produce_cpu_s for r in records)
    assert total > 0  # 0 before: Grain's threads were not seen
    assert total >= 0.3 * _reference_cpu_s(40)
    assert all(r.produce_wall_s >= r.produce_cpu_s >= 0 for r in records)
    assert loader_profile(records).cpu_ratio >= CPU_HEAVY_RATIO


def test_a_sleeping_map_gives_records_with_cpu_far_under_their_wall():
    # One reading thread and no pause between batches: each batch's wait is its two
    # sleeps (40 ms or more on any machine), its CPU a few hundred microseconds.
    records = _records(GrainIterSource(_pipeline(_sleepy, 24, threads=1)))
    profile = loader_profile(records)
    assert profile.cpu_ratio < CPU_HEAVY_RATIO
    assert profile.produce_cpu_s < 0.25 * profile.produce_wall_s


def test_a_grain_source_of_a_busy_map_leads_the_tuner_to_seed_processes():
    # The first move at an input-bound probe verdict (`decision.first_move`) seeds
    # worker processes only for a CPU-heavy loader: fed the records of a busy Grain
    # map it does, fed those of a sleeping one it does not.
    stats = window_stats([StepSample(0.020, 0.025)] * 8)
    settings_ = TunerSettings(cores=8)

    def move(fn):
        records = _records(GrainIterSource(_pipeline(fn, 24, threads=1)), pause_s=0.03)
        return first_move(ProbeVerdict(stats, True, None, records), settings_, LoaderConfig(), 8)

    busy = move(_busy)
    assert busy.prewarm_processes and busy.process_config is not None
    assert busy.process_config.use_multiprocessing
    assert not move(_sleepy).prewarm_processes


class _SteadyMeter:
    """A `GrainCpu` stand-in for a loader that spends `per_batch` CPU seconds on each
    batch it makes (`made` counts them)."""

    def __init__(self, per_batch: float):
        self.per_batch = per_batch
        self.made = 0
        self._read_at = 0

    def expect_workers(self, count: int) -> None:
        pass

    def start_worker_clocks(self) -> None:
        pass

    def read(self) -> float:
        spent = self.per_batch * (self.made - self._read_at)
        self._read_at = self.made
        return spent


@settings(max_examples=50, deadline=None)
@given(
    per_batch=st.floats(0.0, 0.5),
    gaps=st.lists(st.floats(0.0, 0.2), min_size=1, max_size=40),
)
def test_a_steady_loaders_records_carry_its_cpu_per_batch_whenever_it_is_read(per_batch, gaps):
    # Reads come when the last is `CPU_READ_EVERY_S` old, so a window holds any number
    # of batches; shared over them, what a steady loader spent is its cost per batch.
    source = GrainIterSource(_pipeline(_busy, 4, threads=0))
    meter = _SteadyMeter(per_batch)
    source._grain_cpu = meter
    source._cpu_pass_starts(source.options)
    now = 0.0
    for position, gap in enumerate(gaps):
        now += gap
        meter.made += 1  # made, then delivered
        source._delivered(np.zeros(2), now, now, 0.0, position, LoaderConfig(), 1)
    records = list(source.stats)
    assert len(records) == len(gaps)
    assert [r.produce_cpu_s for r in records] == pytest.approx([per_batch] * len(gaps))
    assert [r.produce_wall_s for r in records] == pytest.approx([per_batch] * len(gaps))
