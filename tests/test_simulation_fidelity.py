"""The simulator, checked against this machine (issue #22, target 8).

`tests/data/machine_recording.json` holds real fits recorded by
`python benchmarks/simulator_fidelity.py --record tests/data/machine_recording.json` on
a quiet 2-core machine: per loader kind (latency, GIL-bound Python, NumPy, JPEGs read
from disk and decoded with Pillow, a compute-bound model) the costs it measured and,
through the engine, the steady steps/s of a small grid of configs (inline, 2/4/8
threads, 2 processes) with the loader's own records of each fit. Fed those costs (the
loader's time per batch as the engine recorded it in the inline fit, the step on
batches in memory, the shares of the GIL the loader and the training thread hold), the
simulator must predict every config's steps/s within `TOLERANCE`.

No Keras, no timing: the recording is data; regenerate it on a quiet machine after a
change to the engine or the simulator's physics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import in_flight
from keras_loadtune.simulation import params_from_measurement, static_grid

RECORDING = Path(__file__).parent / "data" / "machine_recording.json"
TOLERANCE = 0.15


def _recording() -> dict:
    return json.loads(RECORDING.read_text(encoding="utf-8"))


def _params(scenario: dict, cores: int):
    inline = next(
        g
        for g in scenario["engine_grid"]
        if g["config"]["workers"] == 1 and not g["config"]["use_multiprocessing"]
    )
    # The loader's time per batch as the engine recorded it in the inline fit (in the
    # fit it is slower than alone: the step's work evicts its caches), and the step on
    # batches in memory (a step right after a long wait runs slow, so the inline fit's
    # step overstates it).
    measured = dict(
        scenario,
        produce_wall_s=inline["produce_wall_s"],
        produce_cpu_s=inline["produce_cpu_s"],
    )
    # The recording measured start-ups separately; the grid's fits ran warm.
    return params_from_measurement(measured, cores, process_startup_s=0.0)


def _cases() -> list[tuple[str, dict]]:
    data = _recording()
    return [
        (s["scenario"], g)
        for s in data["scenarios"]
        for g in s["engine_grid"]
        if g["steps_per_s"] == g["steps_per_s"]  # not NaN
    ]


def test_the_recording_covers_every_loader_kind_and_the_grid():
    data = _recording()
    assert data["cores"] >= 1
    names = {s["scenario"] for s in data["scenarios"]}
    assert {"latency-sleep", "gil-python", "numpy", "jpeg", "compute"} <= names
    for s in data["scenarios"]:
        configs = {LoaderConfig.from_dict(g["config"]) for g in s["engine_grid"]}
        assert LoaderConfig() in configs and any(c.use_multiprocessing for c in configs)
        assert 0.0 <= s["loader_gil_share"] <= 1.0


@pytest.mark.parametrize(
    ("name", "entry"),
    _cases(),
    ids=[f"{n}-{LoaderConfig.from_dict(g['config'])}" for n, g in _cases()],
)
def test_the_simulator_predicts_each_recorded_config_within_tolerance(name, entry):
    data = _recording()
    scenario = next(s for s in data["scenarios"] if s["scenario"] == name)
    config = LoaderConfig.from_dict(entry["config"])
    steps = int(scenario["steps"])
    skip = min(steps // 3, 10 + in_flight(config))  # as the recorder timed the real fit
    params = _params(scenario, int(data["cores"]))
    simulated = static_grid(params, [config], steps=steps - skip, skip=skip)[config]
    real = entry["steps_per_s"]
    runs = entry.get("steps_per_s_runs") or [real]
    # The machine's own spread over the recorded repeats bounds how closely any model
    # can be judged (a CPU-heavy TensorFlow step varied by up to 40% from run to run).
    tolerance = max(TOLERANCE, max(runs) / min(runs) - 1.0)
    assert simulated.steps_per_s == pytest.approx(real, rel=tolerance), (
        f"{name} {config}: simulated {simulated.steps_per_s:.1f} steps/s, "
        f"real {real:.1f} ({simulated.steps_per_s / real - 1:+.0%})"
    )
