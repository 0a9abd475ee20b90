"""Bad input to every public entry point fails at the call, naming the argument.

Each case asserts the exception type (TypeError or ValueError), that the message names the
argument and what it accepts, and that it was raised by keras_loadtune's own validation at
the public call: every frame below the test is a keras_loadtune (or dataclass-generated,
or `dataclasses.replace`) frame, and there are only a few of them.
"""

from __future__ import annotations

import re
import traceback

import pytest

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import DatasetNotPicklableError, Prefetcher
from reliability.faulty import Faulty, Unpicklable

ALLOWED_FRAMES = ("keras_loadtune", "<string>", "dataclasses.py")
MAX_DEPTH = 6


def _check(call, exc_types, *patterns: str, python_checks_the_call: bool = False) -> BaseException:
    with pytest.raises(exc_types) as info:
        call()
    exc = info.value
    message = str(exc)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    # Frames below the test's own (this helper and the test's lambda).
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    if python_checks_the_call and not frames:
        return exc  # Python's own argument check, at the call itself
    assert frames, "raised without a traceback"
    where = [f"{f.filename}:{f.lineno} {f.name}" for f in frames]
    assert all(any(a in f.filename for a in ALLOWED_FRAMES) for f in frames), where
    assert "keras_loadtune" in frames[-1].filename, where
    assert len(frames) <= MAX_DEPTH, where
    return exc


BOTH = (TypeError, ValueError)
pytestmark = pytest.mark.timeout(120)

# -- LoaderConfig ------------------------------------------------------------------------------
LOADER_CONFIG = [
    ({"workers": 0}, ValueError, r"workers", r">= 1"),
    ({"workers": -3}, ValueError, r"workers", r">= 1"),
    ({"workers": "2"}, BOTH, r"workers", r"int"),
    ({"workers": 2.0}, BOTH, r"workers", r"int"),
    ({"workers": True}, BOTH, r"workers", r"int"),
    ({"max_queue_size": 0}, ValueError, r"max_queue_size", r">= 1"),
    ({"max_queue_size": None}, BOTH, r"max_queue_size", r"int"),
    ({"use_multiprocessing": "yes"}, BOTH, r"use_multiprocessing", r"True.*False"),
    ({"use_multiprocessing": 1}, BOTH, r"use_multiprocessing", r"True.*False"),
]


@pytest.mark.parametrize(("kwargs", "exc", "name", "accepted"), LOADER_CONFIG)
def test_loader_config(kwargs, exc, name, accepted):
    _check(lambda: LoaderConfig(**kwargs), exc, name, accepted)


def test_loader_config_from_dict_unknown_field():
    _check(lambda: LoaderConfig.from_dict({"workers": 2, "mode": "thread"}), ValueError, "mode")


# -- Prefetcher --------------------------------------------------------------------------------
PREFETCHER = [
    ({"config": {"workers": 2}}, TypeError, r"config", r"LoaderConfig"),
    ({"config": None}, TypeError, r"config", r"LoaderConfig"),
    ({"timeout": 0}, ValueError, r"timeout", r"positive"),
    ({"timeout": -1.0}, ValueError, r"timeout", r"positive"),
    ({"timeout": "5"}, BOTH, r"timeout", r"positive"),
    ({"timeout": True}, BOTH, r"timeout", r"positive"),
    ({"idle_timeout": 0}, ValueError, r"idle_timeout", r"positive"),
    ({"idle_timeout": -5}, ValueError, r"idle_timeout", r"positive"),
]


@pytest.mark.parametrize(("kwargs", "exc", "name", "accepted"), PREFETCHER)
def test_prefetcher(kwargs, exc, name, accepted):
    kwargs = {"config": LoaderConfig(), **kwargs}
    _check(lambda: Prefetcher(Faulty(4), **kwargs), exc, name, accepted)


@pytest.mark.parametrize("source", [5, None, object()], ids=["int", "None", "object"])
def test_prefetcher_source_without_getitem(source):
    _check(lambda: Prefetcher(source, LoaderConfig()), TypeError, r"source", r"__getitem__")


@pytest.mark.parametrize("order", [5, "0123", {0, 1}], ids=["int", "str", "set"])
def test_prefetcher_begin_pass_order(order, closing):
    pf = Prefetcher(Faulty(4), LoaderConfig())
    closing(pf)
    _check(lambda: pf.begin_pass(order), TypeError, r"order", r"sequence.*None")


@pytest.mark.parametrize("config", [{"workers": 2}, None, "2 threads"])
def test_prefetcher_reconfigure(config, closing):
    pf = Prefetcher(Faulty(4), LoaderConfig())
    closing(pf)
    _check(lambda: pf.reconfigure(config), TypeError, r"config", r"LoaderConfig")
    assert pf.config == LoaderConfig()


# -- TunedPyDataset / wrap -------------------------------------------------------------------
@pytest.fixture
def view(keras_ready):
    return keras_ready.KerasView(Faulty(4))


WRAP = [
    ({"config": {"workers": 2}}, TypeError, r"config", r"LoaderConfig"),
    ({"config": "2 threads"}, TypeError, r"config", r"LoaderConfig"),
    ({"timeout": 0}, ValueError, r"timeout", r"positive"),
    ({"timeout": "5"}, BOTH, r"timeout", r"positive"),
    ({"idle_timeout": -1}, ValueError, r"idle_timeout", r"positive"),
    ({"num_batches": 3}, ValueError, r"num_batches", r"generator factories"),
    ({"bogus": 1}, TypeError, r"bogus", r"argument"),
]


@pytest.mark.keras
@pytest.mark.parametrize(("kwargs", "exc", "name", "accepted"), WRAP)
def test_wrap_arguments(view, kwargs, exc, name, accepted):
    import keras_loadtune as klt

    config = kwargs.pop("config", None)
    python = "bogus" in kwargs
    _check(
        lambda: klt.wrap(view, config, **kwargs), exc, name, accepted, python_checks_the_call=python
    )
    _check(
        lambda: klt.TunedPyDataset(view, config, **kwargs),
        exc,
        name,
        accepted,
        python_checks_the_call=python,
    )


def _factory():
    yield from ()


@pytest.mark.keras
@pytest.mark.parametrize("num_batches", [0, -2, True, "3", 2.5])
def test_wrap_generator_factory_num_batches(keras_ready, num_batches):
    import keras_loadtune as klt

    _check(
        lambda: klt.wrap(_factory, num_batches=num_batches),
        ValueError,
        r"num_batches",
        r"positive int or None",
    )


def _generator():
    yield 1


@pytest.mark.keras
@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: iter([1, 2]), r"iterator"),
        (_generator, r"iterator"),  # a generator object, called below
        (lambda: Faulty, r"instance"),
        (lambda: 5, r"Cannot wrap"),
        (lambda: lambda n: iter(range(n)), r"needs arguments"),
        (lambda: __import__("tensorflow").data.Dataset.range(3), r"tf\.data"),
    ],
    ids=["iterator", "generator", "class", "int", "callable-with-args", "tf.data"],
)
def test_wrap_unsupported_inputs_say_what_is_supported(keras_ready, make, why):
    import keras_loadtune as klt

    obj = make()
    _check(lambda: klt.wrap(obj), TypeError, why, r"PyDataset")


@pytest.mark.keras
@pytest.mark.parametrize("config", [{"workers": 2}, None, 4])
def test_wrapped_reconfigure_wrong_type(view, config, closing):
    import keras_loadtune as klt

    wrapped = klt.wrap(view)
    closing(wrapped)
    _check(lambda: wrapped.reconfigure(config), TypeError, r"config", r"LoaderConfig")


@pytest.mark.keras
@pytest.mark.parametrize("holder", ["lock"])  # a lambda ships by value (cloudpickle)
def test_wrapped_reconfigure_to_processes_when_unpicklable(keras_ready, holder, closing):
    import keras_loadtune as klt

    wrapped = klt.wrap(keras_ready.KerasView(Unpicklable(4, holder=holder)))
    closing(wrapped)
    exc = _check(
        lambda: wrapped.reconfigure(LoaderConfig(2, 4, True)),
        DatasetNotPicklableError,
        r"cannot be (pickled|sent to worker processes)",
        r"use_multiprocessing=False",
    )
    assert isinstance(exc, TypeError)
    assert wrapped.config == LoaderConfig() and wrapped.process_mode_error is exc


# -- LoadTuner / TunerSettings -------------------------------------------------------------
TUNER = [
    ({"verbose": 3}, ValueError, r"verbose", r"0, 1, 2"),
    ({"warmup_steps": -1}, ValueError, r"warmup_steps", r">= 0"),
    ({"warmup_steps": 1.5}, BOTH, r"warmup_steps", r"int"),
    ({"settings": "fast"}, TypeError, r"settings", r"TunerSettings"),
    ({"max_process_workers": -1}, ValueError, r"max_process_workers", r">= 1"),
    ({"queue_size_range": (0, 4)}, ValueError, r"queue_size_range", r"1 <= min <= max"),
    ({"queue_size_range": (8, 2)}, ValueError, r"queue_size_range", r"1 <= min <= max"),
    ({"queue_size_range": (4,)}, TypeError, r"queue_size_range", r"\(min, max\)"),
    ({"modes": ("gpu",)}, ValueError, r"modes", r"thread.*process"),
    ({"modes": ()}, ValueError, r"modes", r"non-empty"),
    ({"modes": ("thread", "thread")}, ValueError, r"modes", r"repeats"),
    ({"max_trials": 0}, ValueError, r"max_trials", r">= 1"),
    ({"max_tuning_steps": -5}, ValueError, r"max_tuning_steps", r">= 1"),
    ({"max_tuning_seconds": 0}, ValueError, r"max_tuning_seconds", r"\(0\.0, inf\)"),
    ({"ram_budget": 0}, ValueError, r"ram_budget", r">= 1"),
    ({"ram_budget": 1.5e9}, TypeError, r"ram_budget", r"int"),
    ({"sampler": object()}, TypeError, r"sampler", r"BaseSampler"),
    ({"sampler": "tpe"}, TypeError, r"sampler", r"BaseSampler"),
    ({"seed": -1}, ValueError, r"seed", r">= 0"),
    ({"wait_threshold": 1.5}, ValueError, r"wait_threshold", r"\(0\.0, 1\.0\)"),
    ({"probe_steps": 1}, ValueError, r"probe_steps", r">= 2"),
    ({"storage": 5}, TypeError, r"storage", r"None.*default.*URL"),
    ({"storage": "klt.db"}, ValueError, r"storage", r"sqlite:///klt\.db"),
]


@pytest.mark.keras
@pytest.mark.parametrize(("kwargs", "exc", "name", "accepted"), TUNER)
def test_load_tuner_kwargs(keras_ready, kwargs, exc, name, accepted):
    import keras_loadtune as klt

    _check(lambda: klt.LoadTuner(**kwargs), exc, name, accepted)


@pytest.mark.keras
@pytest.mark.parametrize("timeout", [0, -1, "5"])
def test_load_tuner_timeout_is_checked_at_construction(keras_ready, timeout):
    import keras_loadtune as klt

    _check(lambda: klt.LoadTuner(timeout=timeout), BOTH, r"timeout", r"positive")


@pytest.mark.keras
@pytest.mark.parametrize("value", [0, -2])
def test_load_tuner_max_workers_names_the_argument(keras_ready, value):
    import keras_loadtune as klt

    _check(lambda: klt.LoadTuner(max_workers=value), ValueError, r"\bmax_workers\b", r">= 1")


@pytest.mark.keras
def test_load_tuner_unknown_kwarg(keras_ready):
    import keras_loadtune as klt

    _check(
        lambda: klt.LoadTuner(workers=4),
        TypeError,
        r"workers",
        r"argument",
        python_checks_the_call=True,
    )


SETTINGS = [
    ({"cores": 0}, ValueError, r"cores", r">= 1"),
    ({"cores": 2.5}, TypeError, r"cores", r"int"),
    ({"min_trial_steps": 10, "max_trial_steps": 5}, ValueError, r"max_trial_steps", r">= min"),
    ({"min_improvement": 1.5}, ValueError, r"min_improvement", r"\[0\.0, 1\.0\]"),
    ({"drift_margin": 0}, ValueError, r"drift_margin", r"\(0\.0, 1\.0\)"),
    ({"skip_steps": -1}, ValueError, r"skip_steps", r">= 0"),
    ({"modes": "thread"}, TypeError, r"modes", r"tuple"),
    ({"queue_size_range": "ab"}, TypeError, r"queue_size_range", r"\(min, max\)"),
]


@pytest.mark.parametrize(("kwargs", "exc", "name", "accepted"), SETTINGS)
def test_tuner_settings(kwargs, exc, name, accepted):
    from keras_loadtune.decision import TunerSettings

    _check(lambda: TunerSettings(**kwargs), exc, name, accepted)


def test_tuner_settings_step_budget_smaller_than_the_probe():
    from keras_loadtune.decision import TunerSettings

    _check(
        lambda: TunerSettings(probe_steps=20, max_tuning_steps=5),
        ValueError,
        r"max_tuning_steps",
        r"probe_steps",
    )
