"""`LoadTuner`: the Keras callback that measures data wait and tunes the loader live."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import keras

from keras_loadtune import persistence
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.engine.prefetcher import check_seconds
from keras_loadtune.keras_adapter import _hooks
from keras_loadtune.keras_adapter._arguments import tuner_settings
from keras_loadtune.keras_adapter._epoch_log import EpochLog, ensure_log_handler
from keras_loadtune.keras_adapter.dataset import TunedPyDataset, check_keras3, wrap_input
from keras_loadtune.keras_adapter.input_facts import describe_input
from keras_loadtune.lifecycle.fit import FitLifecycle
from keras_loadtune.report import TuningReport
from keras_loadtune.storage import check_storage

logger = logging.getLogger("keras_loadtune")

WAIT_KEY = "data_wait_fraction"
_VERBOSE = (0, 1, 2)


def _no_tick(batch: int, logs: dict | None = None) -> None:
    """The detached tick: what Keras calls at each batch begin once tuning has ended."""


class LoadTuner(keras.callbacks.Callback):
    """Measures how long training waits for data, and tunes the input pipeline live.

    Add it to `fit` and wrap your dataset with `tuner.wrap`. During the first steps it
    times, per step, how long the model waited for its batch versus how long the step
    computed (compile/trace steps excluded). If the wait is under `wait_threshold` of
    the step time, training is compute-bound: it says so once and keeps your config.
    Otherwise an Optuna study picks `workers`, `max_queue_size` and threads vs processes
    trial by trial on live training steps (seeded by an analytical model of what it
    measured), the loader is restarted with each trial's config between two steps
    without losing or repeating a batch, and the fastest config is kept. Your own
    config is always one of the measured candidates, so the result is never slower
    than doing nothing.

    Every epoch, `data_wait_fraction` is added to Keras `logs` (so History, CSVLogger,
    TensorBoard and the progress bar show it). The result is `tuner.report`, also
    logged through `logging.getLogger("keras_loadtune")` when tuning ends.

    The tuner never breaks training: if tuning fails (storage down, unpicklable
    dataset, an Optuna error), it logs one warning, keeps the best config it knows,
    and training goes on.

    Args:
        max_thread_workers: Most worker threads to try. Default: `min(32, 4 * cores)`;
            threads beyond the core count pay off for latency-bound loaders (I/O,
            network). `max_workers` is accepted as an alias.
        max_process_workers: Most worker processes to try. Default: the core count.
        queue_size_range: Inclusive `(min, max)` for `max_queue_size`. Default `(1, 64)`.
        modes: Worker kinds to search: any of `"thread"`, `"process"`.
        max_trials: Most configs measured per tuning round (yours included). Default 10.
        max_tuning_steps: Training steps tuning may use (probe included). Default 800.
        max_tuning_seconds: Seconds tuning may use. Default 300.
        ram_budget_bytes: Bytes the loader may add (worker processes, queued batches).
            Default: 50% of the RAM available at start, as tf.data does. `ram_budget` is
            accepted as an alias.
        sampler: An `optuna.samplers.BaseSampler`; default a seeded TPE that knows the
            RAM constraint.
        seed: Seed for the default sampler.
        wait_threshold: Wait fraction under which training counts as compute-bound.
            Default 0.05 (the TensorFlow profiler's "not input-bound" line).
        probe_steps: Steps measured on your config before deciding. Default 20.
        warmup_steps: First steps of each `fit` ignored (graph tracing). Default 2.
        timeout: Per-batch timeout (seconds) for datasets this tuner wraps.
        verbose: 0 silent (warnings only), 1 a few log lines, 2 every trial.
        settings: A full `TunerSettings` (advanced); the keyword knobs above override it.
        storage: Where trials are kept (`keras_loadtune.persistence`): `"default"` an
            Optuna journal file in the user's cache dir (`$XDG_CACHE_HOME/
            keras_loadtune/studies.journal`), `None` in memory only, or an Optuna
            storage URL (`sqlite:///klt.db`, `postgresql://...`) a fleet can share. A
            rerun of the same workload on the same kind of host starts on the stored
            best config from its first batch (set by `wrap`, verified over a few
            steps) instead of tuning again. If the storage cannot
            be opened, one warning is logged and tuning runs in memory.
        study_name: The study to use in `storage`; default `klt-<dataset class>-<hash>`
            of a fingerprint of the workload and host (see `keras_loadtune.persistence`).

    Example:

    ```python
    import keras_loadtune as klt

    tuner = klt.LoadTuner()
    model.fit(tuner.wrap(train_ds), validation_data=tuner.wrap(val_ds),
              epochs=5, callbacks=[tuner])
    tuner.best_config      # LoaderConfig(workers=..., max_queue_size=..., ...)
    print(tuner.report)    # table of trials, winner, speedup, time spent tuning
    ```
    """

    def __init__(
        self,
        *,
        max_thread_workers: int | None = None,
        max_process_workers: int | None = None,
        queue_size_range: tuple[int, int] | None = None,
        modes: tuple[str, ...] | list[str] | None = None,
        max_trials: int | None = None,
        max_tuning_steps: int | None = None,
        max_tuning_seconds: float | None = None,
        ram_budget_bytes: int | None = None,
        sampler: Any = None,
        seed: int | None = None,
        wait_threshold: float | None = None,
        probe_steps: int | None = None,
        warmup_steps: int = 2,
        timeout: float | None = None,
        verbose: int = 1,
        settings: TunerSettings | None = None,
        storage: str | None = "default",
        study_name: str | None = None,
        max_workers: int | None = None,
        ram_budget: int | None = None,
    ):
        super().__init__()
        check_keras3("LoadTuner")
        if verbose not in _VERBOSE:
            raise ValueError(f"verbose must be one of {_VERBOSE}; got {verbose!r}.")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0; got {warmup_steps!r}.")
        check_storage(storage)
        persistence.check_study_name(study_name)
        check_seconds("timeout", timeout)
        self.settings = tuner_settings(
            settings,
            max_thread_workers=max_thread_workers,
            max_process_workers=max_process_workers,
            queue_size_range=queue_size_range,
            modes=modes,
            max_trials=max_trials,
            max_tuning_steps=max_tuning_steps,
            max_tuning_seconds=max_tuning_seconds,
            ram_budget_bytes=ram_budget_bytes,
            sampler=sampler,
            seed=seed,
            wait_threshold=wait_threshold,
            probe_steps=probe_steps,
            max_workers=max_workers,
            ram_budget=ram_budget,
        )
        self.verbose = verbose
        self.warmup_steps = warmup_steps
        self.timeout = timeout
        self.storage = storage
        self.study_name = study_name
        self._log = EpochLog(logger)
        self._life = FitLifecycle(
            self.settings,
            log=self._log,
            warmup_steps=warmup_steps,
            storage=storage,
            study_name=study_name,
            verbose=verbose,
            fit_total_steps=self._fit_total_steps,
            describe_input=describe_input,
        )
        ensure_log_handler(logger, verbose)

    # -- public API ------------------------------------------------------------------------
    def wrap(
        self,
        dataset: keras.utils.PyDataset | Callable[[], Iterator[Any]] | Any,
        config: LoaderConfig | None = None,
        **kwargs: Any,
    ) -> TunedPyDataset | Any:
        """Wraps `dataset` so this tuner can reconfigure its loader while training runs.

        The wrapped dataset starts from the dataset's own `workers`, `max_queue_size` and
        `use_multiprocessing` (or `config`). Datasets wrapped by the same tuner but not
        used for training (validation, evaluate, predict) get the tuned config too.

        A PyTorch `DataLoader` over a map-style dataset and a Grain `MapDataset` of
        batches are served batch by batch in their own order (starting from the
        loader's `num_workers` / `prefetch_factor`). A Grain `IterDataset` /
        `DataLoader` comes back as a `GrainIterSource` that Grain runs: its threads
        change at the next batch, its worker count between epochs. A
        `tf.data.Dataset` and an iterable-style `DataLoader` are returned unchanged:
        measured only, and the report names their own knobs.

        Example:

        ```python
        train = tuner.wrap(train_ds)
        model.fit(train, epochs=3, callbacks=[tuner])
        ```
        """
        kwargs.setdefault("timeout", self.timeout)
        wrapped, plan = wrap_input(dataset, config, **kwargs)
        if plan.note:
            self._life.add_note(plan.note)  # reaches the report
        if not plan.measured_only:  # a TunedPyDataset, or a GrainIterSource (Grain runs it)
            self._life.register(wrapped)  # measured and tuned; a rerun starts on the stored best
        return wrapped

    @property
    def best_config(self) -> LoaderConfig | None:
        """The config tuning settled on (the current one while still tuning)."""
        return self._life.best_config

    @property
    def phase(self) -> str:
        """`"idle"` before training, else the tuning session's phase."""
        return self._life.phase

    @property
    def report(self) -> TuningReport:
        """The tuning report (`print` it, `.to_dict()`, or display it in a notebook)."""
        return self._life.report()

    @property
    def ticking(self) -> bool:
        """Whether the tuner runs code at every training step (it decides)."""
        return "on_train_batch_begin" not in self.__dict__

    @property
    def _session(self) -> TuningSession | None:
        return self._life.session

    @property
    def _starter(self) -> Any:
        return self._life._starter

    # -- Keras hooks -----------------------------------------------------------------------
    # No `on_train_batch_end`: Keras would then call every batch end on the training
    # thread (its asynchronous dispatch on JAX and PyTorch checks that hook). While the
    # tuner decides, `on_train_batch_begin` ticks; once tuning has ended it is detached
    # (`_detach_tick`) and the epoch's steps are read from the engine's hand-over records.
    def on_train_begin(self, logs: dict | None = None) -> None:
        # Which consumer is this fit's training data is known at its first step: the one
        # whose stream served it (validation and evaluate run later).
        self._life.begin_fit(a.py_dataset for a in _hooks.live_adapters())
        self._sync_tick()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._log.release()  # the previous epoch's bar has finished its line
        self._log.hold = (self.params or {}).get("verbose") == 1
        self._life.begin_epoch()
        epochs = (self.params or {}).get("epochs")
        if isinstance(epochs, int):  # a source that repeats its pass may start the next early
            for ds in self._life.datasets:
                plan_passes = getattr(ds, "plan_passes", None)
                if plan_passes is not None:
                    plan_passes(epochs - epoch - 1)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._life.tick()
        if not self._life.ticking:
            self._detach_tick()

    def on_test_begin(self, logs: dict | None = None) -> None:
        # Validation starts: the epoch's last training step ended (not a batch hook).
        self._life.close_cycle()
        self._sync_tick()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._life.close_cycle()
        fraction = self._life.end_epoch(epoch)
        if fraction is not None and logs is not None:
            logs[WAIT_KEY] = fraction
        self._sync_tick()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._log.hold = False
        self._log.release()
        self._life.end_fit()
        self._sync_tick()

    # -- the tick --------------------------------------------------------------------------
    def _sync_tick(self) -> None:
        """Tick at every training step while the lifecycle decides; else a no-op."""
        if self._life.ticking:
            self.__dict__.pop("on_train_batch_begin", None)
        elif self.ticking:
            self._detach_tick()

    def _detach_tick(self) -> None:
        """No Python of ours per step: Keras calls a no-op at each batch begin."""
        self.on_train_batch_begin = _no_tick  # type: ignore[method-assign]

    def _fit_total_steps(self) -> int | None:
        """Steps of this fit from Keras's `params` (`epochs x steps`), `None` if unknown."""
        params = getattr(self, "params", None) or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        if isinstance(epochs, int) and isinstance(steps, int) and epochs > 0 and steps > 0:
            return epochs * steps
        return None
