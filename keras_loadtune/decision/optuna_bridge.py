"""`StudyBridge`: the only module of the decision layer that touches `optuna.Trial`.

It creates the study lazily (a compute-bound run never imports Optuna), asks for
trials (free or with fixed params), maps a trial's params to a `LoaderConfig`, and
tells Optuna what a trial measured, with the RAM excess as user attr and as Optuna
constraint. The phase objects get a bridge passed in; none of them imports Optuna.

Optuna internals used here, pinned by `tests/test_optuna_internals.py`:
`Study._storage`, `Study._study_id`, `Study._thread_local.cached_all_trials`,
`Trial._fixed_params` (whether the queue was fixed, see `StudyBridge.suggest`) and
the `system_attrs={"fixed_params": ...}` convention of `Study.enqueue_trial`
(see `ask_fixed`).

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision.optuna_bridge import StudyBridge
>>> from keras_loadtune.decision.settings import TunerSettings
>>> bridge = StudyBridge(TunerSettings(cores=4, seed=0), LoaderConfig())
>>> trial = bridge.ask({"mode": "thread", "workers": 3, "max_queue_size": 5})
>>> bridge.suggest(trial)
LoaderConfig(workers=3, max_queue_size=5, use_multiprocessing=False)
"""

from __future__ import annotations

import datetime
import logging
import warnings
from typing import TYPE_CHECKING, Any

from keras_loadtune._optuna_logging import quiet_optuna
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.settings import MODES, TunerSettings
from keras_loadtune.trial import (
    ATTR_CONSTRAINT,
    ATTR_ENOUGH_IN_FLIGHT,
    ATTR_NOT_RUN,
    ATTR_PROFILE,
    ATTR_THREADS_RAM_ONLY,
    ATTR_WORKER,
    CONSTRAINT_KEY,
    PARAM_MODE,
    PARAM_QUEUE,
    PARAM_WORKERS,
    TrialRecord,
    worker_identity,
)

if TYPE_CHECKING:  # pragma: no cover
    import optuna

# Startup trials of the default TPE sampler (the baseline and the seeds count).
TPE_STARTUP_TRIALS = 4


def default_sampler(settings: TunerSettings) -> Any:
    """`settings.sampler`, or the seeded multivariate TPE the session uses by default.

    Args:
        settings: The tuner settings (`sampler`, `seed`).

    Returns:
        An Optuna sampler.

    Example:

    >>> type(default_sampler(TunerSettings(seed=0))).__name__
    'TPESampler'
    """
    import optuna

    if settings.sampler is not None:
        return settings.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=settings.seed, n_startup_trials=TPE_STARTUP_TRIALS, multivariate=True
        )


def ask_fixed(study: optuna.Study, params: dict[str, Any]) -> optuna.Trial | None:
    """A new RUNNING trial whose `params` are fixed, like `enqueue_trial` + `ask`.

    Made RUNNING in one storage call, so with several processes on one study no other
    process can pop it from the WAITING queue (which would give each of them a trial
    with the other's params).

    Args:
        study: The study.
        params: Optuna params to fix (`mode`, `workers`, `max_queue_size`, or a subset).

    Returns:
        The trial, or `None` if the study does not expose what this needs (the
        caller then enqueues).

    Example:

    >>> import optuna
    >>> study = optuna.create_study(direction="maximize")
    >>> ask_fixed(study, {"workers": 2}).suggest_int("workers", 1, 8)
    2
    """
    import optuna
    from optuna.trial import FrozenTrial
    from optuna.trial import TrialState as OptunaState

    storage = getattr(study, "_storage", None)
    study_id = getattr(study, "_study_id", None)
    if storage is None or study_id is None:
        return None
    template = FrozenTrial(
        number=-1,
        state=OptunaState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={"fixed_params": dict(params)},
        intermediate_values={},
        trial_id=-1,
    )
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    local = getattr(study, "_thread_local", None)
    if local is not None:  # as Study.ask: re-read the trials from storage next time
        local.cached_all_trials = None
    return optuna.Trial(study, trial_id)


def check_direction(study: optuna.Study, log: logging.Logger) -> None:
    """Raises ValueError unless `study` maximizes (an unreadable study passes).

    Args:
        study: The study to check.
        log: Where an unreadable direction is logged.

    Raises:
        ValueError: The study minimizes.

    Example:

    >>> import optuna
    >>> check_direction(optuna.create_study(direction="maximize"), logging.getLogger())
    """
    try:
        direction = study.direction
    except Exception as exc:  # a broken storage is handled when tuning starts
        log.debug("keras_loadtune: could not read the study direction: %s", exc)
        return
    if direction.name != "MAXIMIZE":
        raise ValueError(
            "TuningSession: the study must maximize steps/s "
            f"(optuna.create_study(direction='maximize')); got {direction.name}."
        )


class StudyBridge:
    """Asks and tells the study for the session's phase objects.

    Args:
        settings: Search space and sampler.
        baseline: The user's config (widens the search space to include it).
        study: The study; `None` creates an in-memory one on first use.

    Example:

    >>> from keras_loadtune import LoaderConfig
    >>> bridge = StudyBridge(TunerSettings(seed=0), LoaderConfig())
    >>> bridge.study is None  # nothing asked yet
    True
    """

    def __init__(
        self, settings: TunerSettings, baseline: LoaderConfig, study: optuna.Study | None = None
    ) -> None:
        self._settings = settings
        self._baseline = baseline
        self._study = study
        self._workers_range: tuple[int, int] | None = None
        self._queue_of: Any = None
        self._worker = worker_identity()
        self.profile_attr: dict[str, float] | None = None  # stamped on every trial
        # `(threads_ram_only, enough)` of `ranking.rank_key`, stamped on every trial.
        self.ranking: tuple[bool, int | None] | None = None

    @property
    def workers_range(self) -> tuple[int, int] | None:
        """The workers range the sampler sees (`None`: the settings' caps)."""
        return self._workers_range

    def set_space(self, workers: tuple[int, int] | None, queue_of: Any = None) -> None:
        """Shape what the sampler sees: the workers range and the queue rule.

        Args:
            workers: Inclusive `(low, high)` of the workers param (the per-loader caps,
                later a neighbourhood of the incumbent); `None`: the settings' caps.
            queue_of: `workers -> max_queue_size`; the queue is then tied to the
                workers (a one-value distribution), not searched on its own.
        """
        self._workers_range = workers
        self._queue_of = queue_of

    @property
    def study(self) -> optuna.Study | None:
        """The study, `None` until the first ask when none was given."""
        return self._study

    def ensure(self) -> optuna.Study:
        """The study, created (in memory, `default_sampler`) if there is none yet."""
        if self._study is None:
            import optuna

            with quiet_optuna():
                self._study = optuna.create_study(
                    direction="maximize", sampler=default_sampler(self._settings)
                )
        return self._study

    def ask(self, fixed: dict[str, Any] | None = None) -> optuna.Trial:
        """A new trial, its params fixed to `fixed` where given (else sampled)."""
        study = self.ensure()
        with quiet_optuna():
            if fixed is not None:
                trial = ask_fixed(study, fixed)
                if trial is not None:
                    return trial
                study.enqueue_trial(fixed)
            return study.ask()

    def suggest(self, trial: optuna.Trial) -> LoaderConfig:
        """The config of `trial`: `mode` (both choices), `workers`, `max_queue_size`."""
        s = self._settings
        base = self._baseline
        workers_high = max(s.max_workers, base.workers)
        q_low = min(s.queue_size_range[0], base.max_queue_size)
        q_high = max(s.queue_size_range[1], base.max_queue_size)
        w_low, w_high = self._workers_range or (1, workers_high)
        # A fixed trial (a seed, a climb) may lie outside the sampler's current range:
        # the range includes it, so Optuna has no out-of-range value to warn about.
        fixed = _fixed(trial)
        if PARAM_WORKERS in fixed:
            w_low = min(int(w_low), int(fixed[PARAM_WORKERS]))
            w_high = max(int(w_high), int(fixed[PARAM_WORKERS]))
        if PARAM_QUEUE in fixed:
            q_low = min(q_low, int(fixed[PARAM_QUEUE]))
            q_high = max(q_high, int(fixed[PARAM_QUEUE]))
        mode = trial.suggest_categorical(PARAM_MODE, list(MODES))
        workers = trial.suggest_int(PARAM_WORKERS, int(w_low), int(max(w_high, w_low)))
        if self._queue_of is not None and PARAM_QUEUE not in fixed:
            tied = int(self._queue_of(int(workers)))
            queue = trial.suggest_int(PARAM_QUEUE, tied, tied)
        else:
            queue = trial.suggest_int(PARAM_QUEUE, q_low, q_high)
        return LoaderConfig(int(workers), int(queue), mode == "process")

    def tell(
        self,
        trial: optuna.Trial,
        record: TrialRecord,
        *,
        value: float | None = None,
        constraint: float = 0.0,
        state: str = "complete",
        not_run: bool = False,
    ) -> None:
        """Finish `trial` as `state` (`complete` with `value`, `pruned` or `failed`);
        `not_run` marks a proposal told without running (left out of reports)."""
        import optuna

        attrs = record.optuna_user_attrs()
        attrs[ATTR_CONSTRAINT] = [float(constraint)]
        attrs[ATTR_WORKER] = dict(self._worker)
        if not_run:
            attrs[ATTR_NOT_RUN] = True
        if self.profile_attr is not None:
            attrs[ATTR_PROFILE] = dict(self.profile_attr)
        if self.ranking is not None:
            ram_only, enough = self.ranking
            attrs[ATTR_THREADS_RAM_ONLY] = bool(ram_only)
            if enough is not None:
                attrs[ATTR_ENOUGH_IN_FLIGHT] = int(enough)
        for key, val in attrs.items():
            trial.set_user_attr(key, val)
        if hasattr(trial, "set_constraint"):  # Optuna >= 5: samplers read it natively
            trial.set_constraint(CONSTRAINT_KEY, float(constraint))
        optuna_state = {
            "complete": optuna.trial.TrialState.COMPLETE,
            "pruned": optuna.trial.TrialState.PRUNED,
            "failed": optuna.trial.TrialState.FAIL,
        }[state]
        study = self.ensure()
        with quiet_optuna():
            if optuna_state == optuna.trial.TrialState.COMPLETE:
                study.tell(trial, value)
            elif state == "pruned" and record.steps_per_s is not None and record.steps > 0:
                trial.report(float(record.steps_per_s), int(record.steps))  # TPE ranks it
                study.tell(trial, state=optuna_state)
            else:
                study.tell(trial, state=optuna_state)


def _fixed(trial: Any) -> dict[str, Any]:
    """The params fixed for `trial` (`ask_fixed` / `enqueue_trial`), `{}` if none."""
    fixed = getattr(trial, "_fixed_params", None)  # optuna.Trial internal, see module docs
    return dict(fixed) if isinstance(fixed, dict) else {}


__all__ = ["StudyBridge", "ask_fixed", "check_direction", "default_sampler"]
