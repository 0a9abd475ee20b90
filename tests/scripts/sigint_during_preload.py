"""Ctrl-C while the forkserver is still importing the dataset's module (thread path).

$KLT_MODULE_DIR holds `slowmod`, whose import takes seconds outside the trainer (as
importing Keras does). The test sends SIGINT to the process group during that import:
nothing may print a traceback, and both thread and process passes work afterwards.
"""

import os
import signal
import sys

os.environ["KLT_TRAINER_PID"] = str(os.getpid())
sys.path.insert(0, os.environ["KLT_MODULE_DIR"])

import time

import slowmod

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import EndOfPass, Prefetcher
from keras_loadtune.engine.process import prewarm

# As in a fresh terminal, whatever the parent ignored: Ctrl-C raises KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)


def run_pass(config):
    with Prefetcher(slowmod.Echo(), config) as pf:
        pf.begin_pass(range(6))
        got = []
        while True:
            try:
                got.append(pf.next())
            except EndOfPass:
                return got


assert prewarm(slowmod.Echo())
print("READY", flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
print("THREADS", run_pass(LoaderConfig(2, 2, False)) == list(range(6)), flush=True)
print("PROCESSES", run_pass(LoaderConfig(2, 2, True)) == list(range(6)), flush=True)
