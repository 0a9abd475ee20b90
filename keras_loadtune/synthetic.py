"""Synthetic `keras.utils.PyDataset`s with a known bottleneck, for the demo, benchmarks and tests.

Each class is defined at module level (so it pickles into worker processes) and
produces deterministic batches: batch `i` depends only on `i`.

- `LatencyDataset`: every batch waits `latency_s` (a sleep: I/O or network; releases
  the GIL), the shape of the seed articles' `time.sleep` experiments.
- `PythonDataset`: pure-Python per-sample work holding the GIL for `cpu_s` seconds
  per batch (threads cannot run it in parallel; processes can).
- `NumpyDataset`: array work in NumPy kernels that release the GIL.
- `ArrayDataset`: batches already in memory (the compute floor).

Example:

```python
from keras_loadtune.synthetic import LatencyDataset

ds = LatencyDataset(num_batches=100, latency_s=0.04)
x, y = ds[0]   # (32, 32, 32, 3) float32 images, (32,) int labels
```
"""

from __future__ import annotations

import time

import keras
import numpy as np


def _images(index: int, batch_size: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    x = rng.random((batch_size, image_size, image_size, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=(batch_size,)).astype(np.int32)
    return x, y


class _SyntheticDataset(keras.utils.PyDataset):
    def __init__(
        self, num_batches: int = 100, batch_size: int = 32, image_size: int = 32, **kwargs
    ):
        super().__init__(**kwargs)
        if num_batches < 1 or batch_size < 1 or image_size < 1:
            raise ValueError("num_batches, batch_size and image_size must be >= 1.")
        self.n = num_batches
        self.batch_size = batch_size
        self.image_size = image_size

    def __len__(self) -> int:
        return self.n


class LatencyDataset(_SyntheticDataset):
    """Each batch waits `latency_s` seconds (I/O-like, releases the GIL)."""

    def __init__(self, num_batches: int = 100, latency_s: float = 0.04, **kwargs):
        super().__init__(num_batches, **kwargs)
        self.latency_s = latency_s

    def __getitem__(self, index: int):
        time.sleep(self.latency_s)
        return _images(index, self.batch_size, self.image_size)


def _python_work(seconds: float) -> int:
    """Pure-Python busy work holding the GIL for about `seconds`."""
    end = time.thread_time() + seconds
    acc = 0
    while time.thread_time() < end:
        for k in range(2000):
            acc = (acc + k * k) % 1000003
    return acc


class PythonDataset(_SyntheticDataset):
    """Pure-Python preprocessing holding the GIL for `cpu_s` CPU seconds per batch."""

    def __init__(self, num_batches: int = 100, cpu_s: float = 0.015, **kwargs):
        super().__init__(num_batches, **kwargs)
        self.cpu_s = cpu_s

    def __getitem__(self, index: int):
        _python_work(self.cpu_s)
        return _images(index, self.batch_size, self.image_size)


class NumpyDataset(_SyntheticDataset):
    """NumPy preprocessing (sorting, FFT-like array work) that releases the GIL."""

    def __init__(self, num_batches: int = 100, rounds: int = 4, **kwargs):
        super().__init__(num_batches, **kwargs)
        self.rounds = rounds

    def __getitem__(self, index: int):
        x, y = _images(index, self.batch_size, self.image_size)
        work = np.repeat(x.reshape(-1), 4)
        for _ in range(self.rounds):
            work = np.sort(work, kind="stable")
        x = x + work[: x.size].reshape(x.shape) * np.float32(0.0)
        return x, y


class ArrayDataset(_SyntheticDataset):
    """Batches prepared in memory ahead of time: no data wait at all (the compute floor)."""

    def __init__(self, num_batches: int = 100, **kwargs):
        super().__init__(num_batches, **kwargs)
        self._batches = [_images(i, self.batch_size, self.image_size) for i in range(self.n)]

    def __getitem__(self, index: int):
        return self._batches[index]


def step_seconds(
    model: keras.Model, batch_size: int = 32, image_size: int = 32, repeats: int = 5
) -> float:
    """The median wall seconds of one training step of `model` on a batch in memory.

    Two untimed steps first (graph tracing, allocation); then `repeats` timed ones.
    The model's weights change, as in any training step.

    Example:

    ```python
    step_seconds(small_cnn())  # e.g. 0.008 on a laptop core, 0.045 on a loaded one
    ```
    """
    x, y = _images(0, batch_size, image_size)
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    for _ in range(max(int(repeats), 1)):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def latency_for(
    model: keras.Model,
    *,
    batch_size: int = 32,
    image_size: int = 32,
    floor_s: float = 0.04,
    factor: float = 4.0,
    cap_s: float = 0.5,
) -> float:
    """A loader latency that makes `model`'s fit clearly input-bound on this machine.

    `max(floor_s, factor x the measured step)`, at most `cap_s`: with Keras's default
    single worker the step then waits about `1 - 1/factor` of its time (75% at 4x),
    however slow or loaded the machine, instead of a fixed 40 ms that a 45 ms step on
    a loaded 2-core machine would hide.

    Example:

    ```python
    model = small_cnn()
    ds = LatencyDataset(60, latency_s=latency_for(model))
    ```
    """
    step = step_seconds(model, batch_size=batch_size, image_size=image_size)
    return float(min(max(floor_s, factor * step), cap_s))


def small_cnn(image_size: int = 32, classes: int = 10, width: int = 16) -> keras.Model:
    """A small compiled CNN (a few ms per step on a laptop core)."""
    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            keras.layers.Conv2D(width, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(width * 2, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model
