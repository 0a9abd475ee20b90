"""Ctrl-C in a terminal: SIGINT reaches the whole process group, workers included.

The test runs this under a new session (setsid) and sends SIGINT to the group once it
printed READY, in the middle of a pass. Workers ignore it; the KeyboardInterrupt handler
then runs a full second pass on the same prefetcher, with the same worker processes.
"""

import os
import signal
import time

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import EndOfPass, Prefetcher

# As in a fresh terminal, whatever the parent ignored: Ctrl-C raises KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)

N = 40


class Slow:
    def __getitem__(self, index):
        time.sleep(0.02)
        return index, os.getpid()


def run_pass(pf, pause=0.0, ready_after=None):
    pf.begin_pass(range(N))
    got = []
    while True:
        try:
            got.append(pf.next()[0])
        except EndOfPass:
            return got
        if ready_after is not None and len(got) == ready_after:
            print("READY", flush=True)
        time.sleep(pause)


pf = Prefetcher(Slow(), LoaderConfig(2, 4, True))
try:
    assert run_pass(pf) == list(range(N))
    pids = sorted(pf.worker_pids)
    print("PIDS", *pids, flush=True)
    run_pass(pf, pause=0.5, ready_after=2)  # interrupted: takes 20 s otherwise
    print("NOT INTERRUPTED", flush=True)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
second = run_pass(pf)
print("SECOND", second == list(range(N)), sorted(pf.worker_pids) == pids, flush=True)
pf.close()
