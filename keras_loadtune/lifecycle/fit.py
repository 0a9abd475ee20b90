"""`FitLifecycle`: what the tuner does over a fit, whoever runs the training loop.

The Keras callback (`LoadTuner`) and the simulator (`keras_loadtune.simulation`)
drive the same object with the same calls, so the path a simulated fit takes is the
path a user's fit takes:

- `begin_fit(candidates)` - training starts; `candidates` are the datasets that may
  serve its steps (the training data is the one that serves the first step);
- `begin_epoch()`;
- `tick()` - a training step begins, while `ticking` is True (tuning decides);
- `close_cycle()` - the epoch's training steps are over (validation begins, or the
  epoch ends);
- `end_epoch(epoch)` - the epoch's wait fraction (for Keras `logs`), the per-epoch
  catch-up from the engine's hand-over records once the tick is detached, and the
  compute-bound re-check;
- `end_fit()`.

Time comes from one injected `clock` (`time.perf_counter` in a fit, the simulated
clock in a simulation), and the datasets' batch records carry the same clock. Which
steps count is `StepMeter`'s rule, the fit's times are `FitClock`'s, the probe before
the session and the session's start are `SessionStarter`'s, switching the loader is
`LoaderSwitch`'s, and the loop observe -> decide -> apply is `decision.driver.Driver`.
The lifecycle ties them, reacts to the session's events, and never lets an error of
its own reach training: it gives up with one warning (`broken`).

A dataset is anything with what `StepMeter`, `LoaderSwitch` and `SessionStarter`
read: `stats` (an engine `LoaderStats`), `config`, `pending_config`, `switch_error`,
`num_batches`, `reconfigure(config, background=...)`, `prewarm_processes()`,
`release_workers()` and `shm_fallback_note`, as `TunedPyDataset` has, and as
`keras_adapter.grain_iter_source.GrainIterSource` has for a Grain iterator (its
worker-count change shows as `pending_config` until the next pass, so the trial starts
after the epoch boundary). An optional `modes` (the worker kinds the input can run)
narrows the session's search to those.

Example:

>>> import logging
>>> from keras_loadtune.decision.settings import TunerSettings
>>> life = FitLifecycle(TunerSettings(cores=2), log=logging.getLogger("x"), storage=None)
>>> life.phase, life.ticking
('idle', True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from keras_loadtune import persistence
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.driver import Driver, Observation
from keras_loadtune.decision.phase import Event, Phase
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.lifecycle.fit_clock import FitClock
from keras_loadtune.lifecycle.loader_switch import LoaderSwitch
from keras_loadtune.lifecycle.report_build import build_report
from keras_loadtune.lifecycle.session_start import SessionStarter
from keras_loadtune.lifecycle.step_meter import StepMeter, first_consumer, switch_failure_note
from keras_loadtune.measurement import StepSample
from keras_loadtune.report import TuningReport

_DECIDING = (Phase.PROBE, Phase.TUNING)


def _unknown() -> int | None:
    return None


class FitLifecycle:
    """The tuner's state over fits: measure, probe, tune, settle, report (no Keras).

    Args:
        settings: The tuner's settings.
        log: Where its lines go (the Keras callback passes a logger that holds lines
            while a progress bar draws).
        warmup_steps: First measured steps of each fit left out (graph tracing).
        storage: Where trials are kept (see `keras_loadtune.persistence`); `None`
            in memory.
        study_name: The study to use in `storage` (`None`: derived from the workload).
        verbose: 0 logs no report, 1 the report at the end of each fit, 2 also when
            tuning ends.
        clock: The time source of every step (the datasets' records use the same).
        fit_total_steps: Steps of the current fit (`epochs x steps`), `None` if unknown.
        background_start: Open the study on a background thread (a fit); `False`
            opens it inside the step that asks (a simulation: deterministic).
        rss_probe: Resident bytes of the training process and its workers (`None`:
            the process tree's, measured).
        study: A ready Optuna study to tune in instead of one in `storage` (the
            simulator's).
        describe_input: Adds what the training input says to a report (its batch
            size, a DataLoader's arguments: `keras_adapter.input_facts.describe_input`);
            `None` adds nothing.
        study_open_s: With `background_start=False`, the clock seconds opening the
            study takes (a simulation of Optuna's import and the storage).

    Example:

    >>> import logging
    >>> from keras_loadtune.decision.settings import TunerSettings
    >>> FitLifecycle(TunerSettings(), log=logging.getLogger("x")).best_config is None
    True
    """

    def __init__(
        self,
        settings: TunerSettings,
        *,
        log: logging.Logger | logging.LoggerAdapter,
        warmup_steps: int = 2,
        storage: str | None = "default",
        study_name: str | None = None,
        verbose: int = 1,
        clock: Callable[[], float] = time.perf_counter,
        fit_total_steps: Callable[[], int | None] = _unknown,
        background_start: bool = True,
        rss_probe: Callable[[], int] | None = None,
        study: Any = None,
        describe_input: Callable[[TuningReport, Any], TuningReport] | None = None,
        study_open_s: float = 0.0,
    ) -> None:
        self.settings = settings
        self._describe_input = describe_input
        self.verbose = verbose
        self.datasets: list[Any] = []
        self.notes: list[str] = []
        self.broken = False
        self.epoch_fractions: list[float] = []
        self.clock = FitClock(warmup_steps)
        self._now = clock
        self._fit_total_steps = fit_total_steps
        self._log = log
        self._meter = StepMeter()
        self._starter = SessionStarter(
            settings,
            storage,
            study_name,
            log,
            self._steps_left,
            fit_total_steps,
            background=background_start,
            clock=clock,
            rss_probe=rss_probe,
            study=study,
            open_delay_s=study_open_s,
        )
        self._session: TuningSession | None = None
        self._driver: Driver | None = None
        self._switch: LoaderSwitch | None = None
        self._unbound: dict | None = None
        self._reported = False
        self._compute_bound_reopens: list[str] = []
        self._acted = False  # the session just started: the next step follows its work
        self._ticking = True

    # -- what the driver of the loop reads --------------------------------------------------
    @property
    def session(self) -> TuningSession | None:
        """The current tuning session (`None` before the probe found something to do)."""
        return self._session

    @property
    def study_handle(self) -> persistence.StudyHandle | None:
        """The study the session tunes in (`None` in memory)."""
        return self._starter.study_handle

    @property
    def train_dataset(self) -> Any:
        """The dataset this fit trains on (`None` before its first step, or unwrapped)."""
        return self._meter.dataset

    @property
    def ticking(self) -> bool:
        """Whether `tick()` must run at every training step (tuning decides)."""
        return self._ticking

    @property
    def best_config(self) -> LoaderConfig | None:
        """The config tuning settled on (the current one while still tuning)."""
        if self._session is not None and self._session.best_config is not None:
            return self._session.best_config
        if self.train_dataset is not None:
            return self.train_dataset.config
        return self.datasets[0].config if self.datasets else None

    @property
    def phase(self) -> str:
        """`"idle"` before training, `"stopped"` after an internal error, else the
        session's phase."""
        if self.broken:
            return "stopped"
        return self._session.phase if self._session is not None else "idle"

    # -- the fit's events --------------------------------------------------------------------
    def register(self, dataset: Any) -> None:
        """A dataset wrapped for this tuner: a rerun starts it on the stored best."""
        if all(d is not dataset for d in self.datasets):
            self.datasets.append(dataset)
        self._starter.apply_warm_hints([dataset])

    def begin_fit(self, candidates: Iterable[Any] = ()) -> None:
        """Training starts; `candidates` (besides the registered datasets) may serve it."""
        self.clock.start_fit(self._now())
        datasets = {id(ds): ds for ds in candidates}
        datasets.update((id(ds), ds) for ds in self.datasets)
        self._unbound = {key: (ds, ds.stats.delivered) for key, ds in datasets.items()}
        self._meter.start_fit(self.datasets)
        self._ticking = True

    def begin_epoch(self) -> None:
        """An epoch begins."""
        self.clock.start_epoch(self._now())

    def tick(self) -> None:
        """A training step begins (only while `ticking`)."""
        now = self._now()
        self._measure(now, self.clock.tick(now))

    def close_cycle(self) -> None:
        """The epoch's training steps are over: its last step's cycle ends now."""
        if self._ticking:
            now = self._now()
            step_s = self.clock.close_cycle(now)
            if step_s is not None:
                self._measure(now, step_s)

    def end_epoch(self, epoch: int) -> float | None:
        """The epoch ended (after `close_cycle`); returns its wait fraction (`None`:
        no step measured)."""
        try:
            self._catch_up()
            fraction = self.clock.epoch_fraction()
            if fraction is None:
                return None
            self.epoch_fractions.append(fraction)
            self._reopen_if_no_longer_compute_bound(epoch, fraction)
            return fraction
        except Exception as exc:
            self._give_up(exc)
            return None

    def end_fit(self) -> None:
        """Training ended: a session still deciding stops on its best; the report is
        logged and stored; the workers are released."""
        self.clock.end_fit(self._now())
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
            for ds in self.datasets:
                ds.release_workers()

    def report(self) -> TuningReport:
        """The tuning report of what was measured and decided so far."""
        clock, now = self.clock, self._now()
        shm_notes = [n for ds in self.datasets if (n := ds.shm_fallback_note) is not None]
        train = self.train_dataset
        report = build_report(
            self._session,
            notes=[*self.notes, *dict.fromkeys(shm_notes)],
            broken=self.broken,
            wrapped=train is not None,
            handle=self._starter.study_handle,
            cores=self.settings.cores,
            epoch_fractions=self.epoch_fractions,
            reopen_reasons=self._compute_bound_reopens,
            fit_seconds=clock.fit_seconds(now),
            fit_steps=clock.fit_steps,
            worst_gap_s=clock.worst_gap_s,
            median_step_s=clock.median_step_s,
            fit_wall_seconds=clock.fit_wall_seconds(now),
            fit_all_steps=clock.fit_all_steps,
            fit_running=clock.running,
            loader_config=train.config if train is not None else None,
            **self._first_move_fields(),
        )
        if self._describe_input is not None:
            report = self._describe_input(report, train)
        return report

    def _first_move_fields(self) -> dict[str, Any]:
        """The report's view of a first move no session took over (see `build_report`)."""
        move = self._starter.first_move if self._session is None else None
        if move is None:
            return {}
        user, moved, wait = move
        return {"user_config": user, "first_move": moved, "first_move_wait": wait}

    def add_note(self, note: str) -> None:
        """A note for the report (once)."""
        if note and note not in self.notes:
            self.notes.append(note)

    # -- the tick and the hand-over records ------------------------------------------------
    def _measure(self, now: float, step_s: float | None) -> None:
        """One tick: bind, read the step's records, count it, drive the session."""
        clock = self.clock
        try:
            if self._unbound is not None and not self._bind_when_served(step_s):
                return
            records = self._meter.new_records()
            if records:
                clock.seen(records)
            if step_s is None:
                return  # the epoch's first step
            wait_s = None if records is None else min(sum(r.wait_s for r in records), step_s)
            if not clock.measured(step_s, now):  # a warm-up (tracing) step
                self._offer_warm_up(step_s, wait_s, records)
                return
            clock.add(step_s, wait_s, after_action=self._acted_since_last_step())
            if wait_s is not None:
                self._drive(StepSample(wait_s=wait_s, step_s=step_s), records)
                self._detach_tick_if_done()
        except Exception as exc:  # the tuner must never break training
            self._give_up(exc)

    def _offer_warm_up(self, step_s: float, wait_s: float | None, records: list | None) -> None:
        """The fit's last warm-up step, before any session: the probe may count it toward
        an early verdict (`SessionStarter.warm_up`), if the meter would count the step."""
        ds = self.train_dataset
        if (
            wait_s is None
            or not records
            or ds is None
            or self.broken
            or self._session is not None
            or self.clock.fit_step != self.clock.warmup_steps
            or not self._meter.counts(records, session_ready=False)
        ):
            return
        self._starter.warm_up(ds.config, StepSample(wait_s=wait_s, step_s=step_s))

    def _detach_tick(self) -> None:
        """No tick from now on: the epoch's hand-over records say the rest."""
        self._ticking = False
        if self.train_dataset is not None:
            self.clock.count_handovers()

    def _detach_tick_if_done(self) -> None:
        """Tuning has ended (steady, compute-bound, stopped) and no switch is starting."""
        if self.broken:
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
        if self._ticking or self.train_dataset is None:
            return
        records = self._meter.new_records() or []
        timed = self.clock.add_handovers(records)
        session = self._session
        if self.broken or session is None or session.phase != Phase.STEADY:
            return
        config = self.train_dataset.config
        for record, sample in timed:
            if record.config != config:
                continue  # served by the config before the last switch
            self._drive(sample, [record])
            if session is not self._session or session.phase != Phase.STEADY:
                self._ticking = True  # drift reopened tuning: decide step by step again
                return

    def _bind_when_served(self, step_s: float | None) -> bool:
        """Bind to the training data once a step was served; False while none was."""
        ds, consumer, cursor = first_consumer(self._unbound)
        if ds is None and step_s is None and self.clock.all_steps < 3:
            return False  # nothing delivered yet (JAX, TensorFlow fetch inside the step)
        self._unbound = None
        self._bind_training_data(ds, consumer, cursor)
        return True

    # -- internals -------------------------------------------------------------------------
    def _bind_training_data(self, ds: Any, consumer: int | None, cursor: int) -> None:
        """Binds to this `fit`'s training data (a new dataset: a new study).

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
        self.epoch_fractions = []
        self._compute_bound_reopens = []
        self._starter.reopens_used = 0
        if ds is not None and all(d is not ds for d in self.datasets):
            self.datasets.append(ds)

    def _set_session(self, session: TuningSession | None) -> None:
        self._session = session
        self._driver = self._switch = None
        if session is not None:
            self._switch = LoaderSwitch(
                self.train_dataset, self._log, self._meter.new_switch_failure
            )
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
        if self.broken or self.train_dataset is None or self._switch_pending():
            return  # while a switch starts the previous config serves: no trial's steps
        session = self._session
        if not self._meter.counts(records, session_ready=session is not None):
            return
        observation = Observation(sample, records, self._meter.new_startups())
        if session is None:
            # The probe runs here first; a session exists once it found something to do
            # (input-bound: its study opens off the training thread meanwhile).
            session = self._starter.poll(self.train_dataset, observation)
            if session is None:
                return
            self._set_session(session)
            self._acted = True
            self._credit_probe(session)
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

    def _credit_probe(self, session: TuningSession) -> None:
        """The probe (and the study's opening after it) ran before the session: its
        time is tuning time too (the report's Cost counts it)."""
        began = self._starter.probe_began
        self._starter.probe_began = None
        if began is None:
            return
        at, left_then = began
        left = self._steps_left()
        steps = None if left is None or left_then is None else left_then - left
        session.credit_probe(self._now() - at, steps)

    def _react(self, session: TuningSession, events: tuple[Event, ...]) -> None:
        """What happens on the session's events: prewarm, report, spread."""
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
            persistence.store_report(handle, self.report().to_dict()),
        ):
            if error is not None and error not in self.notes:
                self.notes.append(error)
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
            self.train_dataset.prewarm_processes()
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
        self._ticking = True

    def _spread_best(self, *, background: bool = True) -> None:
        """Datasets wrapped by this tuner but not trained on run on the tuned config."""
        best = self.best_config
        if best is None:
            return
        for ds in self.datasets:
            if ds is not self.train_dataset and ds.config != best:
                try:
                    ds.reconfigure(best, background=background)  # mid-fit: never stalls a step
                except Exception as exc:
                    self._log.info("keras_loadtune: kept %s for %r: %s", ds.config, ds, exc)

    def _give_up(self, exc: Exception) -> None:
        if self.broken:
            return
        self.broken = True
        self._detach_tick()
        note = (
            f"tuning stopped after an internal error ({type(exc).__name__}: {exc}); "
            "training went on"
        )
        self.notes.append(note)
        self._log.warning(
            "keras_loadtune: %s", note, exc_info=self._log.isEnabledFor(logging.DEBUG)
        )

    def _log_report_once(self, *, final: bool) -> None:
        """The report in the log: at `verbose=1` the full report once, at the end of
        `fit` (the session logs its own line when tuning starts and ends); at
        `verbose=2` also when tuning ends (then only a line at the end of `fit`)."""
        if self.verbose == 0 or (not final and self.verbose < 2):
            return
        report = self.report()
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

    def _steps_left(self) -> int | None:
        """Training steps left in this fit (read by the session to weigh trials)."""
        total = self._fit_total_steps()
        return None if total is None else max(total - self.clock.all_steps, 0)


__all__ = ["FitLifecycle"]
