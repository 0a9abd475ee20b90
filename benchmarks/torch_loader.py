"""A PyTorch DataLoader fit: keras-loadtune against a static grid and Lightning's advice.

Issue #25's case: a map-style `Dataset` whose items wait `--item-ms` (30 ms, a remote
read) and decode a small JPEG (Pillow), batched by a `DataLoader` that starts from
`num_workers=0`. Rows, each a fresh interpreter (every pool starts cold, as in a
user's run), alternating within each repeat:

- `klt`: `tuner.wrap(DataLoader(..., num_workers=0))` with a `LoadTuner`;
- `static:W:P`: plain Keras on `DataLoader(num_workers=W, prefetch_factor=P,
  persistent_workers=True)` for a small grid;
- `lightning`: `num_workers` = the cores this process may use (what Lightning's
  warning suggests), `prefetch_factor` 2.

Printed: the median wall time of each row, then keras-loadtune against the best
static row (target <= 1.10x) and against Lightning's suggestion (target < 1.0x), and
the tuned config in DataLoader terms. The machine's load moves every figure: compare
rows of one run only.

    python benchmarks/torch_loader.py [--repeats 2] [--backend torch] [--item-ms 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

SCRIPT = r"""
import io, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

ROW, ITEM_MS = sys.argv[1], float(sys.argv[2])
STEPS, EPOCHS, BATCH = (int(v) for v in sys.argv[3:6])


def _jpeg(seed):
    pixels = np.random.default_rng(seed).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()


class Photos(Dataset):  # defined in __main__, as in a user's script
    def __init__(self, n):
        self.blobs = [_jpeg(i % 16) for i in range(n)]

    def __len__(self):
        return len(self.blobs)

    def __getitem__(self, i):
        time.sleep(ITEM_MS / 1000)  # a remote read
        image = np.asarray(Image.open(io.BytesIO(self.blobs[i])).convert("RGB"), np.float32)
        small = image[::4, ::4].reshape(-1) / 255.0
        return torch.from_numpy(small), torch.tensor([float(i % 2)])


def loader(workers, prefetch):
    g = torch.Generator()
    g.manual_seed(0)
    extra = {} if workers == 0 else {"prefetch_factor": prefetch, "persistent_workers": True}
    return DataLoader(Photos(STEPS * BATCH), batch_size=BATCH, shuffle=True, generator=g,
                      num_workers=workers, **extra)


model = keras.Sequential([keras.Input((24 * 24 * 3,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(1)])
model.compile("adam", "mse")
kind, _, rest = ROW.partition(":")
t0 = time.perf_counter()
if kind == "klt":
    import keras_loadtune as klt
    from keras_loadtune.keras_adapter.torch_config import dataloader_kwargs

    tuner = klt.LoadTuner(storage=None, verbose=0)
    train = tuner.wrap(loader(0, 2))
    model.fit(train, epochs=EPOCHS, verbose=0, callbacks=[tuner])
    wall = time.perf_counter() - t0
    best = tuner.best_config
    settings = dataloader_kwargs(best)
    how = "exact" if settings.exact else "threads"
    print("REPORT", tuner.report.decision, best, settings.kwargs, how)
    train.close()
else:
    workers, prefetch = (int(v) for v in rest.split(":"))
    model.fit(loader(workers, prefetch), epochs=EPOCHS, verbose=0)
    wall = time.perf_counter() - t0
print("WALL", wall)
"""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _summary(walls: dict[str, list[float]], cores: int, repeats: int, backend: str) -> None:
    med = {r: statistics.median(v) for r, v in walls.items() if v}
    print(f"\nmedian wall, {repeats} repeat(s), {cores} cores, backend {backend}:")
    for row, value in med.items():
        print(f"  {row:>14}: {value:6.2f} s")
    static = {r: v for r, v in med.items() if r.startswith("static")}
    lightning = next((v for r, v in med.items() if r.startswith("lightning")), None)
    if "klt" in med and static:
        best = min(static, key=static.get)
        print(f"klt / best static ({best}): {med['klt'] / static[best]:.2f}x (target <= 1.10x)")
    if "klt" in med and lightning:
        print(
            f"klt / lightning (num_workers={cores}): {med['klt'] / lightning:.2f}x (target < 1.0x)"
        )
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--item-ms", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=30, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rows", nargs="*", help="only these rows (e.g. klt static:4:2)")
    args = parser.parse_args()
    cores = _cores()
    grid = ["static:0:2", "static:2:2", "static:4:2", "static:8:2", "static:8:4"]
    rows = args.rows or ["klt", *grid, f"lightning:{cores}:2"]
    env = {**os.environ, "KERAS_BACKEND": args.backend}
    walls: dict[str, list[float]] = {r: [] for r in rows}
    for repeat in range(args.repeats):
        order = rows if repeat % 2 == 0 else rows[::-1]  # alternate
        for row in order:
            run_row = row.replace("lightning", "static")
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    SCRIPT,
                    run_row,
                    str(args.item_ms),
                    str(args.steps),
                    str(args.epochs),
                    str(args.batch),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            lines = out.stdout.splitlines()
            wall = next((float(x.split()[1]) for x in lines if x.startswith("WALL")), None)
            if wall is None:
                print(f"{row}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            walls[row].append(wall)
            extra = next((x for x in lines if x.startswith("REPORT")), "")
            print(f"repeat {repeat} {row:>14}: {wall:6.2f} s {extra}", flush=True)
        # After every repeat: a run cut short still says something.
        _summary(walls, cores, repeat + 1, args.backend)


if __name__ == "__main__":
    main()
