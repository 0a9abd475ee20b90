"""Soak: hundreds of short epochs with a reconfigure every few batches, threads <-> processes.

Measures, after a warm-up, RSS growth, open file descriptors, thread count and zombie
processes, prints them (`pytest -s`) and asserts they stay flat. Every epoch must deliver
every batch exactly once, in the pass's order.
"""

from __future__ import annotations

import gc
import itertools
import random
import threading
import time
from typing import Any

import pytest

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import EndOfPass, Prefetcher
from reliability.faulty import Faulty
from reliability.helpers import engine_threads, open_fds, rss_bytes, wait_until, zombies

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CONFIGS = [
    LoaderConfig(1, 2, False),
    LoaderConfig(3, 4, False),
    LoaderConfig(2, 3, True),
    LoaderConfig(2, 1, False),
    LoaderConfig(1, 4, True),
    LoaderConfig(2, 6, True),
]
STEADY = LoaderConfig(2, 4, True)  # the config in place at every measurement point


def _quiesce(reconfigure) -> dict[str, Any]:
    """Switches to `STEADY`, waits for retired pools to finish closing, then measures."""
    reconfigure(STEADY)
    # Pools closing or starting in the background, and the one-off threads that start the
    # forkserver or import Optuna ahead: each ends on its own, a few seconds later on a
    # busy machine, and a thread counted while it ends is no leak.
    settling = ("-retire", "-switch", "-prewarm", "-import")
    wait_until(lambda: not [t for t in engine_threads() if t.name.endswith(settling)], 10.0)
    gc.collect()
    # A busy machine closes the last pipes of a retired pool a little later: measure once
    # the count of open files holds still (fds that leak keep growing over the epochs).
    last = [open_fds()]

    def still() -> bool:
        time.sleep(0.05)
        now = open_fds()
        same, last[0] = now == last[0], now
        return same

    wait_until(still, 5.0)
    return {
        "rss": rss_bytes(),
        "fds": open_fds(),
        "threads": threading.active_count(),
        "names": sorted(t.name for t in threading.enumerate()),
        "zombies": len(zombies()),
    }


def _check_flat(label: str, points: list[dict[str, Any]], warmup: int, extra: str) -> None:
    base, last = points[warmup], points[-1]
    growth = (last["rss"] - base["rss"]) / base["rss"] * 100
    fds = [p["fds"] for p in points[warmup:]]
    threads = [p["threads"] for p in points[warmup:]]
    zombie_max = max(p["zombies"] for p in points)
    print(
        f"\n[soak] {label}: {extra}; RSS {base['rss'] / 2**20:.1f} -> {last['rss'] / 2**20:.1f} "
        f"MiB ({growth:+.2f}% after warm-up); open fds {min(fds)}..{max(fds)}; "
        f"threads {min(threads)}..{max(threads)}; zombies {zombie_max}"
    )
    assert growth < 5.0, f"RSS grew {growth:.2f}% after warm-up"
    assert max(fds) - min(fds) <= 2, f"open fds drift: {fds}"
    names = [p["names"] for p in points[warmup:]]
    # A leak makes the count grow from one point to the next; a thread that was still
    # ending at one point is gone at a later one (the count may only fall).
    grows = any(later > earlier for earlier, later in itertools.pairwise(threads))
    assert not grows, f"thread count drift: {threads}, threads: {names}"
    assert zombie_max == 0


def test_engine_soak_many_epochs_with_live_reconfigures():
    n, epochs, every, measure_every = 6, 240, 3, 40  # warm-up: the first 40 epochs
    rng = random.Random(0)
    cycle = itertools.cycle(CONFIGS)
    points: list[dict[str, Any]] = []
    reconfigures = delivered = 0
    t0 = time.monotonic()
    with Prefetcher(Faulty(n), LoaderConfig(1, 2), idle_timeout=None) as pf:
        for epoch in range(epochs):
            order = list(range(n))
            if epoch % 2:
                rng.shuffle(order)
            pf.begin_pass(order)
            got = []
            while True:
                if len(got) % every == every - 1:
                    pf.reconfigure(next(cycle))
                    reconfigures += 1
                try:
                    x, _ = pf.next()
                except EndOfPass:
                    break
                got.append(int(x[0, 0]))
            assert got == order, f"epoch {epoch}: {got} != {order}"
            delivered += len(got)
            if epoch % measure_every == 0 or epoch == epochs - 1:
                points.append(_quiesce(pf.reconfigure))
    elapsed = time.monotonic() - t0
    assert delivered == n * epochs
    _check_flat(
        "engine",
        points,
        warmup=1,
        extra=f"{epochs} epochs, {delivered} batches (0 lost, 0 duplicated), "
        f"{reconfigures} reconfigures in {elapsed:.1f} s",
    )
    assert wait_until(lambda: not zombies(), 5.0)


@pytest.mark.keras
def test_keras_soak_short_epochs_with_live_reconfigures(keras_ready, closing):
    import keras

    import keras_loadtune as klt

    kdata = keras_ready
    n, epochs, warmup_epochs, measure_every = 4, 48, 12, 12
    wrapped = klt.wrap(kdata.KerasView(Faulty(n)), LoaderConfig(1, 2), idle_timeout=None)
    closing(wrapped)
    cycle = itertools.cycle(CONFIGS)
    points: list[dict[str, Any]] = []
    counts = {"reconfigures": 0}

    class Churn(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch % 2 == 0:
                wrapped.reconfigure(next(cycle))
                counts["reconfigures"] += 1

        def on_epoch_end(self, epoch, logs=None):
            if epoch % measure_every == 0 or epoch == epochs - 1:
                points.append(_quiesce(wrapped.reconfigure))

    marks = kdata.EpochMarks(wrapped)
    model = kdata.tiny_model()
    t0 = time.monotonic()
    model.fit(wrapped, epochs=epochs, verbose=0, callbacks=[Churn(), marks])
    elapsed = time.monotonic() - t0
    per_epoch = kdata.epochs_of(wrapped, marks.marks)
    assert [sorted(e) for e in per_epoch] == [list(range(n))] * epochs
    _check_flat(
        "keras",
        points,
        warmup=warmup_epochs // measure_every,
        extra=f"{epochs} epochs, {n * epochs} batches (0 lost, 0 duplicated), "
        f"{counts['reconfigures']} reconfigures in {elapsed:.1f} s",
    )
