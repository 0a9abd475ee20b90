"""The strategies a user has for feeding `model.fit`, each run as one real, timed Keras fit.

- `keras-default`: the plain PyDataset with Keras's defaults (1 worker, no tuner).
- `folklore`: `workers=os.cpu_count()`, `use_multiprocessing=True`, `max_queue_size=10`.
- `oracle`: the best static plain-Keras config of an exhaustive grid (hindsight; the grid
  search itself is not counted in its time).
- `tf.data`: `Dataset.range(n).map(py_function(loader[i]), AUTOTUNE).prefetch(AUTOTUNE)`.
- `keras-loadtune`: `LoadTuner` + `tuner.wrap`, starting from Keras's default config; tuning
  (trials, worker start-ups) counts in its time.
- `floor`: the same model on the same batches already in memory (the compute floor).

Each run builds a fresh model (so all pay the same tracing cost), times `model.fit` only,
and samples the RSS of the process tree (this process + worker processes) in a thread.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
from scenarios import InMemoryDataset, Scenario

import keras_loadtune as klt
from keras_loadtune.decision.resources import process_tree_rss

BASE_STRATEGIES = ("keras-default", "folklore", "oracle", "tf.data", "keras-loadtune", "floor")
if importlib.util.find_spec("tensorflow") is None:  # JAX/PyTorch-only machines: no tf.data row
    BASE_STRATEGIES = tuple(s for s in BASE_STRATEGIES if s != "tf.data")
DEFAULT_CONFIG = {"workers": 1, "use_multiprocessing": False, "max_queue_size": 10}
RSS_INTERVAL_S = 0.05


def folklore_config() -> dict[str, Any]:
    return {"workers": os.cpu_count() or 1, "use_multiprocessing": True, "max_queue_size": 10}


def oracle_grid(quick: bool) -> list[dict[str, Any]]:
    """Static plain-Keras configs the oracle chooses from."""
    if quick:
        pairs = [(1, 10, False), (4, 10, False)]
    else:
        pairs = [
            (1, 10, False),
            (2, 10, False),
            (4, 10, False),
            (4, 32, False),
            (8, 10, False),
            (8, 32, False),
            (16, 10, False),
            (16, 32, False),
            (1, 10, True),
            (2, 10, True),
            (4, 10, True),
        ]
        cores = os.cpu_count() or 1
        # Big machines: processes up to the core count, threads beyond 16.
        pairs += [(w, 10, True) for w in (8, 16, 32, 64) if w <= cores]
        pairs += [(w, 2 * w, False) for w in (32, 64) if w <= 4 * cores and cores >= 8]
    return [{"workers": w, "max_queue_size": q, "use_multiprocessing": p} for w, q, p in pairs]


def describe(cfg: dict[str, Any]) -> str:
    return str(klt.LoaderConfig(**cfg))


@dataclass
class RunResult:
    scenario: str
    strategy: str
    repeat: int
    wall_s: float
    peak_rss: int
    rss_before: int
    steps: int
    config: str = ""
    tuning_s: float | None = None
    decision: str | None = None
    trials: int | None = None
    process_mode: bool | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RssSampler:
    """Peak RSS of this process and its descendants, sampled every `interval` s in a thread."""

    def __init__(self, interval: float = RSS_INTERVAL_S):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, process_tree_rss())
            except Exception:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = process_tree_rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, process_tree_rss())


class StepClock(keras.callbacks.Callback):
    """Intervals between consecutive batch ends (wait + compute), first step of each
    epoch excluded."""

    def __init__(self) -> None:
        super().__init__()
        self.intervals: list[float] = []
        self._last: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._last = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.intervals.append(now - self._last)
        self._last = now

    @property
    def median_step_s(self) -> float | None:
        return float(np.median(self.intervals)) if self.intervals else None


def timed_fit(
    model: keras.Model, data: Any, epochs: int, callbacks=None
) -> tuple[float, int, int, float | None]:
    """Runs `fit`; returns (wall seconds, peak tree RSS, tree RSS just before, median step)."""
    gc.collect()
    clock = StepClock()
    before = process_tree_rss()
    with RssSampler() as rss:
        t0 = time.perf_counter()
        model.fit(data, epochs=epochs, callbacks=[*(callbacks or []), clock], verbose=0)
        wall = time.perf_counter() - t0
    return wall, rss.peak, before, clock.median_step_s


def _fresh_model(scenario: Scenario) -> keras.Model:
    keras.utils.set_random_seed(0)
    return scenario.make_model()


def tf_dataset(plain: keras.utils.PyDataset, n: int, sample: tuple[np.ndarray, np.ndarray]):
    """The tf.data alternative: the same loader behind `py_function`, AUTOTUNE everywhere."""
    import tensorflow as tf

    x0, y0 = sample
    dtypes = [tf.as_dtype(x0.dtype), tf.as_dtype(y0.dtype)]

    def load(i):
        x, y = plain[int(i.numpy())]
        return x, y

    def tf_load(i):
        x, y = tf.py_function(load, [i], dtypes)
        x.set_shape(x0.shape)
        y.set_shape(y0.shape)
        return x, y

    ds = tf.data.Dataset.range(n).map(tf_load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class Runner:
    """Runs strategies of one scenario in this process (one model per run)."""

    def __init__(self, scenario: Scenario, mode: str, env: dict[str, Any]):
        self.scenario = scenario
        self.mode = mode
        self.env = env
        self.epochs, self.steps = scenario.size(mode)
        distinct = scenario.floor_distinct or self.steps
        self.floor_batches = [scenario.batch(i, env) for i in range(min(distinct, self.steps))]
        self.oracle: dict[str, Any] | None = None
        self.oracle_grid: list[dict[str, Any]] = []

    # -- strategies ----------------------------------------------------------------------
    def run(self, strategy: str, repeat: int) -> RunResult:
        s = self.scenario
        try:
            return self._run(strategy, repeat)
        except Exception as exc:  # a failing strategy is reported, not fatal
            return RunResult(
                s.name, strategy, repeat, float("nan"), 0, 0, self.epochs * self.steps,
                error=f"{type(exc).__name__}: {exc}",
            )  # fmt: skip

    def _result(self, strategy, repeat, timing, **kw) -> RunResult:
        wall, peak, before, step = timing
        result = RunResult(
            self.scenario.name, strategy, repeat, wall, peak, before,
            self.epochs * self.steps, **kw,
        )  # fmt: skip
        result.extra["median_step_s"] = step
        return result

    def _run(self, strategy: str, repeat: int) -> RunResult:
        s, n, epochs = self.scenario, self.steps, self.epochs
        model = _fresh_model(s)
        if strategy == "floor":
            data = InMemoryDataset(self.floor_batches, n)
            return self._result(strategy, repeat, timed_fit(model, data, epochs), config="memory")
        if strategy == "tf.data":
            data = tf_dataset(s.make_dataset(n, self.env), n, self.floor_batches[0])
            return self._result(strategy, repeat, timed_fit(model, data, epochs), config="AUTOTUNE")
        if strategy == "keras-loadtune":
            return self._run_tuner(model, repeat)
        if strategy == "keras-default":
            cfg = DEFAULT_CONFIG
        elif strategy == "folklore":
            cfg = folklore_config()
        elif strategy == "oracle":
            cfg = self.oracle if self.oracle is not None else self.search_oracle()
        elif strategy in s.extra:
            cfg = s.extra[strategy]
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
        data = s.make_dataset(n, self.env, **cfg)
        timing = timed_fit(model, data, epochs)
        return self._result(strategy, repeat, timing, config=describe(cfg))

    def _run_tuner(self, model: keras.Model, repeat: int) -> RunResult:
        s = self.scenario
        # storage=None: every repeat measures a cold tune (warm starts: benchmarks/warm_start.py)
        tuner = klt.LoadTuner(seed=0, verbose=0, ram_budget=s.ram_budget, storage=None)
        plain = s.make_dataset(self.steps, self.env, **DEFAULT_CONFIG)
        with tuner.wrap(plain) as train:
            timing = timed_fit(model, train, self.epochs, callbacks=[tuner])
        report = tuner.report
        best = tuner.best_config
        return self._result(
            "keras-loadtune",
            repeat,
            timing,
            config=str(best) if best is not None else "",
            tuning_s=report.tuning_seconds,
            decision=report.decision,
            trials=len(report.trials),
            process_mode=bool(best.use_multiprocessing) if best is not None else None,
            extra={
                "ram_budget": int(tuner.settings.ram_budget_bytes),
                "probe_wait_fraction": report.probe_wait_fraction,
                "epoch_wait_fractions": list(report.epoch_wait_fractions),
                "trial_configs": [str(t.config) for t in report.trials],
                "notes": list(report.notes),
                "report": str(report),
            },
        )

    # -- oracle ----------------------------------------------------------------------------
    def search_oracle(self) -> dict[str, Any]:
        """Times a short fit of every grid config on one (already traced) model; keeps the
        fastest. Each config's pool start-up is included, as in a real run."""
        s = self.scenario
        quick = self.mode == "quick"
        grid_steps = min(self.steps, 12 if quick else 50)
        model = _fresh_model(s)
        model.fit(InMemoryDataset(self.floor_batches, 3), epochs=1, verbose=0)  # trace
        results = []
        for cfg in oracle_grid(quick):
            data = s.make_dataset(grid_steps, self.env, **cfg)
            t0 = time.perf_counter()
            try:
                model.fit(data, epochs=1, verbose=0)
                wall = time.perf_counter() - t0
            except Exception as exc:
                wall = float("inf")
                print(f"  oracle grid {describe(cfg)} failed: {exc}", flush=True)
            results.append({"config": describe(cfg), "cfg": cfg, "wall_s": wall})
        best = min(results, key=lambda r: r["wall_s"])
        self.oracle = best["cfg"]
        self.oracle_grid = [
            {"config": r["config"], "steps_per_s": grid_steps / r["wall_s"]} for r in results
        ]
        return self.oracle

    # -- loader profile (for the simulator) ------------------------------------------------
    def profile_loader(self, samples: int = 3) -> dict[str, float]:
        """Median wall and CPU seconds of one `__getitem__` in this thread."""
        ds = self.scenario.make_dataset(self.steps, self.env)
        walls, cpus = [], []
        for i in range(samples):
            w0, c0 = time.perf_counter(), time.thread_time()
            ds[i]
            cpus.append(time.thread_time() - c0)
            walls.append(time.perf_counter() - w0)
        return {"produce_wall_s": float(np.median(walls)), "produce_cpu_s": float(np.median(cpus))}
