"""The policy against the simulated pipeline: what it picks, and that it is never worse."""

from __future__ import annotations

import pytest
from tuners import GIB, make_settings

from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings
from keras_loadtune.engine.errors import DatasetNotPicklableError
from keras_loadtune.simulation import (
    PipelineParams,
    SimulatedPipeline,
    simulate_tuning,
    static_grid,
)


def _tune(cores: int = 8, *, seed: int = 0, steps: int = 1000, baseline=None, settings=None, **p):
    pipe = SimulatedPipeline(cores=cores, seed=seed, **p)
    return simulate_tuning(
        pipe,
        settings or make_settings(cores, seed),
        baseline=baseline or LoaderConfig(),
        total_steps=steps,
    )


# ----------------------------------------------------------------- the simulator itself


def test_simulator_latency_and_gil_physics():
    # Inline (one thread, as Keras runs it): the batch is made when the step asks.
    one = SimulatedPipeline(io_s=0.04, compute_s=0.01).throughput(LoaderConfig(1, 10))
    assert one.steps_per_s == pytest.approx(20.0, rel=0.01)
    assert one.wait_fraction == pytest.approx(0.80, abs=0.01)
    two = SimulatedPipeline(io_s=0.04, compute_s=0.01).throughput(LoaderConfig(2, 10))
    assert two.steps_per_s == pytest.approx(50.0, rel=0.01)
    assert two.wait_fraction == pytest.approx(0.50, abs=0.01)
    py = PipelineParams(python_s=0.02, compute_s=0.005, cores=16, batch_nbytes=0)
    grid = static_grid(py, [LoaderConfig(8, 10), LoaderConfig(8, 10, True)])
    # One GIL for 8 threads and the trainer, less what its hand-offs lose.
    one_gil = 50.0 * (1.0 - py.gil_contention_loss)
    assert grid[LoaderConfig(8, 10)].steps_per_s == pytest.approx(one_gil, rel=0.02)
    assert grid[LoaderConfig(8, 10, True)].steps_per_s == pytest.approx(200.0, rel=0.02)


def test_simulator_cpu_contention_and_queue_bound():
    numpy = PipelineParams(numpy_s=0.02, compute_s=0.001, batch_nbytes=0)
    two = static_grid(numpy.__class__(**{**numpy.__dict__, "cores": 2}), [LoaderConfig(8, 10)])
    eight = static_grid(numpy, [LoaderConfig(8, 10)])
    assert two[LoaderConfig(8, 10)].steps_per_s < 0.4 * eight[LoaderConfig(8, 10)].steps_per_s
    # The Prefetcher keeps max_queue_size batches in flight, whatever the worker count.
    io = static_grid(PipelineParams(io_s=0.1, compute_s=0.001), [LoaderConfig(16, 2)])
    assert io[LoaderConfig(16, 2)].steps_per_s == pytest.approx(20.0, rel=0.05)


def test_simulator_restart_costs_and_memory():
    pipe = SimulatedPipeline(
        io_s=0.01,
        process_startup_s=0.5,
        process_worker_s=0.03,
        process_rss_bytes=100 << 20,
        background_switch=False,  # the trainer waits for every start-up
    )
    # The first process pool starts the forkserver, then each worker process.
    assert pipe.reconfigure(LoaderConfig(4, 4, True)) == pytest.approx(0.62)
    assert pipe.reconfigure(LoaderConfig(4, 4, True)) == 0.0
    # Growing the pool pays only the added workers; back to processes, no forkserver.
    assert pipe.reconfigure(LoaderConfig(6, 4, True)) == pytest.approx(0.06)
    pipe.reconfigure(LoaderConfig(2, 4))
    assert pipe.reconfigure(LoaderConfig(2, 4, True)) == pytest.approx(0.06)
    pipe.run_steps(LoaderConfig(4, 4, True), 20)
    rss = pipe.rss()
    assert rss >= pipe.params.base_rss_bytes + 4 * (100 << 20)
    with pytest.raises(DatasetNotPicklableError, match="pickle"):
        SimulatedPipeline(picklable=False).reconfigure(LoaderConfig(2, 2, True))


# ----------------------------------------------------------------- what the policy picks


def test_latency_bound_picks_enough_threads_near_the_floor():
    res = _tune(io_s=0.040, compute_s=0.010)
    best = res.session.best_config
    assert not best.use_multiprocessing
    assert best.workers >= 4  # 40 ms of latency per 10 ms step
    assert res.final_config == best
    assert res.final_steps_per_s >= 0.9 * 100.0
    assert res.session.speedup > 3.5


def test_latency_bound_matches_the_exhaustive_oracle():
    params = PipelineParams(io_s=0.040, compute_s=0.010, numpy_s=0.002, cores=8)
    grid = static_grid(
        params, [LoaderConfig(w, q) for w in (1, 2, 4, 6, 8, 16) for q in (2, 8, 16)], 100
    )
    oracle = max(s.steps_per_s for s in grid.values())
    res = simulate_tuning(
        SimulatedPipeline(params), make_settings(8), baseline=LoaderConfig(), total_steps=800
    )
    assert res.final_steps_per_s >= 0.95 * oracle


def test_gil_bound_python_picks_processes():
    res = _tune(cores=16, python_s=0.020, compute_s=0.005)
    best = res.session.best_config
    assert best.use_multiprocessing
    assert 4 <= best.workers <= 16
    threads = [r for r in res.session.trials if r.state == "complete" and r.config.mode == "thread"]
    assert max(r.steps_per_s for r in threads) < 60  # one GIL: threads cannot pass 50 steps/s
    assert res.final_steps_per_s >= 0.9 * (1 / (0.005 + 0.001))  # floor incl. unpickling


def test_numpy_bound_prefers_threads_over_pickling():
    res = _tune(cores=16, numpy_s=0.020, compute_s=0.005)
    assert not res.session.best_config.use_multiprocessing
    assert res.final_steps_per_s >= 0.9 * 200.0


def test_compute_bound_stops_after_probe():
    res = _tune(io_s=0.0002, compute_s=0.010, steps=300)  # inline: waits 2% of a step
    session = res.session
    assert session.finished_reason == "compute-bound" and session.trials == []
    assert res.switches == []
    # As in a fit: the probe sees steady steps (warm-up and traced stock are the
    # lifecycle's to skip), so it decides after `probe_steps` of them.
    assert session.tuning_steps == TunerSettings().probe_steps
    assert res.report.decision == "compute-bound", str(res.report)


def test_ram_budget_respected_and_best_feasible():
    budget = 2 * GIB
    settings = make_settings(16, ram_budget_bytes=budget)
    res = _tune(
        cores=16, python_s=0.02, compute_s=0.005, process_rss_bytes=500 << 20, settings=settings
    )
    session = res.session
    probe_rss = session.trials[0].rss_bytes
    complete = [r for r in session.trials if r.state == "complete"]
    assert all(r.rss_bytes - probe_rss <= budget for r in complete)
    over = [r for r in session.trials if r.state in ("pruned", "skipped") and "RAM" in r.reason]
    assert over, "a 6-process seed at 500 MiB each must break a 2 GiB budget"
    best = session.best_record
    assert best.state == "complete" and best.rss_bytes - probe_rss <= budget
    assert best.config.use_multiprocessing  # a smaller process pool still fits
    assert res.final_steps_per_s > 2 * session.trials[0].steps_per_s


@pytest.mark.parametrize("seed", range(4))
def test_noise_does_not_flip_the_decision(seed):
    gil = _tune(cores=16, seed=seed, python_s=0.02, compute_s=0.005, noise_cv=0.2)
    assert gil.session.best_config.use_multiprocessing
    io = _tune(cores=8, seed=seed, io_s=0.04, compute_s=0.01, noise_cv=0.2)
    assert not io.session.best_config.use_multiprocessing
    assert io.final_steps_per_s >= 0.85 * 100.0


@pytest.mark.parametrize(
    ("params", "baseline", "modes"),
    [
        ({"python_s": 0.02, "compute_s": 0.005}, LoaderConfig(), ("thread",)),  # cannot win
        ({"io_s": 0.3, "numpy_s": 0.01, "compute_s": 0.01}, LoaderConfig(16, 20), None),
        ({"io_s": 0.04, "compute_s": 0.01, "noise_cv": 0.2}, LoaderConfig(3, 10), None),
    ],
)
def test_baseline_is_always_a_candidate(params, baseline, modes):
    settings = make_settings(4, **({"modes": modes} if modes else {}))
    res = _tune(cores=4, baseline=baseline, settings=settings, steps=1200, **params)
    session = res.session
    base = session.baseline_record
    assert base is not None and base.config == baseline and base.state == "complete"
    assert session.best_record.steps_per_s >= base.steps_per_s
    truth = SimulatedPipeline(cores=4, **params).throughput(baseline).steps_per_s
    assert res.final_steps_per_s >= 0.93 * truth


def test_drift_reopens_the_study():
    pipe = SimulatedPipeline(io_s=0.04, compute_s=0.01, cores=8, seed=0, noise_cv=0.1)
    res = simulate_tuning(
        pipe,
        make_settings(8),
        baseline=LoaderConfig(),
        total_steps=1500,
        changes={500: {"io_s": 0.15}},
    )
    session = res.session
    assert len(session.reopen_reasons) == 1 and "throughput" in session.reopen_reasons[0]
    verify = [r for r in session.trials if r.source == "verify"]
    assert len(verify) == 1
    assert session.best_config.workers > verify[0].config.workers
    assert res.final_steps_per_s >= 0.9 * 100.0


def test_no_drift_no_reopen():
    res = _tune(io_s=0.04, compute_s=0.01, noise_cv=0.2, steps=1500)
    assert res.session.reopen_reasons == []


@pytest.mark.parametrize(
    ("params", "min_workers"),
    [
        ({"python_s": 0.08, "compute_s": 0.002}, 8),  # GIL-bound Python
        ({"io_s": 0.10, "compute_s": 0.005}, 20),  # latency-bound
    ],
)
def test_bigger_machines_pick_more_workers(params, min_workers):
    on16 = _tune(cores=16, **params)
    on64 = _tune(cores=64, **params)
    assert on16.session.best_config.workers >= min_workers
    assert on64.session.best_config.workers >= on16.session.best_config.workers
    assert on64.final_steps_per_s >= on16.final_steps_per_s * 0.98
    if "python_s" in params:
        assert on64.session.best_config.workers > on16.session.best_config.workers
        assert on64.final_steps_per_s > 1.5 * on16.final_steps_per_s


# ------------------------------------------------------- the simulator models the engine


def test_reconfigure_keeps_finished_and_in_flight_batches():
    pipe = SimulatedPipeline(io_s=0.04, compute_s=0.01, batch_nbytes=0)
    pipe.run_steps(LoaderConfig(4, 8), 30)  # the window is full of ready batches
    # A thread resize keeps them: the next steps do not wait for a refill.
    after = pipe.run_steps(LoaderConfig(6, 8), 3)
    assert all(s.wait_s < 0.005 for s in after)
    assert pipe.served_by_current_pool
    # A switch of mode starts the process pool in the background (forkserver once):
    # the thread pool keeps serving meanwhile, and no step waits for the start-up.
    t0 = pipe.now
    seconds = pipe.reconfigure(LoaderConfig(6, 8, True))
    assert seconds == pytest.approx(
        pipe.params.process_startup_s + 6 * pipe.params.process_worker_s
    )
    assert pipe.switch_pending and pipe.now == t0
    served = [pipe.step() for _ in range(10)]
    assert pipe.config == LoaderConfig(6, 8) and pipe.switch_pending
    assert max(s.wait_s for s in served) < 0.005  # the old pool's batches, at compute speed
    while pipe.switch_pending:
        pipe.step()
    assert pipe.now - t0 >= seconds and pipe.config == LoaderConfig(6, 8, True)
    # The batches the thread pool produced are served first, then the process pool's.
    kinds = []
    for _ in range(20):
        pipe.step()
        kinds.append(pipe.served_by_current_pool)
    assert kinds[-1] and kinds.index(True) <= 8


def test_simulator_window_is_the_engines_arithmetic():
    from keras_loadtune.engine import held_batches, in_flight

    for config in (LoaderConfig(8, 3), LoaderConfig(2, 10)):
        pipe = SimulatedPipeline(io_s=0.05, compute_s=0.001, batch_nbytes=1)
        pipe.run_steps(config, 40)
        rate = pipe.throughput(config, steps=100, skip=0).steps_per_s
        assert rate == pytest.approx(in_flight(config) / 0.05, rel=0.03)
        # At most the window plus the trainer's batch is held.
        pipe.rss()
        pipe.run_steps(config, 20)
        held = (pipe.rss() - pipe.params.base_rss_bytes) // pipe.params.batch_nbytes
        assert held <= held_batches(config) + 1


def test_trainer_gil_share_slows_thread_loaders_not_process_loaders():
    def rate(share: float, procs: bool) -> float:
        params = PipelineParams(
            python_s=0.004, compute_s=0.01, cores=8, batch_nbytes=0, trainer_gil_share=share
        )
        return static_grid(params, [LoaderConfig(4, 8, procs)])[
            LoaderConfig(4, 8, procs)
        ].steps_per_s

    # Python loader threads compete with the trainer's own Python for one GIL.
    assert rate(0.5, False) < 0.9 * rate(0.0, False)
    assert rate(0.5, True) == pytest.approx(rate(0.0, True), rel=0.02)


def test_trainer_cores_compete_with_loader_cpu():
    def rate(trainer_cores: float) -> float:
        params = PipelineParams(
            numpy_s=0.02, compute_s=0.01, cores=4, batch_nbytes=0, trainer_cores=trainer_cores
        )
        return static_grid(params, [LoaderConfig(4, 8)])[LoaderConfig(4, 8)].steps_per_s

    assert rate(3.0) < 0.9 * rate(1.0)
