"""A user's dataset module, as most projects write one: it imports Keras at its top.

Its import has a side effect (one line appended to `$KLT_IMPORT_LOG`), so a test can
tell whether the module's code ran again in the forkserver or in a worker process.
"""

import json
import os
import sys

import keras
import numpy as np

from klt_user_project import other
from klt_user_project.other import batch as other_batch

SCALE = 2.0  # a module constant the methods use: copied to the workers

if os.environ.get("KLT_IMPORT_LOG"):
    with open(os.environ["KLT_IMPORT_LOG"], "a") as log:
        log.write(f"{__name__} {os.getpid()}\n")


def _batch(i):
    return np.full((2, 2), i * SCALE, np.float32)


class NumpyOnly(keras.utils.PyDataset):
    """Methods use NumPy, the standard library and this module's own helpers."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        info = {
            "keras_imported": "keras" in sys.modules,
            "module_imported": __name__ in sys.modules,
            "base": type(self).__mro__[1].__module__,
            "pid": os.getpid(),
        }
        return json.dumps(info), _batch(i)


class UsesKeras(NumpyOnly):
    """Calls Keras in `__getitem__`: needs the real Keras in workers."""

    def __getitem__(self, i):
        info, _ = super().__getitem__(i)
        return info, keras.ops.convert_to_numpy(keras.ops.ones((2, 2)) * i)


class UsesOtherModule(NumpyOnly):
    """Uses another module of the project: its code would run in the worker."""

    def __getitem__(self, i):
        info, _ = super().__getitem__(i)
        return info, other.batch(i)


class UsesOtherFunction(NumpyOnly):
    """Calls a NumPy-only function of another module of the project (imported by name):
    that function travels by value too, so no module of the project runs in workers."""

    def __getitem__(self, i):
        info, _ = super().__getitem__(i)
        return info, other_batch(i)


class BadBatch(ValueError):
    """The project's own error type."""


class Raises(NumpyOnly):
    """Fails at batch 1 with the project's own exception."""

    def __getitem__(self, i):
        if i == 1:
            raise BadBatch(f"batch {i} is broken")
        return super().__getitem__(i)
