"""A Grain `MapDataset` fit: keras-loadtune against a static grid and Grain's own advice.

Issue #25's case for Grain, the twin of `benchmarks/torch_loader.py`: a `MapDataset`
whose items wait `--item-ms` (30 ms, a remote read) and decode a small JPEG (Pillow),
batched inside the dataset as a Grain user writes it,
`grain.MapDataset.source(blobs).shuffle(seed=0).map(decode).batch(n)`. Rows, each a
fresh interpreter (every thread pool and worker process starts cold, as in a user's
run), alternating within each repeat:

- `klt`: `tuner.wrap(ds)` with a `LoadTuner`, from the pipeline as the user wrote it (no
  options: keras-loadtune serves batch `i` = `ds[i]` from its own engine and tunes it);
- `static:t:T:B`: plain Keras on `ds.to_iter_dataset(ReadOptions(num_threads=T,
  prefetch_buffer_size=B))`; `static:t:16:500` is Grain's default `ReadOptions`, which
  Keras itself uses for a bare `MapDataset` (`iter(ds)`), so it is the user's own
  pipeline run unwrapped;
- `static:p:W:T`: plain Keras on `ds.to_iter_dataset(ReadOptions(num_threads=T))
  .mp_prefetch(MultiprocessingOptions(num_workers=W))`, W from 1 to the cores;
- `folklore`: what Grain itself suggests, `grain.experimental.pick_performance_config`
  (it exists in grain 0.2.x): `ram_budget_mb=1024`, no worker or buffer cap, which sizes
  the workers from RAM alone and so gives `num_workers` = the cores, and the
  `ReadOptions` it returns; the pipeline is then
  `ds.to_iter_dataset(read_options).mp_prefetch(multiprocessing_options)`. Picking
  (it reads 5 elements) is inside the row's clock, as it is inside a user's run. Where
  the installed grain has no `pick_performance_config`, the row runs `num_workers` =
  cores with Grain's default `ReadOptions` (the row's line says which).

Printed: the median wall time of each row, then keras-loadtune against the best static
row (target <= 1.10x), against the pipeline run unwrapped and against Grain's suggestion
(target < 1.0x), and the tuned config in Grain terms (the report's decision, the config
kept, and the trial that ran the most steps: one still running when the fit ends is not
kept, yet it may have run most of the fit). The machine's load moves every figure:
compare rows of one run only.

    python benchmarks/grain_loader.py [--repeats 2] [--backend jax] [--item-ms 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

SCRIPT = r"""
import io, math, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import logging
logging.getLogger("absl").setLevel(logging.ERROR)
import numpy as np
import keras
import grain
from PIL import Image

ROW, ITEM_MS = sys.argv[1], float(sys.argv[2])
STEPS, EPOCHS, BATCH = (int(v) for v in sys.argv[3:6])


def _jpeg(seed):
    pixels = np.random.default_rng(seed).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=85)
    return out.getvalue()


def decode(item):  # defined in __main__, as in a user's script
    i, blob = item
    time.sleep(ITEM_MS / 1000)  # a remote read
    image = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"), np.float32)
    small = image[::4, ::4].reshape(-1) / 255.0
    return small, np.asarray([float(i % 2)], np.float32)


def dataset():
    blobs = [(i, _jpeg(i % 16)) for i in range(STEPS * BATCH)]
    return grain.MapDataset.source(blobs).shuffle(seed=0).map(decode).batch(BATCH)


def grain_terms(config):
    # A LoaderConfig as the Grain options that run it on this MapDataset.
    if config.inline:  # read on the training thread
        return "ds.to_iter_dataset(ReadOptions(num_threads=0))"
    if config.use_multiprocessing:
        per_worker = max(math.ceil(config.max_queue_size / config.workers), 1)
        return (f"ds.to_iter_dataset().mp_prefetch(MultiprocessingOptions("
                f"num_workers={config.workers}, per_worker_buffer_size={per_worker}))")
    return (f"ds.to_iter_dataset(ReadOptions(num_threads={config.workers}, "
            f"prefetch_buffer_size={max(config.max_queue_size, config.workers)}))")


model = keras.Sequential([keras.Input((24 * 24 * 3,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(1)])
model.compile("adam", "mse")
kind, _, rest = ROW.partition(":")
ds = dataset()
t0 = time.perf_counter()
if kind == "klt":
    import keras_loadtune as klt

    tuner = klt.LoadTuner(storage=None, verbose=0)
    train = tuner.wrap(ds)
    model.fit(train, epochs=EPOCHS, verbose=0, callbacks=[tuner])
    wall = time.perf_counter() - t0
    report = tuner.report
    # What ran most of the fit: a trial still running when the fit ended is "pruned"
    # and not kept, yet it may have served most batches.
    most = max(report.trials, key=lambda t: t.steps).config if report.trials else tuner.best_config
    print("REPORT", report.decision, "kept:", tuner.best_config, "| ran most:", most, "=",
          grain_terms(most))
    train.close()
elif kind == "folklore":
    pick = getattr(grain.experimental, "pick_performance_config", None)
    if pick is not None:
        perf = pick(ds.to_iter_dataset(), ram_budget_mb=1024, max_workers=None,
                    max_buffer_size=None)
        read, mp = perf.read_options or grain.ReadOptions(), perf.multiprocessing_options
        how = "pick_performance_config"
    else:
        read = grain.ReadOptions()
        mp = grain.MultiprocessingOptions(num_workers=len(os.sched_getaffinity(0)))
        how = "num_workers=cores"
    picked = time.perf_counter() - t0
    model.fit(ds.to_iter_dataset(read).mp_prefetch(mp), epochs=EPOCHS, verbose=0)
    wall = time.perf_counter() - t0
    print("REPORT", how, read, mp, f"(picking {picked:.2f} s)")
else:
    mode, *values = rest.split(":")
    if mode == "t":
        threads, buffer = (int(v) for v in values)
        train = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                     prefetch_buffer_size=buffer))
    else:
        workers, threads = (int(v) for v in values)
        train = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads)).mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers))
    model.fit(train, epochs=EPOCHS, verbose=0)
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
        print(f"  {row:>16}: {value:6.2f} s")
    static = {r: v for r, v in med.items() if r.startswith("static")}
    if "klt" in med and static:
        best = min(static, key=static.get)
        print(f"klt / best static ({best}): {med['klt'] / static[best]:.2f}x (target <= 1.10x)")
    if "klt" in med and "static:t:16:500" in med:
        print(
            f"klt / unwrapped (static:t:16:500, Grain's default ReadOptions, which Keras "
            f"uses for a bare MapDataset): {med['klt'] / med['static:t:16:500']:.2f}x"
        )
    if "klt" in med and "folklore" in med:
        print(
            f"klt / folklore (Grain's pick_performance_config): "
            f"{med['klt'] / med['folklore']:.2f}x (target < 1.0x)"
        )
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--item-ms", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=60, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rows", nargs="*", help="only these rows (e.g. klt static:t:8:16)")
    args = parser.parse_args()
    cores = _cores()
    threads = [f"static:t:{t}:{500 if t == 16 else 2 * t}" for t in (4, 8, 16, 32, 64)]
    processes = [f"static:p:{w}:16" for w in range(1, cores + 1)]
    rows = args.rows or ["klt", *threads, *processes, "folklore"]
    env = {**os.environ, "KERAS_BACKEND": args.backend}
    walls: dict[str, list[float]] = {r: [] for r in rows}
    for repeat in range(args.repeats):
        order = rows if repeat % 2 == 0 else rows[::-1]  # alternate
        for row in order:
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    SCRIPT,
                    row,
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
            print(f"repeat {repeat} {row:>16}: {wall:6.2f} s {extra}", flush=True)
        # After every repeat: a run cut short still says something.
        _summary(walls, cores, repeat + 1, args.backend)


if __name__ == "__main__":
    main()
