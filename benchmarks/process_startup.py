"""Worker-process start-up cost: forkserver with the dataset's module preloaded vs not.

Each configuration runs in a fresh interpreter (the forkserver starts once per program),
side by side in one run, and prints the start-up seconds of the first pool (2 workers,
which pays the forkserver's one-time imports), of a resize adding 2 more workers, and the
ratio. The dataset is `keras_loadtune.synthetic.PythonDataset`, a `keras.utils.PyDataset`,
so unpickling it imports Keras (with its numpy backend in workers unless
`KERAS_LOADTUNE_WORKER_BACKEND=trainer`). `benchmarks/cold_pool.py` measures the cold
pool against plain Keras.

    python benchmarks/process_startup.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from keras_loadtune import LoaderConfig
from keras_loadtune.engine import Prefetcher
from keras_loadtune.synthetic import PythonDataset

if __name__ == "__main__":
    ds = PythonDataset(8, cpu_s=0.001)
    with Prefetcher(ds, LoaderConfig(2, 2, True)) as pf:
        pf.begin_pass(range(8))
        pf.next()
        pf.reconfigure(LoaderConfig(4, 2, True))
        pf.next()
        print(json.dumps([round(s.seconds, 3) for s in pf.stats.startups]))
"""


def measure(preload: bool) -> list[float]:
    env = {**os.environ, "KERAS_LOADTUNE_PRELOAD": "1" if preload else "0"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = {}
    for _ in range(2):  # alternate to share the machine's noise
        for preload in (True, False):
            first, added = measure(preload)
            rows.setdefault(preload, []).append((first, added))
    print(f"{'forkserver preload':<20}{'first 2 workers s':>20}{'+2 workers s':>16}")
    for preload, runs in rows.items():
        for first, added in runs:
            print(f"{'on' if preload else 'off':<20}{first:>20.3f}{added:>16.3f}")
    on = min(a for _, a in rows[True])
    off = min(a for _, a in rows[False])
    print(f"adding 2 workers, preload off / on: {off / max(on, 1e-6):.0f}x")


if __name__ == "__main__":
    main()
