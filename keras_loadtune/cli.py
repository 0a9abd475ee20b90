"""Command line: `keras-loadtune report ...` and `keras-loadtune demo ...`.

Also runs as `python -m keras_loadtune`.

Example:

```console
$ keras-loadtune report --storage sqlite:///klt.db              # list the studies
$ keras-loadtune report --storage sqlite:///klt.db --study run1  # print one report
$ keras-loadtune report --storage sqlite:///klt.db --study run1 --json > run1.json
$ keras-loadtune demo --loader gil --epochs 2
```

Errors the user can fix (bad URL, missing file or study, missing demo) print one line
to stderr and exit with status 2; nothing is created on disk.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import keras_loadtune
from keras_loadtune.config import LoaderConfig

PROG = "keras-loadtune"
EXIT_USAGE = 2
DEMO_LOADERS = ("latency", "gil", "compute")


class CLIError(Exception):
    """A user-fixable problem: printed as one line, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Measure and tune how Keras training waits for its input data.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {keras_loadtune.__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="{report,demo}")
    sub.required = True

    rep = sub.add_parser(
        "report",
        help="list the tuning studies in an Optuna storage, or print one study's report",
        description="Without --study, list the studies in the storage; with --study, print "
        "the same tuning report LoadTuner printed at the end of training.",
    )
    rep.add_argument(
        "--storage",
        default="default",
        metavar="URL",
        help="Optuna storage URL, e.g. sqlite:///klt.db (default: 'default', the cache "
        "file LoadTuner writes to)",
    )
    rep.add_argument("--study", metavar="NAME", help="study name (omit to list the studies)")
    rep.add_argument("--json", action="store_true", help="print JSON instead of text")
    rep.set_defaults(func=_cmd_report)

    demo = sub.add_parser(
        "demo",
        help="train a small model on a deliberately slow loader and tune it live",
        description="Run the bundled demo (needs TensorFlow/Keras).",
    )
    demo.add_argument(
        "--loader",
        choices=DEMO_LOADERS,
        default="latency",
        help="kind of bottleneck: I/O latency, GIL-bound Python, or a compute-bound model "
        "(default: latency)",
    )
    demo.add_argument("--epochs", type=_positive_int, default=2, help="epochs (default: 2)")
    demo.add_argument(
        "--steps", type=_positive_int, default=60, help="batches per epoch (default: 60)"
    )
    demo.add_argument(
        "--batch-size", type=_positive_int, default=32, help="batch size (default: 32)"
    )
    demo.add_argument(
        "--verbose",
        type=int,
        nargs="?",
        const=1,
        default=0,
        choices=(0, 1, 2),
        help="tuner log lines: 0 the report only, 1 a few lines, 2 every trial; bare "
        "--verbose means 1 (default: 0). Keras's progress bar is always shown",
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def _studies_table(rows: list[dict[str, Any]]) -> str:
    header = ("study", "trials", "decision", "best config", "speedup", "limit", "started")
    cells = [header]
    for row in rows:
        best = row.get("best_config")
        speedup = row.get("speedup")
        limit = row.get("limit")
        cells.append(
            (
                str(row["name"]),
                str(row["n_trials"]),
                row.get("decision") or "-",
                str(LoaderConfig.from_dict(best)) if best else "-",
                f"{speedup:.1f}x" if speedup is not None else "-",
                f"{limit['steps_per_s']:.1f} steps/s ({limit['bound']})" if limit else "-",
                (row.get("datetime") or "-").replace("T", " "),
            )
        )
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        parts = [
            c.rjust(w) if i in (1, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cmd_report(args: argparse.Namespace) -> int:
    from keras_loadtune.report import StorageError, list_studies, load_report

    try:
        if args.study is None:
            rows = list_studies(args.storage)
            if args.json:
                print(json.dumps(rows, indent=2))
            elif rows:
                print(_studies_table(rows))
            else:
                print(f"no studies in {args.storage}")
            return 0
        report = load_report(args.storage, args.study)
    except StorageError as exc:
        raise CLIError(str(exc)) from exc
    print(report.to_json() if args.json else str(report), end="\n" if args.json else "")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module("keras_loadtune.demo")
    except ModuleNotFoundError as exc:
        if exc.name in ("keras_loadtune.demo", "keras_loadtune"):
            raise CLIError(
                "the demo is not available in this installation (module keras_loadtune.demo "
                "not found)"
            ) from exc
        raise CLIError(
            f"the demo needs {exc.name}, which is not installed "
            "(try: pip install keras-loadtune[cpu])"
        ) from exc
    run_demo = getattr(demo, "run_demo", None)
    if not callable(run_demo):
        raise CLIError("keras_loadtune.demo has no run_demo(); this installation is broken")
    result = run_demo(
        loader=args.loader,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    return 0 if result is None else int(result)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-loadtune` console script; returns the exit status.

    Args:
        argv: Arguments without the program name (default: `sys.argv[1:]`).

    Example:

    ```python
    from keras_loadtune.cli import main
    main(["report", "--storage", "sqlite:///klt.db"])   # prints the study list, returns 0
    ```
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    optuna_logger = logging.getLogger("optuna")
    level = optuna_logger.level
    try:
        with warnings.catch_warnings():
            if args.command == "report":
                # Reading storage must not add log lines or warnings around one-line errors.
                warnings.simplefilter("ignore")
                optuna_logger.setLevel(logging.ERROR)
            return int(args.func(args))
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `keras-loadtune report ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    finally:
        optuna_logger.setLevel(level)
