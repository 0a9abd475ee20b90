"""A process pool for a dataset class from an importable module that imports Keras.

Argument: `numpy` (`NumpyOnly`), `keras` (`UsesKeras`), `other` (`UsesOtherModule`) or
`other-function` (`UsesOtherFunction`) of `klt_user_project.data`. The trainer runs the
TensorFlow backend. Prints the forkserver preload, the light-path decision, one JSON
line per batch, then the pids that imported the dataset's module (`$KLT_IMPORT_LOG`).
"""

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
LOG = Path(tempfile.mkdtemp()) / "imports.log"
os.environ["KLT_IMPORT_LOG"] = str(LOG)
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from klt_user_project import data  # noqa: E402

import keras_loadtune as klt  # noqa: E402
from keras_loadtune import LoaderConfig  # noqa: E402
from keras_loadtune.engine import Prefetcher  # noqa: E402
from keras_loadtune.engine.process import _keras, _start  # noqa: E402

KINDS = {
    "numpy": data.NumpyOnly,
    "keras": data.UsesKeras,
    "other": data.UsesOtherModule,
    "other-function": data.UsesOtherFunction,
}
ds = KINDS[sys.argv[1]](workers=2, use_multiprocessing=True)
train = klt.wrap(ds, LoaderConfig(2, 2, True))  # prewarms the forkserver
with train:
    prewarm = _start._prewarm_thread  # read before the estimate: it may finish meanwhile
    prewarmed = prewarm is not None and not prewarm.is_alive()
    print(
        json.dumps(
            {
                "preload": _start._preload_modules(ds),
                "by_value": _keras.by_value_modules(ds),
                "light": _keras.uses_only_the_base(ds),
                "estimate": _start.cold_start_estimate_s(ds),
                "prewarmed": prewarmed,
            }
        )
    )
    with Prefetcher(ds, LoaderConfig(2, 2, True)) as pf:
        pf.begin_pass(range(2))
        for _ in range(2):
            info, x = pf.next()
            assert isinstance(x, np.ndarray) and float(x[0, 0]) in (0.0, 1.0, 2.0), x
            print(info)
print(json.dumps({"trainer": os.getpid(), "imported_by": LOG.read_text().split()[1::2]}))
