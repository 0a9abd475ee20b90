"""`Planner`: what the search may try for this loader, and whether a trial pays.

From the measured `LoaderProfile` the planner shapes what Optuna sees
(`shape_space`): no process mode for a latency-bound loader (CPU << wall per
batch), per-loader worker caps (`analytical.thread_cap`, `process_cap`) and the
queue tied to the workers (`analytical.queue_for`). Once the seeds ran, the sampler
searches around the incumbent (`search_locally`: workers / 2 .. x 2). Every
proposal must pay (`unpaid`, see `decision.payoff`) against the pipeline model's
prediction (`predicted_rate`), which includes the GIL share learned from thread
trials of a CPU-heavy loader (`learn_gil`). The planner returns values and reasons;
it never calls the session.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.decision.memory import MemoryBudget
>>> from keras_loadtune.decision.optuna_bridge import StudyBridge
>>> from keras_loadtune.decision.payoff import PayoffModel
>>> from keras_loadtune.decision.settings import TunerSettings
>>> s = TunerSettings(cores=4)
>>> planner = Planner(s, LoaderConfig(), 4, StudyBridge(s, LoaderConfig()),
...                   MemoryBudget(s, LoaderConfig(), lambda: 0), PayoffModel(payoff_ratio=2.0),
...                   modes=["thread"])
>>> planner.infeasible_reason(LoaderConfig(2, 4, True))
'process mode not available'
"""

from __future__ import annotations

import math
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.decision import analytical, delivery, process_policy, ranking
from keras_loadtune.decision.memory import MemoryBudget
from keras_loadtune.decision.optuna_bridge import StudyBridge
from keras_loadtune.decision.payoff import PayoffModel
from keras_loadtune.decision.probe import profile_from
from keras_loadtune.decision.ranking import RankKey
from keras_loadtune.decision.search import SearchRound
from keras_loadtune.decision.settings import TunerSettings
from keras_loadtune.measurement import LoaderProfile, WindowStats
from keras_loadtune.trial import TrialRecord

# Local search after the seeds: the workers range becomes incumbent / 2 .. incumbent x 2.
LOCAL_SPAN = 2.0
# A climb (twice the threads of a thread best at the wait floor, see `search`) is
# predicted this much faster than the best: the share of a step the loader threads'
# own time can take without a wait to show it (on a 16-core GPU machine, 5-6 threads
# that kept up stepped 8.3 ms, 16 threads 6.6 ms: 25%; we assume less).
CLIMB_GAIN = 0.10
# A climb adds at least this factor of threads (a smaller step measures only noise).
CLIMB_MIN_STEP = 1.5
# A thread best's step counts as slowed by its loader threads (not at the compute
# floor) once it computes this share longer than the step measured without them.
CONTENTION_SLACK = 0.25
# A wait climb sizes workers as if the best waited at most this share of each step.
WAIT_CLIMB_MAX_WAIT = process_policy.WAIT_CLIMB_MAX_WAIT


class Planner:
    """The search space of one session and the economics of its trials.

    Args:
        settings: Search space, caps and thresholds.
        baseline: The user's config (always within the caps).
        cores: Cores for the pipeline model.
        bridge: The study bridge whose sampler space is shaped.
        memory: The RAM budget (process RSS learned for the model).
        payoff: Weighs a trial's predicted gain against its cost.
        modes: Worker modes available (process mode drops out after a failure).

    Attributes:
        modes: Worker modes still available (a list the session may shrink).
        profile: The loader's measured profile (`None` before the probe ends).
        compute_s: The trainer's compute seconds per step the seeds were fitted to.
        probe_step_s: Mean step of the probe (what contention predictions use).
        clean_compute_s: The step's compute measured with no loader thread in the
            trainer's process (an inline or process window), `None` before one ran.
        contended: The probe saw contention: loader threads use a large share of the
            step's time in the trainer's process, so the measured compute overstates
            a process config's step.
    """

    def __init__(
        self,
        settings: TunerSettings,
        baseline: LoaderConfig,
        cores: int,
        bridge: StudyBridge,
        memory: MemoryBudget,
        payoff: PayoffModel,
        *,
        modes: list[str],
    ) -> None:
        self.settings = settings
        self.baseline = baseline
        self.cores = cores
        self._bridge = bridge
        self._memory = memory
        self._payoff = payoff
        self.modes = modes
        self.profile: LoaderProfile | None = None
        self.compute_s = 0.0
        self.probe_step_s: float | None = None
        self.clean_compute_s: float | None = None
        self.contended = False
        self._size_uncontended = False
        self._gil = 0.0  # share of the loader's CPU time holding the GIL, learned
        self._round_modes: tuple[str, ...] = tuple(modes)
        self._caps: dict[str, int] = {}
        self._local = False  # the sampler searches around the incumbent

    def set_profile(
        self, records: list[Any], stats: WindowStats, config: LoaderConfig
    ) -> str | None:
        """Profile the loader from producer records (or step times); a note if inferred."""
        self.profile, note = profile_from(records, stats, config)
        return note

    def seed(
        self, stats: WindowStats, *, contended: bool = False, size_uncontended: bool = False
    ) -> list[LoaderConfig]:
        """Shape the space for a new round from `stats`; the pipeline model's seeds.

        Args:
            stats: The window the round starts from (the probe, or a drift window).
            contended: Loader threads slow the step (see `contended`).
            size_uncontended: Size process configs (seed, cap) for the uncontended step
                too, not only predict them with it: when contention alone made the
                probe input-bound (the step barely waited), the measured compute is
                mostly the loader's; with a real wait it is closer to the trainer's own.
        """
        self.compute_s = stats.median_compute_s
        self.contended = bool(contended)
        self._size_uncontended = bool(size_uncontended)
        self._shape_space()
        return self.seeds()

    def _sizing_compute_s(self) -> float:
        """The step process configs are sized for (see `seed`'s `size_uncontended`)."""
        return self.process_compute_s() if self._size_uncontended else self.compute_s

    def process_compute_s(self) -> float:
        """The trainer's step compute a process config is predicted to run at.

        See `process_policy.uncontended_compute_s`.

        Example:

        >>> from keras_loadtune.decision.settings import TunerSettings
        >>> planner = Planner.__new__(Planner)
        >>> planner.compute_s, planner.contended = 0.024, True
        >>> planner.profile = LoaderProfile(0.016, 0.016, 1.0, 1 << 16, 0.0)
        >>> round(planner.process_compute_s(), 4)
        0.008
        """
        return process_policy.uncontended_compute_s(
            self.compute_s, self.profile, contended=self.contended
        )

    def seeds(self) -> list[LoaderConfig]:
        """Analytical seeds for the current profile (RAM fitted against the baseline,
        whose memory the probe measured; already measured configs are deduped later)."""
        assert self.profile is not None
        return analytical.seed_configs(
            self.profile,
            self.compute_s,
            self.cores,
            self.settings,
            self.baseline,
            modes=tuple(self.modes),
            process_rss_bytes=self._memory.process_rss,
            process_compute_s=self._sizing_compute_s(),
        )

    def _shape_space(self) -> None:
        """Per-loader search space of this round, from the measured profile."""
        profile, s, base = self.profile, self.settings, self.baseline
        assert profile is not None
        modes = tuple(self.modes)
        if not process_policy.helps(profile) and "thread" in modes:
            modes = tuple(m for m in modes if m != "process")
        self._round_modes = modes
        compute = self.compute_s
        caps = {
            "thread": analytical.thread_cap(profile, compute, s, baseline=base),
            "process": analytical.process_cap(profile, self._sizing_compute_s(), self.cores, s),
        }
        caps[base.mode] = max(caps[base.mode], base.workers)
        self._caps = caps
        self._local = False
        self._bridge.set_space((1, max(caps[m] for m in modes)), self.queue_of)

    def queue_of(self, workers: int) -> int:
        """The queue tied to `workers` (`analytical.queue_for` of the loader's jitter)."""
        jitter = self.profile.jitter_cv if self.profile is not None else 0.0
        return analytical.queue_for(workers, jitter, self.settings)

    def allowed_modes(self) -> tuple[str, ...]:
        """Modes this round searches that are still available."""
        return tuple(m for m in self._round_modes if m in self.modes)

    def climb_from(self, best: LoaderConfig) -> LoaderConfig | None:
        """The thread config a round at the wait floor tries next: twice `best`'s
        threads (at least one more), capped; `None` if there is none to try.

        Example:

        >>> from keras_loadtune.decision.memory import MemoryBudget
        >>> from keras_loadtune.decision.optuna_bridge import StudyBridge
        >>> from keras_loadtune.decision.payoff import PayoffModel
        >>> from keras_loadtune.decision.settings import TunerSettings
        >>> s = TunerSettings(cores=4)
        >>> planner = Planner(s, LoaderConfig(), 4, StudyBridge(s, LoaderConfig()),
        ...                   MemoryBudget(s, LoaderConfig(), lambda: 0),
        ...                   PayoffModel(payoff_ratio=2.0), modes=["thread"])
        >>> planner.climb_from(LoaderConfig(6, 8)).workers
        12
        """
        if best.use_multiprocessing or "thread" not in self.allowed_modes():
            return None
        cap = min(
            self._caps.get("thread", self.settings.worker_cap("thread")),
            max(self.settings.worker_cap("thread"), self.baseline.workers),
        )
        workers = min(max(2 * best.workers, best.workers + 1), cap)
        if workers < CLIMB_MIN_STEP * best.workers or workers <= best.workers:
            return None  # a step this small would only measure noise
        candidate = LoaderConfig(workers, self.queue_of(workers))
        if self.infeasible_reason(candidate) is not None:
            return None
        space = self._bridge.workers_range
        if space is not None and workers > space[1]:  # the sampler's space includes it
            self._bridge.set_space((space[0], workers), self.queue_of)
        return candidate

    def note_window(self, config: LoaderConfig, stats: WindowStats) -> None:
        """Keep the step's compute measured with no loader thread in the trainer's
        process (`clean_compute_s`): an inline or process window's median compute."""
        if (config.inline or config.use_multiprocessing) and stats.median_compute_s > 0:
            known = self.clean_compute_s
            measured = float(stats.median_compute_s)
            self.clean_compute_s = measured if known is None else min(known, measured)

    def loader_slows(self, best: TrialRecord) -> bool:
        """Whether a thread `best` that barely waits still runs its steps far over the
        step measured without loader threads (`clean_compute_s`): a CPU-heavy loader's
        threads hold the GIL while the step runs, which shows as a longer step, not a
        wait. That is loader cost (processes are its remedy), not the compute floor.

        Example:

        >>> from keras_loadtune.decision.memory import MemoryBudget
        >>> from keras_loadtune.decision.optuna_bridge import StudyBridge
        >>> from keras_loadtune.decision.payoff import PayoffModel
        >>> from keras_loadtune.decision.settings import TunerSettings
        >>> from keras_loadtune.measurement import LoaderProfile
        >>> s = TunerSettings(cores=2)
        >>> planner = Planner(s, LoaderConfig(), 2, StudyBridge(s, LoaderConfig()),
        ...                   MemoryBudget(s, LoaderConfig(), lambda: 0),
        ...                   PayoffModel(payoff_ratio=2.0), modes=["thread", "process"])
        >>> planner.profile = LoaderProfile(0.015, 0.015, 1.0, 1 << 16, 0.0)  # pure Python
        >>> planner.clean_compute_s = 0.0134  # the inline probe's step without the loader
        >>> best = TrialRecord(1, LoaderConfig(2, 4), "complete", "analytical",
        ...                    steps_per_s=37.5, wait_fraction=0.0)  # 26.7 ms steps
        >>> planner.loader_slows(best)
        True
        """
        config, clean = best.config, self.clean_compute_s
        if config.use_multiprocessing or config.inline or clean is None or clean <= 0:
            return False
        if not self.cpu_heavy() or "process" not in self.modes or not best.steps_per_s:
            return False
        wait = min(max(best.wait_fraction or 0.0, 0.0), 1.0)
        compute = (1.0 - wait) / float(best.steps_per_s)
        return compute > clean * (1.0 + CONTENTION_SLACK)

    def can_add_threads(self, config: LoaderConfig) -> bool:
        """Whether more threads than `config`'s could still cut a wait: a thread (or
        inline) config of a loader that is not CPU-heavy, under the absolute cap.

        Example:

        >>> from keras_loadtune.decision.memory import MemoryBudget
        >>> from keras_loadtune.decision.optuna_bridge import StudyBridge
        >>> from keras_loadtune.decision.payoff import PayoffModel
        >>> from keras_loadtune.decision.settings import TunerSettings
        >>> from keras_loadtune.measurement import LoaderProfile
        >>> s = TunerSettings(cores=2)
        >>> planner = Planner(s, LoaderConfig(), 2, StudyBridge(s, LoaderConfig()),
        ...                   MemoryBudget(s, LoaderConfig(), lambda: 0),
        ...                   PayoffModel(payoff_ratio=2.0), modes=["thread"])
        >>> planner.profile = LoaderProfile(0.040, 0.001, 0.025, 1 << 16, 0.0)
        >>> planner.can_add_threads(LoaderConfig(7, 9))
        True
        >>> planner.can_add_threads(LoaderConfig(4, 5, use_multiprocessing=True))
        False
        """
        if config.use_multiprocessing or self.profile is None or self.cpu_heavy():
            return False
        return "thread" in self.modes and config.workers < self.settings.worker_cap("thread")

    def wait_climb_from(self, best: TrialRecord) -> LoaderConfig | None:
        """The config to try while `best` still waits for data: more threads for a
        thread best, more processes for a process best (`_process_wait_climb`).

        Measured evidence over the model: at rate R the best waits W of each step, so
        its threads deliver a batch every 1/R s while the step needs one every
        (1 - W)/R s; covering that takes `workers / (1 - W)` threads, plus the seeds'
        margin (`analytical.RATE_MARGIN`), at least `CLIMB_MIN_STEP` times as many.
        Threads cost a batch of RAM each (the RAM budget still applies), so no payoff
        gate: the round does not end while epochs wait and such a config is untried.
        `None` for a thread best of a CPU-heavy loader (its threads contend for the
        GIL: processes are its remedy), a best that barely waits, or at the cap.

        Example:

        >>> from keras_loadtune.decision.memory import MemoryBudget
        >>> from keras_loadtune.decision.optuna_bridge import StudyBridge
        >>> from keras_loadtune.decision.payoff import PayoffModel
        >>> from keras_loadtune.decision.settings import TunerSettings
        >>> from keras_loadtune.measurement import LoaderProfile
        >>> s = TunerSettings(cores=2)
        >>> planner = Planner(s, LoaderConfig(), 2, StudyBridge(s, LoaderConfig()),
        ...                   MemoryBudget(s, LoaderConfig(), lambda: 0),
        ...                   PayoffModel(payoff_ratio=2.0), modes=["thread"])
        >>> planner.profile = LoaderProfile(0.040, 0.001, 0.025, 1 << 16, 0.0)
        >>> best = TrialRecord(1, LoaderConfig(7, 9), "complete", "analytical",
        ...                    steps_per_s=130.0, wait_fraction=0.23)
        >>> planner.wait_climb_from(best).workers  # 7 / 0.77 x 1.25
        12
        """
        config, wait = best.config, best.wait_fraction
        if wait is None or wait < self.settings.wait_threshold:
            return None
        if config.use_multiprocessing:
            return self._process_wait_climb(best)
        if not self.can_add_threads(config) or "thread" not in self.allowed_modes():
            return None
        share = max(1.0 - min(wait, 1.0), 1.0 - WAIT_CLIMB_MAX_WAIT)
        workers = math.ceil(config.workers / share * (1.0 + analytical.RATE_MARGIN))
        workers = max(workers, math.ceil(CLIMB_MIN_STEP * config.workers))
        workers = min(workers, self.settings.worker_cap("thread"))
        if workers <= config.workers:
            return None
        self._caps["thread"] = max(self._caps.get("thread", 1), workers)
        space = self._bridge.workers_range
        if space is not None and workers > space[1]:  # the sampler's space includes it
            self._bridge.set_space((space[0], workers), self.queue_of)
        return LoaderConfig(workers, self.queue_of(workers))

    def _process_wait_climb(self, best: TrialRecord) -> LoaderConfig | None:
        """More worker processes for a process `best` that still waits
        (`process_policy.wait_climb_workers`, at most the cores); the round weighs it
        with the payoff gate (`predicted_rate`: `process_policy.wait_climb_rate`)."""
        config = best.config
        if "process" not in self.allowed_modes() or best.wait_fraction is None:
            return None
        cap = min(self.settings.worker_cap("process"), self.cores)
        workers = process_policy.wait_climb_workers(
            config.workers, best.wait_fraction, cap=cap, margin=analytical.RATE_MARGIN
        )
        if workers is None:
            return None
        self._caps["process"] = max(self._caps.get("process", 1), workers)
        space = self._bridge.workers_range
        if space is not None and workers > space[1]:  # the sampler's space includes it
            self._bridge.set_space((space[0], workers), self.queue_of)
        return LoaderConfig(workers, self.queue_of(workers), True)

    def search_locally(self, rnd: SearchRound) -> None:
        """After the seeds, the sampler searches around the incumbent's worker count.

        Also hands the round its climbs (`climb_from`, `wait_climb_from`)."""
        rnd.climb = self.climb_from
        rnd.wait_climb = self.wait_climb_from
        rnd.loader_slows = self.loader_slows
        rnd.rank_key = self.rank_key
        if self._local or rnd.pending_seeds or rnd.best is None or not self._caps:
            return
        modes = self.allowed_modes()
        if not modes:
            return
        self._local = True
        cap = max(self._caps[m] for m in modes)
        best = rnd.best.config.workers
        low = max(1, int(best / LOCAL_SPAN))
        high = min(cap, max(math.ceil(best * LOCAL_SPAN), low + 1))
        self._bridge.set_space((low, max(high, low)), self.queue_of)

    def infeasible_reason(self, config: LoaderConfig) -> str | None:
        """Why `config` cannot run in this round (mode off, over a cap), or `None`."""
        mode = config.mode
        if mode not in self.modes:
            return f"{mode} mode not available"
        if mode not in self._round_modes:
            return process_policy.NOT_CPU_HEAVY
        cap = min(
            self._caps.get(mode, self.settings.worker_cap(mode)),
            max(self.settings.worker_cap(mode), self.baseline.workers),
        )
        if config.workers > cap:
            return f"{config.workers} {mode} workers is over the cap of {cap}"
        return None

    def rank_key(self) -> RankKey:
        """The cost order among near-equal configs (`decision.ranking.rank_key`): more
        threads first up to `round_cap` where the loader is not CPU-heavy."""
        return ranking.rank_key(not self.cpu_heavy(), self.round_cap())

    def round_cap(self) -> int | None:
        """The most steps a delivery round spans here (`decision.delivery.round_cap`), from
        the profile and the fastest step estimate; `None` for a CPU-heavy loader, whose
        production time grows with the threads contending for the cores."""
        if self.cpu_heavy():
            return None
        steps = [s for s in (self.compute_s, self.clean_compute_s) if s is not None and s > 0]
        return delivery.round_cap(self.profile, min(steps)) if steps else None

    def cpu_heavy(self) -> bool:
        """Whether the loader's CPU share per batch makes it CPU-heavy."""
        return process_policy.helps(self.profile)

    def learn_gil(self, config: LoaderConfig, stats: WindowStats) -> None:
        """Learn from a measured window what the pipeline model cannot see.

        - The trainer's compute: a thread window whose step (wait excluded) is
          shorter than the fitted `compute_s` shows that part of it was the loader
          threads' own cost in the trainer's process (a batch delivered just in
          time, the GIL still held by the thread that delivered it), not the
          trainer's: `compute_s` drops to it, so more threads are predicted faster.
        - A thread config of a CPU-heavy loader far under the GIL-free prediction
          shows how much of the loader's CPU time holds the GIL, whether its steps
          waited or not (threads that keep the queue full while holding the GIL slow
          the step instead: a window aborted as GIL-bound).
        """
        self._learn_compute(config, stats)
        profile = self.profile
        if config.use_multiprocessing or not self.cpu_heavy() or profile is None:
            return
        if stats.steps_per_s <= 0:
            return
        free = analytical.predict(config, profile, self.compute_s, self.cores).steps_per_s
        if stats.steps_per_s < 0.8 * free and profile.produce_cpu_s > 0:
            gil = min(1.0, 1.0 / (stats.steps_per_s * profile.produce_cpu_s))
            self._gil = max(self._gil, gil)

    def _learn_compute(self, config: LoaderConfig, stats: WindowStats) -> None:
        """Lower `compute_s` to what a measured window proves (see `learn_gil`).

        Any window at rate R waiting W of its time bounds the step's compute at
        `(1 - W) / R`: its steps computed no longer than that on average, whatever the
        config (a process window under contention measures another step: see
        `process_compute_s`). A thread window's median compute lowers it too (not under
        contention, where part of it is the loader threads' own cost)."""
        if self.compute_s <= 0 or not stats.steps or stats.steps_per_s <= 0:
            return
        if config.use_multiprocessing and self.contended:
            return  # `compute_s` is the contended step here; processes measure another
        bound = (1.0 - min(max(stats.wait_fraction, 0.0), 1.0)) / stats.steps_per_s
        if 0 < bound < self.compute_s:
            self.compute_s = bound
        if config.use_multiprocessing or self.contended:
            return
        measured = stats.median_compute_s
        if 0 < measured < self.compute_s:
            self.compute_s = measured

    def predicted_rate(self, config: LoaderConfig, rnd: SearchRound | None) -> float | None:
        """Steps/s the pipeline model predicts for `config` (`None`: no model yet)."""
        profile = self.profile
        if profile is None or self.compute_s <= 0:
            return None
        if rnd is not None and rnd.best is not None and config == rnd.pending_climb:
            best = rnd.best
            if config.use_multiprocessing and best.config.use_multiprocessing:
                return process_policy.wait_climb_rate(
                    float(best.steps_per_s or 0.0),
                    float(best.wait_fraction or 0.0),
                    best.config.workers,
                    config.workers,
                    produce_cpu_s=profile.produce_cpu_s,
                    cores=self.cores,
                )
            # The model cannot see the loader threads' own cost: a climb is predicted
            # from the measured best.
            return float(best.steps_per_s or 0.0) * (1.0 + CLIMB_GAIN)
        if config.use_multiprocessing and self.contended:
            # Loader threads slow each step; processes take their CPU time out of the
            # trainer's process (`process_compute_s`), then the pipeline model applies.
            return analytical.predict(
                config,
                profile,
                self.process_compute_s(),
                self.cores,
                process_rss_bytes=self._memory.process_rss,
            ).steps_per_s
        if rnd is not None and not rnd.floor_by_wait and self.probe_step_s is not None:
            # Contention alone (the step barely waits): more threads cannot beat the
            # probe's step; the pipeline model has no GIL share for the trainer.
            return 1.0 / max(self.probe_step_s, 1e-9)
        return analytical.predict(
            config,
            profile,
            self.compute_s,
            self.cores,
            gil_fraction=0.0 if config.use_multiprocessing else self._gil,
            process_rss_bytes=self._memory.process_rss,
        ).steps_per_s

    def unpaid(
        self,
        config: LoaderConfig,
        rnd: SearchRound | None,
        *,
        current: LoaderConfig,
        steps_left: int | None,
    ) -> str | None:
        """Why trying `config` now does not pay (see `decision.payoff`), or `None`.

        Args:
            config: The candidate.
            rnd: The round (its best is the rate to beat).
            current: The config the loader runs now.
            steps_left: Training steps left in this fit (`None`: unknown).
        """
        best = rnd.best if rnd is not None else None
        profile = self.profile
        predicted = self.predicted_rate(config, rnd)
        if best is None or not best.steps_per_s or profile is None or predicted is None:
            return None
        verdict = self._payoff.assess(
            config,
            current=current,
            best_rate=float(best.steps_per_s),
            predicted_rate=predicted,
            steps_left=steps_left,
            trial_steps=delivery.refill_steps(self.settings, config, current, self.round_cap())
            + delivery.window_steps(self.settings, config, self.round_cap())[1],
            produce_wall_s=profile.produce_wall_s,
        )
        return None if verdict.pays else f"not worth it: {verdict.reason}"

    def nothing_pays(
        self,
        modes: tuple[str, ...],
        rnd: SearchRound,
        *,
        current: LoaderConfig,
        steps_left: int | None,
    ) -> str | None:
        """Why no config of the sampler's space can pay for a trial, or `None`.

        The pipeline model's best prediction over the space (each mode, every worker
        count up to its cap, the tied queue) is weighed as any proposal would be.
        """
        space = self._bridge.workers_range
        if rnd.best is None or self.profile is None or space is None:
            return None
        if rnd.pending_climb is not None:  # a climb is weighed on its own
            return None
        low, high = space
        best: LoaderConfig | None = None
        best_rate = -1.0
        for mode in modes:
            cap = min(high, self._caps.get(mode, high))
            for workers in range(max(low, 1), max(cap, low) + 1):
                config = LoaderConfig(workers, self.queue_of(workers), mode == "process")
                rate = self.predicted_rate(config, rnd)
                if rate is not None and rate > best_rate:
                    best, best_rate = config, rate
        if best is None:
            return None
        why = self.unpaid(best, rnd, current=current, steps_left=steps_left)
        return None if why is None else f"no config left that pays for its trial ({why})"


__all__ = [
    "CLIMB_GAIN",
    "CLIMB_MIN_STEP",
    "CONTENTION_SLACK",
    "LOCAL_SPAN",
    "WAIT_CLIMB_MAX_WAIT",
    "Planner",
]
