"""A real image input pipeline: JPEG files on disk, decoded with Pillow, augmented in NumPy.

The files are written once to a cache folder (`$XDG_CACHE_HOME/keras_loadtune/bench_jpegs`,
else `~/.cache/keras_loadtune/bench_jpegs`) and reused by later runs. Each image is a
smooth random picture plus noise (so it compresses like a photo, not like flat colour),
`SOURCE` pixels square, label `index % 10`.

`JpegDataset` is a plain `keras.utils.PyDataset`, as a user would write it: per batch it
opens and decodes `batch_size` files, takes a random crop, flips half of them, jitters
brightness, scales to [0, 1] and subsamples to `OUTPUT` pixels. The randomness is seeded
by the batch index, so batch `i` is the same in every run and config. It is defined in a
module (not in a script's `__main__`) so it pickles into worker processes by reference.

Example:

```python
paths, labels = ensure_jpegs(count=256)
ds = JpegDataset(paths, labels, batch_size=32, workers=4)
x, y = ds[0]        # (32, 64, 64, 3) float32, (32,) int32
```
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from PIL import Image

SOURCE = 224  # side of the stored JPEGs
CROP = 192  # side of the random crop
FACTOR = 3  # keep every FACTOR-th pixel of the crop
OUTPUT = CROP // FACTOR  # side of the images the model sees
CLASSES = 10


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/keras_loadtune/bench_jpegs`, else `~/.cache/keras_loadtune/bench_jpegs`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "keras_loadtune" / "bench_jpegs"


def _picture(index: int, size: int) -> Image.Image:
    rng = np.random.default_rng(index)
    low = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), np.int16)
    noisy = smooth + rng.integers(-20, 21, size=smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def ensure_jpegs(
    count: int, cache_dir: str | os.PathLike[str] | None = None, size: int = SOURCE
) -> tuple[list[str], np.ndarray]:
    """Writes `count` JPEGs (quality 90) to the cache folder unless they are already there.

    Files are written to a temporary name and renamed, so an interrupted run never leaves
    a truncated JPEG behind.

    Args:
        count: Number of images.
        cache_dir: Folder; `default_cache_dir()` when `None`.
        size: Side of the images in pixels.

    Returns:
        The file paths and their labels (`index % 10`, int32).
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / f"{size}px"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            _picture(i, size).save(tmp, format="JPEG", quality=90)
            tmp.replace(path)
        paths.append(str(path))
    labels = (np.arange(count) % CLASSES).astype(np.int32)
    return paths, labels


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop to `CROP`, every `FACTOR`-th pixel kept, horizontal flip (half),
    brightness x[0.8, 1.2], scaled to [0, 1].

    Args:
        images: uint8 `(n, SOURCE, SOURCE, 3)`.
        rng: Source of the randomness.

    Returns:
        float32 `(n, OUTPUT, OUTPUT, 3)`.
    """
    n, h, w, _ = images.shape
    tops = rng.integers(0, h - CROP + 1, size=n)
    lefts = rng.integers(0, w - CROP + 1, size=n)
    crops = np.stack(
        [
            img[t : t + CROP : FACTOR, s : s + CROP : FACTOR]
            for img, t, s in zip(images, tops, lefts)
        ]
    )
    flip = rng.random(n) < 0.5
    crops[flip] = crops[flip, :, ::-1]
    x = crops.astype(np.float32)
    x *= (rng.uniform(0.8, 1.2, size=(n, 1, 1, 1)) / 255.0).astype(np.float32)
    return np.clip(x, 0.0, 1.0, out=x)


class JpegDataset(keras.utils.PyDataset):
    """Batches of JPEG files decoded with Pillow and augmented with NumPy.

    Args:
        paths: JPEG file paths (all `SOURCE` pixels square).
        labels: One int label per path.
        batch_size: Images per batch (the last batch may be smaller).
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` (Keras's knobs).
    """

    def __init__(
        self, paths: Sequence[str], labels: np.ndarray, batch_size: int = 32, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        lo = index * self.batch_size
        hi = min(lo + self.batch_size, len(self.paths))
        images = []
        for path in self.paths[lo:hi]:
            with Image.open(path) as img:
                images.append(np.asarray(img.convert("RGB")))
        x = augment(np.stack(images), np.random.default_rng(index))
        return x, self.labels[lo:hi]


def image_cnn(width: int = 16) -> keras.Model:
    """A small compiled CNN for `OUTPUT`-pixel RGB images (Keras layers only, any backend)."""
    model = keras.Sequential(
        [
            keras.Input((OUTPUT, OUTPUT, 3)),
            keras.layers.Conv2D(width, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(width * 2, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(width * 4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model
