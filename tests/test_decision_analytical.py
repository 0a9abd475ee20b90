"""The analytical pipeline model: predictions and seeds."""

from __future__ import annotations

import math

import pytest

from keras_loadtune import LoaderConfig
from keras_loadtune.decision.analytical import (
    concurrency,
    extra_rss_bytes,
    predict,
    queue_for,
    seed_configs,
)
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import LoaderProfile

IO_BOUND = LoaderProfile(0.040, 0.002, 0.05, 1 << 20, 0.1)
PY_BOUND = LoaderProfile(0.020, 0.020, 1.0, 1 << 16, 0.05)
BASE = LoaderConfig()


def test_latency_bound_seeds_threads_only_covering_the_latency():
    seeds = seed_configs(IO_BOUND, 0.010, 8, TunerSettings(cores=8), BASE)
    assert [c.mode for c in seeds] == ["thread"]
    (cfg,) = seeds
    assert cfg.workers >= math.ceil(0.040 / 0.010)
    assert cfg.workers <= 2 * math.ceil(0.040 / 0.010)
    assert concurrency(cfg) == cfg.workers  # the queue does not starve the workers
    assert predict(cfg, IO_BOUND, 0.010, 8).bottleneck == "compute"


def test_cpu_heavy_seeds_both_thread_and_process():
    s = TunerSettings(cores=16)
    seeds = seed_configs(PY_BOUND, 0.005, 16, s, BASE)
    assert [c.mode for c in seeds] == ["thread", "process"]
    proc = seeds[1]
    assert 4 <= proc.workers <= min(16, s.max_process_workers)
    assert predict(proc, PY_BOUND, 0.005, 16, gil_fraction=1.0).steps_per_s > 150
    # The thread seed is GIL-bound if the loader is pure Python.
    assert predict(seeds[0], PY_BOUND, 0.005, 16, gil_fraction=1.0).bottleneck == "gil"


def test_process_workers_capped_by_cores_and_settings():
    heavy = LoaderProfile(0.5, 0.5, 1.0, 1000, 0.0)
    seeds = seed_configs(heavy, 0.001, 64, TunerSettings(cores=64, max_process_workers=12), BASE)
    proc = [c for c in seeds if c.use_multiprocessing]
    assert proc and proc[0].workers == 12
    seeds4 = seed_configs(heavy, 0.001, 4, TunerSettings(cores=4), BASE)
    assert max(c.workers for c in seeds4 if c.use_multiprocessing) == 4


def test_more_cores_more_workers_for_cpu_heavy():
    heavy = LoaderProfile(0.08, 0.08, 1.0, 1000, 0.0)
    w16 = seed_configs(heavy, 0.002, 16, TunerSettings(cores=16), BASE)
    w64 = seed_configs(heavy, 0.002, 64, TunerSettings(cores=64), BASE)
    p16 = next(c for c in w16 if c.use_multiprocessing).workers
    p64 = next(c for c in w64 if c.use_multiprocessing).workers
    assert p64 > p16 >= 8


def test_thread_only_modes_give_no_process_seed():
    seeds = seed_configs(PY_BOUND, 0.005, 16, TunerSettings(cores=16, modes=("thread",)), BASE)
    assert seeds and all(not c.use_multiprocessing for c in seeds)
    seeds = seed_configs(PY_BOUND, 0.005, 16, TunerSettings(cores=16), BASE, modes=("thread",))
    assert all(not c.use_multiprocessing for c in seeds)


def test_seeds_respect_queue_range_and_thread_cap():
    slow_io = LoaderProfile(1.0, 0.0, 0.0, 1000, 0.5)
    s = TunerSettings(cores=4, queue_size_range=(2, 6), max_thread_workers=16)
    (cfg,) = seed_configs(slow_io, 0.001, 4, s, BASE)
    assert cfg.workers == s.max_thread_workers == 16
    assert 2 <= cfg.max_queue_size <= 6


def test_seeds_fit_the_ram_budget():
    big_batches = LoaderProfile(0.04, 0.002, 0.05, 100 << 20, 0.1)  # 100 MiB batches
    base = LoaderConfig(1, 1)
    budget = 500 << 20
    seeds = seed_configs(
        big_batches, 0.005, 8, TunerSettings(cores=8, ram_budget_bytes=budget), base
    )
    free = seed_configs(
        big_batches, 0.005, 8, TunerSettings(cores=8, ram_budget_bytes=1 << 40), base
    )
    base_extra = extra_rss_bytes(base, big_batches.batch_nbytes)
    assert seeds and free
    for cfg in seeds:
        assert extra_rss_bytes(cfg, big_batches.batch_nbytes) - base_extra <= budget
    assert extra_rss_bytes(free[0], big_batches.batch_nbytes) - base_extra > budget
    assert free[0].max_queue_size > seeds[0].max_queue_size


def test_process_seed_memory_uses_known_process_rss():
    s = TunerSettings(cores=16, ram_budget_bytes=2 << 30)
    unknown = seed_configs(PY_BOUND, 0.005, 16, s, BASE)
    known = seed_configs(PY_BOUND, 0.005, 16, s, BASE, process_rss_bytes=500 << 20)
    p_unknown = next(c for c in unknown if c.use_multiprocessing)
    p_known = next(c for c in known if c.use_multiprocessing)
    assert p_known.workers <= 4 < p_unknown.workers


def test_baseline_never_seeded():
    s = TunerSettings(cores=8)
    (cfg,) = seed_configs(IO_BOUND, 0.010, 8, s, BASE)
    assert seed_configs(IO_BOUND, 0.010, 8, s, cfg) == []


def test_predict_limits():
    # One thread is inline (as Keras runs it): produce and compute in series.
    cfg1 = LoaderConfig(1, 10)
    assert predict(cfg1, IO_BOUND, 0.010, 8).steps_per_s == pytest.approx(1 / 0.050)
    assert predict(cfg1, IO_BOUND, 0.010, 8).bottleneck == "inline"
    cfg2 = LoaderConfig(2, 10)
    assert predict(cfg2, IO_BOUND, 0.010, 8).steps_per_s == pytest.approx(50.0)
    assert predict(cfg2, IO_BOUND, 0.010, 8).bottleneck == "latency"
    # The engine's window bounds the batches in flight: queue 1 = one batch at a time.
    assert predict(LoaderConfig(16, 1), IO_BOUND, 0.001, 8).steps_per_s == pytest.approx(25.0)
    assert predict(LoaderConfig(16, 3), IO_BOUND, 0.001, 8).steps_per_s == pytest.approx(75.0)
    # Cores bound CPU work; processes pay pickling.
    numpy = LoaderProfile(0.02, 0.02, 1.0, 0, 0.0)
    assert predict(LoaderConfig(16, 20), numpy, 0.0001, 5).bottleneck == "cores"
    ipc = LoaderProfile(0.001, 0.001, 1.0, 10**7, 0.0)
    p = predict(LoaderConfig(8, 10, True), ipc, 0.001, 16)
    assert p.steps_per_s == pytest.approx(1 / 0.011)


def test_memory_model():
    # held_batches (4) + the trainer's batch; doubled (pickled copies) in process mode.
    assert extra_rss_bytes(LoaderConfig(2, 4), 1000) == 5000
    assert extra_rss_bytes(LoaderConfig(2, 4, True), 1000, process_rss_bytes=10**6) == 2_010_000
    # Every worker needs a position of the window (6) + 2 x 0.1 x 6 -> 2 + 1 ready batches.
    assert queue_for(6, 0.1, TunerSettings(cores=4)) == 9
    assert queue_for(100, 0.0, TunerSettings(cores=4)) == 101  # the queue follows the workers
    assert queue_for(100, 0.0, TunerSettings(cores=4, queue_size_range=(1, 64))) == 64


# ------------------------------------------------- the model against the real engine


class _Counting:
    """A dataset whose `__getitem__` sleeps and records how many calls overlap."""

    def __init__(self, n: int, delay_s: float) -> None:
        import threading

        self.n, self.delay_s = n, delay_s
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        import time

        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.delay_s)
        with self._lock:
            self.running -= 1
        return index


@pytest.mark.parametrize(
    "config", [LoaderConfig(8, 3), LoaderConfig(2, 10), LoaderConfig(4, 4)], ids=str
)
def test_model_concurrency_is_what_the_prefetcher_runs(config):
    from keras_loadtune.engine import Prefetcher, in_flight

    data = _Counting(24, 0.02)
    with Prefetcher(data, config) as pf:
        pf.begin_pass(range(len(data)))
        delivered = [pf.next() for _ in range(len(data))]
    assert delivered == list(range(len(data)))
    # Keras's OrderedEnqueuer would run min(workers, queue + 2); the engine runs this:
    assert data.peak == in_flight(config) == concurrency(config)


def test_model_throughput_matches_the_prefetcher_on_a_latency_bound_loader():
    """The case the review measured: 8 threads, queue 3, 40 ms batches (no compute here).

    Sleeping needs no CPU, so the figure holds on a loaded 2-core machine; the bound is
    loose (scheduling noise), but far from the 100 steps/s of the old `queue + 2` model.
    """
    import time

    from keras_loadtune.engine import Prefetcher

    config = LoaderConfig(8, 3)
    data = _Counting(30, 0.04)
    with Prefetcher(data, config) as pf:
        pf.begin_pass(range(len(data)))
        pf.next()  # the pool is started and the window filled
        t0 = time.perf_counter()
        for _ in range(len(data) - 1):
            pf.next()
        measured = (len(data) - 1) / (time.perf_counter() - t0)
    profile = LoaderProfile(0.040, 0.0, 0.0, 0, 0.0)
    predicted = predict(config, profile, 1e-6, 8).steps_per_s
    assert predicted == pytest.approx(75.0)
    assert measured == pytest.approx(predicted, rel=0.2)
