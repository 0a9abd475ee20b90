"""`build_report`: the `TuningReport` a `LoadTuner` shows, from its session and its fit."""

from __future__ import annotations

import math

from keras_loadtune import fingerprint, persistence
from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision.analytical import CPU_HEAVY_RATIO
from keras_loadtune.decision.limit import (
    Bound,
    MachineLimit,
    corrected_step_s,
    estimate_limit,
    step_only_limit,
)
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
    fit_wall_seconds: float | None = None,
    fit_all_steps: int | None = None,
    fit_running: bool = False,
    loader_config: LoaderConfig | None = None,
    user_config: LoaderConfig | None = None,
    first_move: LoaderConfig | None = None,
    first_move_wait: float | None = None,
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
        fit_wall_seconds: Wall seconds of the whole fit (`on_train_begin` to its end,
            or to now), start-ups and warm-up included (`None`: unknown).
        fit_all_steps: All training steps of the fit so far, warm-up included.
        fit_running: True while the fit is still running (a mid-fit report).
        loader_config: The training data's loader config now (`None`: unknown). A fit
            that ended before a session started kept it.
        user_config: The config the probe measured (the user's), when it found the fit
            input-bound before a session existed.
        first_move: The config the loader moved to at that verdict, while the study
            opened (`SessionStarter.first_move`), if a session never took over.
        first_move_wait: The wait fraction the probe measured on `user_config`.

    Example:

    >>> build_report(None, notes=[], broken=False, wrapped=True, handle=None, cores=2,
    ...              epoch_fractions=[], reopen_reasons=[], fit_seconds=None,
    ...              fit_steps=None, worst_gap_s=None, median_step_s=None).decision
    'in-progress'
    """
    notes = list(notes)
    backend = fingerprint.keras_backend()
    fit_fields = {
        "fit_seconds": fit_seconds,
        "fit_steps": fit_steps,
        "fit_wall_seconds": fit_wall_seconds,
        "fit_all_steps": fit_all_steps,
        "fit_running": bool(fit_running),
        "backend": backend,
        "worst_step_gap_seconds": worst_gap_s,
        "median_step_seconds": median_step_s,
    }
    if session is None:
        measured_unwrapped = not wrapped and bool(epoch_fractions)
        decision = "not-wrapped" if measured_unwrapped else "in-progress"
        ended = wrapped and not fit_running
        if ended and first_move is not None and user_config is not None:
            # The probe found your config waiting and the loader moved to the pipeline
            # model's seed; training ended before the study opened to measure it.
            wait = "" if first_move_wait is None else f" ({first_move_wait:.0%} of each step)"
            notes.append(
                f"the probe found your config waiting for data{wait}; the loader ran the "
                f"pipeline model's seed, {first_move}, while the study opened, and training "
                "ended before it could be measured (a longer fit lets the tuner measure)"
            )
            ran: tuple[str, LoaderConfig, LoaderConfig, float | None] | None = (
                "tuned",
                user_config,
                first_move,
                first_move_wait,
            )
        elif ended and fit_all_steps and loader_config is not None:
            # A final report never says "in progress": the fit ended before the probe
            # decided, or while the study was still opening; the config stayed yours
            # (no probe decided: the epochs say it all).
            notes.append(
                "training ended before tuning started (the probe or the study was not "
                "ready yet): your config was kept"
            )
            ran = ("kept-baseline", loader_config, loader_config, None)
        else:
            ran = None
        if ran is not None:
            outcome, baseline, kept, probe_wait = ran
            cost = cost_parts(None, [], handle)
            return TuningReport(
                decision="tuning-failed" if broken else outcome,
                baseline_config=baseline,
                best_config=kept,
                probe_wait_fraction=probe_wait,
                final_wait_fraction=epoch_fractions[-1] if epoch_fractions else None,
                epoch_wait_fractions=list(epoch_fractions),
                notes=notes,
                cost=cost,
                tuning_cost_seconds=sum(cost.values()) if cost else None,
                **fit_fields,
            )
        if decision == "not-wrapped":
            notes.append(
                "the training data was not wrapped, so it was only measured; to let the "
                "tuner act, pass `tuner.wrap(dataset)` to fit()"
            )
        limit = None
        if measured_unwrapped and median_step_s is not None:
            wait = sum(epoch_fractions) / len(epoch_fractions)
            limit = step_only_limit(median_step_s, min(max(wait, 0.0), 0.99))
        return TuningReport(
            decision="tuning-failed" if broken else decision,
            baseline_config=None,
            best_config=None,
            probe_wait_fraction=epoch_fractions[0] if epoch_fractions else None,
            final_wait_fraction=epoch_fractions[-1] if epoch_fractions else None,
            epoch_wait_fractions=list(epoch_fractions),
            notes=notes,
            limit=limit,
            **fit_fields,
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
    loader = session.profile or getattr(session, "probe_profile", None)
    if loader is not None:
        profile = {
            "produce_wall_s": loader.produce_wall_s,
            "produce_cpu_s": loader.produce_cpu_s,
            "batch_nbytes": float(loader.batch_nbytes),
        }
    if probe is not None:
        profile["step_compute_s"] = probe.median_compute_s
    profile["cores"] = float(cores)
    step = limit_step_s(session, profile)
    probe_step = profile.get("step_compute_s")
    if step is not None and probe_step and abs(step - probe_step) > 0.01 * probe_step:
        # One step for the Profile line and the limit: the one measured on the config
        # in use, or the one a faster trial proves; the probe's is kept for reference.
        profile["probe_compute_s"] = probe_step
        profile["step_compute_s"] = step
    warm = session.warm_start
    baseline_sps = baseline_trial.steps_per_s if baseline_trial else None
    if baseline_sps is None and warm is not None:  # not re-measured: the stored figure
        baseline_sps = warm.baseline_steps_per_s
    report = TuningReport(
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
        tuning_cost_seconds=None,
        wait_threshold=session.settings.wait_threshold,
        **fit_fields,
    )
    report.cost = cost_parts(session.tuning_cost_s, trials, handle)
    if report.cost:
        report.tuning_cost_seconds = sum(report.cost.values())
    in_use = report.in_use_steps_per_s
    in_use_trial = best_trial if report.speedup is not None else baseline_trial
    in_use_wait = in_use_trial.wait_fraction if in_use_trial is not None else None
    if in_use is None and probe is not None and probe.mean_step_s > 0:
        in_use = 1.0 / probe.mean_step_s  # no trial (compute-bound): the probe's rate
        in_use_wait = probe.wait_fraction
    report.limit = session_limit(session, profile, backend, in_use, in_use_wait)
    if report.limit is None and decision == "compute-bound" and probe is not None:
        step = profile.get("step_compute_s")
        report.limit = step_only_limit(step, 0.0) if step else None  # the Profile's step
        if report.limit is not None:
            report.limit = report.limit.with_reached(1.0 / probe.mean_step_s)
    limit, step = report.limit, profile.get("step_compute_s")
    if limit is not None and step and limit.steps_per_s * step > 1.0 + 1e-9:
        # A measured rate (the config in use's) above 1 / step proves a shorter step:
        # the Profile says so, so that it never allows less than the limit.
        profile.setdefault("probe_compute_s", step)
        profile["step_compute_s"] = 1.0 / limit.steps_per_s
    return report


def in_use_compute_s(session: TuningSession) -> float | None:
    """The step's compute on the config in use, from its best measured trial:
    `(1 - wait_fraction) / steps_per_s` (`None` when not measured).

    Example:

    ```python
    in_use_compute_s(session)  # e.g. 0.021
    ```
    """
    config = session.best_config
    rates = [
        (float(t.steps_per_s), float(t.wait_fraction))
        for t in session.trials
        if t.config == config
        and t.state == "complete"
        and isinstance(t.steps_per_s, (int, float))
        and t.steps_per_s > 0
        and isinstance(t.wait_fraction, (int, float))
    ]
    if not rates:
        return None
    rate, wait = max(rates)
    return min(max(1.0 - wait, 0.0), 1.0) / rate


def cost_parts(
    tuning_cost_s: float | None,
    trials: list,
    handle: persistence.StudyHandle | None,
) -> dict[str, float]:
    """What the tuner added to the fit, by part (seconds; the parts sum to `Cost`):
    opening the study storage (`StudyHandle.costs_s`, when the handle has it), the
    pool starts of its trials, and the rest of its probe and trials (their time
    minus the same steps at the best rate). Empty when nothing is known.

    Example:

    >>> cost_parts(1.5, [], None)
    {'probe and trials': 1.5}
    """
    parts: dict[str, float] = {}
    costs = getattr(handle, "costs_s", None) if handle is not None else None
    if isinstance(costs, dict):
        for key, value in costs.items():
            if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
                parts[f"study storage: {key}"] = float(value)
    if tuning_cost_s is not None and math.isfinite(tuning_cost_s):
        starts = sum(
            float(t.startup_s)
            for t in trials
            if isinstance(t.startup_s, (int, float)) and math.isfinite(t.startup_s)
        )
        starts = min(max(starts, 0.0), max(float(tuning_cost_s), 0.0))
        if starts > 0:
            parts["pool starts"] = starts
        parts["probe and trials"] = max(float(tuning_cost_s) - starts, 0.0)
    return parts


def limit_step_s(session: TuningSession, profile: dict[str, float]) -> float | None:
    """The model step (seconds) the report's Profile line and limit both use.

    A light loader cannot slow the step: the step measured on the config in use (the
    latest) is the one this machine delivers now. A CPU-heavy loader's probe step
    may include its contention; only a trial can show less, so the probe's step
    stands. Either way a trial that measured faster than `1 / step` proves a shorter
    step (`corrected_step_s`). `None` when the profile has no step.

    Example:

    ```python
    limit_step_s(session, {"produce_wall_s": 0.03, "produce_cpu_s": 0.0,
                           "step_compute_s": 0.0077})   # e.g. 0.0052
    ```
    """
    step = profile.get("step_compute_s")
    wall, cpu = profile.get("produce_wall_s"), profile.get("produce_cpu_s")
    if not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
        return None
    step = float(step)
    light = isinstance(wall, (int, float)) and isinstance(cpu, (int, float))
    if light and cpu < CPU_HEAVY_RATIO * wall:  # type: ignore[operator]
        step = in_use_compute_s(session) or step
    measured = [
        float(t.steps_per_s)
        for t in session.trials
        if t.state == "complete" and isinstance(t.steps_per_s, (int, float)) and t.steps_per_s > 0
    ]
    return corrected_step_s(step, measured)


def session_limit(
    session: TuningSession,
    profile: dict[str, float],
    backend: str,
    in_use: float | None,
    in_use_wait: float | None = None,
) -> MachineLimit | None:
    """The machine limit from the session's measured profile (`None` when incomplete).

    `reached` is the config in use's rate over the limit; when the model step is the
    bound and that config's wait fraction is known, at least `1 - wait` (what the
    loader leaves of the step's own rate; the rest is the step's noise, not the loader).

    Example:

    ```python
    limit = session_limit(session, report.profile, "tensorflow", report.in_use_steps_per_s)
    ```
    """
    needed = ("produce_wall_s", "produce_cpu_s", "step_compute_s", "cores")
    values = [profile.get(k) for k in needed]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    settings = session.settings
    step = limit_step_s(session, profile) or float(profile["step_compute_s"])
    wall, cpu = float(profile["produce_wall_s"]), float(profile["produce_cpu_s"])
    limit = estimate_limit(
        produce_wall_s=wall,
        produce_cpu_s=cpu,
        step_compute_s=step,
        cores=max(int(profile["cores"]), 1),
        batch_nbytes=int(profile.get("batch_nbytes", 0.0)),
        ram_budget_bytes=settings.ram_budget_bytes,
        step_uses_cores=fingerprint.accelerator_kind(backend) == "cpu",
        modes=tuple(session.modes) or ("thread",),
        max_thread_workers=int(settings.max_thread_workers or 256),
        max_process_workers=settings.max_process_workers,
    )
    measured = [
        float(t.steps_per_s)
        for t in session.trials
        if t.state == "complete" and isinstance(t.steps_per_s, (int, float)) and t.steps_per_s > 0
    ]
    if measured and max(measured) > limit.steps_per_s:  # a measured rate is reachable
        from dataclasses import replace

        limit = replace(limit, steps_per_s=max(measured), estimated=False)
    limit = limit.with_reached(in_use)
    if limit.bound is Bound.MODEL_STEP and in_use_wait is not None and 0 <= in_use_wait <= 1:
        from dataclasses import replace

        limit = replace(limit, reached=min(max(limit.reached or 0.0, 1.0 - in_use_wait), 1.0))
    return limit


__all__ = ["build_report"]
