"""Imported first by the forkserver, and only there: SIGINT off, then the trainer's path.

A terminal Ctrl-C sends SIGINT to the whole process group. CPython's forkserver
ignores SIGINT only *after* its preload imports (seconds, when the dataset's module
imports Keras), so a Ctrl-C during that window printed a long `KeyboardInterrupt`
traceback from inside the forkserver. Ignoring it from here on also makes every worker
forked from it ignore SIGINT from birth (the forkserver hands its pre-loop handlers
to its children): the trainer handles Ctrl-C, as PyTorch's DataLoader workers do.
Consequence: processes that other code in the same program starts through
multiprocessing's forkserver ignore SIGINT too (they still end on SIGTERM, which is
what `Process.terminate()` and `Pool.terminate()` send).

Also sets the workers' `KERAS_BACKEND` (`_keras.apply_in_forkserver`) before anything imports Keras.

Never import this module in the trainer.
"""

from __future__ import annotations

import os
import signal

from keras_loadtune.engine.process import _forkserver_path, _keras

signal.signal(signal.SIGINT, signal.SIG_IGN)
_forkserver_path.apply(os.environ.get(_forkserver_path.ENV_VAR))
_keras.apply_in_forkserver()
