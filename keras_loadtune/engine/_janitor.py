"""The janitor: one daemon thread that releases the workers of idle prefetchers.

Owns the registry of prefetchers that have an `idle_timeout`, the thread that calls
their `release_if_idle()` every 0.25 s (it ends when none is left), and the exit hook
that closes every prefetcher still open when the interpreter exits.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from typing import Protocol

logger = logging.getLogger("keras_loadtune")


class Releasable(Protocol):
    """What the janitor watches (a `Prefetcher`).

    Example:

    ```python
    janitor.watch(prefetcher)   # releases its idle workers every 0.25 s
    ```
    """

    @property
    def closed(self) -> bool:
        """True once closed: the janitor forgets it."""
        ...

    def release_if_idle(self) -> None:
        """Releases the workers if no consumer used them for a while."""
        ...

    def close(self, timeout: float = 5.0) -> None:
        """Stops every worker (at interpreter exit)."""
        ...


class Janitor:
    """One daemon thread that releases the workers of idle prefetchers."""

    def __init__(self) -> None:
        self._prefetchers: weakref.WeakSet[Releasable] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, prefetcher: Releasable) -> None:
        """Watches `prefetcher` until it is closed or garbage."""
        with self._lock:
            self._prefetchers.add(prefetcher)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="keras_loadtune-janitor", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(0.25)
            with self._lock:
                for closed in [p for p in self._prefetchers if p.closed]:
                    self._prefetchers.discard(closed)
                prefetchers = list(self._prefetchers)
                if not prefetchers:
                    self._thread = None
                    return
            for prefetcher in prefetchers:
                try:
                    prefetcher.release_if_idle()
                except Exception:  # never let the janitor die
                    logger.debug("keras_loadtune: idle release failed", exc_info=True)
            del prefetchers


janitor = Janitor()


@atexit.register
def _close_all() -> None:
    for prefetcher in list(janitor._prefetchers):
        try:
            prefetcher.close(timeout=1.0)
        except Exception:
            pass
