"""LoaderStats: the bounded, cheap-to-read history the callback polls every step."""

from hypothesis import given
from hypothesis import strategies as st

from keras_loadtune import LoaderConfig
from keras_loadtune.engine.records import BatchRecord, LoaderStats, StartupRecord


def _record(sequence: int, wait: float = 0.0) -> BatchRecord:
    return BatchRecord(sequence, sequence * 10, wait, 0.0, 0.0, 0, 0, LoaderConfig(), 0.0)


@given(
    capacity=st.integers(1, 20),
    delivered=st.integers(0, 60),
    since=st.integers(0, 70),
)
def test_batches_since_returns_exactly_the_kept_records_from_sequence(capacity, delivered, since):
    stats = LoaderStats(capacity=capacity)
    for i in range(delivered):
        stats.add_batch(_record(i, wait=0.5))
    got = [r.sequence for r in stats.batches_since(since)]
    kept = list(range(max(delivered - capacity, 0), delivered))
    assert got == [s for s in kept if s >= since]
    assert stats.delivered == delivered
    assert stats.total_wait_s == 0.5 * delivered  # totals cover records no longer kept
    assert len(stats) == len(kept)


def test_startups_are_kept_in_order():
    stats = LoaderStats()
    first = StartupRecord(LoaderConfig(2), 2, 0.5, 1.0)
    second = StartupRecord(LoaderConfig(3, use_multiprocessing=True), 3, 2.0, 2.0)
    stats.add_startup(first)
    stats.add_startup(second)
    assert stats.startups == [first, second]


@given(
    capacity=st.integers(1, 12),
    as_fields=st.lists(st.booleans(), max_size=30),
    since=st.integers(0, 35),
)
def test_records_added_as_fields_read_back_as_the_same_batch_records(capacity, as_fields, since):
    """`add(fields)` (the engine's hot path) and `add_batch(record)` keep the same history."""
    mixed, plain = LoaderStats(capacity=capacity), LoaderStats(capacity=capacity)
    for i, fields in enumerate(as_fields):
        record = _record(i, wait=0.25)
        plain.add_batch(record)
        if fields:
            mixed.add(tuple(getattr(record, f) for f in BatchRecord.__dataclass_fields__))
        else:
            mixed.add_batch(record)
    assert mixed.batches_since(since) == plain.batches_since(since)
    assert all(type(r) is BatchRecord for r in mixed.batches_since(since))
    assert list(mixed) == list(plain)
    assert (mixed.delivered, mixed.total_wait_s) == (plain.delivered, plain.total_wait_s)
