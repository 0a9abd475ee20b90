"""Tests for `keras_loadtune.decision.limit`: the machine limit from hand-made profiles.

One profile per bound the issue lists (2 cores unless said): a JPEG-like CPU-bound
loader, a GIL-bound loader, a latency-bound loader, a compute-bound fit, a RAM-limited
loader; plus invariants (hypothesis) that hold for any profile.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_loadtune.decision.limit import (
    Bound,
    MachineLimit,
    estimate_limit,
    memory_worker_cap,
    step_only_limit,
)


def test_jpeg_like_cpu_bound_loader_on_two_cores_is_loader_cpu():
    # Pillow decode + NumPy augmentation: 58 ms CPU of 60 ms wall per batch, a 30 ms step.
    lim = estimate_limit(
        produce_wall_s=0.060,
        produce_cpu_s=0.058,
        step_compute_s=0.030,
        cores=2,
        batch_nbytes=32 * 64 * 64 * 3 * 4,
    )
    assert lim.bound is Bound.LOADER_CPU
    # The cores shared by the loader's CPU and the step's: 2 / (58 + 30 ms) ~ 22.7 steps/s,
    # under the model step's own 33 steps/s.
    # (processes: pickling each 1.5 MiB batch on both sides costs a little more).
    assert lim.steps_per_s == pytest.approx(2 / 0.088, rel=0.05)
    assert lim.steps_per_s < 1 / 0.030


def test_gil_bound_loader_needs_processes_and_the_limit_is_the_shared_cores():
    # Pure Python: CPU ~ wall; processes lift the GIL, the cores still bound it.
    lim = estimate_limit(
        produce_wall_s=0.020,
        produce_cpu_s=0.0195,
        step_compute_s=0.005,
        cores=2,
        batch_nbytes=1 << 16,
    )
    assert lim.bound is Bound.LOADER_CPU and lim.mode == "process"
    assert lim.steps_per_s == pytest.approx(2 / (0.0195 + 0.005), rel=0.02)
    # Threads only, GIL measured as held: one core's worth of Python.
    threads = estimate_limit(
        produce_wall_s=0.020,
        produce_cpu_s=0.0195,
        step_compute_s=0.005,
        cores=2,
        modes=("thread",),
        gil_fraction=1.0,
    )
    assert threads.bound is Bound.LOADER_CPU
    assert threads.steps_per_s == pytest.approx(1 / 0.0195, rel=0.02)
    assert threads.steps_per_s < lim.steps_per_s


def test_latency_bound_loader_reaches_the_model_step_with_enough_threads():
    # A 40 ms sleep per batch, 1 ms CPU, an 8 ms step: threads reach the in-memory rate.
    lim = estimate_limit(produce_wall_s=0.040, produce_cpu_s=0.001, step_compute_s=0.008, cores=2)
    assert lim.bound is Bound.MODEL_STEP and lim.mode == "thread"
    assert lim.steps_per_s == pytest.approx(1 / 0.008)
    assert lim.workers == 5  # 125 steps/s x 40 ms in flight


def test_latency_bound_loader_at_the_worker_cap_is_loader_latency():
    lim = estimate_limit(
        produce_wall_s=0.040,
        produce_cpu_s=0.001,
        step_compute_s=0.008,
        cores=2,
        max_thread_workers=2,
    )
    assert lim.bound is Bound.LOADER_LATENCY
    assert lim.steps_per_s == pytest.approx(2 / 0.040)


def test_compute_bound_fit_is_model_step():
    lim = estimate_limit(produce_wall_s=0.002, produce_cpu_s=0.0015, step_compute_s=0.045, cores=2)
    assert lim.bound is Bound.MODEL_STEP
    assert lim.steps_per_s == pytest.approx(1 / 0.045)


def test_ram_limited_loader_is_memory():
    # 100 MiB batches, a 50 ms fetch, 1 GiB budget: at most 9 batches in flight.
    lim = estimate_limit(
        produce_wall_s=0.050,
        produce_cpu_s=0.001,
        step_compute_s=0.002,
        cores=2,
        batch_nbytes=100 << 20,
        ram_budget_bytes=1 << 30,
    )
    assert lim.bound is Bound.MEMORY
    assert lim.workers == 9
    assert lim.steps_per_s == pytest.approx(9 / 0.050, rel=0.01)


def test_accelerator_step_leaves_the_cores_to_the_loader():
    cpu_only = estimate_limit(
        produce_wall_s=0.060, produce_cpu_s=0.058, step_compute_s=0.020, cores=2
    )
    gpu = estimate_limit(
        produce_wall_s=0.060,
        produce_cpu_s=0.058,
        step_compute_s=0.020,
        cores=2,
        step_uses_cores=False,
        max_process_workers=4,
    )
    assert gpu.steps_per_s == pytest.approx(2 / 0.058, rel=0.02)
    assert gpu.steps_per_s > cpu_only.steps_per_s
    assert any("accelerator" in a for a in gpu.assumptions)


def test_a_measured_rate_above_the_estimate_raises_it():
    lim = MachineLimit(40.0, Bound.MODEL_STEP).with_reached(50.0)
    assert lim.steps_per_s == 50.0 and lim.reached == 1.0
    assert MachineLimit(40.0, Bound.MODEL_STEP).with_reached(None).reached is None


def test_step_only_limit_for_unwrapped_inputs_is_marked_estimated():
    lim = step_only_limit(0.02, 0.25)
    assert lim is not None and lim.estimated and lim.bound is Bound.MODEL_STEP
    assert lim.steps_per_s == pytest.approx(1 / 0.015)
    assert step_only_limit(0.0, 0.1) is None


def test_memory_worker_cap_is_the_largest_config_within_budget():
    assert memory_worker_cap(1000, None) == 4096
    assert memory_worker_cap(1 << 30, 1 << 20) == 1  # one batch is always allowed
    assert memory_worker_cap(1 << 20, 10 << 20) == 9  # (n + 1) x 1 MiB <= 10 MiB


def test_estimate_limit_refuses_bad_input():
    with pytest.raises(ValueError, match="modes"):
        estimate_limit(produce_wall_s=0.1, produce_cpu_s=0.0, step_compute_s=0.1, cores=2, modes=())
    with pytest.raises(ValueError, match="cores"):
        estimate_limit(produce_wall_s=0.1, produce_cpu_s=0.0, step_compute_s=0.1, cores=0)


@given(
    wall=st.floats(1e-4, 1.0),
    cpu_share=st.floats(0.0, 1.0),
    step=st.floats(1e-4, 1.0),
    cores=st.integers(1, 64),
    nbytes=st.integers(0, 1 << 28),
)
def test_limit_never_beats_the_model_step_and_round_trips(wall, cpu_share, step, cores, nbytes):
    lim = estimate_limit(
        produce_wall_s=wall,
        produce_cpu_s=wall * cpu_share,
        step_compute_s=step,
        cores=cores,
        batch_nbytes=nbytes,
        ram_budget_bytes=1 << 32,
    )
    assert 0 < lim.steps_per_s <= 1 / step * (1 + 1e-9)
    assert lim.steps_per_s == pytest.approx(min(lim.rates.values()), rel=1e-9)
    assert MachineLimit.from_dict(lim.to_dict()) == lim
    more = estimate_limit(
        produce_wall_s=wall,
        produce_cpu_s=wall * cpu_share,
        step_compute_s=step,
        cores=cores * 2,
        batch_nbytes=nbytes,
        ram_budget_bytes=1 << 32,
    )
    assert more.steps_per_s >= lim.steps_per_s * (1 - 1e-9)  # more cores never lower it


SIMULATED = {
    "latency": dict(io_s=0.040, numpy_s=0.0005, compute_s=0.010),
    "gil": dict(python_s=0.020, compute_s=0.005, trainer_gil_share=0.3),
    "numpy": dict(numpy_s=0.020, compute_s=0.005),
    "compute": dict(numpy_s=0.002, compute_s=0.030),
    "jpeg": dict(numpy_s=0.058, python_s=0.004, compute_s=0.030),
}
BOUND_AT_2_CORES = {
    "latency": Bound.MODEL_STEP,
    "gil": Bound.LOADER_CPU,
    "numpy": Bound.LOADER_CPU,
    "compute": Bound.MODEL_STEP,
    "jpeg": Bound.LOADER_CPU,
}


@pytest.mark.parametrize("cores", [2, 8, 16, 64])
@pytest.mark.parametrize("name", sorted(SIMULATED))
def test_limit_is_within_target_of_the_simulated_best_static_config(name, cores):
    # Target 1 of issue #19 in the simulator: -10% / +25% of the best config of a grid.
    from keras_loadtune import LoaderConfig
    from keras_loadtune.simulation.params import PipelineParams
    from keras_loadtune.simulation.pipeline import static_grid

    params = PipelineParams(cores=cores, **SIMULATED[name])
    workers = (1, 2, 4, 8, 16, 32, 64, 128)
    configs = [LoaderConfig(w, 2 * w) for w in workers]
    configs += [LoaderConfig(w, 2 * w, True) for w in workers if w <= cores]
    grid = static_grid(params, configs, steps=300)
    best = max(s.steps_per_s for s in grid.values())
    lim = estimate_limit(
        produce_wall_s=params.io_s + params.python_s + params.numpy_s,
        produce_cpu_s=params.python_s + params.numpy_s,
        step_compute_s=params.compute_s,
        cores=cores,
        batch_nbytes=params.batch_nbytes,
    )
    assert 0.90 <= lim.steps_per_s / best <= 1.25, (lim, best)
    if cores == 2:
        assert lim.bound is BOUND_AT_2_CORES[name]


def test_an_unmeasured_gil_is_said_in_plain_words():
    # Found: "loader threads may release the GIL (not measured): processes reach 37.0
    # steps/s whether or not they do".
    lim = estimate_limit(produce_wall_s=0.060, produce_cpu_s=0.058, step_compute_s=0.030, cores=2)
    words = " ".join(lim.assumptions)
    assert "whether or not they do" not in words
    if lim.mode == "process":
        assert "that loader threads release the GIL (not measured;" in words or not any(
            "GIL" in a for a in lim.assumptions
        )
    free = estimate_limit(
        produce_wall_s=1e-5, produce_cpu_s=1e-5, step_compute_s=0.09, cores=2,
        batch_nbytes=8 << 20,
    )  # fmt: skip
    assert not any("GIL" in a for a in free.assumptions)  # a free loader: no GIL question


def test_the_limit_needs_two_threads_when_one_loads_inline():
    from keras_loadtune import LoaderConfig

    lim = estimate_limit(produce_wall_s=0.027, produce_cpu_s=0.0001, step_compute_s=0.066,
                         cores=2)  # fmt: skip
    if getattr(LoaderConfig(), "inline", False):
        assert lim.workers >= 2


def test_reached_needs_a_quiet_last_epoch_and_nothing_faster():
    from keras_loadtune.decision.limit import is_reached

    lim = MachineLimit(100.0, Bound.MODEL_STEP, reached=0.94)
    ok = dict(wait_fraction=0.02, wait_threshold=0.05, in_use_steps_per_s=94.0,
              fastest_steps_per_s=95.0)  # fmt: skip
    assert is_reached(lim, **ok)
    assert not is_reached(lim, **{**ok, "wait_fraction": 0.2})
    assert not is_reached(lim, **{**ok, "wait_fraction": None})
    assert not is_reached(lim, **{**ok, "fastest_steps_per_s": 140.0})
    assert not is_reached(MachineLimit(100.0, Bound.MODEL_STEP, reached=0.5), **ok)
    assert not is_reached(None, **ok)
