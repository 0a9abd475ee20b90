"""A remote-fetch job: every batch is an HTTP GET that takes 100 ms, as from a slow object store.

The server is the suite's local `http.server` on 127.0.0.1 (`scenarios.local_http_server`):
it adds `--latency-ms` to every request, answers 503 once the run's request budget is
spent (so a runaway loader cannot hammer it), and stops when the benchmark ends. Batches
are real bytes (32 x 32x32x3 uint8 + labels) decoded by `scenarios.HttpDataset`.

Compares, side by side in one process (fresh model per fit, order rotating per repeat,
medians shown):

- plain Keras with the user's config, `HttpDataset(workers=1)` (Keras's default);
- keras-loadtune (`LoadTuner` + `tuner.wrap`) from that config, tuning included;
- the compute floor: the same model on the same batches already in memory.

Usage:

```bash
python benchmarks/remote_fetch.py               # 3 epochs x 100 steps, 3 repeats
python benchmarks/remote_fetch.py --quick       # smoke run, < 60 s
```
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH, IMAGE = 32, 32


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (3)")
    parser.add_argument("--steps", type=int, default=None, help="batches per epoch (100)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="per request (100)")
    import side_by_side as sbs

    sbs.add_common_args(parser, repeats=3)
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 3)
    steps = args.steps or (16 if args.quick else 100)
    repeats = args.repeats or (1 if args.quick else 3)

    import keras
    from scenarios import (
        HttpDataset,
        InMemoryDataset,
        decode_payload,
        http_payload,
        local_http_server,
    )

    from keras_loadtune.synthetic import small_cnn

    sbs.print_header(
        "remote_fetch.py",
        argv,
        f"remote fetch: {args.latency_ms:.0f} ms per batch over HTTP on 127.0.0.1, "
        f"{epochs} epochs x {steps} steps, median of {repeats}",
    )
    floor_batches = [
        decode_payload(http_payload(i, BATCH, IMAGE), BATCH, IMAGE) for i in range(steps)
    ]

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        return small_cnn(image_size=IMAGE)

    # Each fit fetches every batch once, plus a few peeks; twice that is the budget.
    budget = 2 * (2 * repeats * epochs * steps + 50)
    with local_http_server(args.latency_ms / 1000, budget, BATCH, IMAGE) as server:
        url = server["url"]
        sbs.timed_fit(model(), InMemoryDataset(floor_batches, steps), 1)  # warm-up, untimed
        rows = {
            "plain Keras workers=1": lambda r: sbs.timed_fit(
                model(), HttpDataset(url, steps, BATCH, IMAGE, workers=1), epochs
            ),
            "keras-loadtune from workers=1": lambda r: sbs.tuned_fit(
                model(), HttpDataset(url, steps, BATCH, IMAGE, workers=1), epochs
            ),
            "floor (batches in memory)": lambda r: sbs.timed_fit(
                model(), InMemoryDataset(floor_batches, steps), epochs
            ),
        }
        results = sbs.alternate(rows, repeats)
    print(f"# HTTP requests served: {server['requests']} (budget {budget})")
    plain, tuned, floor = rows
    ratios = sbs.print_table(
        f"remote fetch, {epochs} epochs x {steps} steps (wall s of fit)",
        results,
        {plain: plain, tuned: plain, floor: floor},
    )
    floor_s = sbs.median_wall(results[floor])
    for label in (plain, tuned):
        print(f"{label} / floor: {sbs.median_wall(results[label]) / floor_s:.2f}x")
    verdict = "PASS" if ratios[tuned] <= 1.02 else "MISS"
    print(f"{tuned}: {ratios[tuned]:.3f}x plain Keras (never worse, <= 1.02x): {verdict}")
    print(sbs.tuned_summary(results[tuned], results[plain]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
