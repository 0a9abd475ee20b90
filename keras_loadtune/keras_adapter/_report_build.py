"""`build_report`: the `TuningReport` a `LoadTuner` shows, from its session and its fit."""

from __future__ import annotations

from keras_loadtune import persistence
from keras_loadtune.decision.session import TuningSession
from keras_loadtune.report import TuningReport


def build_report(
    session: TuningSession | None,
    *,
    notes: list[str],
    broken: bool,
    wrapped: bool,
    handle: persistence.StudyHandle | None,
    cores: int,
    epoch_fractions: list[float],
    reopen_reasons: list[str],
    fit_seconds: float | None,
    fit_steps: int | None,
    worst_gap_s: float | None,
    median_step_s: float | None,
) -> TuningReport:
    """The `TuningReport` of what a `LoadTuner` measured and decided so far.

    Args:
        session: The tuning session (`None` before one started).
        notes: The tuner's own notes (the session's and the storage's are added).
        broken: True once the tuner gave up after an internal error.
        wrapped: Whether the training data is a wrapped dataset.
        handle: The study storage the session tuned in (`None`: in memory).
        cores: The cores the tuner's settings assume.
        epoch_fractions: Each epoch's `data_wait_fraction`.
        reopen_reasons: Why a compute-bound verdict was probed again.
        fit_seconds: Wall seconds of the fit after its warm-up steps.
        fit_steps: Steps of the fit after its warm-up steps (`None`: none).
        worst_gap_s: The longest step that followed one of the tuner's actions.
        median_step_s: The median of recent step times (seconds).

    Example:

    >>> build_report(None, notes=[], broken=False, wrapped=True, handle=None, cores=2,
    ...              epoch_fractions=[], reopen_reasons=[], fit_seconds=None,
    ...              fit_steps=None, worst_gap_s=None, median_step_s=None).decision
    'in-progress'
    """
    notes = list(notes)
    if session is None:
        measured_unwrapped = not wrapped and bool(epoch_fractions)
        decision = "not-wrapped" if measured_unwrapped else "in-progress"
        if decision == "not-wrapped":
            notes.append(
                "the training data was not wrapped, so it was only measured; to let the "
                "tuner act, pass `tuner.wrap(dataset)` to fit()"
            )
        return TuningReport(
            decision="tuning-failed" if broken else decision,
            baseline_config=None,
            best_config=None,
            probe_wait_fraction=epoch_fractions[0] if epoch_fractions else None,
            final_wait_fraction=epoch_fractions[-1] if epoch_fractions else None,
            epoch_wait_fractions=list(epoch_fractions),
            notes=notes,
        )
    if handle is not None and handle.note and handle.note not in notes:
        notes.append(handle.note)
    stored = handle if handle is not None and handle.study is not None else None
    notes.extend(n for n in session.notes if n not in notes)
    phase = session.phase
    best = session.best_config
    if broken:
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
    best_trial = next((t for t in trials if t.config == best and t.steps_per_s is not None), None)
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
    profile["cores"] = float(cores)
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
        final_wait_fraction=epoch_fractions[-1] if epoch_fractions else None,
        baseline_steps_per_s=baseline_sps,
        best_steps_per_s=best_trial.steps_per_s if best_trial else None,
        tuning_seconds=session.tuning_seconds,
        tuning_steps=session.tuning_steps,
        epoch_wait_fractions=list(epoch_fractions),
        notes=notes,
        reopen_reasons=[*reopen_reasons, *session.reopen_reasons],
        profile=profile,
        study_name=stored.study_name if stored is not None else None,
        storage_url=stored.storage_url if stored is not None else None,
        warm_start_from=warm.study_name if warm is not None else None,
        fit_seconds=fit_seconds,
        fit_steps=fit_steps,
        tuning_cost_seconds=session.tuning_cost_s,
        worst_step_gap_seconds=worst_gap_s,
        median_step_seconds=median_step_s,
    )


__all__ = ["build_report"]
