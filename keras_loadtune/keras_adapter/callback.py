"""`LoadTuner`: the Keras callback that measures data wait and tunes the loader live."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import keras

from keras_loadtune import persistence
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.driver import Driver, Observation
from keras_loadtune.decision.phase import Event, Phase
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.engine.prefetcher import check_seconds
from keras_loadtune.keras_adapter import _hooks
from keras_loadtune.keras_adapter._arguments import tuner_settings
from keras_loadtune.keras_adapter._epoch_log import EpochLog, ensure_log_handler
from keras_loadtune.keras_adapter._fit_clock import FitClock
from keras_loadtune.keras_adapter._loader_switch import LoaderSwitch
from keras_loadtune.keras_adapter._report_build import build_report
from keras_loadtune.keras_adapter._session_start import SessionStarter
from keras_loadtune.keras_adapter._step_meter import (
    StepMeter,
    first_consumer,
    switch_failure_note,
)
from keras_loadtune.keras_adapter.dataset import TunedPyDataset, check_keras3, wrap_input
from keras_loadtune.measurement import StepSample
from keras_loadtune.report import TuningReport

logger = logging.getLogger("keras_loadtune")

WAIT_KEY = "data_wait_fraction"
_VERBOSE = (0, 1, 2)
_DECIDING = (Phase.PROBE, Phase.TUNING)


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
        persistence.check_storage(storage)
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
        self._datasets: list[TunedPyDataset] = []
        self._meter = StepMeter()
        self._log = EpochLog(logger)
        self._starter = SessionStarter(
            self.settings, storage, study_name, self._log, self._steps_left, self._fit_total_steps
        )
        self._session: TuningSession | None = None
        self._driver: Driver | None = None
        self._switch: LoaderSwitch | None = None
        self._unbound: dict | None = None
        self._notes: list[str] = []
        self._broken = False
        self._reported = False
        self._compute_bound_reopens: list[str] = []
        self._clock = FitClock(warmup_steps)
        self._epoch_fractions: list[float] = []
        self._acted = False  # the session just started: the next step follows its work
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
        loader's `num_workers` / `prefetch_factor`). A `tf.data.Dataset`, an
        iterable-style `DataLoader` and a Grain `IterDataset` / `DataLoader` are
        returned unchanged: measured only, and the report names their own knobs.

        Example:

        ```python
        train = tuner.wrap(train_ds)
        model.fit(train, epochs=3, callbacks=[tuner])
        ```
        """
        kwargs.setdefault("timeout", self.timeout)
        wrapped, plan = wrap_input(dataset, config, **kwargs)
        if plan.note and plan.note not in self._notes:
            self._notes.append(plan.note)  # reaches the report
        if isinstance(wrapped, TunedPyDataset):
            self._datasets.append(wrapped)
            self._starter.apply_warm_hints([wrapped])  # a rerun starts on the stored best
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

    @property
    def _train_ds(self) -> TunedPyDataset | None:
        """The dataset this fit trains on (`None` before its first step, or unwrapped)."""
        return self._meter.dataset

    # -- Keras hooks -----------------------------------------------------------------------
    # No `on_train_batch_end`: Keras would then call every batch end on the training
    # thread (its asynchronous dispatch on JAX and PyTorch checks that hook). While the
    # tuner decides, `on_train_batch_begin` ticks; once tuning has ended it is detached
    # (`_detach_tick`) and the epoch's steps are read from the engine's hand-over records.
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._clock.start_fit(time.perf_counter())
        # Which consumer is this fit's training data is known at its first step: the one
        # whose stream served it (validation and evaluate run later).
        datasets = {id(a.py_dataset): a.py_dataset for a in _hooks.live_adapters()}
        datasets.update((id(ds), ds) for ds in self._datasets)
        self._unbound = {key: (ds, ds.stats.delivered) for key, ds in datasets.items()}
        self._meter.start_fit(self._datasets)
        self._attach_tick()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._log.release()  # the previous epoch's bar has finished its line
        self._log.hold = (self.params or {}).get("verbose") == 1
        self._clock.start_epoch(time.perf_counter())

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        self._measure(now, self._clock.tick(now))

    def on_test_begin(self, logs: dict | None = None) -> None:
        # Validation starts: the epoch's last training step ended (not a batch hook).
        self._close_cycle()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._close_cycle()
        self._epoch_end(epoch, logs)

    def _epoch_end(self, epoch: int, logs: dict | None) -> None:
        try:
            self._catch_up()
            fraction = self._clock.epoch_fraction()
            if fraction is None:
                return
            self._epoch_fractions.append(fraction)
            self._reopen_if_no_longer_compute_bound(epoch, fraction)
            if logs is not None:
                logs[WAIT_KEY] = fraction
        except Exception as exc:
            self._give_up(exc)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._clock.end_fit(time.perf_counter())
        self._log.hold = False
        self._log.release()
        try:
            self._catch_up()
            session, driver = self._session, self._driver
            if session is not None and driver is not None and session.phase in _DECIDING:
                self._switch.background = False  # training is over: nothing to stall
                driver.finish("training ended before tuning finished")
                self._spread_best(background=False)
            self._log_report_once(final=True)
            self._store_report()
        except Exception as exc:
            self._give_up(exc)
        finally:
            for ds in self._datasets:
                ds.release_workers()

    # -- the tick and the hand-over records ------------------------------------------------
    def _measure(self, now: float, step_s: float | None) -> None:
        """One tick: bind, read the step's records, count it, drive the session."""
        clock = self._clock
        try:
            if self._unbound is not None and not self._bind_when_served(step_s):
                return
            records = self._meter.new_records()
            if records:
                clock.seen(records)
            if step_s is None or not clock.measured(step_s, now):
                return  # the epoch's first step, or a warm-up (tracing) step
            wait_s = None if records is None else min(sum(r.wait_s for r in records), step_s)
            clock.add(step_s, wait_s, after_action=self._acted_since_last_step())
            if wait_s is not None:
                self._drive(StepSample(wait_s=wait_s, step_s=step_s), records)
                self._detach_tick_if_done()
        except Exception as exc:  # the tuner must never break training
            self._give_up(exc)

    def _close_cycle(self) -> None:
        """The epoch's training steps are over: its last step's cycle ends now."""
        if self.ticking:
            now = time.perf_counter()
            step_s = self._clock.close_cycle(now)
            if step_s is not None:
                self._measure(now, step_s)

    def _attach_tick(self) -> None:
        """Tick at every training step (the class's `on_train_batch_begin`)."""
        self.__dict__.pop("on_train_batch_begin", None)

    def _detach_tick(self) -> None:
        """No Python of ours per step: Keras calls a no-op at each batch begin."""
        self.on_train_batch_begin = _no_tick  # type: ignore[method-assign]
        if self._train_ds is not None:
            self._clock.count_handovers()

    @property
    def ticking(self) -> bool:
        """Whether the tuner runs code at every training step (it decides)."""
        return "on_train_batch_begin" not in self.__dict__

    def _detach_tick_if_done(self) -> None:
        """Tuning has ended (steady, compute-bound, stopped) and no switch is starting:
        from now on the epoch's hand-over records say the rest, once per epoch."""
        if self._broken:
            self._detach_tick()
            return
        session = self._session
        if session is None or session.phase in _DECIDING or self._switch_pending():
            return
        self._detach_tick()

    def _catch_up(self) -> None:
        """Counts the steps served while the tick was detached, from hand-over records.

        A settled session watches them for drift (per epoch, not per step); a reopen
        attaches the tick again.
        """
        if self.ticking or self._train_ds is None:
            return
        records = self._meter.new_records() or []
        timed = self._clock.add_handovers(records)
        session = self._session
        if self._broken or session is None or session.phase != Phase.STEADY:
            return
        config = self._train_ds.config
        for record, sample in timed:
            if record.config != config:
                continue  # served by the config before the last switch
            self._drive(sample, [record])
            if session is not self._session or session.phase != Phase.STEADY:
                self._attach_tick()  # drift reopened tuning: decide step by step again
                return

    def _bind_when_served(self, step_s: float | None) -> bool:
        """Bind to the training data once a step was served; False while none was."""
        ds, consumer, cursor = first_consumer(self._unbound)
        if ds is None and step_s is None and self._clock.all_steps < 3:
            return False  # nothing delivered yet (JAX, TensorFlow fetch inside the step)
        self._unbound = None
        self._bind_training_data(ds, consumer, cursor)
        return True

    # -- internals -------------------------------------------------------------------------
    def _bind_training_data(
        self, ds: TunedPyDataset | None, consumer: int | None, cursor: int
    ) -> None:
        """Binds the tuner to this `fit`'s training data (a new dataset: a new study).

        Only the batches of that consumer (not validation, not a nested `evaluate` on the
        same object) are measured. Unwrapped training data leaves the tuner measuring
        the step-time spread only.
        """
        previous = self._meter.dataset
        if not self._meter.bind(ds, consumer, cursor):
            return
        if previous is not None or self._session is not None:
            self._log.info(
                "keras_loadtune: this fit trains on another dataset (%r); it gets its own probe",
                ds,
            )
        self._set_session(None)
        self._starter.reset(forget_study=True)
        self._reported = False
        self._epoch_fractions = []
        self._compute_bound_reopens = []
        self._starter.reopens_used = 0
        if ds is not None and all(d is not ds for d in self._datasets):
            self._datasets.append(ds)

    def _set_session(self, session: TuningSession | None) -> None:
        self._session = session
        self._driver = self._switch = None
        if session is not None:
            self._switch = LoaderSwitch(self._train_ds, self._log, self._meter.new_switch_failure)
            self._driver = Driver(
                session, self._switch, acknowledge=False, describe=switch_failure_note
            )

    def _acted_since_last_step(self) -> bool:
        acted = self._acted or (self._switch is not None and self._switch.acted)
        self._acted = False
        if self._switch is not None:
            self._switch.acted = False
        return acted

    def _switch_pending(self) -> bool:
        """True while a background switch starts; its end reaches the session once."""
        if self._driver is not None:
            return self._driver.poll()
        meter = self._meter
        if meter.switch_pending():
            return True
        failure = meter.new_switch_failure()
        if failure is not None:  # no session to tell (a switch not made by the tuner)
            self._log.warning("keras_loadtune: %s", failure[1])
        return False

    def _drive(self, sample: StepSample, records: list) -> None:
        """Observe -> decide -> apply -> acknowledge, for the steps the meter counts."""
        if self._broken or self._train_ds is None or self._switch_pending():
            return  # while a switch starts the previous config serves: no trial's steps
        session = self._session
        if not self._meter.counts(records, session_ready=session is not None):
            return
        observation = Observation(sample, records, self._meter.new_startups())
        if session is None:
            # The probe runs here first; a session exists once it found something to do
            # (input-bound: its study opens off the training thread meanwhile).
            session = self._starter.poll(self._train_ds, observation)
            if session is None:
                return
            self._set_session(session)
            self._acted = True
            for seen in self._starter.observed:  # the probe's steps, as the session's own
                result = self._driver.step(seen)
                self._react(session, result.events)
                if result.switch_to is not None or session.phase != Phase.PROBE:
                    break
            self._starter.observed = []
            return
        if session.phase in (Phase.COMPUTE_BOUND, Phase.STOPPED):
            return
        self._react(session, self._driver.step(observation).events)

    def _react(self, session: TuningSession, events: tuple[Event, ...]) -> None:
        """What the adapter does on the session's events: prewarm, report, spread."""
        for event in events:
            if event == Event.TUNING_STARTED:
                self._prewarm_if_processes_pending(session)
            elif event in (Event.SETTLED, Event.COMPUTE_BOUND):
                self._log_report_once(final=False)
                self._store_report()
                if event == Event.SETTLED:
                    self._spread_best()

    def _store_report(self) -> None:
        """Keep the report (without trials: those are the study's) as a study user attr."""
        handle = self._starter.study_handle
        if self._session is None or handle is None:
            return
        for error in (
            persistence.sync_trials(handle),
            persistence.store_report(handle, self._build_report().to_dict()),
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

    def _reopen_if_no_longer_compute_bound(self, epoch: int, fraction: float) -> None:
        """A compute-bound verdict is re-checked once per epoch, at no per-step cost.

        If a whole epoch then waited for data well above the threshold (a cache went
        cold, the network slowed), the probe runs again on the current config and may
        start tuning.
        """
        session = self._session
        limit = self.settings.wait_threshold + self.settings.drift_margin
        if session is None or session.phase != Phase.COMPUTE_BOUND or fraction <= limit:
            return
        if session.reopens >= self.settings.max_reopens:
            return  # one budget covers this re-check and the drift reopens
        reason = (
            f"epoch {epoch + 1} waited for data {fraction:.0%} of step time after a "
            f"compute-bound verdict (limit {limit:.0%}): probing again"
        )
        self._log.info("keras_loadtune: %s", reason)
        self._compute_bound_reopens.append(reason)
        self._starter.reopens_used = session.reopens + 1
        self._set_session(None)
        self._starter.reset()
        self._meter.skip_draining()
        self._reported = False
        self._attach_tick()

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
        self._detach_tick()
        note = (
            f"tuning stopped after an internal error ({type(exc).__name__}: {exc}); "
            "training went on"
        )
        self._notes.append(note)
        self._log.warning(
            "keras_loadtune: %s", note, exc_info=self._log.isEnabledFor(logging.DEBUG)
        )

    def _log_report_once(self, *, final: bool) -> None:
        """The report in the log: at `verbose=1` the full report once, at the end of
        `fit` (the session logs its own line when tuning starts and ends); at
        `verbose=2` also when tuning ends (then only a line at the end of `fit`)."""
        if self.verbose == 0 or (not final and self.verbose < 2):
            return
        report = self._build_report()
        if not final:
            if report.decision != "in-progress" and not self._reported:
                self._reported = True
                self._log.info("%s", report)
            return
        if self._reported:  # the full report was logged mid-fit (verbose=2)
            self._log.info("%s", report.summary_line())
        else:
            self._log.info("%s", report)
        self._reported = False  # the next fit logs its own report

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
        return None if total is None else max(total - self._clock.all_steps, 0)

    def _build_report(self) -> TuningReport:
        clock, now = self._clock, time.perf_counter()
        shm_notes = [n for ds in self._datasets if (n := ds.shm_fallback_note) is not None]
        return build_report(
            self._session,
            notes=[*self._notes, *dict.fromkeys(shm_notes)],
            broken=self._broken,
            wrapped=self._train_ds is not None,
            handle=self._starter.study_handle,
            cores=self.settings.cores,
            epoch_fractions=self._epoch_fractions,
            reopen_reasons=self._compute_bound_reopens,
            fit_seconds=clock.fit_seconds(now),
            fit_steps=clock.fit_steps,
            worst_gap_s=clock.worst_gap_s,
            median_step_s=clock.median_step_s,
            fit_wall_seconds=clock.fit_wall_seconds(now),
            fit_all_steps=clock.fit_all_steps,
            fit_running=clock.running,
            loader_config=self._train_ds.config if self._train_ds is not None else None,
        )
