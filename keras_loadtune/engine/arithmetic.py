"""The engine's queue arithmetic: how many batches a `Prefetcher` config keeps going.

`Prefetcher._top_up` submits positions of a pass to the worker pool while
`submitted < cursor + max_queue_size`, where `cursor` is the next position `next()`
hands out. So at any moment each of the `max_queue_size` positions
`cursor .. cursor + max_queue_size - 1` is in exactly one of three places: finished
and held in the reorder buffer, being produced by a worker, or submitted and waiting
for a free worker. The batch `next()` returned last is in the trainer's hands. Hence:

- `in_flight(config) = min(workers, max_queue_size)`: batches produced concurrently
  (a pool never runs more than `workers` tasks, the window never offers more than
  `max_queue_size` positions);
- `held_batches(config) = max_queue_size`: finished or in-production batches the
  loader holds at most; the trainer holds one more (the batch of the current step),
  so a config's loader memory is bounded by `held_batches(config) + 1` batches.

An inline config (`LoaderConfig.inline`: 1 worker, threads, Keras's default) runs no
pool and prefetches nothing: the consumer makes each batch when the step asks for it,
so one batch is made at a time, serially with the step, and none is held ahead. The
two functions below describe a config's *window* and keep their values for it (1 and
`max_queue_size`); a model of inline throughput or memory checks `config.inline` first.

This is not Keras's `OrderedEnqueuer`, which keeps `max_queue_size` futures queued
plus the one its producer thread holds while blocked plus the one the trainer waits
on (`max_queue_size + 2`). The pipeline model, the simulator, the RAM prediction and
the trial windows of the decision layer import these two functions, so they
describe the loader that runs.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.engine.arithmetic import held_batches, in_flight
>>> in_flight(LoaderConfig(workers=8, max_queue_size=3))
3
>>> held_batches(LoaderConfig(workers=8, max_queue_size=3))
3
"""

from __future__ import annotations

from keras_loadtune.config import LoaderConfig


def in_flight(config: LoaderConfig) -> int:
    """Batches a `Prefetcher` running `config` produces at once: `min(workers, max_queue_size)`.

    Args:
        config: The loader config.

    Returns:
        The number of concurrently produced batches when the window is full.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> in_flight(LoaderConfig(workers=2, max_queue_size=10))
    2
    """
    return min(config.workers, config.max_queue_size)


def held_batches(config: LoaderConfig) -> int:
    """Batches a `Prefetcher` running `config` holds ahead of the trainer: `max_queue_size`.

    Finished (buffered) and in-production batches together; the trainer's own batch
    is one more.

    Args:
        config: The loader config.

    Returns:
        The most batches the loader holds beyond the one in the trainer's hands.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> held_batches(LoaderConfig(workers=2, max_queue_size=10))
    10
    """
    return config.max_queue_size


__all__ = ["held_batches", "in_flight"]
