"""Ranking measured configs: among those within `min_improvement` of the fastest, which wins.

`cheapest_within` takes a cost order. `cost_key`: threads before processes, then fewer
workers, then a shorter queue. `headroom_key`, where a thread costs only a batch of RAM
(a loader that is not CPU-heavy): threads first, inline first among them, then *more*
threads (headroom against jitter a short trial window may not show), then a shorter
queue. The session (`search.SearchRound.pick_best`) and the warm start
(`warm_start.stored_best`) rank with the same functions.

Example:

>>> from keras_loadtune import LoaderConfig
>>> fast = {LoaderConfig(8, 9): 100.0, LoaderConfig(4, 5): 99.0, LoaderConfig(1, 2): 30.0}
>>> cheapest_within(fast, 0.02)
LoaderConfig(workers=4, max_queue_size=5, use_multiprocessing=False)
>>> cheapest_within(fast, 0.02, key=headroom_key)
LoaderConfig(workers=8, max_queue_size=9, use_multiprocessing=False)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from keras_loadtune.config import LoaderConfig


def cost_key(config: LoaderConfig) -> tuple[int, int, int]:
    """Sort key of a config's cost: threads first, then fewer workers, then a shorter queue.

    Example:

    >>> cost_key(LoaderConfig(4, 8, True))
    (1, 4, 8)
    """
    return (int(config.use_multiprocessing), config.workers, config.max_queue_size)


def headroom_key(config: LoaderConfig) -> tuple[int, int, int, int]:
    """Sort key where a thread costs only a batch of RAM (a loader that is not
    CPU-heavy): threads first, inline first among them (no hand-over at all), then *more*
    threads (headroom against the loader's jitter, which a short trial window may not
    show), then a shorter queue; processes as in `cost_key`.

    Example:

    >>> sorted([LoaderConfig(6, 9), LoaderConfig(11, 16), LoaderConfig()], key=headroom_key)[1]
    LoaderConfig(workers=11, max_queue_size=16, use_multiprocessing=False)
    """
    if config.use_multiprocessing:
        return (1, 0, config.workers, config.max_queue_size)
    return (0, int(not config.inline), -config.workers, config.max_queue_size)


def cheapest_within(
    values: Mapping[LoaderConfig, float],
    min_improvement: float,
    *,
    key: Callable[[LoaderConfig], tuple[int, ...]] = cost_key,
) -> LoaderConfig:
    """The cheapest config (by `key`) whose value is within `min_improvement` of the best.

    Args:
        values: Steps/s by config (not empty).
        min_improvement: Relative tolerance, e.g. 0.02.
        key: The cost order (`cost_key`, or `headroom_key` where threads cost only RAM).

    Example:

    >>> cheapest_within({LoaderConfig(2, 2): 50.0}, 0.02)
    LoaderConfig(workers=2, max_queue_size=2, use_multiprocessing=False)
    >>> near = {LoaderConfig(6, 9): 150.8, LoaderConfig(11, 16): 151.8}
    >>> cheapest_within(near, 0.02, key=headroom_key).workers
    11
    """
    top = max(values.values())
    close = [c for c, v in values.items() if v >= (1.0 - min_improvement) * top]
    return min(close, key=key)


__all__ = ["cheapest_within", "cost_key", "headroom_key"]
