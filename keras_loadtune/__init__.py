"""keras-loadtune: make Keras training stop waiting for its input data.

Add `LoadTuner` to `fit`, wrap your `keras.utils.PyDataset` with `tuner.wrap`,
and the tuner measures how long each step waits for data, then tunes
`workers`, `max_queue_size` and threads-vs-processes live with Optuna.

Only the light pieces (`LoaderConfig`, the engine) are imported eagerly;
everything that needs Keras (and so TensorFlow) loads on first use.

Example:

```python
import keras_loadtune as klt

tuner = klt.LoadTuner()
model.fit(tuner.wrap(train_ds), epochs=3, callbacks=[tuner])
print(tuner.report)
```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keras_loadtune.config import LoaderConfig

__version__ = "0.1.0"

# Public names that need Keras, resolved lazily (PEP 562) so that
# `import keras_loadtune` and the engine never import TensorFlow.
_LAZY = {
    "LoadTuner": "keras_loadtune.keras_adapter.callback",
    "TunedPyDataset": "keras_loadtune.keras_adapter.dataset",
    "wrap": "keras_loadtune.keras_adapter.dataset",
    "TuningReport": "keras_loadtune.report",
    "TrialRecord": "keras_loadtune.report",
}

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.keras_adapter.callback import LoadTuner
    from keras_loadtune.keras_adapter.dataset import TunedPyDataset, wrap
    from keras_loadtune.report import TrialRecord, TuningReport

__all__ = [
    "LoadTuner",
    "LoaderConfig",
    "TrialRecord",
    "TunedPyDataset",
    "TuningReport",
    "__version__",
    "wrap",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_loadtune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
