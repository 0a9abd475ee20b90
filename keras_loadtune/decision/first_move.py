"""`first_move`: what the loader can switch to at an input-bound probe verdict, before Optuna.

Opening the study (Optuna's import, the storage) takes up to seconds on a busy
machine; meanwhile the fit would run on the user's config, which the probe has just
found waiting. The pipeline model's seeds (`analytical.seed_configs`) need no Optuna:
`lifecycle.session_start.SessionStarter` switches to the thread seed at once (and
starts the process machinery if the model seeds processes), and the session, once
open, measures its own seeds: the same thread seed, or one a resize away.

Example:

>>> from types import SimpleNamespace
>>> from keras_loadtune.measurement import window_stats, StepSample
>>> stats = window_stats([StepSample(0.040, 0.045)] * 8)
>>> calm = ProbeVerdict(stats, False, None, [])
>>> first_move(calm, TunerSettings(cores=8), LoaderConfig(), 8)  # compute-bound: stay
FirstMove(config=None, prewarm_processes=False, process_config=None)
"""

from __future__ import annotations

from dataclasses import dataclass

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision import analytical, process_policy
from keras_loadtune.decision.probe import ProbeVerdict, profile_from
from keras_loadtune.decision.settings import TunerSettings


@dataclass(frozen=True)
class FirstMove:
    """What the loader can do at an input-bound verdict, before the study has opened.

    Opening the study (Optuna's import, the storage) takes up to seconds on a busy
    machine; meanwhile the fit would run on the user's config, which the probe has just
    found waiting. The pipeline model's thread seed needs no Optuna.

    Args:
        config: The thread seed to switch to now (`None`: stay on the baseline).
        prewarm_processes: The model seeds a process config too: start the process
            machinery in the background now.
        process_config: That process seed (`None`: none), the better first move when a
            process pool is known to start cheaply here (the caller knows).

    Example:

    >>> FirstMove(None, False).config is None
    True
    """

    config: LoaderConfig | None
    prewarm_processes: bool
    process_config: LoaderConfig | None = None


def first_move(
    verdict: ProbeVerdict, settings: TunerSettings, baseline: LoaderConfig, cores: int
) -> FirstMove:
    """The pipeline model's thread seed for an input-bound `verdict`, and whether it
    would seed processes too (the session, once open, measures its own seeds: the same
    thread seed, or one a resize away).

    Example:

    >>> from types import SimpleNamespace
    >>> from keras_loadtune.measurement import window_stats, StepSample
    >>> stats = window_stats([StepSample(0.040, 0.045)] * 8)
    >>> records = [SimpleNamespace(produce_wall_s=0.040, produce_cpu_s=0.0005, nbytes=4096)] * 8
    >>> verdict = ProbeVerdict(stats, True, None, records)
    >>> move = first_move(verdict, TunerSettings(cores=8), LoaderConfig(), 8)
    >>> move.config.workers >= 8, move.prewarm_processes  # 40 ms of latency, 5 ms steps
    (True, False)
    """
    if not verdict.input_bound or "thread" not in settings.modes:
        return FirstMove(None, False)
    profile, _ = profile_from(verdict.records, verdict.stats, baseline)
    modes = tuple(settings.modes)
    if not process_policy.helps(profile):
        modes = tuple(m for m in modes if m != "process")
    seeds = analytical.seed_configs(
        profile, verdict.stats.median_compute_s, cores, settings, baseline, modes=modes
    )
    thread = next((c for c in seeds if not c.use_multiprocessing), None)
    process = next((c for c in seeds if c.use_multiprocessing), None)
    return FirstMove(
        thread if thread != baseline else None,
        process is not None,
        process if process != baseline else None,
    )


__all__ = ["FirstMove", "first_move"]
