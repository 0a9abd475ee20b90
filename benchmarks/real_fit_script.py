"""A user's training script, as `real_fits.py` runs it: one row per fresh interpreter.

Like most training scripts it imports `keras` at its top and may define its dataset in
`__main__` (`MainPythonDataset`, the `gil-main` scenario); the other loaders come from
`fit_datasets` (a module that imports Keras) or `keras_loadtune.synthetic`. The row to
run is the JSON `RowSpec` given as the only argument (see `_fit_rows`); the script
prints `RESULT {json}` with the wall time of every fit.

    python benchmarks/real_fit_script.py '<RowSpec JSON>'
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # at the top, as in a user's script
import numpy as np


class MainPythonDataset(keras.utils.PyDataset):
    """Pure Python holding the GIL for `python_s` CPU seconds per batch, defined in
    `__main__` with NumPy and the standard library only (the same work and batches as
    `fit_datasets.PythonWorkDataset`, written out here as a user's script would)."""

    def __init__(self, num_batches: int, python_s: float = 0.015, **kwargs: Any):
        super().__init__(**kwargs)
        self.n = num_batches
        self.python_s = python_s

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        end = time.thread_time() + self.python_s
        acc = 0
        while time.thread_time() < end:
            for k in range(2000):
                acc = (acc + k * k) % 1000003
        rng = np.random.default_rng(index)
        return rng.random((64, 16), dtype=np.float32), rng.random((64, 1), dtype=np.float32)


if __name__ == "__main__":
    import _fit_rows

    sys.exit(_fit_rows.child_main(sys.argv[1:], MainPythonDataset))
