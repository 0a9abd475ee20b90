"""`LoadTuner`: the Keras callback that measures data wait and tunes the loader live."""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from keras_loadtune import persistence
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.resources import process_tree_rss
from keras_loadtune.decision.session import TuningSession, default_sampler
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.engine import DatasetNotPicklableError
from keras_loadtune.engine.prefetcher import check_seconds
from keras_loadtune.keras_adapter import _hooks
from keras_loadtune.keras_adapter.dataset import TunedPyDataset, check_keras3
from keras_loadtune.measurement import StepSample, estimate_wait_fraction
from keras_loadtune.report import TuningReport

logger = logging.getLogger("keras_loadtune")

WAIT_KEY = "data_wait_fraction"
# Older LoadTuner argument names, kept as aliases of the TunerSettings field names.
_ALIASES = {"max_workers": "max_thread_workers", "ram_budget": "ram_budget_bytes"}
_VERBOSE = (0, 1, 2)


def _ensure_log_handler(verbose: int) -> None:
    """Makes INFO lines visible when the application configured no logging (as Optuna does)."""
    if verbose == 0:
        return
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
    # absl (imported by TensorFlow) puts a handler on the root logger that drops INFO;
    # only an application's own root handlers count as "logging is configured".
    root_handlers = [h for h in logging.getLogger().handlers if type(h).__name__ != "ABSLHandler"]
    if not logger.handlers and not root_handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


class _EpochLog(logging.LoggerAdapter):
    """The tuner's logger, holding its lines while Keras draws a progress bar.

    A line logged mid-epoch would be glued onto the bar's line (Keras redraws it with
    `\r`); held lines are emitted at the next epoch's start, after the bar finished its
    line, or when training ends. Errors are never held.
    """

    def __init__(self, target: logging.Logger):
        super().__init__(target, {})
        self.hold = False
        self._held: list[tuple[int, Any, tuple, dict]] = []

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.hold and level < logging.ERROR:
            if self.isEnabledFor(level):
                if kwargs.get("exc_info") is True:
                    kwargs["exc_info"] = sys.exc_info()
                self._held.append((level, msg, args, kwargs))
            return
        super().log(level, msg, *args, **kwargs)

    def release(self) -> None:
        held, self._held = self._held, []
        for level, msg, args, kwargs in held:
            self.logger.log(level, msg, *args, **kwargs)


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
        storage: Where trials are kept (`keras_loadtune.persistence`): `"default"` a
            SQLite file in the user's cache dir (`$XDG_CACHE_HOME/keras_loadtune/
            studies.db`), `None` in memory only, or an Optuna storage URL
            (`sqlite:///klt.db`, `postgresql://...`) a fleet can share. A rerun of the
            same workload on the same kind of host starts from the stored best config
            (verified over a few steps) instead of tuning again. If the storage cannot
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
        persistence.check_storage(storage)
        persistence.check_study_name(study_name)
        if settings is not None and not isinstance(settings, TunerSettings):
            raise TypeError(
                f"settings must be a TunerSettings or None; got {type(settings).__name__}."
            )
        aliases = {"max_workers": max_workers, "ram_budget": ram_budget}
        fields = {"max_thread_workers": max_thread_workers, "ram_budget_bytes": ram_budget_bytes}
        for alias, value in aliases.items():
            field = _ALIASES[alias]
            if value is not None and fields[field] is not None:
                raise TypeError(f"Pass {field} or its alias {alias}, not both.")
        max_thread_workers = max_thread_workers if max_workers is None else max_workers
        ram_budget_bytes = ram_budget_bytes if ram_budget is None else ram_budget
        overrides = {
            "max_thread_workers": max_thread_workers,
            "max_process_workers": max_process_workers,
            "queue_size_range": tuple(queue_size_range) if queue_size_range else None,
            "modes": tuple(modes) if modes is not None else None,
            "max_trials": max_trials,
            "max_tuning_steps": max_tuning_steps,
            "max_tuning_seconds": max_tuning_seconds,
            "ram_budget_bytes": ram_budget_bytes,
            "sampler": sampler,
            "seed": seed,
            "wait_threshold": wait_threshold,
            "probe_steps": probe_steps,
        }
        overrides = {k: v for k, v in overrides.items() if v is not None}
        check_seconds("timeout", timeout)
        base = settings or TunerSettings()
        try:
            self.settings = base.replace(**overrides) if overrides else base
        except (TypeError, ValueError) as exc:
            # Name the argument the user passed (an alias, if that is what it was).
            message = str(exc).replace("TunerSettings.", "LoadTuner ")
            for alias, field in _ALIASES.items():
                if aliases[alias] is not None:
                    message = message.replace(field, alias)
            raise type(exc)(message) from None
        self.verbose = verbose
        self.warmup_steps = warmup_steps
        self.timeout = timeout
        self.storage = storage
        self.study_name = study_name
        self._study_handle: persistence.StudyHandle | None = None
        self._datasets: list[TunedPyDataset] = []
        self._cursors: dict[int, int] = {}
        self._startup_cursors: dict[int, int] = {}
        self._train_ds: TunedPyDataset | None = None
        self._train_consumer: int | None = None
        self._t_last: float | None = None
        self._failed_switches: set[int] = set()
        self._session: TuningSession | None = None
        self._session_starter: threading.Thread | None = None
        self._session_box: list = []
        self._unbound: dict | None = None
        self._notes: list[str] = []
        self._broken = False
        self._reported = False
        self._epoch_fractions: list[float] = []
        self._step_times: list[float] = []
        self._epoch_wait = 0.0
        self._epoch_step = 0.0
        self._fit_step = 0
        self._drain_left: int | None = None
        self._compute_bound_reopens: list[str] = []
        self._t_begin = 0.0
        self._log = _EpochLog(logger)
        self._step_cycles: collections.deque[float] = collections.deque(maxlen=4096)
        self._acted = False
        self._worst_gap_s: float | None = None
        _ensure_log_handler(verbose)

    # -- public API ------------------------------------------------------------------------
    def wrap(
        self,
        dataset: keras.utils.PyDataset | Callable[[], Iterator[Any]],
        config: LoaderConfig | None = None,
        **kwargs: Any,
    ) -> TunedPyDataset:
        """Wraps `dataset` so this tuner can reconfigure its loader while training runs.

        The wrapped dataset starts from the dataset's own `workers`, `max_queue_size` and
        `use_multiprocessing` (or `config`). Datasets wrapped by the same tuner but not
        used for training (validation, evaluate, predict) get the tuned config too.

        Example:

        ```python
        train = tuner.wrap(train_ds)
        model.fit(train, epochs=3, callbacks=[tuner])
        ```
        """
        kwargs.setdefault("timeout", self.timeout)
        wrapped = TunedPyDataset(dataset, config, **kwargs)
        self._datasets.append(wrapped)
        return wrapped

    @property
    def best_config(self) -> LoaderConfig | None:
        """The config tuning settled on (the current one while still tuning)."""
        if self._session is not None and self._session.best_config is not None:
            return self._session.best_config
        if self._train_ds is not None:
            return self._train_ds.config
        return self._datasets[0].config if self._datasets else None

    @property
    def phase(self) -> str:
        """`"idle"` before training, else the tuning session's phase."""
        if self._broken:
            return "stopped"
        return self._session.phase if self._session is not None else "idle"

    @property
    def report(self) -> TuningReport:
        """The tuning report (`print` it, `.to_dict()`, or display it in a notebook)."""
        return self._build_report()

    # -- Keras hooks -----------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._fit_step = 0
        self._fit_started_at = None  # set when the warm-up (tracing) steps are over
        # Which consumer is this fit's training data is known at its first step: the one
        # whose stream served it (validation and evaluate run later).
        datasets = {id(a.py_dataset): a.py_dataset for a in _hooks.live_adapters()}
        datasets.update((id(ds), ds) for ds in self._datasets)
        self._unbound = {key: (ds, ds.stats.delivered) for key, ds in datasets.items()}
        for ds in self._datasets:
            self._cursors[id(ds)] = ds.stats.delivered
            self._startup_cursors[id(ds)] = len(ds.stats.startups)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._log.release()  # the previous epoch's bar has finished its line
        self._log.hold = (self.params or {}).get("verbose") == 1
        self._epoch_wait = 0.0
        self._epoch_step = 0.0
        self._step_times = []
        self._t_last = time.perf_counter()

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._t_begin = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # A step's time is the cycle from the previous step's end (or the epoch's start)
        # to this one's: it includes fetching the batch on every backend (PyTorch's
        # trainer fetches before on_train_batch_begin, so begin->end would miss it).
        now = time.perf_counter()
        start = self._t_last if self._t_last is not None else self._t_begin
        step_s = now - min(start, self._t_begin)
        self._t_last = now
        self._fit_step += 1
        try:
            if self._unbound is not None:
                self._bind_training_data(*self._training_consumer())
            records = self._new_records()
            if self._fit_step <= self.warmup_steps:
                if self._fit_step == self.warmup_steps:
                    self._fit_started_at = now
                return
            if self._fit_started_at is None:  # warmup_steps=0
                self._fit_started_at = now - step_s
            self._step_cycles.append(step_s)
            if self._acted:  # this step followed the tuner's action (its work, a switch)
                self._acted = False
                self._worst_gap_s = max(self._worst_gap_s or 0.0, step_s)
            wait_s = sum(r.wait_s for r in records) if records is not None else None
            self._epoch_step += step_s
            if wait_s is None:
                self._step_times.append(step_s)
            else:
                self._epoch_wait += min(wait_s, step_s)
                if logs is not None and self._epoch_step > 0:
                    logs[WAIT_KEY] = self._epoch_wait / self._epoch_step
                self._drive(StepSample(wait_s=min(wait_s, step_s), step_s=step_s), records)
        except Exception as exc:  # the tuner must never break training
            self._give_up(exc)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        try:
            if self._step_times:  # not wrapped: estimate from step-time spread
                fraction = estimate_wait_fraction(np.asarray(self._step_times))
            elif self._epoch_step > 0:
                fraction = self._epoch_wait / self._epoch_step
            else:
                return
            fraction = float(min(max(fraction, 0.0), 1.0))
            self._epoch_fractions.append(fraction)
            self._reopen_if_no_longer_compute_bound(epoch, fraction)
            if logs is not None:
                logs[WAIT_KEY] = fraction
        except Exception as exc:
            self._give_up(exc)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._log.hold = False
        self._log.release()
        try:
            session = self._session
            if session is not None and session.phase in ("probe", "tuning"):
                best = session.stop("training ended before tuning finished")
                if best is not None:
                    self._apply(best, background=False)
                self._spread_best(background=False)  # training is over: nothing to stall
            self._log_report_once(final=True)
            self._store_report()
        except Exception as exc:
            self._give_up(exc)
        finally:
            for ds in self._datasets:
                ds.release_workers()

    # -- internals -------------------------------------------------------------------------
    def _training_consumer(self) -> tuple[TunedPyDataset | None, int | None, int]:
        """(dataset, consumer, cursor) that served this fit's first step; None if unwrapped.

        Of the consumers that delivered since `on_train_begin`, the one that delivered
        first (a nested `evaluate` from another callback comes after the step's batch).
        """
        unbound, self._unbound = self._unbound or {}, None
        first: tuple[float, TunedPyDataset, int, int] | None = None
        for ds, cursor in unbound.values():
            for r in ds.stats.batches_since(cursor):
                if first is None or r.delivered_at < first[0]:
                    first = (r.delivered_at, ds, r.consumer, cursor)
                break  # a dataset's records are in delivery order
        if first is None:
            return None, None, 0
        return first[1], first[2], first[3]

    def _bind_training_data(
        self, ds: TunedPyDataset | None, consumer: int | None, cursor: int
    ) -> None:
        """Binds the tuner to this `fit`'s training data (a new dataset: a new study).

        Only the batches of that consumer (not validation, not a nested `evaluate` on the
        same object) are measured. Unwrapped training data leaves the tuner measuring
        the step-time spread only.
        """
        self._train_consumer = consumer
        if ds is not None:
            self._cursors[id(ds)] = cursor
            self._startup_cursors.setdefault(id(ds), len(ds.stats.startups))
        if ds is self._train_ds:
            return
        if self._train_ds is not None or self._session is not None:
            self._log.info(
                "keras_loadtune: this fit trains on another dataset (%r); it gets its own probe",
                ds,
            )
        self._train_ds = ds
        self._session = None
        self._session_starter = None
        self._study_handle = None
        self._drain_left = None
        self._reported = False
        self._epoch_fractions = []
        self._compute_bound_reopens = []
        if ds is not None and all(d is not ds for d in self._datasets):
            self._datasets.append(ds)

    def _new_records(self) -> list | None:
        """Training batches delivered since the last step; None when the data is not wrapped."""
        ds = self._train_ds
        if ds is None:
            return None
        cursor = self._cursors.get(id(ds), 0)
        delivered = ds.stats.delivered
        if delivered <= cursor:
            return []
        self._cursors[id(ds)] = delivered
        return [r for r in ds.stats.batches_since(cursor) if r.consumer == self._train_consumer]

    def _drive(self, sample: StepSample, records: list) -> None:
        if self._broken or self._train_ds is None:
            return
        if self._switch_pending():
            return  # the previous config still serves: these steps belong to no trial
        if any(r.producer is not None and r.producer != r.config for r in records):
            return  # batches the previous pool made: they would flatter or blame this trial
        if self._in_pass_tail(records):
            return
        session = self._session
        if session is None and self._draining(records):
            return
        if session is None:
            session = self._session_when_ready()
            if session is None:
                return  # still starting off the training thread: training goes on
        if session.phase in ("compute-bound", "stopped"):
            return
        if records:
            session.observe_loader(records)
        self._feed_startups(session)
        before = session.phase
        config = session.observe_step(sample)
        if before == "probe" and session.phase == "tuning":
            self._prewarm_if_processes_pending(session)
        if config is not None and config != self._train_ds.config:
            self._apply(config)
        if before != session.phase and session.phase in ("steady", "compute-bound"):
            self._log_report_once(final=False)
            self._store_report()
            if session.phase == "steady":
                self._spread_best()

    def _session_when_ready(self) -> TuningSession | None:
        """The tuning session, built off the training thread; None until it is ready.

        Importing Optuna and opening the study's storage (a SQLite file, a database
        over the network) take seconds: done inside a step they would stall training
        and count as compute. A background thread does it while training goes on at
        the current config; the probe starts on the first step after it is ready.
        """
        starter = self._session_starter
        if starter is None:
            config = self._train_ds.config
            self._session_box = box = []  # this start's result only, whatever races
            starter = self._session_starter = threading.Thread(
                target=self._start_session,
                args=(config, box),
                name="keras_loadtune-session",
                daemon=True,
            )
            starter.start()
            return None
        if starter.is_alive():
            return None
        self._session_starter = None
        result = self._session_box[0] if self._session_box else None
        if isinstance(result, BaseException):
            raise result
        if result is not None and result.baseline != self._train_ds.config:
            return None  # the loader changed meanwhile (the user reconfigured): start again
        self._session = result
        self._acted = True
        return result

    def _start_session(self, config: LoaderConfig, box: list) -> None:
        try:
            session = TuningSession(
                config,
                self.settings,
                study=self._open_study(),
                rss_probe=process_tree_rss,
                process_mode_available="process" in self.settings.modes,
                probe_in_steady_state=True,  # the stock prefetched during tracing is drained
                logger=self._log,
                steps_left=self._steps_left,
                reuse_steps=self._expected_reuse_steps(),
                workload_profile=self._workload_profile(),
            )
            # Optuna's import and the study here, not inside a training step: that costs
            # seconds, and an import inside a step kept the step's frames (fit's tf.data
            # iterators) alive until interpreter exit.
            session.prepare_study()
            box.append(session)
        except BaseException as exc:  # reported on the training thread
            box.append(exc)

    def _open_study(self) -> Any:
        """The Optuna study to tune in (`None`: the session's own, in memory); never raises."""
        if self.storage is None:
            return None
        try:
            ds = self._train_ds
            workload = persistence.workload_fingerprint(ds, list(ds.stats))
            host = persistence.host_fingerprint(self.settings.cores)
            sampler = default_sampler(self.settings)
        except Exception as exc:  # pragma: no cover - fingerprints read only our own data
            note = f"storage not used ({type(exc).__name__}: {exc}); tuned in memory"
            self._log.warning("keras_loadtune: %s", note)
            self._study_handle = persistence.StudyHandle(None, self.study_name, None, note)
            return None
        self._study_handle = persistence.open_study(
            self.storage, self.study_name, workload=workload, host=host, sampler=sampler
        )
        return self._study_handle.live

    def _store_report(self) -> None:
        """Keep the report (without trials: those are the study's) as a study user attr."""
        if self._session is None or self._study_handle is None:
            return
        for error in (
            persistence.sync_trials(self._study_handle),
            persistence.store_report(self._study_handle, self._build_report().to_dict()),
        ):
            if error is not None and error not in self._notes:
                self._notes.append(error)
                self._log.warning("keras_loadtune: %s", error)

    def _prewarm_if_processes_pending(self, session: TuningSession) -> None:
        """Starts the process machinery early when the pipeline model seeded a process trial.

        The forkserver's one-time imports (Keras, TensorFlow: seconds, and the memory of
        one more interpreter) then overlap the trials before it instead of stalling the
        first process trial. Nothing is started for loaders the model sends to threads
        (latency-bound ones) or when the RAM budget left no process seed.
        """
        if not any(c.use_multiprocessing for c in session.pending_seeds):
            return
        try:
            self._train_ds.prewarm_processes()
        except Exception as exc:  # best effort: the first process trial just starts slower
            self._log.debug("keras_loadtune: process prewarm failed: %s", exc)

    def _in_pass_tail(self, records: list) -> bool:
        """True for steps at the end of an epoch, once the workers have nothing left to start.

        The consumer then drains batches produced earlier while the workers sit idle, so
        every step runs at compute speed whatever the config; a big queue makes that
        stretch long. Those steps would flatter the config under trial, so the tuner does
        not see them (they still count in the epoch's `data_wait_fraction`). When the
        epoch is too short to have anything but such stretches, every step counts.
        """
        if not records or not records[-1].pass_tail:
            return False
        ds = self._train_ds
        n = ds.num_batches
        config = ds.config
        return n is not None and n > 2 * (config.max_queue_size + config.workers)

    def _draining(self, records: list) -> bool:
        """True while the queue filled during graph tracing is still being drained.

        Before the first step runs, the loader prefetches up to `max_queue_size` batches
        while Keras traces the model; steps fed from that stock never wait, and a probe
        measured on them would call any loader "compute-bound". The probe starts once a
        batch arrives with at most one other batch ready, or after `2 * max_queue_size`
        steps (a loader that keeps its queue full really is keeping up).
        """
        if self._drain_left is None:
            self._drain_left = 2 * self._train_ds.config.max_queue_size
        if self._drain_left <= 0:
            return False
        self._drain_left -= 1
        if records and records[-1].queue_depth <= 1:
            self._drain_left = 0
        return True

    def _reopen_if_no_longer_compute_bound(self, epoch: int, fraction: float) -> None:
        """A compute-bound verdict is re-checked once per epoch, at no per-step cost.

        If a whole epoch then waited for data well above the threshold (a cache went
        cold, the network slowed), the probe runs again on the current config and may
        start tuning.
        """
        session = self._session
        limit = self.settings.wait_threshold + self.settings.drift_margin
        if session is None or session.phase != "compute-bound" or fraction <= limit:
            return
        if len(self._compute_bound_reopens) >= self.settings.max_reopens:
            return
        reason = (
            f"epoch {epoch + 1} waited for data {fraction:.0%} of step time after a "
            f"compute-bound verdict (limit {limit:.0%}): probing again"
        )
        self._log.info("keras_loadtune: %s", reason)
        self._compute_bound_reopens.append(reason)
        self._session = None
        self._session_starter = None
        self._drain_left = 0
        self._reported = False

    def _switch_pending(self) -> bool:
        """True while a background switch starts; reports a failed one to the session once."""
        ds = self._train_ds
        if ds.pending_config is not None:
            return True
        error = ds.switch_error
        if error is not None and id(error) not in self._failed_switches:
            self._failed_switches.add(id(error))
            failed = next(
                (s.config for s in reversed(ds.stats.startups) if s.error is not None), None
            )
            note = f"{type(error).__name__}: {error}"
            if isinstance(error, DatasetNotPicklableError):
                note = f"process mode skipped: {error}"
            if self._session is not None and failed is not None:
                self._session.mark_failed(failed, note)
            else:
                self._log.warning("keras_loadtune: %s", note)
        return False

    def _apply(self, config: LoaderConfig, *, background: bool = True) -> None:
        ds = self._train_ds
        if ds is None or config == ds.config:
            return
        self._acted = True
        try:
            # A new pool of the other mode starts off the training thread while the
            # current one keeps serving (no multi-second gap between two steps).
            ds.reconfigure(config, background=background)
        except DatasetNotPicklableError as exc:
            note = f"process mode skipped: {exc}"
            if self._session is not None:
                self._session.mark_failed(config, note)  # logs the one warning
            else:
                self._log.warning("keras_loadtune: %s", note)
        except Exception as exc:
            self._log.warning("keras_loadtune: could not switch the loader to %s: %s", config, exc)
            if self._session is not None:
                self._session.mark_failed(config, f"{type(exc).__name__}: {exc}")

    def _feed_startups(self, session: TuningSession) -> None:
        ds = self._train_ds
        startups = ds.stats.startups
        start = self._startup_cursors.get(id(ds), 0)
        for record in startups[start:]:
            session.observe_startup(record.config, record.seconds)
        self._startup_cursors[id(ds)] = len(startups)

    def _spread_best(self, *, background: bool = True) -> None:
        """Datasets wrapped by this tuner but not trained on run on the tuned config."""
        best = self.best_config
        if best is None:
            return
        for ds in self._datasets:
            if ds is not self._train_ds and ds.config != best:
                try:
                    ds.reconfigure(best, background=background)  # mid-fit: never stalls a step
                except Exception as exc:
                    self._log.info("keras_loadtune: kept %s for %r: %s", ds.config, ds, exc)

    def _give_up(self, exc: Exception) -> None:
        if self._broken:
            return
        self._broken = True
        note = (
            f"tuning stopped after an internal error ({type(exc).__name__}: {exc}); "
            "training went on"
        )
        self._notes.append(note)
        self._log.warning(
            "keras_loadtune: %s", note, exc_info=self._log.isEnabledFor(logging.DEBUG)
        )

    def _log_report_once(self, *, final: bool) -> None:
        if self.verbose == 0:
            return
        report = self._build_report()
        if not self._reported and report.decision not in ("in-progress",):
            self._reported = True
            self._log.info("%s", report)
        elif final:
            self._log.info("%s", report.summary_line())

    def _fit_total_steps(self) -> int | None:
        """Steps of this fit from Keras's `params` (`epochs x steps`), `None` if unknown."""
        params = getattr(self, "params", None) or {}
        epochs, steps = params.get("epochs"), params.get("steps")
        if isinstance(epochs, int) and isinstance(steps, int) and epochs > 0 and steps > 0:
            return epochs * steps
        return None

    def _steps_left(self) -> int | None:
        """Training steps left in this fit (read by the session to weigh trials)."""
        total = self._fit_total_steps()
        return None if total is None else max(total - self._fit_step, 0)

    def _expected_reuse_steps(self) -> int:
        """A stored study is expected to serve one more fit of this length."""
        handle = self._study_handle
        if handle is None or handle.study is None:
            return 0
        return self._fit_total_steps() or 0

    def _workload_profile(self) -> dict[str, float] | None:
        """The timing profile the study was opened for (stamped on trials, matched)."""
        workload = getattr(self._study_handle, "workload", None)
        return workload.profile() if workload is not None else None

    def _fit_seconds(self) -> float | None:
        """Wall seconds since the warm-up steps ended (`None` before that).

        Tracing and compilation in the first steps cost the same with or without the
        tuner, and no rate-based estimate includes them, so the fit is timed after them.
        """
        started = getattr(self, "_fit_started_at", None)
        return None if started is None else time.perf_counter() - started

    def _build_report(self) -> TuningReport:
        session = self._session
        notes = list(self._notes)
        if session is None:
            measured_unwrapped = self._train_ds is None and bool(self._epoch_fractions)
            decision = "not-wrapped" if measured_unwrapped else "in-progress"
            if decision == "not-wrapped":
                notes.append(
                    "the training data was not wrapped, so it was only measured; to let the "
                    "tuner act, pass `tuner.wrap(dataset)` to fit()"
                )
            return TuningReport(
                decision="tuning-failed" if self._broken else decision,
                baseline_config=None,
                best_config=None,
                probe_wait_fraction=self._epoch_fractions[0] if self._epoch_fractions else None,
                final_wait_fraction=self._epoch_fractions[-1] if self._epoch_fractions else None,
                epoch_wait_fractions=list(self._epoch_fractions),
                notes=notes,
            )
        handle = self._study_handle
        if handle is not None and handle.note and handle.note not in notes:
            notes.append(handle.note)
        stored = handle if handle is not None and handle.study is not None else None
        notes.extend(n for n in session.notes if n not in notes)
        phase = session.phase
        best = session.best_config
        if self._broken:
            decision = "tuning-failed"
        elif phase == "compute-bound":
            decision = "compute-bound"
        elif phase in ("probe", "tuning"):
            decision = "in-progress"
        elif session.warm_start_kept:
            decision = "warm-start"
        elif best is None or best == session.baseline:
            decision = "kept-baseline"
        else:
            decision = "tuned"
        trials = list(session.trials)
        baseline_trial = next((t for t in trials if t.source == "baseline"), None)
        best_trial = next(
            (t for t in trials if t.config == best and t.steps_per_s is not None), None
        )
        probe = session.probe_stats
        profile = {}
        if session.profile is not None:
            profile = {
                "produce_wall_s": session.profile.produce_wall_s,
                "produce_cpu_s": session.profile.produce_cpu_s,
                "batch_nbytes": float(session.profile.batch_nbytes),
            }
        if probe is not None:
            profile["step_compute_s"] = probe.median_compute_s
        profile["cores"] = float(self.settings.cores)
        warm = session.warm_start
        baseline_sps = baseline_trial.steps_per_s if baseline_trial else None
        if baseline_sps is None and warm is not None:  # not re-measured: the stored figure
            baseline_sps = warm.baseline_steps_per_s
        return TuningReport(
            decision=decision,
            baseline_config=session.baseline,
            best_config=best,
            trials=trials,
            probe_wait_fraction=probe.wait_fraction if probe is not None else None,
            final_wait_fraction=self._epoch_fractions[-1] if self._epoch_fractions else None,
            baseline_steps_per_s=baseline_sps,
            best_steps_per_s=best_trial.steps_per_s if best_trial else None,
            tuning_seconds=session.tuning_seconds,
            tuning_steps=session.tuning_steps,
            epoch_wait_fractions=list(self._epoch_fractions),
            notes=notes,
            reopen_reasons=[*self._compute_bound_reopens, *session.reopen_reasons],
            profile=profile,
            study_name=stored.study_name if stored is not None else None,
            storage_url=stored.storage_url if stored is not None else None,
            warm_start_from=warm.study_name if warm is not None else None,
            fit_seconds=self._fit_seconds(),
            fit_steps=max(self._fit_step - self.warmup_steps, 0) or None,
            tuning_cost_seconds=session.tuning_cost_s,
            worst_step_gap_seconds=self._worst_gap_s,
            median_step_seconds=(
                float(np.median(self._step_cycles)) if self._step_cycles else None
            ),
        )
