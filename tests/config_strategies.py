"""Hypothesis strategies for loader configs, shared by the input-source tests."""

from __future__ import annotations

from hypothesis import strategies as st

from keras_loadtune import LoaderConfig

# Inline (1 worker) and thread pools: the configs every input kind must survive a live
# switch between, with no process start-up in a property test.
thread_configs = st.builds(
    LoaderConfig,
    workers=st.integers(1, 4),
    max_queue_size=st.integers(1, 6),
    use_multiprocessing=st.just(False),
)
