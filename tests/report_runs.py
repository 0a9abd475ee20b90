"""Recorded tuning runs for the report-consistency tests: simulated runs built into
reports the way `LoadTuner` builds them (`lifecycle.report_build.build_report`),
and the writer of the JSON fixtures under `tests/data/reports/` (simulated runs and
real Keras fits). Regenerate with `python tests/report_runs.py [--real]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings
from keras_loadtune.report import TuningReport
from keras_loadtune.simulation import SimulatedPipeline, simulate_tuning

DATA = Path(__file__).parent / "data" / "reports"

#: name -> (pipeline parameters, baseline config, total steps): the loader kinds of
#: issue #23's jobs (I/O latency, JPEG-like decoding, text-like Python, NumPy), a
#: compute-bound fit and a fit too short to tune far.
SIMULATED: dict[str, tuple[dict, LoaderConfig, int]] = {
    "sim_io_latency": (dict(io_s=0.030, compute_s=0.006, cores=2), LoaderConfig(), 600),
    "sim_io_latency_16c": (dict(io_s=0.040, compute_s=0.008, cores=16), LoaderConfig(), 900),
    "sim_jpeg": (
        dict(python_s=0.010, numpy_s=0.040, compute_s=0.047, cores=2),
        LoaderConfig(),
        400,
    ),
    "sim_text_python": (dict(python_s=0.012, compute_s=0.004, cores=2), LoaderConfig(), 300),
    "sim_numpy": (dict(numpy_s=0.020, compute_s=0.010, cores=4), LoaderConfig(2, 4), 800),
    "sim_compute_bound": (dict(io_s=0.001, compute_s=0.020, cores=2), LoaderConfig(), 200),
    "sim_short_fit": (dict(io_s=0.030, compute_s=0.010, cores=2), LoaderConfig(), 60),
    "sim_noisy_io": (
        dict(io_s=0.025, compute_s=0.008, cores=2, noise_cv=0.3, seed=3),
        LoaderConfig(),
        500,
    ),
}


def simulated_report(
    params: dict, baseline: LoaderConfig, total_steps: int, *, seed: int = 1
) -> TuningReport:
    """A simulated run's report, built as the callback builds one at the end of `fit`.

    The epochs' wait: the first epoch at your config's measured wait, the last at the
    config in use's (each epoch 1/2 of the fit).
    """
    from keras_loadtune.lifecycle.report_build import build_report

    pipeline = SimulatedPipeline(**params)
    settings = TunerSettings(cores=pipeline.cores, seed=seed)
    result = simulate_tuning(pipeline, settings, baseline=baseline, total_steps=total_steps)
    session = result.session
    waits = {t.config: t.wait_fraction for t in session.trials if t.state == "complete"}
    first = waits.get(baseline, session.probe_stats.wait_fraction if session.probe_stats else 0)
    last = waits.get(result.final_config, first)
    return build_report(
        session,
        notes=[],
        broken=False,
        wrapped=True,
        handle=None,
        cores=pipeline.cores,
        epoch_fractions=[float(first or 0.0), float(last or 0.0)],
        reopen_reasons=[],
        fit_seconds=result.total_time_s,
        fit_steps=result.steps,
        worst_gap_s=None,
        median_step_s=None,
        fit_wall_seconds=result.total_time_s,
        fit_all_steps=result.steps,
        fit_running=False,
        loader_config=result.final_config,
    )


def write_simulated() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for name, (params, baseline, steps) in SIMULATED.items():
        report = simulated_report(params, baseline, steps)
        report.to_json(DATA / f"{name}.json")
        print(name, report.summary_line())


def write_real(backend: str) -> None:  # pragma: no cover - a recording run, minutes
    """Short real fits on this machine (latency-bound and compute-bound), recorded."""
    import os

    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np
    from keras_datasets import FEATURES, IndexPyDataset

    import keras_loadtune as klt

    def model(hidden: int) -> keras.Model:
        layers = [keras.Input((FEATURES,)), keras.layers.Dense(hidden), keras.layers.Dense(1)]
        m = keras.Sequential(layers)
        m.compile("sgd", "mse")
        return m

    for name, delay, hidden, epochs in (
        ("io_latency", 0.02, 16, 3),
        ("compute_bound", 0.0, 1024, 2),
    ):
        np.random.seed(0)
        tuner = klt.LoadTuner(storage=None, verbose=0)
        with tuner.wrap(IndexPyDataset(n=120, batch_size=32, delay=delay)) as train:
            model(hidden).fit(train, epochs=epochs, verbose=0, callbacks=[tuner])
        tuner.report.to_json(DATA / f"real_{backend}_{name}.json")
        print(backend, name, tuner.report.summary_line())


def load_all() -> dict[str, dict]:
    """Every recorded report dict, by file name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))}


if __name__ == "__main__":  # pragma: no cover
    if "--real" in sys.argv:
        write_real(sys.argv[sys.argv.index("--real") + 1])
    else:
        write_simulated()
