"""Cold process pool: what a first process pool costs, and a wrapped dataset vs plain Keras.

Side by side in one run, each case in a fresh interpreter (the forkserver starts once per
program), the TensorFlow backend loaded in the trainer, the dataset a `PyDataset`
subclass defined in the script's `__main__` (the usual case: nothing to preload):

(a) decision to first batch of a new 2-process pool (a `reconfigure` from threads),
    wall and CPU seconds (trainer, forkserver and workers, via psutil): as before
    (no preload for a `__main__` class, each worker imports Keras and TensorFlow:
    `KERAS_LOADTUNE_PRELOAD=0 KERAS_LOADTUNE_WORKER_BACKEND=trainer`), Keras with the
    trainer's backend preloaded by the forkserver, Keras's `numpy` backend preloaded
    (`KERAS_LOADTUNE_WORKER_BACKEND=numpy`: a dataset from an importable module), the
    default for this NumPy-only `__main__` dataset (a stand-in base class: workers
    import no Keras), and the default with the forkserver already warm (as after the
    prewarm at `wrap` or during the probe); then the same class in an importable
    module that imports Keras at its top (as in most projects): before (the module
    and Keras preloaded by the forkserver, numpy backend:
    `KERAS_LOADTUNE_WORKER_BACKEND=numpy`) and by default (its classes sent by value
    with the stand-in base: no Keras, the module never imported in workers);
(b) `fit` of a tiny model, 12 batches x 3 epochs, on the user's own config
    (`workers=2, use_multiprocessing=True`): plain Keras vs wrapped, per epoch;
(c) a break-down of (a): forkserver start (its preload imports), a worker's start
    (unpickling the dataset, with the imports that pulls in), shared-memory copy of
    the dataset's big array.

    python benchmarks/cold_pool.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

COMMON = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np
import psutil
import tensorflow as tf
import keras


class Batches(keras.utils.PyDataset):  # defined in __main__: pickled by value
    def __init__(self, n=12, big_mib=0, **kw):
        super().__init__(**kw)
        self.n = n
        self.big = np.ones(big_mib << 18, np.float32) if big_mib else None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = np.full((16, 8), float(i), np.float32)
        t = time.perf_counter() + 0.01
        while time.perf_counter() < t:
            pass
        return x, np.zeros((16, 1), np.float32)


def cpu_all():
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total
"""

MODULE = r"""
import time

import keras
import numpy as np


class Batches(keras.utils.PyDataset):  # in an importable module that imports Keras
    def __init__(self, n=12, big_mib=0, **kw):
        super().__init__(**kw)
        self.n = n
        self.big = np.ones(big_mib << 18, np.float32) if big_mib else None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = np.full((16, 8), float(i), np.float32)
        t = time.perf_counter() + 0.01
        while time.perf_counter() < t:
            pass
        return x, np.zeros((16, 1), np.float32)
"""

COLD = (
    COMMON
    + r"""
from keras_loadtune import LoaderConfig
from keras_loadtune.engine import Prefetcher, prewarm_processes

if os.environ.get("MODULE_DIR"):  # the class from an importable module instead
    sys.path.insert(0, os.environ["MODULE_DIR"])
    from klt_bench_user_data import Batches
ds = Batches(big_mib=int(os.environ.get("BIG_MIB", "0")))
if os.environ.get("PREWARM") == "1":  # as at wrap / probe: the forkserver is ready first
    from keras_loadtune.engine.process._start import WorkerProcess

    prewarm_processes(ds)
    probe = WorkerProcess(target=os.getpid)  # forked once the forkserver's preload is done
    probe.start()
    probe.join()
with Prefetcher(ds, LoaderConfig(1, 2, False)) as pf:
    pf.begin_pass(range(12))
    pf.next()
    w0, c0 = time.perf_counter(), cpu_all()
    pf.reconfigure(LoaderConfig(2, 2, True))
    pf.next()
    wall, cpu = time.perf_counter() - w0, cpu_all() - c0
    print(json.dumps({"wall": wall, "cpu": cpu}))
"""
)

BREAKDOWN = (
    COMMON
    + r"""
import pickle
from keras_loadtune.engine import prewarm_processes
from keras_loadtune.engine.process import ProcessPool, _shipping
from keras_loadtune.engine.process._start import WorkerProcess


class Sink:
    def on_result(self, *a): pass
    def on_error(self, *a): pass
    def on_fatal(self, *a): pass


ds = Batches()
out = {}
t0, c0 = time.perf_counter(), cpu_all()
prewarm_processes(ds)
probe = WorkerProcess(target=os.getpid)  # forked once the forkserver's preload is done
probe.start()
probe.join()
out["forkserver"] = (time.perf_counter() - t0, cpu_all() - c0)
pool = ProcessPool(ds, Sink(), "bench")
t0, c0 = time.perf_counter(), cpu_all()
pool.resize(2)
out["fork + unpickle, 2 workers"] = (time.perf_counter() - t0, cpu_all() - c0)
pool.close()
big = Batches(big_mib=256)
shipper = _shipping.SourceShipper(f"klt_bench_{os.getpid()}_")
t0, c0 = time.perf_counter(), cpu_all()
shipper.ship(big)
out["shm copy, 256 MiB array"] = (time.perf_counter() - t0, cpu_all() - c0)
shipper.close()
print(json.dumps(out))
"""
)

IMPORTS = r"""
import resource, sys, time
t = time.perf_counter()
import keras
u = resource.getrusage(resource.RUSAGE_SELF)
print('{"wall": %f, "cpu": %f}' % (time.perf_counter() - t, u.ru_utime + u.ru_stime))
"""

FIT = (
    COMMON
    + r"""
import keras_loadtune as klt

class Times(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.t)

times = []
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
model.compile("sgd", "mse")
ds = Batches(workers=2, use_multiprocessing=True)
if os.environ.get("WRAPPED") == "1":
    ds = klt.wrap(ds)
t0 = time.perf_counter()
model.fit(ds, epochs=3, verbose=0, callbacks=[Times()])
total = time.perf_counter() - t0
print(json.dumps({"epochs": times, "total": total}))
"""
)


def run_child(code: str, env: dict[str, str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
        path = f.name
    try:
        out = subprocess.run(
            [sys.executable, path],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.unlink(path)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--parts", default="abc")
    args = parser.parse_args()
    if "a" in args.parts:
        module_dir = tempfile.mkdtemp(prefix="klt-bench-module-")
        with open(os.path.join(module_dir, "klt_bench_user_data.py"), "w") as f:
            f.write(MODULE)
        module = {"MODULE_DIR": module_dir}
        trainer = {"KERAS_LOADTUNE_WORKER_BACKEND": "trainer"}
        cases = {
            "before: no preload, TF workers": {**trainer, "KERAS_LOADTUNE_PRELOAD": "0"},
            "keras (TF) preloaded": trainer,
            "numpy Keras preloaded": {"KERAS_LOADTUNE_WORKER_BACKEND": "numpy"},
            "default: no Keras in workers": {},
            "default, prewarmed": {"PREWARM": "1"},
            "module ds, before (numpy Keras)": {**module, "KERAS_LOADTUNE_WORKER_BACKEND": "numpy"},
            "module ds, default (by value)": module,
        }
        rows: dict[str, list[dict]] = {k: [] for k in cases}
        for _ in range(args.repeats):
            for name, env in cases.items():
                rows[name].append(run_child(COLD, env))
        print("(a) decision to first batch of a new 2-process pool, TF loaded in the trainer")
        base = None
        for name, runs in rows.items():
            wall = med([r["wall"] for r in runs])
            cpu = med([r["cpu"] for r in runs])
            base = base or (wall, cpu)
            print(
                f"  {name:<32} wall {wall:6.2f} s  CPU {cpu:6.2f} s  "
                f"(x{wall / base[0]:.2f} wall, x{cpu / base[1]:.2f} CPU of the first row)"
            )
    if "b" in args.parts:
        rows = {"plain Keras": [], "wrapped": []}
        for _ in range(args.repeats):
            rows["plain Keras"].append(run_child(FIT, {}))
            rows["wrapped"].append(run_child(FIT, {"WRAPPED": "1"}))
        print(
            "(b) fit, 12 batches x 3 epochs, workers=2 use_multiprocessing=True, __main__ dataset"
        )
        first = {k: med([r["epochs"][0] for r in v]) for k, v in rows.items()}
        later = {k: med([min(r["epochs"][1:]) for r in v]) for k, v in rows.items()}
        total = {k: med([r["total"] for r in v]) for k, v in rows.items()}
        for k in rows:
            print(
                f"  {k:<14} first epoch {first[k]:6.2f} s  later {later[k]:6.2f} s  "
                f"fit {total[k]:6.2f} s"
            )
        print(
            f"  wrapped / plain: first epoch {first['wrapped'] / first['plain Keras']:.2f}x, "
            f"later {later['wrapped'] / later['plain Keras']:.2f}x, "
            f"whole fit {total['wrapped'] / total['plain Keras']:.2f}x"
        )
    if "c" in args.parts:
        breakdown(args.repeats)


def breakdown(repeats: int) -> None:
    print("(c) break-down (wall s / CPU s, median)")
    runs = [run_child(BREAKDOWN, {}) for _ in range(repeats)]
    for key in runs[0]:
        wall = med([r[key][0] for r in runs])
        cpu = med([r[key][1] for r in runs])
        print(f"  {key:<34} {wall:6.2f} s wall  {cpu:6.2f} s CPU")
    for backend in ("numpy", "tensorflow"):
        rs = [run_child(IMPORTS, {"KERAS_BACKEND": backend}) for _ in range(repeats)]
        wall, cpu = med([r["wall"] for r in rs]), med([r["cpu"] for r in rs])
        name = f"import keras, {backend} backend"
        print(f"  {name:<34} {wall:6.2f} s wall  {cpu:6.2f} s CPU")


if __name__ == "__main__":
    main()
