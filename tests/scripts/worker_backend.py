"""Which Keras backend a `__main__`-defined PyDataset gets in worker processes.

The trainer runs the TensorFlow backend. Argument `plain`: a NumPy-only dataset (workers
should get Keras's numpy backend, preloaded by the forkserver, without TensorFlow);
`tf`: a dataset whose `__getitem__` uses `tf` (workers keep TensorFlow); `numpy`: a
dataset that refers to nothing of Keras (workers import no Keras at all). Prints one
JSON line per batch.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import keras_loadtune as klt
from keras_loadtune import LoaderConfig

FIRST_PID = os.getpid()


def where(batch):
    return {
        "backend": keras.backend.backend(),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "ops_type": type(batch).__module__ + "." + type(batch).__name__,
        "pid": os.getpid(),
    }


class Plain(keras.utils.PyDataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        x = keras.ops.convert_to_numpy(keras.ops.ones((2, 2)) * i)
        return json.dumps(where(keras.ops.ones((2,)))), x


class UsesTF(keras.utils.PyDataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return json.dumps(where(keras.ops.ones((2,)))), tf.ones((2, 2)).numpy() * i


class NumpyOnly(keras.utils.PyDataset):  # refers to nothing of Keras: the stand-in base
    def __len__(self):
        return 2

    def __getitem__(self, i):
        info = {
            "keras_imported": "keras" in sys.modules,
            "base": type(self).__mro__[1].__module__,
            "workers": self.workers,
            "pid": os.getpid(),
        }
        return json.dumps(info), np.full((2, 2), i, np.float32)


KINDS = {"plain": Plain, "tf": UsesTF, "numpy": NumpyOnly}
ds = KINDS[sys.argv[1]](workers=2, use_multiprocessing=True)
train = klt.wrap(ds, LoaderConfig(2, 2, True))  # prewarms the forkserver
with train:
    from keras_loadtune.engine import Prefetcher
    from keras_loadtune.engine.process import _start

    print(json.dumps({"preload": _start._preload_modules(ds)}))

    with Prefetcher(ds, LoaderConfig(2, 2, True)) as pf:
        pf.begin_pass(range(2))
        for _ in range(2):
            info, x = pf.next()
            assert isinstance(x, np.ndarray), type(x)
            print(info)
    import psutil

    forkservers = [c for c in psutil.Process().children() if "forkserver" in " ".join(c.cmdline())]
    print(json.dumps({"forkserver_threads": [c.num_threads() for c in forkservers]}))
