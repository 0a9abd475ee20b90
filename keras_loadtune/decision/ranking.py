"""Ranking measured configs: among those within `min_improvement` of the fastest, which wins.

`cheapest_within` takes a cost order. `cost_key`: threads before processes, then fewer
workers, then a shorter queue. `headroom_key`, where a thread costs only a batch of RAM
(a loader that is not CPU-heavy): threads first, inline first among them, then *more*
batches in flight (headroom against jitter a short trial window may not show) up to
`enough` (`decision.delivery.round_cap`: 1.5 times what keeps up with the step, beyond
which more threads buy no headroom and only hold RAM), then fewer workers, then a
shorter queue. `rank_key` picks the order. The session (`search.SearchRound.pick_best`)
and the warm start (`warm_start.stored_best`) rank with the same functions.

Example:

>>> from keras_loadtune import LoaderConfig
>>> fast = {LoaderConfig(8, 9): 100.0, LoaderConfig(4, 5): 99.0, LoaderConfig(1, 2): 30.0}
>>> cheapest_within(fast, 0.02)
LoaderConfig(workers=4, max_queue_size=5, use_multiprocessing=False)
>>> cheapest_within(fast, 0.02, key=headroom_key)
LoaderConfig(workers=8, max_queue_size=9, use_multiprocessing=False)
>>> cheapest_within(fast, 0.02, key=rank_key(True, enough=4))  # 4 in flight are enough
LoaderConfig(workers=4, max_queue_size=5, use_multiprocessing=False)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine.arithmetic import in_flight

RankKey = Callable[[LoaderConfig], tuple[int, ...]]


def cost_key(config: LoaderConfig) -> tuple[int, int, int]:
    """Sort key of a config's cost: threads first, then fewer workers, then a shorter queue.

    Example:

    >>> cost_key(LoaderConfig(4, 8, True))
    (1, 4, 8)
    """
    return (int(config.use_multiprocessing), config.workers, config.max_queue_size)


def headroom_key(config: LoaderConfig, enough: int | None = None) -> tuple[int, ...]:
    """Sort key where a thread costs only a batch of RAM (a loader that is not
    CPU-heavy): threads first, inline first among them (no hand-over at all), then *more*
    batches in flight (headroom against the loader's jitter, which a short trial window
    may not show) counted up to `enough`, then fewer workers, then a shorter queue;
    processes as in `cost_key`.

    Args:
        config: The config to rank.
        enough: Batches in flight beyond which more add no headroom (`None`: no bound).

    Example:

    >>> sorted([LoaderConfig(6, 9), LoaderConfig(11, 16), LoaderConfig()], key=headroom_key)[1]
    LoaderConfig(workers=11, max_queue_size=16, use_multiprocessing=False)
    >>> sorted([LoaderConfig(256, 300), LoaderConfig(77, 95)], key=rank_key(True, 61))[0]
    LoaderConfig(workers=77, max_queue_size=95, use_multiprocessing=False)
    """
    if config.use_multiprocessing:
        return (1, 0, 0, config.workers, config.max_queue_size)
    room = in_flight(config) if enough is None else min(in_flight(config), enough)
    return (0, int(not config.inline), -room, config.workers, config.max_queue_size)


def rank_key(threads_ram_only: bool, enough: int | None = None) -> RankKey:
    """The cost order of a session: `headroom_key` up to `enough` where a loader thread
    costs only a batch of RAM, else `cost_key`.

    Example:

    >>> rank_key(False) is cost_key
    True
    >>> rank_key(True, 8)(LoaderConfig(16, 20))
    (0, 1, -8, 16, 20)
    """
    if not threads_ram_only:
        return cost_key
    return functools.partial(headroom_key, enough=enough)


def cheapest_within(
    values: Mapping[LoaderConfig, float],
    min_improvement: float,
    *,
    key: RankKey = cost_key,
) -> LoaderConfig:
    """The cheapest config (by `key`) whose value is within `min_improvement` of the best.

    Args:
        values: Steps/s by config (not empty).
        min_improvement: Relative tolerance, e.g. 0.02.
        key: The cost order (`cost_key`, or `headroom_key` where threads cost only RAM:
            see `rank_key`).

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


__all__ = ["RankKey", "cheapest_within", "cost_key", "headroom_key", "rank_key"]
