"""`TunedPyDataset`: a `keras.utils.PyDataset` whose loader can be retuned while training runs."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import keras

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine import (
    DatasetNotPicklableError,
    GeneratorFactorySource,
    LoaderStats,
    Prefetcher,
    Stream,
    check_picklable,
    cold_start_estimate_s,
)
from keras_loadtune.engine import prewarm_processes as _prewarm
from keras_loadtune.engine.prefetcher import check_seconds
from keras_loadtune.keras_adapter import _hooks
from keras_loadtune.keras_adapter.input_kind import InputKind, RestartPoint, classify
from keras_loadtune.keras_adapter.inputs import InputPlan, announce, plan_input
from keras_loadtune.keras_adapter.pass_keys import OwnPassOrder, RepeatedPass

_SUPPORTED = (
    "keras_loadtune can wrap a keras.utils.PyDataset (or keras.utils.Sequence) instance, or a "
    "zero-argument callable returning an iterator of batches (a generator factory); "
    "`tuner.wrap` / `klt.wrap` also take a PyTorch DataLoader or a Grain MapDataset."
)


def _config_of(dataset: Any) -> LoaderConfig:
    """The dataset's own workers / queue / mode (PyDataset's public knobs), as a `LoaderConfig`."""
    return LoaderConfig(
        workers=max(int(getattr(dataset, "workers", 1) or 1), 1),
        max_queue_size=max(int(getattr(dataset, "max_queue_size", 10) or 10), 1),
        use_multiprocessing=bool(getattr(dataset, "use_multiprocessing", False)),
    )


def check_keras3(where: str) -> None:
    """Raises a clear error when Keras 2 (`tf_keras`, `TF_USE_LEGACY_KERAS=1`) is in use."""
    legacy = os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")
    if legacy or not str(getattr(keras, "__version__", "3")).startswith("3"):
        raise RuntimeError(
            f"{where}: keras-loadtune needs Keras 3 (keras>=3.6); this process uses Keras 2 "
            "(tf_keras, selected by TF_USE_LEGACY_KERAS=1). Unset TF_USE_LEGACY_KERAS and "
            "build the model with `import keras` (Keras 3), or train without keras-loadtune."
        )


def _check_source(dataset: Any) -> None:
    check_keras3("wrap")
    if isinstance(dataset, keras.utils.PyDataset):
        return
    kind = type(dataset).__name__
    if type(dataset).__module__.startswith("tf_keras"):
        raise TypeError(
            f"Got a {kind} from tf_keras (Keras 2); keras-loadtune needs Keras 3: subclass "
            "keras.utils.PyDataset from `import keras` (Keras 3) instead."
        )
    if inspect.isgenerator(dataset) or isinstance(dataset, Iterator):
        raise TypeError(
            f"Got a {kind} object: an iterator can be consumed only once and cannot be "
            "split across workers. Pass the generator *function* instead (a zero-argument "
            f"callable), or a PyDataset. {_SUPPORTED}"
        )
    if classify(dataset) in (InputKind.TORCH_DATALOADER, InputKind.GRAIN):
        raise TypeError(
            f"Got a {kind}: wrap it with `tuner.wrap(x)` or `klt.wrap(x)`, which serve a "
            "map-style DataLoader or a Grain MapDataset batch by batch. " + _SUPPORTED
        )
    if type(dataset).__module__.startswith("tensorflow") or hasattr(dataset, "element_spec"):
        raise TypeError(
            f"Got a {kind}: a tf.data pipeline tunes itself with tf.data.AUTOTUNE; pass it "
            "to fit() directly (LoadTuner still measures its data wait). " + _SUPPORTED
        )
    if isinstance(dataset, type):
        raise TypeError(f"Got the class {dataset.__name__}; pass an instance. {_SUPPORTED}")
    if callable(dataset):
        try:
            inspect.signature(dataset).bind()
        except TypeError as exc:
            raise TypeError(
                f"The callable {getattr(dataset, '__name__', kind)} needs arguments ({exc}); "
                f"a generator factory must take none (use functools.partial). {_SUPPORTED}"
            ) from None
        except ValueError:
            pass  # builtins without a signature: accept
        return
    raise TypeError(f"Cannot wrap {'an' if kind[:1] in 'aeiouAEIOU' else 'a'} {kind}. {_SUPPORTED}")


class TunedPyDataset(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` served by keras-loadtune's restartable prefetcher.

    Pass it to `fit`, `evaluate` or `predict` like the dataset it wraps, on any Keras
    backend. Every iterator Keras creates reads its own stream of one shared worker
    pool, so `fit(shuffle=...)`, `class_weight`, `steps_per_epoch`, `validation_steps`,
    epoch hooks, tensor-spec peeking, model-building pulls, and one object used as both
    training and validation data behave exactly as with the unwrapped dataset. What
    changes: `reconfigure()` switches `workers`, `max_queue_size` and threads/processes
    at a batch boundary, mid epoch, without losing, repeating or reordering a batch;
    worker pools live across epochs; `stats` exposes per-batch wait/produce timings;
    worker errors reach `fit` with their original type.

    Randomness: process workers seed Python's `random` and NumPy's global RNG per batch
    from the trainer's RNG state and the batch index, so after
    `keras.utils.set_random_seed(s)` the same run gives the same batches whatever the
    worker count, and across a switch between process configs. Thread workers share
    the trainer's global RNG, as Keras's own thread workers do: their draws interleave
    in scheduling order, so random augmentation in threads is not reproducible (with or
    without keras-loadtune); use a per-index RNG (`np.random.default_rng(seed + index)`)
    in `__getitem__` to make it so in every mode.

    Usually created by `LoadTuner.wrap(dataset)`.

    Args:
        dataset: A `keras.utils.PyDataset` instance, or a zero-argument callable returning an
            iterator of batches (a *generator factory*: every worker runs its own copy, so
            batch order is then not defined, and `num_batches` must be given or the
            stream is infinite and `fit` needs `steps_per_epoch`).
        config: Starting `LoaderConfig`; defaults to the dataset's own
            `workers` / `max_queue_size` / `use_multiprocessing`.
        timeout: Optional per-batch timeout in seconds; a batch slower than this raises
            `BatchTimeoutError` naming its index instead of hanging.
        idle_timeout: Seconds without a consumer after which workers are released (they
            restart on next use); frees processes after an interrupted `fit`.
        num_batches: Batches per epoch for a generator factory (`None`: infinite).

    Example:

    ```python
    import keras_loadtune as klt

    train = klt.TunedPyDataset(my_pydataset)          # or: tuner.wrap(my_pydataset)
    model.fit(train, epochs=3)
    train.reconfigure(klt.LoaderConfig(workers=8, max_queue_size=16))
    train.close()                                      # or use `with ... as train:`
    ```
    """

    def __init__(
        self,
        dataset: keras.utils.PyDataset | Callable[[], Iterator[Any]],
        config: LoaderConfig | None = None,
        *,
        timeout: float | None = None,
        idle_timeout: float | None = 10.0,
        num_batches: int | None = None,
    ):
        _check_source(dataset)
        if config is not None and not isinstance(config, LoaderConfig):
            raise TypeError(f"config must be a LoaderConfig or None; got {type(config).__name__}.")
        is_factory = not isinstance(dataset, keras.utils.PyDataset)
        if num_batches is not None:
            if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
                raise ValueError(
                    f"num_batches must be a positive int or None; got {num_batches!r}."
                )
            if not is_factory:
                raise ValueError(
                    "num_batches is only for generator factories; a PyDataset defines its own."
                )
        config = config or (_config_of(dataset) if not is_factory else LoaderConfig())
        super().__init__(
            workers=config.workers,
            use_multiprocessing=config.use_multiprocessing,
            max_queue_size=config.max_queue_size,
        )
        self.dataset = dataset
        self._source = GeneratorFactorySource(dataset) if is_factory else dataset
        self._num_batches = num_batches
        self._is_factory = is_factory
        self._config = config
        self._timeout = timeout
        self._idle_timeout = idle_timeout
        self._prefetcher: Prefetcher | None = None
        self._stats = LoaderStats()
        self._lock = threading.Lock()
        self._closed = False
        self.process_mode_error: DatasetNotPicklableError | None = None
        self._stream_count = 0
        # Passes started before Keras asked (`plan_passes`), by consumer.
        self._ahead: dict[int, Stream] = {}
        self._passes_left = 0
        self._repeats = isinstance(dataset, RepeatedPass) and bool(dataset.repeats_its_pass())
        Prefetcher(self._source, config, timeout=timeout, idle_timeout=None).close()  # validate
        check_seconds("idle_timeout", idle_timeout)
        _hooks.install(TunedPyDataset)
        if config.use_multiprocessing:
            # The user's config already runs processes: start the forkserver's one-time
            # imports now, while the model is built and compiled, not at the first batch.
            self.prewarm_processes()

    # -- Keras PyDataset protocol ----------------------------------------------------------
    @property
    def num_batches(self) -> int | None:
        if self._is_factory:
            return self._num_batches
        return self.dataset.num_batches

    def __len__(self) -> int:
        n = self.num_batches
        if n is None:
            raise TypeError("This dataset is infinite (num_batches is None); it has no len().")
        return n

    def __getitem__(self, index: int) -> Any:
        """Random access, in the calling thread (Keras peeks at batches this way)."""
        try:
            return self._source[index]
        except Exception as exc:
            # Keras peeks at the first batches for the tensor spec; a failure there must
            # name the index like a worker failure does.
            exc.add_note(
                f"keras_loadtune: raised by {type(self.dataset).__name__}.__getitem__({index}) "
                "in the calling thread."
            )
            raise

    def on_epoch_begin(self) -> None:
        if not self._is_factory:
            self.dataset.on_epoch_begin()
            self._source_changed()

    def on_epoch_end(self) -> None:
        if not self._is_factory:
            self.dataset.on_epoch_end()
            self._source_changed()

    def _source_changed(self) -> None:
        """The user's hook may have changed the dataset: process workers get a fresh copy.
        Not for a source whose every pass is the same (`RepeatedPass`): its hooks change
        nothing, and the next pass it started early keeps what it made."""
        if self._repeats:
            return
        prefetcher = self._prefetcher
        if prefetcher is not None and not prefetcher.closed:
            prefetcher.source_changed()

    # The three knobs reflect the active config; change them with `reconfigure`.
    @property
    def workers(self) -> int:
        """Worker count of the active config (read-only; see `reconfigure`)."""
        return self._config.workers

    @workers.setter
    def workers(self, value: int) -> None:
        self._init_knob("workers", value)

    @property
    def use_multiprocessing(self) -> bool:
        """Whether the active config runs processes (read-only; see `reconfigure`)."""
        return self._config.use_multiprocessing

    @use_multiprocessing.setter
    def use_multiprocessing(self, value: bool) -> None:
        self._init_knob("use_multiprocessing", value)

    @property
    def max_queue_size(self) -> int:
        """Queue depth of the active config (read-only; see `reconfigure`)."""
        return self._config.max_queue_size

    @max_queue_size.setter
    def max_queue_size(self, value: int) -> None:
        self._init_knob("max_queue_size", value)

    def _init_knob(self, name: str, value: Any) -> None:
        if "_config" in self.__dict__:
            raise AttributeError(
                f"{name} of a TunedPyDataset follows its LoaderConfig; use "
                f"reconfigure(LoaderConfig(...)) to change it."
            )
        # PyDataset.__init__ assigns the knobs before our config exists: nothing to do.

    # -- our API ---------------------------------------------------------------------------
    @property
    def config(self) -> LoaderConfig:
        """The active `LoaderConfig` (the one serving batches now)."""
        prefetcher = self._prefetcher
        return prefetcher.config if prefetcher is not None else self._config

    @property
    def pending_config(self) -> LoaderConfig | None:
        """The config a background switch is starting (`reconfigure(..., background=True)`)."""
        prefetcher = self._prefetcher
        return prefetcher.pending_config if prefetcher is not None else None

    @property
    def switch_error(self) -> BaseException | None:
        """Why the last background switch failed (`None` if it did not)."""
        prefetcher = self._prefetcher
        return prefetcher.switch_error if prefetcher is not None else None

    @property
    def stats(self) -> LoaderStats:
        """Read-only per-batch records (`BatchRecord`) and worker start-ups (`StartupRecord`)."""
        return self._stats if self._prefetcher is None else self._prefetcher.stats

    @property
    def worker_pids(self) -> list[int]:
        """Pids of live worker processes (empty in thread mode or before first use)."""
        return [] if self._prefetcher is None else self._prefetcher.worker_pids

    @property
    def shm_fallback_note(self) -> str | None:
        """Set when `/dev/shm` was too small and big arrays went through the pipe instead."""
        prefetcher = self._prefetcher
        return None if prefetcher is None else prefetcher.shm_fallback_note

    def reconfigure(self, config: LoaderConfig, *, background: bool = False) -> None:
        """Switches the loader to `config` at the next batch boundary.

        Safe to call from a Keras callback or any thread, mid-epoch. Nothing is lost,
        repeated or reordered. If `config` asks for processes and the dataset cannot be
        pickled, `DatasetNotPicklableError` is raised and the current config stays.

        Args:
            config: The config to switch to.
            background: Start a pool of the other mode off the calling thread while the
                current config keeps serving; the switch happens once the new workers
                are ready (`pending_config` until then, `switch_error` if it failed).

        Example:

        ```python
        train.reconfigure(klt.LoaderConfig(workers=6, max_queue_size=12))
        ```
        """
        if not isinstance(config, LoaderConfig):
            raise TypeError(f"config must be a LoaderConfig; got {type(config).__name__}.")
        with self._lock:
            self._check_open()
            if config.use_multiprocessing and not self.config.use_multiprocessing:
                # Checked here, on the caller's thread, even for a background switch:
                # the caller learns at once that processes are out for this dataset.
                try:
                    check_picklable(self._source)
                except DatasetNotPicklableError as exc:
                    self.process_mode_error = exc
                    raise
            if self._prefetcher is not None:
                self._prefetcher.reconfigure(config, background=background)
            self._config = config

    @property
    def process_start_estimate_s(self) -> float | None:
        """Seconds a first process pool is expected to take here (None: unknown).

        Known when the workers will import no Keras (a NumPy-only dataset defined in
        `__main__`); the tuner then weighs process trials with it instead of its prior.
        """
        return cold_start_estimate_s(self._source)

    def prewarm_processes(self) -> bool:
        """Starts the process-worker machinery in the background, ahead of a switch.

        Returns False (and does nothing) if the dataset cannot be pickled.
        """
        try:
            check_picklable(self._source)
        except DatasetNotPicklableError as exc:
            self.process_mode_error = exc
            return False
        return _prewarm(self._source)

    def plan_passes(self, left: int) -> None:
        """Says how many more passes each consumer will read after its current one.

        A source whose every pass is the same (`pass_keys.RepeatedPass`: a Grain
        `MapDataset`) then starts a consumer's next pass while the current one drains:
        once its last positions are submitted, the workers make the next pass's first
        batches instead of idling, and the next epoch starts on a full queue instead of
        a cold refill (the batch latency, and a burst of every worker starting at once).
        Each pass is still delivered whole, once, in order. `LoadTuner` calls this at
        every epoch begin (`epochs - epoch - 1`); `0` (the default) starts nothing early. A
        pass started early and never read is closed by `release_workers` and `close`.

        Args:
            left: Passes that will follow the current one.

        Example:

        ```python
        train = klt.wrap(grain_map_dataset)
        train.plan_passes(2)   # two more epochs after this one
        ```
        """
        self._passes_left = max(int(left), 0)

    def _open_next_pass(self, consumer: int, order: Any, seed: int | None) -> None:
        """Starts `consumer`'s next pass over `order` now, if its source repeats its pass
        and one is due (`plan_passes`). Never raises: a pass that cannot start early
        starts when Keras asks for it, where its error (if any) reaches `fit` as usual."""
        if not self._starts_passes_early() or consumer in self._ahead:
            return
        try:
            stream = self._open_stream(order, start=0, seed=seed, consumer=consumer)
        except Exception as exc:  # e.g. a pool that cannot restart: the next pass will say
            logging.getLogger(__name__).debug("keras_loadtune: no early pass: %r", exc)
            return
        with self._lock:
            keep = not self._closed and self._passes_left > 0 and consumer not in self._ahead
            if keep:
                self._ahead[consumer] = stream
        if not keep:  # the fit ended meanwhile
            stream.close()

    def _drop_ahead(self) -> None:
        with self._lock:
            ahead, self._ahead = self._ahead, {}
        for stream in ahead.values():
            stream.close()

    def close(self) -> None:
        """Stops all workers. Idempotent. The dataset cannot be iterated afterwards."""
        self._drop_ahead()
        with self._lock:
            self._closed = True
            prefetcher, self._prefetcher = self._prefetcher, None
        if prefetcher is not None:
            self._stats = prefetcher.stats
            prefetcher.close()

    def release_workers(self, timeout: float = 5.0) -> None:
        """Stops idle workers but stays usable; they restart on next use (e.g. after `fit`).

        Args:
            timeout: Seconds to wait for each worker to exit (a thread stuck inside
                `__getitem__` is left to end on its own as a daemon).
        """
        self._passes_left = 0
        self._drop_ahead()
        prefetcher = self._prefetcher
        if prefetcher is not None:
            prefetcher.release_workers(timeout)

    def __enter__(self) -> TunedPyDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TunedPyDataset({type(self.dataset).__name__}, {self._config})"

    # -- engine access (used by the Keras adapter) -----------------------------------------
    def _engine(self) -> Prefetcher:
        with self._lock:
            self._check_open()
            if self._prefetcher is None:
                self._prefetcher = Prefetcher(
                    self._source,
                    self._config,
                    timeout=self._timeout,
                    idle_timeout=self._idle_timeout,
                    name="keras_loadtune",
                    stats=self._stats,  # one history across restarts
                )
            return self._prefetcher

    def _open_stream(self, order: Any, *, start: int, seed: int | None, consumer: int) -> Stream:
        """A new pass for one Keras iterator; `consumer` tags its batch records. A pass
        started early for `consumer` (`plan_passes`) is that pass."""
        with self._lock:
            ahead = self._ahead.pop(consumer, None)
        if ahead is not None:
            if not ahead.finished and ahead.delivered == 0:
                return ahead
            ahead.close()
        if isinstance(self.dataset, OwnPassOrder):
            order = self.dataset.pass_order()  # a DataLoader's sampler, not Keras's shuffle
        stream = self._engine().open_stream(order, start=start, seed=seed, consumer=consumer)
        self._stream_count += 1
        return stream

    def _streams_opened(self) -> int:
        return self._stream_count

    def _starts_passes_early(self, *, shuffled: bool = False) -> bool:
        """Whether a consumer's next pass starts while its current one drains: its source
        repeats its pass, more passes follow, and Keras does not reorder it (`shuffled`
        applies unless the source draws its own order)."""
        if not self._repeats or self._passes_left <= 0:
            return False
        return not shuffled or isinstance(self.dataset, OwnPassOrder)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                "This TunedPyDataset was closed; wrap the dataset again to keep using it."
            )


def wrap_input(
    dataset: Any, config: LoaderConfig | None = None, **kwargs: Any
) -> tuple[Any, InputPlan]:
    """Serves any training input as `LoadTuner.wrap` does, and says how (`InputPlan`).

    Returns `(TunedPyDataset, plan)` for an input the engine serves, or the input itself
    and a plan whose note says why it is measured only (`inputs.plan_input`): the tuner
    in `fit` then measures it without changing it.

    Example:

    ```python
    served, plan = wrap_input(torch_loader)   # plan.kind: InputKind.TORCH_DATALOADER
    ```
    """
    plan = plan_input(dataset)
    announce(plan)
    if plan.measured_only:
        return dataset, plan
    return _serve(plan, config, kwargs), plan


def _serve(plan: InputPlan, config: LoaderConfig | None, kwargs: dict[str, Any]) -> TunedPyDataset:
    if plan.restart is RestartPoint.EPOCH_BOUNDARY:  # Grain runs it (`grain_iter_source`)
        if config is not None:
            plan.source.reconfigure(config)
        return plan.source
    if plan.timeout is not None and kwargs.get("timeout") is None:
        kwargs["timeout"] = plan.timeout  # a DataLoader's own `timeout`
    return TunedPyDataset(plan.source, config, **kwargs)


def wrap(
    dataset: keras.utils.PyDataset | Callable[[], Iterator[Any]] | Any,
    config: LoaderConfig | None = None,
    **kwargs: Any,
) -> TunedPyDataset:
    """Wraps a dataset for live loader tuning; same as `TunedPyDataset(dataset, config, ...)`.

    Also takes a PyTorch `DataLoader` over a map-style dataset or a Grain `MapDataset` of
    batches, served batch by batch in their own order. Inputs that can only be measured
    (a `tf.data.Dataset`, an iterable-style `DataLoader`, a Grain `IterDataset`) raise
    `TypeError` here, since nothing would measure them: pass those to `tuner.wrap`.

    Example:

    ```python
    import keras_loadtune as klt

    train = klt.wrap(my_pydataset)
    ```
    """
    plan = plan_input(dataset)
    if plan.measured_only and plan.kind in (InputKind.TORCH_DATALOADER, InputKind.GRAIN):
        raise TypeError(
            f"{plan.note} Without a LoadTuner nothing would measure it: pass it to fit() "
            "directly, or wrap it with `tuner.wrap(x)` to have it measured."
        )
    if plan.measured_only:
        return TunedPyDataset(dataset, config, **kwargs)  # raises, saying what is supported
    announce(plan)
    return _serve(plan, config, kwargs)
