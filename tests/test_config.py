import pytest

from keras_loadtune import LoaderConfig


def test_defaults_match_keras_pydataset():
    cfg = LoaderConfig()
    assert (cfg.workers, cfg.max_queue_size, cfg.use_multiprocessing) == (1, 10, False)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": -3}, "workers"),
        ({"workers": 2.5}, "workers"),
        ({"workers": True}, "workers"),
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"max_queue_size": "8"}, "max_queue_size"),
        ({"use_multiprocessing": 1}, "use_multiprocessing"),
        ({"use_multiprocessing": "yes"}, "use_multiprocessing"),
    ],
)
def test_invalid_fields_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LoaderConfig(**kwargs)


def test_frozen_and_round_trip():
    cfg = LoaderConfig(workers=4, max_queue_size=8, use_multiprocessing=True)
    with pytest.raises(AttributeError):
        cfg.workers = 2  # type: ignore[misc]
    assert LoaderConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.mode == "process"
    assert str(cfg) == "4 processes, queue 8"
    assert str(LoaderConfig(1, 2)) == "inline (1 worker, as Keras runs it)"
    assert str(LoaderConfig(1, 2, True)) == "1 process, queue 2"
    assert str(LoaderConfig(2, 3)) == "2 threads, queue 3"


@pytest.mark.parametrize(
    ("workers", "processes", "inline"), [(1, False, True), (1, True, False), (2, False, False)]
)
def test_inline_is_one_worker_without_processes(workers, processes, inline):
    assert LoaderConfig(workers, 5, processes).inline is inline


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="Unknown"):
        LoaderConfig.from_dict({"workers": 2, "threads": 3})


def test_importing_package_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import keras_loadtune, keras_loadtune.config, sys; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_argument_checks_share_one_wording():
    from keras_loadtune._validate import ArgumentTypeError, int_at_least, number_in
    from keras_loadtune.decision import TunerSettings

    with pytest.raises(ValueError, match=r"^LoaderConfig\.workers must be an int >= 1; got 0\.$"):
        LoaderConfig(workers=0)
    with pytest.raises(ValueError, match=r"^TunerSettings\.max_trials must be an int >= 1; got 0"):
        TunerSettings(cores=2, max_trials=0)
    # A wrong type is a TypeError, and still a ValueError for older callers.
    with pytest.raises(ArgumentTypeError) as info:
        LoaderConfig(workers="2")
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert "(str)" in str(info.value)
    assert int_at_least("n", None, 1, none_ok=True) is None
    with pytest.raises(ValueError, match=r"must be in \(0\.0, 1\.0\); got 1\.0"):
        number_in("x", 1.0, 0.0, 1.0)
    assert number_in("x", 1.0, 0.0, 1.0, closed=True) == 1.0
