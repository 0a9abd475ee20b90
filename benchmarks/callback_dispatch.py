"""What a per-batch callback costs on an accelerator: Keras's async callback dispatch.

On JAX and PyTorch (`backend.IS_THREAD_SAFE`), Keras dispatches batch-end callbacks
in a thread, so the training loop never waits for the device to finish a step
(`keras/src/callbacks/callback_list.py`). A callback that overrides
`on_train_batch_end` turns that off: every step then converts the loss to a Python
float, which waits for the device. `LoadTuner` does not override it: while it tunes it
ticks in `on_train_batch_begin` (which Keras does not check), and once tuning has ended
that tick is detached too (see `benchmarks/fast_step.py` for its per-step cost).

Rows (alternating, fresh model per fit, in-memory batches, compute-bound):

- `plain`: `model.fit` with no callback;
- `plain + batch-end callback`: the same with a no-op `on_train_batch_end` callback;
- `keras-loadtune`: `LoadTuner` + `tuner.wrap`, storage off.

Usage:

```bash
KERAS_BACKEND=torch python benchmarks/callback_dispatch.py            # 400 steps, 5 repeats
KERAS_BACKEND=jax python benchmarks/callback_dispatch.py --quick
```
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="steps per fit (400)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (5)")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args(argv)
    steps, repeats = (40, 1) if args.quick else (args.steps, args.repeats)

    import keras
    import numpy as np

    import keras_loadtune as klt

    backend = keras.backend.backend()
    print(f"command: KERAS_BACKEND={backend} python benchmarks/callback_dispatch.py "
          + " ".join(argv))  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.random((64, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, 64)

    class Batches(keras.utils.PyDataset):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)

        def __len__(self):
            return steps

        def __getitem__(self, i):
            return x, y

    class NoOp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    def model():
        keras.utils.set_random_seed(0)
        m = keras.Sequential([
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ])  # fmt: skip
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, batch_size=64, epochs=1, verbose=0)  # build and trace, untimed
        return m

    def plain():
        return Batches(), []

    def noop():
        return Batches(), [NoOp()]

    def tuned():
        tuner = klt.LoadTuner(verbose=0, storage=None)
        return tuner.wrap(Batches()), [tuner]

    rows = {"plain": plain, "plain + batch-end callback": noop, "keras-loadtune": tuned}
    times: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            m = model()
            data, callbacks = rows[name]()
            t0 = time.perf_counter()
            m.fit(data, epochs=1, verbose=0, callbacks=callbacks)
            times[name].append(time.perf_counter() - t0)
            close = getattr(data, "close", None)
            if close is not None:
                close()
    base = statistics.median(times["plain"])
    print(f"{'row':<28} {'median s':>9} {'min-max':>13} {'ms/step':>8} {'vs plain':>9}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<28} {med:9.3f} {min(ts):6.3f}-{max(ts):6.3f} "
              f"{1e3 * med / steps:8.2f} {med / base:9.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
