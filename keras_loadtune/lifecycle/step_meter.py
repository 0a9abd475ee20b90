"""`StepMeter`: which training steps the tuner measures, and what each one showed.

The Keras callback times every step; this module decides which of them a tuning
session may see. It reads the wrapped dataset's `LoaderStats` through cursors (the
batches and loader start-ups since the last step), keeps only the batches of the
consumer that serves this `fit`'s training data (not validation, not a nested
`evaluate` on the same object), and hides steps that would mislead a trial:

- steps while a background switch is still starting (the previous config serves);
- batches a previous pool produced after a switch;
- the tail of an epoch once the workers have nothing left to start;
- before the session exists, the stock prefetched while Keras traced the model.

It needs no Keras: a dataset is anything with `stats` (`delivered`,
`batches_since(cursor)`, `startups`), `config`, `num_batches`, `pending_config` and
`switch_error`, as `TunedPyDataset` has.

Example:

>>> from keras_loadtune import LoaderConfig
>>> from keras_loadtune.engine import LoaderStats
>>> class Data:
...     stats, config, num_batches = LoaderStats(), LoaderConfig(), None
...     pending_config = switch_error = None
>>> meter = StepMeter()
>>> meter.bind(Data(), consumer=0, cursor=0)  # a new dataset: a new probe is due
True
>>> meter.new_records()
[]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.engine import DatasetNotPicklableError


def first_consumer(unbound: dict[Any, tuple[Any, int]]) -> tuple[Any, int | None, int]:
    """`(dataset, consumer, cursor)` of the batch delivered first since each cursor.

    Args:
        unbound: `{key: (dataset, cursor)}` of every dataset that may serve the step.

    Returns:
        `(None, None, 0)` if none of them delivered a batch (the data is not wrapped).

    Example:

    >>> first_consumer({})
    (None, None, 0)
    """
    first: tuple[float, Any, int, int] | None = None
    for ds, cursor in unbound.values():
        for r in ds.stats.batches_since(cursor):
            if first is None or r.delivered_at < first[0]:
                first = (r.delivered_at, ds, r.consumer, cursor)
            break  # a dataset's records are in delivery order
    if first is None:
        return None, None, 0
    return first[1], first[2], first[3]


def switch_failure_note(error: BaseException) -> str:
    """What a failed loader switch is reported as (one line for notes and warnings).

    Example:

    >>> switch_failure_note(RuntimeError("no room"))
    'RuntimeError: no room'
    """
    if isinstance(error, DatasetNotPicklableError):
        return f"process mode skipped: {error}"
    return f"{type(error).__name__}: {error}"


class StepMeter:
    """Cursors over the datasets' stats and the rules for which steps count.

    Example:

    >>> meter = StepMeter()
    >>> meter.new_records() is None  # not bound to training data: nothing wrapped
    True
    """

    def __init__(self) -> None:
        self.dataset: Any = None
        self.consumer: int | None = None
        self._cursors: dict[int, int] = {}
        self._startup_cursors: dict[int, int] = {}
        self._drain_left: int | None = None
        self._reported_errors: set[int] = set()

    # -- cursors ---------------------------------------------------------------------------
    def start_fit(self, datasets: Iterable[Any]) -> None:
        """A `fit` starts: what the datasets delivered and started so far is not this fit's."""
        for ds in datasets:
            self._cursors[id(ds)] = ds.stats.delivered
            self._startup_cursors[id(ds)] = len(ds.stats.startups)

    def bind(self, dataset: Any, consumer: int | None, cursor: int) -> bool:
        """Measure `consumer`'s batches of `dataset` from `cursor` on.

        Returns:
            True if `dataset` is not the one measured before (a new probe is due).
        """
        self.consumer = consumer
        if dataset is not None:
            self._cursors[id(dataset)] = cursor
            self._startup_cursors.setdefault(id(dataset), len(dataset.stats.startups))
        if dataset is self.dataset:
            return False
        self.dataset = dataset
        self._drain_left = None
        return True

    def new_records(self) -> list | None:
        """Training batches delivered since the last call; `None` when nothing is bound."""
        ds = self.dataset
        if ds is None:
            return None
        cursor = self._cursors.get(id(ds), 0)
        delivered = ds.stats.delivered
        if delivered <= cursor:
            return []
        self._cursors[id(ds)] = delivered
        return [r for r in ds.stats.batches_since(cursor) if r.consumer == self.consumer]

    def new_startups(self) -> list[tuple[LoaderConfig, float]]:
        """`(config, seconds)` of the loader start-ups since the last call."""
        ds = self.dataset
        if ds is None:
            return []
        startups = ds.stats.startups
        start = self._startup_cursors.get(id(ds), 0)
        self._startup_cursors[id(ds)] = len(startups)
        return [(s.config, s.seconds) for s in startups[start:]]

    # -- which steps count -----------------------------------------------------------------
    def skip_draining(self) -> None:
        """Count steps from now on without waiting for the traced stock to drain."""
        self._drain_left = 0

    def in_pass_tail(self, records: list) -> bool:
        """True for steps at the end of an epoch, once the workers have nothing left to start.

        The consumer then drains batches produced earlier while the workers sit idle, so
        every step runs at compute speed whatever the config; a big queue makes that
        stretch long. Those steps would flatter the config under trial, so the tuner does
        not see them (they still count in the epoch's `data_wait_fraction`). When the
        epoch is too short to have anything but such stretches, every step counts.
        """
        if not records or not records[-1].pass_tail:
            return False
        n = self.dataset.num_batches
        config = self.dataset.config
        return n is not None and n > 2 * (config.max_queue_size + config.workers)

    def draining(self, records: list) -> bool:
        """True while the queue filled during graph tracing is still being drained.

        Before the first step runs, the loader prefetches up to `max_queue_size` batches
        while Keras traces the model; steps fed from that stock never wait, and a probe
        measured on them would call any loader "compute-bound". The probe starts once a
        batch arrives with at most one other batch ready, or after `2 * max_queue_size`
        steps (a loader that keeps its queue full really is keeping up). Inline there is
        no stock: a batch made on the training thread, at the cursor, counts at once.
        """
        if records and all(_made_inline(r) for r in records):
            self._drain_left = 0
            return False
        if self._drain_left is None:
            self._drain_left = 2 * self.dataset.config.max_queue_size
        if self._drain_left <= 0:
            return False
        self._drain_left -= 1
        if records and records[-1].queue_depth <= 1:
            self._drain_left = 0
        return True

    def switch_pending(self) -> bool:
        """True while a background switch of the bound dataset is still starting."""
        return self.dataset.pending_config is not None

    def new_switch_failure(self) -> tuple[LoaderConfig | None, str] | None:
        """`(config, note)` of a background switch that failed, once per failure."""
        ds = self.dataset
        error = ds.switch_error
        if error is None or id(error) in self._reported_errors:
            return None
        self._reported_errors.add(id(error))
        failed = next((s.config for s in reversed(ds.stats.startups) if s.error is not None), None)
        return failed, switch_failure_note(error)

    def counts(self, records: list, *, session_ready: bool) -> bool:
        """Whether this step's measurement may reach the session (switch checks aside).

        Args:
            records: The step's training batches (`new_records()`).
            session_ready: False while no session exists yet (the traced stock drains).
        """
        if any(r.producer is not None and r.producer != r.config for r in records):
            return False  # batches the previous pool made: they would flatter or blame it
        if self.in_pass_tail(records):
            return False
        return session_ready or not self.draining(records)


def _made_inline(record: Any) -> bool:
    """Whether the batch was made on the consumer's thread for its step (not stock)."""
    producer = record.producer if record.producer is not None else record.config
    return bool(producer.inline)


__all__ = ["StepMeter", "first_consumer", "switch_failure_note"]
