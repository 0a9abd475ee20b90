"""A simulated loader and trainer on a fake clock: the tuner's map, checked against the machine.

- `params`: `PipelineParams`, the costs of a simulated pipeline and machine, set by
  hand or from a measurement (`params_from_measurement`).
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
from keras_loadtune.simulation.params import PipelineParams, params_from_measurement
from keras_loadtune.simulation.pipeline import Delivery, SimulatedPipeline, static_grid

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
