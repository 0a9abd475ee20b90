"""Property test: under any Keras iterator lifecycle, a wrapped dataset serves exactly
the batches a plain `PyDataset` serves (issue #10).

Hypothesis draws a schedule of what Keras's trainers do to an `EpochIterator`: full
epochs under a random `steps_per_epoch` (persistent iterator) or none, model-building
pulls followed by `reset()` (JAX, PyTorch, `tf.distribute`), a nested consumer of the
same object run to completion in the middle of an epoch (`evaluate` from a callback,
validation data that is the training data), and `reconfigure()` calls at random steps.
The same schedule drives Keras's own `EpochIterator` over the plain dataset (served by
Keras, workers=1) and over the wrapped one, with the same global RNG seed (Keras
shuffles with `random`), and the batches seen must be identical.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras.src.trainers.epoch_iterator import EpochIterator
from lifecycle_data import IdDataset

import keras_loadtune as klt
from keras_loadtune import LoaderConfig

pytestmark = [pytest.mark.keras, pytest.mark.timeout(600)]

configs = st.builds(
    LoaderConfig,
    workers=st.integers(1, 4),
    max_queue_size=st.integers(1, 6),
    use_multiprocessing=st.sampled_from([False, False, False, True]),
)
ops = st.one_of(
    # An epoch, left after k steps if it has more (then the fit ends).
    st.tuples(st.just("epoch"), st.integers(1, 12)),
    st.tuples(st.just("build_pull")),
    st.tuples(st.just("nested"), st.integers(1, 4)),  # another consumer, after k steps
    st.tuples(st.just("reconfigure"), configs, st.integers(0, 6), st.booleans()),
)


@st.composite
def schedules(draw):
    n = draw(st.integers(1, 8))
    steps_per_epoch = draw(st.one_of(st.none(), st.integers(1, 10)))
    shuffle = draw(st.booleans())
    return n, steps_per_epoch, shuffle, draw(st.lists(ops, min_size=1, max_size=6))


def _ids(batch) -> int:
    return int(batch[0][0, 0])


def _run(data, schedule, reconfigure) -> list:
    """Drives `EpochIterator`s over `data` the way Keras's trainers do; returns what they saw."""
    _, steps_per_epoch, shuffle, ops_ = schedule
    random.seed(7)
    seen: list = []
    iterator = EpochIterator(data, steps_per_epoch=steps_per_epoch, shuffle=shuffle)
    for op in ops_:
        if op[0] == "build_pull":
            for _, _, batch in iterator:
                seen.append(("build", _ids(batch[0])))
                break
            iterator.reset()
        elif op[0] == "reconfigure":
            reconfigure(op[1], op[3])
        else:
            epoch: list = []
            limit = op[1] if op[0] == "epoch" else 10**6
            for step, _, batch in iterator:
                epoch.append(_ids(batch[0]))
                if op[0] == "nested" and step + 1 == op[1]:
                    nested = EpochIterator(data, shuffle=False)
                    epoch.append(("nested", [_ids(b[0]) for _, _, b in nested]))
                if len(epoch) >= limit:
                    break
            else:
                seen.append(epoch)
                continue
            # Keras leaves an epoch early only when the fit ends (stop_training, an
            # error): the next op belongs to a new fit, with a new iterator.
            seen.append(epoch)
            iterator = EpochIterator(data, steps_per_epoch=steps_per_epoch, shuffle=shuffle)
    return seen


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(schedules(), configs)
def test_any_keras_lifecycle_sees_what_a_plain_pydataset_sees(schedule, config):
    plain = _run(IdDataset(schedule[0]), schedule, lambda config, background: None)
    with klt.TunedPyDataset(IdDataset(schedule[0]), config, timeout=20) as wrapped:
        assert _run(wrapped, schedule, _switcher(wrapped)) == plain


def _switcher(wrapped):
    def reconfigure(config, background):
        wrapped.reconfigure(config, background=background)

    return reconfigure
