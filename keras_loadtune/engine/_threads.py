"""A resizable pool of worker threads sharing one task queue.

The queue is a `queue.SimpleQueue`: `put` runs in C and wakes one waiting thread
without a Python-level lock, which is what the consumer's thread pays per batch.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from keras_loadtune.engine._sink import ResultSink
from keras_loadtune.engine.records import batch_nbytes

_STOP = object()
_local = threading.local()


def in_worker_thread() -> bool:
    """True on a `ThreadPool` worker thread (False on the consumer's and any other thread).

    Example:

    ```python
    in_worker_thread()   # False here: the consumer's thread
    ```
    """
    return getattr(_local, "worker", False)


class ThreadPool:
    """Runs `source[index]` in worker threads and reports to a `ResultSink`.

    Threads are cheap to start (microseconds), share the trainer's memory (no copies)
    and run in parallel whenever `__getitem__` releases the GIL: I/O, `time.sleep`,
    network calls, most NumPy/PIL/OpenCV kernels.

    Args:
        source: The dataset (`source[index] -> batch`), shared, never copied.
        sink: Receives results and errors (from the worker threads).
        name: Prefix of the thread names.

    Example:

    ```python
    pool = ThreadPool(dataset, sink, "keras_loadtune")
    pool.resize(4)
    pool.submit(key, 0)
    pool.close()
    ```
    """

    def __init__(self, source: Any, sink: ResultSink, name: str):
        self._source = source
        self._sink = sink
        self._name = name
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._target = 0
        self._lock = threading.Lock()
        self._counter = 0

    @property
    def pids(self) -> list[int]:
        """Always empty: threads run in the trainer's process."""
        return []

    def resize(self, workers: int) -> int:
        """Grows or shrinks to `workers` threads; returns how many were started."""
        with self._lock:
            started = 0
            self._threads = [t for t in self._threads if t.is_alive()]
            while self._target < workers:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}-thread-{self._counter}", daemon=True
                )
                self._counter += 1
                thread.start()
                self._threads.append(thread)
                self._target += 1
                started += 1
            while self._target > workers:
                self._tasks.put(_STOP)
                self._target -= 1
            return started

    def submit(self, key: Any, index: int, seed: int | None = None) -> None:
        """Queues `source[index]` for the next free thread.

        Args:
            key: Opaque task key handed back to the sink.
            index: The dataset index.
            seed: Ignored. Python's `random` and NumPy's global generator are shared by
                all threads of the process, so seeding them per batch cannot make a
                batch's randomness independent of what other threads draw meanwhile.
                Draw from a generator made from the index instead (e.g.
                `np.random.default_rng(index)`) for reproducible augmentation.
        """
        del seed
        self._tasks.put((key, index))

    def cancel_pending(self) -> None:
        """Forgets tasks no thread has started yet (stop markers are kept)."""
        kept = []
        while True:
            try:
                item = self._tasks.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                kept.append(item)
        for item in kept:
            self._tasks.put(item)

    def close(self, timeout: float = 5.0) -> list[threading.Thread]:
        """Stops all threads; returns those still busy after `timeout` (stuck in `__getitem__`)."""
        self.cancel_pending()
        with self._lock:
            for _ in range(self._target):
                self._tasks.put(_STOP)
            self._target = 0
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        return [t for t in threads if t.is_alive()]

    def _run(self) -> None:
        _local.worker = True
        tasks = self._tasks
        while True:
            item = tasks.get()
            if item is _STOP:
                return
            key, index = item
            t0 = time.perf_counter()
            c0 = time.thread_time()
            try:
                batch = self._source[index]
            except BaseException as exc:
                self._sink.on_error(key, exc)
                continue
            wall = time.perf_counter() - t0
            cpu = time.thread_time() - c0
            self._sink.on_result(key, batch, wall, cpu, batch_nbytes(batch))
