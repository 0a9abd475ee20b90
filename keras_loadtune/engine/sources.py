"""Adapters that give the engine an indexable source (`source[index] -> batch`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from keras_loadtune.engine._threads import in_worker_thread


class GeneratorFactorySource:
    """Indexable view of a zero-argument callable that returns an iterator of batches.

    Every worker (thread or process) runs its *own* copy of the iterator, created on its
    first request; the index is ignored. An exhausted copy is started again. An inline
    config (`LoaderConfig.inline`) has one worker, the consumer: every thread that is
    not a pool's worker thread reads one shared copy (TensorFlow's `tf.data` calls the
    consumer's generator from changing threads). Batches
    therefore arrive in no defined order, and with `n` workers each underlying item
    can appear up to `n` times per pass: use this for infinite random streams (the
    `while True: yield ...` generators of many tutorials), not for epoch-exact data.

    Example:

    ```python
    def batches():
        while True:
            yield make_random_batch()

    source = GeneratorFactorySource(batches)
    source[0]  # next batch from this thread's own iterator
    ```
    """

    def __init__(self, factory: Callable[[], Iterator[Any]]):
        if not callable(factory):
            raise TypeError(f"factory must be callable; got {type(factory).__name__}.")
        self.factory = factory
        self._local = threading.local()
        self._iterator: Iterator[Any] | None = None  # the copy every non-worker thread reads
        self._shared_lock = threading.Lock()

    def __getitem__(self, index: int) -> Any:
        del index
        if in_worker_thread():
            return self._next_of(self._local)
        with self._shared_lock:
            return self._next_of(self)

    def _next_of(self, holder: Any) -> Any:
        iterator = getattr(holder, "_iterator", None)
        if iterator is None:
            iterator = holder._iterator = iter(self.factory())
        try:
            return next(iterator)
        except StopIteration:
            iterator = holder._iterator = iter(self.factory())
            return next(iterator)

    def __getstate__(self) -> dict[str, Any]:
        return {"factory": self.factory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.factory = state["factory"]
        self._local = threading.local()
        self._iterator = None
        self._shared_lock = threading.Lock()
