"""A simulated loader and trainer on a fake clock: the tuner's map, checked against the machine.

- `pipeline`: `SimulatedPipeline`, a discrete-event model of the engine's loader
  feeding a training step (latency, GIL-holding and GIL-releasing work, threads and
  processes, start-ups, memory); `static_grid` measures fixed configs on it.
- `fit`: `simulate_tuning`, a fit on that pipeline run through the same lifecycle
  as the Keras callback (`keras_loadtune.lifecycle`).

Neither imports Keras or TensorFlow.
"""

from keras_loadtune.simulation.fit import (
    DEFAULT_STEPS_PER_EPOCH,
    SimulatedDataset,
    SimulationResult,
    simulate_tuning,
    static_fit_seconds,
)
from keras_loadtune.simulation.pipeline import (
    Delivery,
    PipelineParams,
    SimulatedPipeline,
    params_from_measurement,
    static_grid,
)

__all__ = [
    "DEFAULT_STEPS_PER_EPOCH",
    "Delivery",
    "PipelineParams",
    "SimulatedDataset",
    "SimulatedPipeline",
    "SimulationResult",
    "params_from_measurement",
    "simulate_tuning",
    "static_fit_seconds",
    "static_grid",
]
