"""How `wrap` serves each kind of training input: retuned by the engine, or measured only.

- `keras.utils.PyDataset`, generator function: served as they are, tuned live.
- PyTorch `DataLoader` over a map-style dataset: served by `TorchLoaderSource` (batch
  `i` is the loader's batch `i`), tuned live mid-epoch, exactly once.
- Grain `MapDataset` of batches: served by `GrainMapSource` (batch `i` is `ds[i]`),
  tuned live mid-epoch, exactly once.
- Grain `IterDataset` and `grain.DataLoader`: served by `GrainIterSource` (Grain runs
  it): threads and buffers change at the next batch through `get_state`/`set_state`,
  the worker count at an epoch boundary (`RestartPoint.EPOCH_BOUNDARY`).
- PyTorch `DataLoader` over an `IterableDataset` (or with a `worker_init_fn`), an
  endless Grain `MapDataset`, `tf.data.Dataset`: measured only.
- Anything else (arrays, a generator object) goes to `TunedPyDataset`, which says what
  it supports; arrays passed to `fit` directly are measured by the tuner as they are.

"Measured only": `wrap` returns the input unchanged and says why once; the `LoadTuner`
in `fit` still measures the data wait and the step, and its report names the input's
own knobs (`InputPlan.note`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from keras_loadtune.keras_adapter.input_kind import (
    InputKind,
    RestartPoint,
    classify,
    is_grain_map_dataset,
)

logger = logging.getLogger("keras_loadtune")

_TF_DATA_KNOBS = (
    "tf.data tunes itself: use `map(..., num_parallel_calls=tf.data.AUTOTUNE)`, "
    "`.prefetch(tf.data.AUTOTUNE)`, `.cache()` after decoding for data that fits, and "
    "`tf.data.Options().autotune.ram_budget` / `.cpu_budget`"
)
_GRAIN_KNOBS = (
    "Grain's knobs are `ReadOptions(num_threads, prefetch_buffer_size)`, "
    "`ds.mp_prefetch(MultiprocessingOptions(num_workers, per_worker_buffer_size))` and "
    "`grain.DataLoader(worker_count, worker_buffer_size)`; a `MapDataset` of batches "
    "(batch inside the map) is tuned live by `tuner.wrap`"
)
_TORCH_KNOBS = (
    "its knobs are `num_workers`, `prefetch_factor` and `persistent_workers`; a "
    "map-style dataset is tuned live by `tuner.wrap`"
)


@dataclass(frozen=True)
class InputPlan:
    """How one training input is served.

    Args:
        kind: The input's `InputKind`.
        source: What `TunedPyDataset` serves (the input itself, or its batch-level
            source); `None` when the input is measured only and passed on unchanged.
        timeout: A per-batch timeout the input itself carries (a DataLoader's
            `timeout`), or None.
        note: Why the input is only measured and which knobs are its own, or what of
            its settings is not applied; empty when nothing needs saying.
        restart: Where the served input takes a new config: at any batch (the engine
            serves it), at an epoch boundary for some changes (`GrainIterSource`), or
            never (measured only).

    Example:

    >>> plan_input(lambda: iter([])).kind
    <InputKind.GENERATOR: 'generator'>
    """

    kind: InputKind
    source: Any | None
    timeout: float | None = None
    note: str = ""
    restart: RestartPoint = RestartPoint.ANY_BATCH

    def __post_init__(self) -> None:
        if self.source is None:
            object.__setattr__(self, "restart", RestartPoint.NEVER)

    @property
    def measured_only(self) -> bool:
        """True when `wrap` hands the input back unchanged."""
        return self.source is None


def _torch_plan(loader: Any) -> InputPlan:
    from keras_loadtune.keras_adapter.torch_source import TorchLoaderSource, map_style_problem

    problem = map_style_problem(loader)
    if problem is not None:
        return InputPlan(
            InputKind.TORCH_DATALOADER,
            None,
            note=f"This DataLoader is not retuned: {problem}; {_TORCH_KNOBS}.",
        )
    ignored = []
    if getattr(loader, "pin_memory", False):
        ignored.append("pin_memory (batches are NumPy arrays that Keras moves to the device)")
    if getattr(loader, "multiprocessing_context", None) is not None:
        ignored.append("multiprocessing_context (worker processes start from a forkserver)")
    note = ""
    if ignored:
        note = "DataLoader settings not applied by the wrapped loader: " + "; ".join(ignored) + "."
    timeout = float(loader.timeout) if getattr(loader, "timeout", 0) else None
    return InputPlan(InputKind.TORCH_DATALOADER, TorchLoaderSource(loader), timeout, note)


def plan_input(x: Any) -> InputPlan:
    """Decides how `wrap` serves `x` (see the module's table).

    Args:
        x: The input given to `wrap`.

    Returns:
        The `InputPlan`; building it for a PyTorch or Grain input imports that library.

    Example:

    >>> plan_input(lambda: iter([])).measured_only
    False
    """
    kind = classify(x)
    if kind is InputKind.TORCH_DATALOADER:
        return _torch_plan(x)
    if kind is InputKind.GRAIN:
        if is_grain_map_dataset(x):
            from keras_loadtune.keras_adapter.grain_source import GrainMapSource

            try:
                return InputPlan(kind, GrainMapSource(x))
            except TypeError as exc:  # no finite length: measured as Keras iterates it
                return InputPlan(kind, None, note=f"{exc} It is measured only. {_GRAIN_KNOBS}.")
        from keras_loadtune.keras_adapter.grain_iter_source import GrainIterSource

        source = GrainIterSource(x)
        threads, workers = source.tunable
        what = f"A Grain {type(x).__name__}"
        if not (threads or workers):
            return InputPlan(
                kind,
                None,
                note=(
                    f"{what} with no single to_iter_dataset and no final mp_prefetch has "
                    f"no knob keras-loadtune can change; it is measured only. {_GRAIN_KNOBS}."
                ),
            )
        knobs = " and ".join(k for k, ok in (("threads", threads), ("workers", workers)) if ok)
        return InputPlan(
            kind,
            source,
            restart=RestartPoint.EPOCH_BOUNDARY,
            note=(
                f"{what} runs on Grain's own iterator; its {knobs} can change: threads and "
                "buffers at the next batch (get_state/set_state), the worker count only at "
                "an epoch boundary (the iterator's state records it)."
            ),
        )
    if kind is InputKind.TF_DATA:
        return InputPlan(kind, None, note=f"A tf.data input is measured only; {_TF_DATA_KNOBS}.")
    return InputPlan(kind, x)  # `TunedPyDataset` serves it, or says what it supports


def announce(plan: InputPlan) -> None:
    """Logs a plan's note once per `wrap` call (a warning when the input is not tuned)."""
    if plan.note:
        level = logging.WARNING if plan.measured_only else logging.INFO
        logger.log(level, "keras_loadtune: %s", plan.note)


__all__ = ["InputPlan", "announce", "plan_input"]
