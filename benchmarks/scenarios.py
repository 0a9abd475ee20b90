"""Benchmark scenarios: one real Keras fit each, with a known input-pipeline bottleneck.

Every dataset here is defined at module level so that it pickles into worker processes
(Keras's fork pools, keras-loadtune's forkserver pools) and produces deterministic batches:
batch `i` depends only on `i`. `SCENARIOS` maps a scenario name to its `Scenario`; sizes
differ between the full suite and `--quick` (a CI smoke test).

Importing this module imports Keras (and so TensorFlow): the runner's parent process never
does; only the per-scenario worker processes do.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import keras
import numpy as np

from keras_loadtune import synthetic

MiB = 1 << 20


# ----------------------------------------------------------------------------- datasets
class InMemoryDataset(keras.utils.PyDataset):
    """Batches already in memory (cycled when fewer than `num_batches`): the compute floor,
    and the trivial loader of the compute-bound scenario."""

    def __init__(self, batches: list, num_batches: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.batches = batches
        self.n = num_batches

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return self.batches[index % len(self.batches)]


def _mnist_batch(index: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    x = rng.random((batch_size, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=(batch_size,)).astype(np.int32)
    return x, y


class MnistLatencyDataset(keras.utils.PyDataset):
    """The seed article's loader: MNIST-shaped batches behind a `time.sleep` per batch."""

    def __init__(self, num_batches: int, latency_s: float, batch_size: int = 32, **kwargs: Any):
        super().__init__(**kwargs)
        self.n = num_batches
        self.latency_s = latency_s
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        time.sleep(self.latency_s)
        return _mnist_batch(index, self.batch_size)


class ArraySliceDataset(keras.utils.PyDataset):
    """Batches sliced from large arrays held in memory (a data set loaded with `np.load`).

    Batch `i` is rows `[i * batch_size, (i + 1) * batch_size)` of `x` and `y`; only the
    first `num_batches * batch_size` rows are served, but the whole array travels with the
    dataset (what a worker process gets when the dataset is shipped to it).
    """

    def __init__(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, num_batches: int, **kwargs: Any
    ):
        super().__init__(**kwargs)
        if num_batches * batch_size > len(x):
            raise ValueError(
                f"{num_batches} batches of {batch_size} need {num_batches * batch_size} rows; "
                f"the array has {len(x)}."
            )
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.n = num_batches

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def http_payload(index: int, batch_size: int, image_size: int) -> bytes:
    """Bytes the local server returns for batch `index`: uint8 pixels, then uint8 labels."""
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 256, size=(batch_size, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(batch_size,), dtype=np.uint8)
    return pixels.tobytes() + labels.tobytes()


def decode_payload(body: bytes, batch_size: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.frombuffer(body, dtype=np.uint8)
    pixels = raw[:-batch_size].reshape(batch_size, image_size, image_size, 3)
    x = pixels.astype(np.float32) * np.float32(1.0 / 255.0)
    y = raw[-batch_size:].astype(np.int32)
    return x, y


class HttpDataset(keras.utils.PyDataset):
    """Fetches every batch as real bytes over HTTP (`GET {url}/batch/{i}`) and decodes it."""

    def __init__(
        self, url: str, num_batches: int, batch_size: int = 32, image_size: int = 32, **kwargs
    ):
        super().__init__(**kwargs)
        self.url = url
        self.n = num_batches
        self.batch_size = batch_size
        self.image_size = image_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        with urllib.request.urlopen(f"{self.url}/batch/{int(index)}", timeout=30) as resp:
            body = resp.read()
        return decode_payload(body, self.batch_size, self.image_size)


# ----------------------------------------------------------------------------- HTTP server
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: _LatencyServer

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.requests += 1
            over = srv.requests > srv.max_requests
        if over:
            self.send_error(503, "benchmark request budget exhausted")
            return
        try:
            index = int(self.path.rsplit("/", 1)[-1])
        except ValueError:
            self.send_error(404)
            return
        time.sleep(srv.latency_s)
        body = srv.payload(index)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logs
        pass


class _LatencyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, latency_s: float, max_requests: int, batch_size: int, image_size: int):
        super().__init__(("127.0.0.1", 0), _Handler)  # loopback only, any free port
        self.latency_s = latency_s
        self.max_requests = max_requests
        self.batch_size = batch_size
        self.image_size = image_size
        self.requests = 0
        self.lock = threading.Lock()
        self._cache: dict[int, bytes] = {}

    def payload(self, index: int) -> bytes:
        body = self._cache.get(index)
        if body is None:
            body = self._cache[index] = http_payload(index, self.batch_size, self.image_size)
        return body


@contextlib.contextmanager
def local_http_server(
    latency_s: float, max_requests: int, batch_size: int, image_size: int
) -> Iterator[dict[str, Any]]:
    """A `http.server` on 127.0.0.1 in a thread, adding `latency_s` to every request and
    answering 503 after `max_requests` requests; stopped on exit."""
    server = _LatencyServer(latency_s, max_requests, batch_size, image_size)
    thread = threading.Thread(target=server.serve_forever, name="bench-http", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    info = {"url": f"http://{host}:{port}", "server": server}
    try:
        yield info
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        info["requests"] = server.requests


# ----------------------------------------------------------------------------- models
def mnist_like(width: int = 8) -> keras.Model:
    """The Keras `mnist_cnn` example's architecture (conv-conv-pool-dropout-dense-dropout),
    narrowed by `32 / width` so a step costs a few ms on a 2-core box."""
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(width, 3, activation="relu"),
            keras.layers.Conv2D(width * 2, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


# ----------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Scenario:
    """One benchmark scenario.

    Args:
        name: Short id (table row group, `--scenarios` value).
        title: One-line description for the report.
        kind: `latency`, `gil`, `numpy`, `compute`, `memory` or `seed`: which targets apply.
        sizes: `{"full": (epochs, steps), "quick": (epochs, steps)}`.
        make_dataset: `(num_batches, env, **pydataset_kwargs) -> PyDataset`.
        make_model: Builds and compiles a fresh model.
        batch: `(index, env) -> (x, y)`: batch `index` without its loading cost (the floor).
        floor_distinct: Distinct batches the floor keeps in memory (cycled), `None` for all.
        ram_budget: `LoadTuner(ram_budget=...)` in bytes, `None` for the tuner's default.
        server: For the HTTP scenario: `(latency_s, batch_size, image_size)` of the server.
        sim: Which simulator cost the measured CPU part of a batch is: `numpy_s`/`python_s`.
        extra: Extra strategies `{name: LoaderConfig kwargs}` run only in this scenario.
        note: Extra sentence for the report.
    """

    name: str
    title: str
    kind: str
    sizes: dict[str, tuple[int, int]]
    make_dataset: Callable[..., keras.utils.PyDataset]
    make_model: Callable[[], keras.Model]
    batch: Callable[[int, dict[str, Any]], tuple[np.ndarray, np.ndarray]]
    floor_distinct: int | None = None
    ram_budget: int | None = None
    server: tuple[float, int, int] | None = None
    sim: str = "numpy_s"
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""

    def size(self, mode: str) -> tuple[int, int]:
        return self.sizes[mode]

    @contextlib.contextmanager
    def environment(self, max_requests: int) -> Iterator[dict[str, Any]]:
        """Resources the scenario needs while it runs (the local HTTP server)."""
        if self.server is None:
            yield {}
            return
        latency_s, batch_size, image_size = self.server
        with local_http_server(latency_s, max_requests, batch_size, image_size) as info:
            yield info


SEED_LATENCY_S = 0.060
SEED_WORKERS = 8
MEMORY_BATCH = (128, 64)  # batch size, image side: 6 MiB float32 batches
MEMORY_BUDGET = 48 * MiB
HTTP_LATENCY_S = 0.030


def _latency_ds(n: int, env: dict, **kw: Any) -> keras.utils.PyDataset:
    return synthetic.LatencyDataset(n, latency_s=0.040, **kw)


def _http_ds(n: int, env: dict, **kw: Any) -> keras.utils.PyDataset:
    return HttpDataset(env["url"], n, batch_size=32, image_size=32, **kw)


def _http_batch(i: int, env: dict) -> tuple[np.ndarray, np.ndarray]:
    return decode_payload(http_payload(i, 32, 32), 32, 32)


def _gil_ds(n: int, env: dict, **kw: Any) -> keras.utils.PyDataset:
    return synthetic.PythonDataset(n, cpu_s=0.015, **kw)


def _numpy_ds(n: int, env: dict, **kw: Any) -> keras.utils.PyDataset:
    return synthetic.NumpyDataset(n, rounds=4, **kw)


def _images32(i: int, env: dict) -> tuple[np.ndarray, np.ndarray]:
    return synthetic._images(i, 32, 32)


_COMPUTE_IMAGE = 64


def _compute_batch(i: int, env: dict) -> tuple[np.ndarray, np.ndarray]:
    return synthetic._images(i, 32, _COMPUTE_IMAGE)


_COMPUTE_BATCHES: dict[int, list] = {}


def _compute_ds(n: int, env: dict, **kw: Any) -> keras.utils.PyDataset:
    batches = _COMPUTE_BATCHES.setdefault(0, [_compute_batch(i, env) for i in range(8)])
    return InMemoryDataset(batches, n, **kw)


JPEG_BATCH = 32  # images per batch of the JPEG scenario


def _jpeg_ds(n: int, env: dict, **kw: Any) -> keras.utils.PyDataset:
    import jpeg_images

    paths, labels = jpeg_images.ensure_jpegs(n * JPEG_BATCH)  # written once, then cached
    return jpeg_images.JpegDataset(paths, labels, batch_size=JPEG_BATCH, **kw)


def _jpeg_batch(i: int, env: dict) -> tuple[np.ndarray, np.ndarray]:
    return _jpeg_ds(i + 1, env)[i]


def _jpeg_model() -> keras.Model:
    import jpeg_images

    return jpeg_images.image_cnn()


def _memory_ds(n: int, env: dict, **kw: Any) -> keras.utils.PyDataset:
    bs, size = MEMORY_BATCH
    return synthetic.LatencyDataset(n, latency_s=0.080, batch_size=bs, image_size=size, **kw)


def _memory_batch(i: int, env: dict) -> tuple[np.ndarray, np.ndarray]:
    bs, size = MEMORY_BATCH
    return synthetic._images(i, bs, size)


def _seed_ds(n: int, env: dict, **kw: Any) -> keras.utils.PyDataset:
    return MnistLatencyDataset(n, SEED_LATENCY_S, batch_size=32, **kw)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="latency-sleep",
            title="Latency-bound (sleep): every batch sleeps 40 ms; small CNN (~10 ms/step)",
            kind="latency",
            sizes={"full": (3, 150), "quick": (1, 16)},
            make_dataset=_latency_ds,
            make_model=synthetic.small_cnn,
            batch=_images32,
        ),
        Scenario(
            name="latency-http",
            title=(
                f"Latency-bound (HTTP): 96 KiB batches fetched from a local http.server "
                f"(127.0.0.1) adding {HTTP_LATENCY_S * 1e3:.0f} ms per request; small CNN"
            ),
            kind="latency",
            sizes={"full": (2, 100), "quick": (1, 16)},
            make_dataset=_http_ds,
            make_model=synthetic.small_cnn,
            batch=_http_batch,
            server=(HTTP_LATENCY_S, 32, 32),
        ),
        Scenario(
            name="gil-python",
            title="GIL-bound: 15 ms of pure-Python preprocessing per batch (PythonDataset); "
            "tiny CNN",
            kind="gil",
            sizes={"full": (2, 150), "quick": (1, 16)},
            make_dataset=_gil_ds,
            make_model=lambda: synthetic.small_cnn(width=4),
            batch=_images32,
            sim="python_s",
        ),
        Scenario(
            name="numpy",
            title="GIL-releasing NumPy preprocessing (NumpyDataset, 4 sorts per batch); tiny CNN",
            kind="numpy",
            sizes={"full": (2, 100), "quick": (1, 16)},
            make_dataset=_numpy_ds,
            make_model=lambda: synthetic.small_cnn(width=4),
            batch=_images32,
        ),
        Scenario(
            name="jpeg",
            title="JPEG: 32 JPEGs of 224 px per batch read from disk, decoded with Pillow, "
            "cropped and flipped with NumPy; a small image CNN",
            kind="numpy",
            sizes={"full": (2, 60), "quick": (1, 8)},
            make_dataset=_jpeg_ds,
            make_model=_jpeg_model,
            batch=_jpeg_batch,
            floor_distinct=8,
        ),
        Scenario(
            name="compute",
            title="Compute-bound: batches already in memory, heavier CNN (64x64 images, width 24)",
            kind="compute",
            sizes={"full": (2, 30), "quick": (1, 6)},
            make_dataset=_compute_ds,
            make_model=lambda: synthetic.small_cnn(image_size=_COMPUTE_IMAGE, width=24),
            batch=_compute_batch,
            floor_distinct=8,
        ),
        Scenario(
            name="memory",
            title=(
                "Memory-heavy: 6 MiB batches (128 x 64x64x3 float32) behind 80 ms latency, "
                f"LoadTuner(ram_budget={MEMORY_BUDGET // MiB} MiB)"
            ),
            kind="memory",
            sizes={"full": (2, 25), "quick": (1, 6)},
            make_dataset=_memory_ds,
            make_model=lambda: synthetic.small_cnn(image_size=MEMORY_BATCH[1], width=4),
            batch=_memory_batch,
            floor_distinct=4,
            ram_budget=MEMORY_BUDGET,
        ),
        Scenario(
            name="seed-article",
            title=(
                f"Seed article shape: MNIST-shaped model and batches, PyDataset with "
                f"time.sleep({SEED_LATENCY_S}) per batch (theirs: 0.5 s)"
            ),
            kind="seed",
            sizes={"full": (1, 120), "quick": (1, 16)},
            make_dataset=_seed_ds,
            make_model=mnist_like,
            batch=lambda i, env: _mnist_batch(i, 32),
            extra={
                f"article: {SEED_WORKERS} workers": {
                    "workers": SEED_WORKERS,
                    "use_multiprocessing": False,
                    "max_queue_size": 10,
                }
            },
            note=(
                "The article (Keras 2.2.4, MacBook Pro i7) reports 6x from "
                f"`workers={SEED_WORKERS}` over the default 1 worker."
            ),
        ),
    ]
}
