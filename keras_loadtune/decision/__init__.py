"""The decision layer: when to tune the input pipeline, what to try, what to keep.

Pure Python (Optuna, NumPy, psutil; no TensorFlow):

- `settings.TunerSettings`: budget, search space and thresholds;
- `analytical`: the pipeline model that predicts configs and seeds the search;
- `resources`: cores and memory of the machine;
- `session.TuningSession`: the state machine the Keras callback drives per step;
- `simulator`: a simulated pipeline to test the policy without TensorFlow.

Example:

```python
from keras_loadtune import LoaderConfig
from keras_loadtune.decision import TunerSettings, TuningSession

session = TuningSession(LoaderConfig(), TunerSettings(max_trials=8, seed=0))
```
"""

from __future__ import annotations

from keras_loadtune.decision.analytical import Prediction, predict, seed_configs
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.decision.settings import TunerSettings

__all__ = ["Prediction", "TunerSettings", "TuningSession", "predict", "seed_configs"]
