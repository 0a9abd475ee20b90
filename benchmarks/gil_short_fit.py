"""A GIL-bound short fit: keras-loadtune against plain Keras's configs, side by side.

The case of issue #17: a loader running 15 ms of pure Python per batch (it holds the
GIL), a tiny model, 3 epochs x 100 steps, the dataset defined in the script's
`__main__`. Each row is a fresh interpreter (so every process pool starts cold, as
in a user's run); rows alternate within each repeat. Printed: the median wall time
of each row, keras-loadtune against the best static config of the grid (target
<= 1.10x) and against the user's config (target <= 1.0x).

    python benchmarks/gil_short_fit.py [--repeats 3] [--backend tensorflow]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

SCRIPT = r"""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras

ROW, PY_MS, STEPS, EPOCHS = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
LOOPS = int(sys.argv[5])


class Text(keras.utils.PyDataset):  # defined in __main__, as in a user's script
    def __len__(self):
        return STEPS

    def __getitem__(self, i):
        acc = 0
        for k in range(LOOPS):  # pure Python: holds the GIL
            acc += k * k % 7
        rng = np.random.default_rng(i)
        return rng.random((32, 16), dtype=np.float32), rng.random((32, 1), dtype=np.float32)


kind, _, n = ROW.partition(":")
model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(1)])
model.compile("adam", "mse")
t0 = time.perf_counter()
if kind == "klt":
    import keras_loadtune as klt

    tuner = klt.LoadTuner(storage=None, verbose=0)
    model.fit(tuner.wrap(Text()), epochs=EPOCHS, verbose=0, callbacks=[tuner])
    wall = time.perf_counter() - t0
    report = tuner.report
    print("REPORT", report.decision, report.best_config)
    print(report, file=sys.stderr)
else:
    ds = Text(workers=int(n), use_multiprocessing=kind == "processes")
    model.fit(ds, epochs=EPOCHS, verbose=0)
    wall = time.perf_counter() - t0
print(f"WALL {wall:.3f}")
"""


def _loops_for(py_ms: float) -> int:
    """Loop count that takes about `py_ms` of pure Python here."""
    import time

    n = 200_000
    t = time.perf_counter()
    acc = 0
    for k in range(n):
        acc += k * k % 7
    per = (time.perf_counter() - t) / n
    return max(1, int(py_ms / 1000 / per))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--python-ms", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    loops = _loops_for(args.python_ms)
    rows = ["threads:1", "processes:1", "processes:2", "processes:4", "klt"]
    walls: dict[str, list[float]] = {r: [] for r in rows}
    env = {**os.environ, "KERAS_BACKEND": args.backend}
    for rep in range(args.repeats):
        order = rows[rep % len(rows) :] + rows[: rep % len(rows)]
        for row in order:
            cmd = [sys.executable, "-c", SCRIPT, row, str(args.python_ms), str(args.steps)]
            cmd += [str(args.epochs), str(loops)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            wall = [ln for ln in out.stdout.splitlines() if ln.startswith("WALL")]
            if out.returncode != 0 or not wall:
                print(f"{row}: failed\n{out.stderr[-2000:]}")
                return 1
            walls[row].append(float(wall[0].split()[1]))
            for ln in out.stdout.splitlines():
                if ln.startswith("REPORT"):
                    print(f"  repeat {rep}: {ln}")
    med = {r: statistics.median(v) for r, v in walls.items()}
    print(
        f"backend {args.backend}, {args.python_ms} ms Python per batch, "
        f"{args.epochs} x {args.steps} steps, medians of {args.repeats}"
    )
    for r in rows:
        print(f"  {r:12s} {med[r]:7.2f} s   ({', '.join(f'{w:.2f}' for w in walls[r])})")
    grid = {r: med[r] for r in rows if r != "klt"}
    best = min(grid, key=grid.get)
    print(f"keras-loadtune / best static ({best}): {med['klt'] / grid[best]:.2f}x (target <= 1.10)")
    print(
        f"keras-loadtune / your config (threads:1): {med['klt'] / med['threads:1']:.2f}x "
        "(target <= 1.0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
