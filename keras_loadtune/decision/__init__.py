"""The decision layer: when to tune the input pipeline, what to try, what to keep.

Pure Python (Optuna, NumPy, psutil; no TensorFlow):

- `settings.TunerSettings`: budget, search space and thresholds;
- `analytical`: the pipeline model that predicts configs, seeds the search and sizes
  the per-loader search space (`thread_cap`, `process_cap`, `queue_for`);
- `payoff`: whether a trial's predicted gain over the fit's remaining steps pays
  for its cost (start-up, refill, slower steps);
- `resources`: cores and memory of the machine;
- `session.TuningSession`: the facade the Keras callback drives per step, over the
  phase objects `probe`, `warm_start`, `search`, `steady` (drift = sustained
  throughput drop), `memory` and `optuna_bridge` (the only module that touches
  `optuna.Trial`); `planner.Planner` shapes the search space and weighs each trial
  (`payoff`), `rounds.RoundRunner` runs a search round's trial windows, and
  `spend.TuningSpend` counts the steps and seconds tuning took; `phase` holds
  `Phase`, `Event` and `StepResult`;
- `driver.Driver`: the observe -> decide -> apply -> acknowledge loop over an `Applier`;
- `simulator`: a simulated `Prefetcher` + trainer to test the policy without TensorFlow.

Example:

```python
from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings, TuningSession

session = TuningSession(LoaderConfig(), TunerSettings(max_trials=8, seed=0))
```
"""

from __future__ import annotations

from keras_loadtune.decision.analytical import Prediction, predict, seed_configs
from keras_loadtune.decision.driver import Applier, Driver, Observation
from keras_loadtune.decision.phase import Event, Phase, StepResult
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.decision.settings import TunerSettings

__all__ = [
    "Applier",
    "Driver",
    "Event",
    "Observation",
    "Phase",
    "Prediction",
    "StepResult",
    "TunerSettings",
    "TuningSession",
    "predict",
    "seed_configs",
]
