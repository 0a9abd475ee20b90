"""Trains every batch once through a small /dev/shm (run inside a 64 MiB tmpfs mount).

24 MiB batches, queue 8, 2 process workers, a dataset holding a 256 MiB array
(`array`: in RAM; `memmap`: backed by a file). Prints one JSON line.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine_datasets import BigBatches

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import Prefetcher

if __name__ == "__main__":
    kind = sys.argv[1]
    n = 16
    if kind == "memmap":
        path = os.path.join(tempfile.mkdtemp(), "data.bin")
        data = np.memmap(path, np.float32, "w+", shape=(64 << 20,))
        data[:: 1 << 20] = 1.0
        data.flush()
    else:
        data = np.zeros(64 << 20, np.float32)  # 256 MiB
        data[:: 1 << 20] = 1.0
    expected = float(data[:: 1 << 20].sum())
    seen = []
    with Prefetcher(BigBatches(n, 24, data), LoaderConfig(2, 8, True)) as pf:
        pf.begin_pass(range(n))
        for _ in range(n):
            x, checksum = pf.next()
            assert float(checksum[0]) == expected
            seen.append(int(x[0]))
            assert (x == x[0]).all()
            time.sleep(0.05)  # a slow trainer: the queue fills up
        pool = pf.serving.pool
        result = {
            "seen": seen,
            "bytes_copied": pool.source_bytes_copied,
            "fallbacks": pool.shm_fallbacks,
            "note": pf.shm_fallback_note,
        }
    print(json.dumps(result))
