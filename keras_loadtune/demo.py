"""`python -m keras_loadtune demo`: a tuned `fit` on a synthetic input-bound dataset.

Example:

```bash
python -m keras_loadtune demo                  # latency-bound loader (40 ms per batch)
python -m keras_loadtune demo --loader gil     # pure-Python preprocessing
python -m keras_loadtune demo --loader compute # the loader keeps up; nothing to tune
```
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from keras_loadtune._validate import int_at_least

if TYPE_CHECKING:  # pragma: no cover
    from keras_loadtune.report import TuningReport

LOADERS = ("latency", "gil", "compute")


def run_demo(
    loader: str = "latency",
    epochs: int = 2,
    steps: int = 60,
    batch_size: int = 32,
    verbose: int = 1,
) -> int:
    """Runs the demo fit and prints the tuning report; returns a process exit code.

    Args:
        loader: `"latency"` (each batch sleeps 40 ms, or 4x the model's measured step
            on a slower machine, like a slow disk or network),
            `"gil"` (15 ms of pure-Python preprocessing per batch) or `"compute"`
            (batches in memory, a heavier model: nothing to tune).
        epochs: Epochs to train.
        steps: Batches per epoch.
        batch_size: Samples per batch.
        verbose: Tuner verbosity (0, 1, 2); Keras's progress bar is always shown.

    Example:

    ```python
    from keras_loadtune.demo import run_demo

    run_demo("latency", epochs=2, steps=60)
    ```
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}; got {loader!r}.")
    for name, value in (("epochs", epochs), ("steps", steps), ("batch_size", batch_size)):
        int_at_least(name, value, 1)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras

    import keras_loadtune as klt
    from keras_loadtune import synthetic

    keras.utils.set_random_seed(0)
    if loader == "latency":
        model = synthetic.small_cnn()
        # 40 ms, or 4x this machine's measured step if that is longer: input-bound on a
        # slow or loaded machine too (a 45 ms step would hide a fixed 40 ms wait).
        latency = synthetic.latency_for(model, batch_size=batch_size)
        dataset = synthetic.LatencyDataset(steps, latency_s=latency, batch_size=batch_size)
        what = f"each batch waits {latency * 1000:.0f} ms on (simulated) I/O"
    elif loader == "gil":
        dataset = synthetic.PythonDataset(steps, cpu_s=0.015, batch_size=batch_size)
        model = synthetic.small_cnn(width=4)
        what = "each batch needs 15 ms of pure-Python (GIL-holding) preprocessing"
    else:
        dataset = synthetic.ArrayDataset(steps, batch_size=batch_size, image_size=64)
        model = synthetic.small_cnn(image_size=64, width=64)
        what = "batches are already in memory and the model is heavier"

    print(
        f"keras-loadtune demo: {loader}-bound loader ({what}); {epochs} epochs x {steps} "
        f"steps, starting from Keras's default PyDataset config (1 worker).",
        flush=True,
    )
    # storage=None: the demo tunes from scratch on every run. Real runs keep their
    # studies (storage="default") and warm-start the next time.
    tuner = klt.LoadTuner(verbose=verbose, seed=0, storage=None)
    started = time.perf_counter()
    with tuner.wrap(dataset) as train:
        history = model.fit(train, epochs=epochs, callbacks=[tuner], verbose=1)
    elapsed = time.perf_counter() - started
    print()
    print(tuner.report)
    waits = ", ".join(f"{w:.0%}" for w in history.history.get("data_wait_fraction", []))
    print(f"\nfit took {elapsed:.1f} s; data_wait_fraction per epoch (History): {waits}")
    why = why_not_tuned(tuner.report)
    if why is not None:
        print(why)
    return 0


def why_not_tuned(report: TuningReport) -> str | None:
    """One line saying why a demo fit did not tune (`None` when it tuned).

    Example:

    ```python
    why_not_tuned(tuner.report)  # "Not tuned: compute-bound (wait 3%); ..."
    ```
    """
    if report.decision == "tuned":
        return None
    reason = report.summary_line().split(": ", 1)[-1]
    skipped = [n for n in report.notes if "not worth" in n or "worth it" in n]
    if skipped:
        reason += f"; {skipped[0]}"
    return f"Not tuned: {reason}"
