"""A fleet sharing one study on a real PostgreSQL server (no TensorFlow needed).

The server's URL comes from `KLT_TEST_POSTGRES_URL` (`.ci/run` starts a throwaway
cluster on 127.0.0.1 and sets it); without it these tests skip.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid

import pytest

POSTGRES_URL = os.environ.get("KLT_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.skipif(
        not POSTGRES_URL,
        reason="KLT_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and "
        "sets it; locally: export KLT_TEST_POSTGRES_URL=postgresql+psycopg2://user@127.0.0.1/db)",
    ),
    pytest.mark.timeout(240),
]

CORES = 8
PIPE = dict(io_s=0.04, compute_s=0.01, cores=CORES)


def _fingerprints(host_name: str = "h"):
    from keras_loadtune import fingerprint

    workload = fingerprint.WorkloadFingerprint("sim.LatencyPipe", 150, "(32, 8) float32", 5, "io")
    host = fingerprint.HostFingerprint(CORES, 16, "3.11", "2.21.0", "3.15.1")
    return workload, host


def _tune(url: str, study_name: str, seed: int, steps: int, warm: bool, start, queue) -> None:
    """One fleet member: opens the shared study, tunes a simulated pipeline into it.

    Drives the session as `simulate_tuning` does; `warm=False` makes a member tune from
    scratch even if the other one already stored trials (both start at once).
    """
    try:
        from tuners import make_settings

        from keras_loadtune import LoaderConfig, persistence
        from keras_loadtune.decision import TuningSession
        from keras_loadtune.decision.optuna_bridge import default_sampler
        from keras_loadtune.simulation import SimulatedPipeline

        settings = make_settings(CORES, seed=seed)
        workload, host = _fingerprints()
        start.wait(60)  # all members open the study at the same moment
        handle = persistence.open_study(
            url, study_name, workload=workload, host=host, sampler=default_sampler(settings)
        )
        assert handle.study is not None, handle.note
        pipe = SimulatedPipeline(seed=seed, noise_cv=0.05, **PIPE)
        pipe.reconfigure(LoaderConfig())
        s = TuningSession(
            LoaderConfig(),
            settings,
            study=handle.study,
            clock=lambda: pipe.now,
            rss_probe=pipe.rss,
            cores=CORES,
            warm_start=warm,
        )
        for _ in range(steps):
            sample = pipe.step()
            s.observe_loader(pipe.drain_records())
            new = s.observe_step(sample)
            if new is not None:
                s.observe_startup(new, pipe.reconfigure(new))
        s.stop("training ended")
        queue.put(
            {
                "numbers": [t.number for t in s.trials],
                "best": s.best_config.to_dict(),
                "warm": s.warm_start is not None,
                "kept": s.warm_start_kept,
                "steps": s.tuning_steps,
                "notes": s.notes,
            }
        )
    except BaseException as exc:  # report to the parent instead of dying silently
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


@pytest.fixture
def study_name():
    return f"klt-fleet-{uuid.uuid4().hex[:12]}"


def test_two_processes_tune_one_study_then_a_new_host_warm_starts(study_name):
    import optuna
    from optuna.trial import TrialState
    from tuners import make_settings

    from keras_loadtune import LoaderConfig, storage
    from keras_loadtune.decision.warm_start import stored_best
    from keras_loadtune.report import list_studies, load_report
    from keras_loadtune.trial import (
        ATTR_STATE,
        STUDY_ATTR_FINGERPRINT,
        TrialRecord,
        params_to_config,
    )

    ctx = multiprocessing.get_context("spawn")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_tune, args=(POSTGRES_URL, study_name, seed, 600, False, start, queue))
        for seed in (0, 1)
    ]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for r in results:
        assert "error" not in r, r["error"]
        assert not r["warm"] and len(r["numbers"]) >= 2

    study = optuna.load_study(
        study_name=study_name, storage=storage.open_rdb(POSTGRES_URL, create=True)
    )
    trials = study.get_trials(deepcopy=False)
    # No corruption: every trial either session recorded is there, finished, and valid.
    numbers = [n for r in results for n in r["numbers"]]
    assert len(numbers) == len(set(numbers))
    assert set(numbers) <= {t.number for t in trials}
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    for t in trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL), t
        config = params_to_config(t.params)
        assert 1 <= config.workers <= make_settings(CORES).max_thread_workers
        rec = TrialRecord.from_frozen_trial(t)
        assert rec.config == config and rec.state == t.user_attrs[ATTR_STATE]
        if t.state == TrialState.COMPLETE and rec.state == "complete":
            assert t.value == pytest.approx(rec.steps_per_s)
    # The best is consistent: Optuna's best trial is the top measured value, and the
    # warm-start pick is one of the configs that ran near it.
    best = study.best_trial
    top = max(t.value for t in trials if t.state == TrialState.COMPLETE)
    assert best.value == top
    warm = stored_best(study, LoaderConfig())
    assert warm is not None and warm.steps_per_s >= 0.9 * top
    assert warm.config.workers >= 4  # enough threads to hide 40 ms behind 10 ms steps
    assert study.user_attrs[STUDY_ATTR_FINGERPRINT]

    # A third, new host of the same profile starts from the stored best.
    ctx2_start, queue2 = ctx.Event(), ctx.Queue()
    third = ctx.Process(
        target=_tune, args=(POSTGRES_URL, study_name, 7, 300, True, ctx2_start, queue2)
    )
    third.start()
    ctx2_start.set()
    r3 = queue2.get(timeout=120)
    third.join(60)
    assert "error" not in r3, r3.get("error")
    assert r3["warm"] and r3["kept"], r3
    assert LoaderConfig.from_dict(r3["best"]) == warm.config
    assert r3["steps"] < min(r["steps"] for r in results)  # no probe, one verify window

    # The stored study reads back through the report API (as `keras-loadtune report`).
    names = [row["name"] for row in list_studies(POSTGRES_URL)]
    assert study_name in names
    report = load_report(POSTGRES_URL, study_name)
    assert len(report.trials) == len(study.trials)


def test_open_study_on_postgres_tags_the_study_and_is_idempotent(study_name):
    from keras_loadtune import fingerprint, persistence
    from keras_loadtune.trial import STUDY_ATTR_HOST, STUDY_ATTR_WORKLOAD

    workload, host = _fingerprints()
    first = persistence.open_study(POSTGRES_URL, None, workload=workload, host=host)
    again = persistence.open_study(POSTGRES_URL, None, workload=workload, host=host)
    assert first.note is None and first.study is not None
    assert first.study_name == again.study_name == fingerprint.study_name_for(workload, host)
    assert first.study_name.startswith("klt-LatencyPipe-")
    assert again.study.user_attrs[STUDY_ATTR_WORKLOAD] == workload.to_dict()
    assert again.study.user_attrs[STUDY_ATTR_HOST] == host.to_dict()
    # The plain postgresql:// form works with whichever psycopg is installed.
    plain = POSTGRES_URL.replace("postgresql+psycopg2://", "postgresql://", 1)
    handle = persistence.open_study(plain, study_name)
    assert handle.study is not None, handle.note


def test_closed_port_falls_back_to_memory_quickly(caplog):
    import socket
    import time

    from keras_loadtune import persistence, storage

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+psycopg2://postgres:secret@127.0.0.1:{port}/klt_test"
    t0 = time.perf_counter()
    handle = persistence.open_study(url, "x")
    assert time.perf_counter() - t0 < storage.CONNECT_TIMEOUT_S + 2
    assert handle.study is None and handle.note.startswith("storage unreachable (")
    assert handle.note.endswith("; tuned in memory") and "secret" not in handle.note
