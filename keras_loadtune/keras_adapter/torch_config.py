"""A PyTorch `DataLoader`'s knobs as a `LoaderConfig`, and back.

The wrapped loader starts from the user's own settings, and the tuned config is given
back in DataLoader terms so a later run can go without keras-loadtune:

- `num_workers=0` (batches made on the training thread) is `workers=1,
  use_multiprocessing=False` (inline: made on the training thread);
- `num_workers=N, prefetch_factor=P` is `workers=N, max_queue_size=P * N,
  use_multiprocessing=True`;
- `workers=N > 1` *threads* have no DataLoader equivalent.

PyTorch's in-flight bound is `prefetch_factor * num_workers` batches (its iterator's
`max_tasks`); the engine's is `max_queue_size` (`engine/arithmetic.py`). Worker
*threads* have no DataLoader equivalent: for such a config keep `tuner.wrap(loader)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from keras_loadtune.config import LoaderConfig

#: PyTorch's default `prefetch_factor` when `num_workers > 0`.
TORCH_DEFAULT_PREFETCH = 2


def config_from_loader(loader: Any) -> LoaderConfig:
    """The `LoaderConfig` that runs like `loader`'s `num_workers` / `prefetch_factor`.

    Args:
        loader: A `torch.utils.data.DataLoader`.

    Returns:
        `num_workers=0`: one inline worker (the training thread makes each batch, as
        PyTorch does); `num_workers=N`: N processes with `prefetch_factor * N` batches
        in flight.

    Example:

    >>> from types import SimpleNamespace
    >>> config_from_loader(SimpleNamespace(num_workers=4, prefetch_factor=3)).to_dict()
    {'workers': 4, 'max_queue_size': 12, 'use_multiprocessing': True}
    """
    workers = int(getattr(loader, "num_workers", 0) or 0)
    if workers <= 0:
        return LoaderConfig(workers=1, max_queue_size=1, use_multiprocessing=False)
    prefetch = getattr(loader, "prefetch_factor", None) or TORCH_DEFAULT_PREFETCH
    return LoaderConfig(
        workers=workers, max_queue_size=max(int(prefetch) * workers, 1), use_multiprocessing=True
    )


@dataclass(frozen=True)
class DataLoaderSettings:
    """A `LoaderConfig` in `DataLoader` terms.

    Args:
        kwargs: Keyword arguments for `torch.utils.data.DataLoader` (`num_workers`, and
            with workers `prefetch_factor` and `persistent_workers`; `pin_memory` when
            given).
        exact: False when the config has no DataLoader equivalent (worker threads);
            `kwargs` is then the nearest one and `note` says what to do instead.
        note: One sentence for the user (empty when `exact`).

    Example:

    >>> config = LoaderConfig(workers=4, max_queue_size=8, use_multiprocessing=True)
    >>> dataloader_kwargs(config).kwargs
    {'num_workers': 4, 'prefetch_factor': 2, 'persistent_workers': True}
    """

    kwargs: dict[str, Any] = field(default_factory=dict)
    exact: bool = True
    note: str = ""


def dataloader_kwargs(
    config: LoaderConfig, *, pin_memory: bool | None = None
) -> DataLoaderSettings:
    """The `DataLoader` arguments that run `config`, or the nearest with a note.

    Args:
        config: A `LoaderConfig`, e.g. `tuner.best_config`.
        pin_memory: The loader's own `pin_memory`, passed through (the tuner does not
            change it: keras-loadtune's batches are NumPy arrays Keras moves itself);
            `None` leaves it out.

    Returns:
        `DataLoaderSettings`: processes map exactly (`prefetch_factor` rounded up to
        whole batches per worker; `persistent_workers=True`, since the engine keeps its
        workers across epochs); the inline config is `num_workers=0`; threads have no
        equivalent.

    Example:

    >>> settings = dataloader_kwargs(LoaderConfig(workers=8, max_queue_size=16))
    >>> settings.exact, settings.kwargs["num_workers"]
    (False, 8)
    """
    if not isinstance(config, LoaderConfig):
        raise TypeError(f"config must be a LoaderConfig; got {type(config).__name__}.")
    settings = _settings(config)
    if pin_memory is not None:
        settings.kwargs["pin_memory"] = bool(pin_memory)
    return settings


def _settings(config: LoaderConfig) -> DataLoaderSettings:
    if config.use_multiprocessing:
        prefetch = max(math.ceil(config.max_queue_size / config.workers), 1)
        return DataLoaderSettings(
            {"num_workers": config.workers, "prefetch_factor": prefetch, "persistent_workers": True}
        )
    if config.workers == 1:  # one thread: inline, as num_workers=0
        return DataLoaderSettings({"num_workers": 0})
    nearest = {
        "num_workers": config.workers,
        "prefetch_factor": max(math.ceil(config.max_queue_size / config.workers), 1),
        "persistent_workers": True,
    }
    return DataLoaderSettings(
        nearest,
        exact=False,
        note=(
            f"{config.workers} worker threads have no DataLoader equivalent (its workers "
            "are processes): keep `tuner.wrap(loader)` (or `klt.wrap(loader, config)`) to "
            f"run this config; the nearest DataLoader setting is num_workers={config.workers} "
            "processes, which costs more start-up and memory and may measure differently."
        ),
    )


__all__ = [
    "TORCH_DEFAULT_PREFETCH",
    "DataLoaderSettings",
    "config_from_loader",
    "dataloader_kwargs",
]
