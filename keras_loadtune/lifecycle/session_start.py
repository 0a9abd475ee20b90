"""`SessionStarter`: probes first, then builds the tuning session off the training thread.

Nothing is fixed before the probe: the user's config is measured by a bare `Probe`
on the training thread (no Optuna, no study, no thread). A compute-bound verdict
builds an in-memory session on the spot (Optuna is never imported) and the caller
replays the probe's observations into it. Only an input-bound verdict opens the
storage and the study (a warm start is found there), on a background thread.

A rerun of a workload the storage knows starts warm: `apply_warm_hints`, called before
the first batch is served, reads the warm hint (`warm_hint.read_warm_hint`: a small
JSON file, no Optuna) and switches the dataset to the stored best config. That dataset
then skips the probe: its study opens in the background at once while training runs
on the stored config, and the session verifies it (`decision.warm_start`); if the
study no longer confirms it (the timing profile changed), the session switches back
to the user's config and probes it.

Importing Optuna and opening the study's storage (a journal file, a database over the
network) take up to seconds: done inside a step they would stall training and count as
compute, and an import inside a step kept the step's frames (fit's tf.data
iterators) alive until interpreter exit. A background thread does both while
training goes on at the current config; `poll` hands the session over on the first
step after it is ready.

Example:

>>> import logging
>>> from keras_loadtune.decision.settings import TunerSettings
>>> starter = SessionStarter(TunerSettings(), None, None, logging.getLogger("x"))
>>> starter.study_handle is None
True
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from keras_loadtune import fingerprint, persistence, warm_hint
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.driver import Observation
from keras_loadtune.decision.first_move import first_move
from keras_loadtune.decision.optuna_bridge import default_sampler
from keras_loadtune.decision.probe import Probe, ProbeVerdict
from keras_loadtune.decision.resources import process_tree_rss
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import StepSample


def _none() -> int | None:
    return None


# Batch records to have before a warm-started study is opened: the timing profile
# that selects the stored trials is the median of these.
WARM_PROFILE_RECORDS = 8
# A probe step that waits at least this share of its time starts Optuna's import on a
# daemon thread: an input-bound verdict, likely a few steps later, opens the study with
# it, and the trainer is waiting meanwhile (on 2 cores the import took 0.10-0.18 s of
# the steps after the verdict when it started there). A compute-bound fit never waits
# this much, and never imports Optuna.
IMPORT_AHEAD_WAIT = 0.5
_import_lock = threading.Lock()
_importing: threading.Thread | None = None


def _import_optuna() -> None:
    try:
        import optuna  # the import is the work
        import optuna.samplers  # noqa: F401
    except Exception:  # pragma: no cover - the session's own import reports it
        pass


def import_optuna_ahead() -> threading.Thread | None:
    """Starts importing Optuna on a daemon thread, unless it is imported or importing.

    Returns:
        The thread, or `None` when there was nothing to start.

    Example:

    >>> thread = import_optuna_ahead()
    >>> thread is None or thread.name == "keras_loadtune-import"
    True
    """
    global _importing
    with _import_lock:
        if "optuna" in sys.modules or _importing is not None:
            return None
        _importing = threading.Thread(
            target=_import_optuna, name="keras_loadtune-import", daemon=True
        )
        _importing.start()
        return _importing


class _Finished:
    """A session start that ran inline (`background=False`): over once the clock passes
    `ready_at` (a simulation's time to open the study)."""

    def __init__(self, clock: Callable[[], float], ready_at: float) -> None:
        self._clock, self._ready_at = clock, ready_at

    def is_alive(self) -> bool:
        return self._clock() < self._ready_at


class _Hinted:
    """A dataset switched to its warm hint before its first batch."""

    __slots__ = ("hinted", "user")

    def __init__(self, user: LoaderConfig, hinted: LoaderConfig) -> None:
        self.user, self.hinted = user, hinted


class SessionStarter:
    """Starts one `TuningSession` at a time on a daemon thread.

    Args:
        settings: The tuner's settings.
        storage: Where trials are kept (see `keras_loadtune.persistence`); `None` in memory.
        study_name: The study to use in `storage` (`None`: derived from the workload).
        log: The logger the session writes to.
        steps_left: Training steps left in this fit (`None` if unknown).
        fit_steps: Steps of one fit (`None` if unknown): a stored study is expected
            to serve one more fit of this length.
        background: Open the study and build the session on a daemon thread (a
            fit); `False` builds it inside the `poll` that asks, handed over at the
            next `poll` as a fast thread's would be (a simulation: deterministic).
        clock: The session's time source (the steps' clock).
        rss_probe: The session's resident-bytes probe (`None`: the process tree's).
        open_delay_s: With `background=False`, the clock seconds the study takes to open
            (a simulation of Optuna's import and the storage).
        study: A ready Optuna study to tune in, in place of one opened in `storage`
            (a simulation's: trials of an earlier run warm-start the session).

    Example:

    >>> import logging
    >>> from keras_loadtune.decision.settings import TunerSettings
    >>> SessionStarter(TunerSettings(), "default", None, logging.getLogger("x")).reset()
    """

    def __init__(
        self,
        settings: TunerSettings,
        storage: str | None,
        study_name: str | None,
        log: logging.Logger | logging.LoggerAdapter,
        steps_left: Callable[[], int | None] = _none,
        fit_steps: Callable[[], int | None] = _none,
        *,
        background: bool = True,
        clock: Callable[[], float] = time.perf_counter,
        rss_probe: Callable[[], int] | None = None,
        study: Any = None,
        open_delay_s: float = 0.0,
    ) -> None:
        self.settings = settings
        self._open_delay_s = float(open_delay_s)
        self._prestarted: LoaderConfig | None = None  # the first move, while the study opens
        self._probe_wait: float | None = None  # the wait the probe measured, for the report
        self._study = study
        self._background = background
        self._clock = clock
        self._rss_probe = rss_probe or process_tree_rss
        self.storage = storage
        self.study_name = study_name
        self.study_handle: persistence.StudyHandle | None = None
        self._log = log
        self._steps_left = steps_left
        self._fit_steps = fit_steps
        self._thread: threading.Thread | _Finished | None = None
        self._box: list = []
        self._probe: Probe | None = None
        self._probe_config: LoaderConfig | None = None
        self._input_bound = False
        self.observed: list[Observation] = []  # the probe's steps, replayed into the session
        # `(clock, steps left)` when the probe's first counted step began: the session
        # counts the probe's time as its own (`TuningSession.credit_probe`).
        self.probe_began: tuple[float, int | None] | None = None
        self.reopens_used = 0  # reopens spent on this workload (one budget for all)
        self._hints: dict[int, _Hinted] = {}  # id(dataset) -> its warm hint, until probed
        self._user_config: LoaderConfig | None = None  # the baseline of a warm start
        # The fit's last warm-up step and the config it ran: the probe's `prior`.
        self._prior: tuple[LoaderConfig, StepSample] | None = None

    def apply_warm_hints(self, datasets: list[Any]) -> list[LoaderConfig]:
        """Switch each of `datasets` that has a warm hint to it, before its first batch.

        Reads only the hint file (`warm_hint.read_warm_hint`, well under 50 ms); never
        raises. `LoadTuner.wrap` calls it, so the stored best serves from the first
        batch `fit` reads. A hinted dataset skips the probe (see the module docs).

        Returns:
            The configs switched to (one per hinted dataset).

        Example:

        >>> import logging
        >>> from keras_loadtune.decision.settings import TunerSettings
        >>> SessionStarter(TunerSettings(), None, None, logging.getLogger("x")).apply_warm_hints([])
        []
        """
        if self.storage is None or not datasets:
            return []
        applied: list[LoaderConfig] = []
        try:
            host = fingerprint.host_fingerprint(self.settings.cores)
        except Exception as exc:  # pragma: no cover - reads only this machine
            self._log.debug("keras_loadtune: no warm hint: %s", exc)
            return []
        for ds in datasets:
            if id(ds) in self._hints:
                continue  # already on its hint: keep the user's config it replaced
            hint = warm_hint.read_warm_hint(self.storage, ds, host)
            if hint is None or (self.study_name is not None and hint.study_name != self.study_name):
                continue
            try:
                config = LoaderConfig.from_dict(hint.config)
                if config.use_multiprocessing and "process" not in self.settings.modes:
                    continue
                user = ds.config
                if config != user:
                    ds.reconfigure(config)
            except Exception as exc:  # not picklable any more, a bad hint: start cold
                self._log.debug("keras_loadtune: warm hint %s not used: %s", hint.config, exc)
                continue
            self._hints[id(ds)] = _Hinted(user, config)
            if config.use_multiprocessing and not user.use_multiprocessing:
                try:
                    ds.prewarm_processes()  # the forkserver's start overlaps the build
                except Exception as exc:  # best effort: the first pool just starts slower
                    self._log.debug("keras_loadtune: process prewarm failed: %s", exc)
            applied.append(config)
            self._log.info(
                "keras_loadtune: starting on %s, the stored best of study %r (verified next)",
                config,
                hint.study_name,
            )
        return applied

    def warm_up(self, config: LoaderConfig, sample: StepSample) -> None:
        """The fit's last warm-up step (after tracing) ran `config`: the probe of that
        config may count it toward an early verdict (`Probe`'s `prior`), never as a
        figure."""
        self._prior = (config, sample)

    def _prior_on(self, config: LoaderConfig | None) -> StepSample | None:
        prior = self._prior
        return prior[1] if prior is not None and prior[0] == config else None

    def reset(self, *, forget_study: bool = False) -> None:
        """Forget a probe or a start in flight (its result is dropped); the next `poll`
        probes anew."""
        self._thread = None
        self._probe = None
        self._input_bound = False
        self._user_config = None
        self._prestarted = None
        self._prior = None
        self.observed = []
        self.probe_began = None
        if forget_study:
            self.study_handle = None

    def poll(self, dataset: Any, observation: Observation | None = None) -> TuningSession | None:
        """Probe with `observation`; the session once it exists, else `None`.

        Until the probe's verdict each call adds one counted step. A compute-bound
        verdict returns an in-memory session at once (no Optuna, no study, no thread);
        an input-bound one starts the thread that opens the study, and a later call
        returns its session. Either way the caller replays `observed` into it. A
        session built for a config the loader no longer runs (the user reconfigured
        meanwhile) is dropped and the probe starts over.

        Raises:
            Whatever building the session raised (the caller gives up tuning).
        """
        if not self._input_bound:
            return self._probe_step(dataset, observation)
        thread = self._thread
        warm = thread is None and self._user_config is not None
        if warm and len(dataset.stats) < WARM_PROFILE_RECORDS:
            return None  # the stored config runs meanwhile
        if thread is None:
            self._box = box = []  # this start's result only, whatever races
            baseline = self._probe_config if self._prestarted is not None else dataset.config
            if not self._background:
                self._start(dataset, baseline, box)
                self._thread = _Finished(self._clock, self._clock() + self._open_delay_s)
                return None
            thread = self._thread = threading.Thread(
                target=self._start,
                args=(dataset, baseline, box),
                name="keras_loadtune-session",
                daemon=True,
            )
            thread.start()
            return None
        if thread.is_alive():
            return None
        self._thread = None
        result = self._box[0] if self._box else None
        if isinstance(result, BaseException):
            raise result
        running = dataset.pending_config or dataset.config  # a first move may still start
        if result is not None and result.current_config != running:
            self.reset()
            return None
        return result

    def _probe_step(self, dataset: Any, observation: Observation | None) -> TuningSession | None:
        config = dataset.config
        hinted = self._hints.pop(id(dataset), None)
        if hinted is not None and hinted.hinted == config:
            # Started on the stored best: no probe, the study opens now; the session
            # verifies the stored config (or re-checks the user's).
            self._probe = None
            self._user_config = hinted.user
            self._input_bound = True
            return self.poll(dataset)
        if self._probe is None or self._probe_config != config:
            prior = self._prior_on(config)
            self._probe = Probe(self.settings, config, in_steady_state=True, prior=prior)
            self._probe_config = config
            self.observed = []
            self.probe_began = None
        if observation is None:
            return None
        if not self.observed:
            left = self._steps_left()
            self.probe_began = (
                self._clock() - observation.sample.step_s,
                None if left is None else left + 1,
            )
        self.observed.append(observation)
        self._probe.add_records(list(observation.records))
        verdict = self._probe.add(observation.sample)
        if verdict is None:
            sample = observation.sample
            if self._background and sample.wait_s >= IMPORT_AHEAD_WAIT * sample.step_s > 0:
                import_optuna_ahead()
            return None
        self._probe = None
        if verdict.input_bound:
            self._input_bound = True
            self._first_move(dataset, verdict)
            return self.poll(dataset)  # starts the thread that opens the study
        return self._session(dataset, config, study=None)  # nothing to tune: no Optuna

    @property
    def first_move(self) -> tuple[LoaderConfig, LoaderConfig, float | None] | None:
        """`(user config, moved to, probe wait)` while a first move runs and no session
        has taken over (the report of a fit that ended meanwhile says so), else `None`."""
        if self._prestarted is None or self._probe_config is None:
            return None
        return self._probe_config, self._prestarted, self._probe_wait

    def _first_move(self, dataset: Any, verdict: ProbeVerdict) -> None:
        """While the study opens (seconds, on a busy machine), the loader runs the
        pipeline model's thread seed instead of the config the probe found waiting, and
        the process machinery starts if the model seeds processes (`decision.first_move`).
        The session, once open, is told (`prestarted`). Best effort: never raises."""
        self._prestarted = None
        self._probe_wait = verdict.stats.wait_fraction
        try:
            move = first_move(verdict, self.settings, self._probe_config, self.settings.cores)
            target = move.config
            if move.prewarm_processes and dataset.prewarm_processes() is not False:
                # A process seed whose pool is known to start cheaply here (a dataset
                # whose workers import no Keras) is the better first move for a
                # CPU-heavy loader: threads would hold the GIL meanwhile.
                cheap = getattr(dataset, "process_start_estimate_s", None) is not None
                if cheap and move.process_config is not None:
                    target = move.process_config
            if target is not None and target != dataset.config:
                dataset.reconfigure(target, background=True)
                self._prestarted = target
                self._log.debug(
                    "keras_loadtune: %s while the study opens (the pipeline model's seed)",
                    target,
                )
        except Exception as exc:  # the session's own trials follow anyway
            self._log.debug("keras_loadtune: no first move: %s", exc)

    def _session(self, dataset: Any, config: LoaderConfig, study: Any) -> TuningSession:
        settings = self.settings
        estimate = getattr(dataset, "process_start_estimate_s", None)
        if settings.process_pool_prior_s is None and estimate is not None:
            # The engine knows what a first pool costs here (workers importing no Keras).
            settings = settings.replace(process_pool_prior_s=estimate)
        # A served input that runs (or is searched over) only some kinds.
        runs = getattr(dataset, "searched_modes", None)
        if runs is None:
            runs = getattr(dataset, "modes", None)
        if runs is not None:
            allowed = tuple(m for m in settings.modes if m in runs)
            if allowed and allowed != settings.modes:
                settings = settings.replace(modes=allowed)
        prior, self._prior = self._prior_on(self._probe_config), None  # this probe's only
        return TuningSession(
            self._user_config or config,
            settings,
            study=study,
            running=config if self._user_config is not None else None,
            prestarted=self._prestarted,
            clock=self._clock,
            rss_probe=self._rss_probe,
            process_mode_available="process" in settings.modes,
            probe_in_steady_state=True,  # the stock prefetched during tracing is drained
            probe_prior=prior,
            logger=self._log,
            steps_left=self._steps_left,
            reuse_steps=self._reuse_steps(),
            workload_profile=self._workload_profile(),
            reopens_used=self.reopens_used,
        )

    def _start(self, dataset: Any, config: LoaderConfig, box: list) -> None:
        try:
            session = self._session(dataset, config, study=self._open_study(dataset))
            session.prepare_study()  # Optuna's import and the study: here, not in a step
            box.append(session)
        except BaseException as exc:  # reported on the training thread
            box.append(exc)

    def _open_study(self, dataset: Any) -> Any:
        """The Optuna study to tune in (`None`: the session's own, in memory); never raises."""
        if self._study is not None:
            return self._study
        if self.storage is None:
            return None
        try:
            workload = fingerprint.workload_fingerprint(dataset, list(dataset.stats))
            host = fingerprint.host_fingerprint(self.settings.cores)
            sampler = default_sampler(self.settings)
        except Exception as exc:  # pragma: no cover - fingerprints read only our own data
            note = f"storage not used ({type(exc).__name__}: {exc}); tuned in memory"
            self._log.warning("keras_loadtune: %s", note)
            self.study_handle = persistence.StudyHandle(None, self.study_name, None, note)
            return None
        self.study_handle = persistence.open_study(
            self.storage, self.study_name, workload=workload, host=host, sampler=sampler
        )
        return self.study_handle.live

    def _reuse_steps(self) -> int:
        """A stored study is expected to serve one more fit of this length, once the
        workload has shown it runs again (the study held trials of an earlier run): a
        first run does not pay now for trials only a rerun might use."""
        handle = self.study_handle
        if handle is None or handle.study is None or handle.copied <= 0:
            return 0
        return self._fit_steps() or 0

    def _workload_profile(self) -> dict[str, float] | None:
        """The timing profile the study was opened for (stamped on trials, matched)."""
        workload = getattr(self.study_handle, "workload", None)
        return workload.profile() if workload is not None else None


__all__ = ["IMPORT_AHEAD_WAIT", "SessionStarter", "import_optuna_ahead"]
