"""A newcomer's dataset module, for the real-fit benchmark (`real_fits.py`).

It imports `keras` at its top, as most projects' data modules do, although its
`__getitem__` methods use only NumPy and the standard library: a worker process that
unpickles one of these classes imports this module, and so Keras, unless the loader
avoids it (issue #22, target 6). Batch `i` depends only on `i`.

- `PythonWorkDataset`: pure-Python work holding the GIL for `python_s` CPU seconds per
  batch; tabular batches (the `gil-module` scenario; `gil-main` defines the same class in
  the script's `__main__`).
- `IoDataset`: a read of `latency_s` (a sleep: it releases the GIL) of raw bytes, then a
  NumPy decode into 32x32x3 float images (the `io` scenario).
- `TextDataset`: documents generated and tokenised in pure Python, padded to a fixed
  length (the `text` scenario); `text_model` trains on them.

Example:

```python
ds = TextDataset(num_batches=10)
x, y = ds[0]   # (64, 128) int32 token ids, (64, 1) float32 labels
```
"""

from __future__ import annotations

import random
import time
from typing import Any

import keras
import numpy as np
from _fit_rows import BATCH, python_work, tabular_batch

VOCAB_SIZE = 2000
SEQUENCE = 128  # tokens per document after padding / truncation
_WORDS = [f"w{k:04d}" for k in range(VOCAB_SIZE)]
_INDEX = {w: k + 2 for k, w in enumerate(_WORDS)}  # 0: padding, 1: out of vocabulary


class PythonWorkDataset(keras.utils.PyDataset):
    """`python_s` CPU seconds of pure Python per batch (holds the GIL), tabular batches."""

    def __init__(self, num_batches: int, python_s: float = 0.015, **kwargs: Any):
        super().__init__(**kwargs)
        self.n = num_batches
        self.python_s = python_s

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        python_work(self.python_s)
        return tabular_batch(index)


class IoDataset(keras.utils.PyDataset):
    """A read that takes `latency_s` (disk or network), then decoding bytes to images."""

    def __init__(self, num_batches: int, latency_s: float = 0.030, **kwargs: Any):
        super().__init__(**kwargs)
        self.n = num_batches
        self.latency_s = latency_s

    def __len__(self) -> int:
        return self.n

    def _read(self, index: int) -> bytes:
        time.sleep(self.latency_s)
        rng = np.random.default_rng(index)
        return rng.integers(0, 256, size=BATCH * 32 * 32 * 3 + BATCH, dtype=np.uint8).tobytes()

    def __getitem__(self, index: int):
        raw = np.frombuffer(self._read(index), dtype=np.uint8)
        x = raw[:-BATCH].reshape(BATCH, 32, 32, 3).astype(np.float32) * np.float32(1 / 255)
        y = (raw[-BATCH:] % 10).astype(np.int32)
        return x, y


def _document(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(SEQUENCE, SEQUENCE * 2))
    return " ".join(w.upper() if rng.random() < 0.1 else w for w in words) + "."


def tokenise(text: str) -> list[int]:
    """Lower-case, drop every character but letters, digits and spaces, split, look each
    word up (1: unknown), then pad with 0 or truncate to `SEQUENCE` ids."""
    clean = "".join(c for c in text.lower() if c.isalnum() or c == " ")
    ids = [_INDEX.get(word, 1) for word in clean.split()]
    return (ids + [0] * SEQUENCE)[:SEQUENCE]


class TextDataset(keras.utils.PyDataset):
    """`BATCH` documents per batch, generated and tokenised in pure Python."""

    def __init__(self, num_batches: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.n = num_batches

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        rng = random.Random(index)
        docs = [_document(rng) for _ in range(BATCH)]
        x = np.array([tokenise(d) for d in docs], dtype=np.int32)
        y = np.array([[float(d.count("w00") % 2)] for d in docs], dtype=np.float32)
        return x, y


def text_model() -> keras.Model:
    """Embedding, average pooling and a dense head: a step of a few ms."""
    model = keras.Sequential(
        [
            keras.Input((SEQUENCE,), dtype="int32"),
            keras.layers.Embedding(VOCAB_SIZE + 2, 32),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", keras.losses.BinaryCrossentropy(from_logits=True))
    return model
