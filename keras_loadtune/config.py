"""`LoaderConfig`: one setting of the input pipeline's three knobs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from keras_loadtune._validate import int_at_least


@dataclass(frozen=True)
class LoaderConfig:
    """How a wrapped dataset produces its batches: worker count, queue depth, threads or processes.

    These are the three knobs Keras 3 moved from `fit()` onto
    `keras.utils.PyDataset`. A `LoaderConfig` is immutable and validated on
    construction, so a config that exists is a config that can run.

    Args:
        workers: Number of worker threads or processes producing batches (>= 1).
        max_queue_size: Maximum number of batches requested ahead of the one the
            model is consuming (>= 1). Bounds the memory held by prefetched batches.
        use_multiprocessing: `True` runs `__getitem__` in worker processes (needs a
            picklable dataset; gains CPU parallelism for GIL-bound Python),
            `False` in threads (cheap to start; ideal for I/O and NumPy work).
            One worker without processes (Keras's default) is *inline*: no worker
            at all, `__getitem__` runs on the training thread when the step asks for
            its batch, exactly as Keras 3 runs that config (`inline`).

    Example:

    ```python
    import keras_loadtune as klt

    cfg = klt.LoaderConfig(workers=4, max_queue_size=8, use_multiprocessing=False)
    print(cfg)            # 4 threads, queue 8
    print(klt.LoaderConfig())  # inline (1 worker, as Keras runs it)
    cfg.to_dict()         # {'workers': 4, 'max_queue_size': 8, 'use_multiprocessing': False}
    ```
    """

    workers: int = 1
    max_queue_size: int = 10
    use_multiprocessing: bool = False

    def __post_init__(self) -> None:
        for name in ("workers", "max_queue_size"):
            int_at_least(f"LoaderConfig.{name}", getattr(self, name), 1)
        if not isinstance(self.use_multiprocessing, bool):
            raise ValueError(
                "LoaderConfig.use_multiprocessing must be True (processes) or False "
                f"(threads); got {self.use_multiprocessing!r}."
            )

    @property
    def inline(self) -> bool:
        """True for one worker without processes: batches are made on the training thread.

        Keras 3 builds no enqueuer for `workers=1, use_multiprocessing=False` and calls
        `__getitem__` inline, when the step asks for the batch; the engine does the
        same, so nothing is prefetched and `max_queue_size` has no effect.
        """
        return self.workers == 1 and not self.use_multiprocessing

    @property
    def mode(self) -> str:
        """`"process"` or `"thread"`."""
        return "process" if self.use_multiprocessing else "thread"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the three fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoaderConfig:
        """Inverse of `to_dict`; unknown keys are rejected with a `ValueError`."""
        unknown = set(data) - {"workers", "max_queue_size", "use_multiprocessing"}
        if unknown:
            raise ValueError(f"Unknown LoaderConfig field(s): {sorted(unknown)}.")
        return cls(**data)

    def __str__(self) -> str:
        if self.inline:
            return "inline (1 worker, as Keras runs it)"
        kind = "process" if self.use_multiprocessing else "thread"
        plural = "es" if kind == "process" else "s"
        noun = kind + (plural if self.workers != 1 else "")
        return f"{self.workers} {noun}, queue {self.max_queue_size}"
