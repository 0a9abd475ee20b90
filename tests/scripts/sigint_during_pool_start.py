"""Ctrl-C while a process pool starts: raised within 1 s, no worker left behind.

Prints one JSON line: seconds from SIGINT to KeyboardInterrupt, and the pids of the
forkserver's children still alive after it.
"""

import json
import os
import signal
import sys
import threading
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine_datasets import SlowToLoad

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import Prefetcher

if __name__ == "__main__":
    # Ctrl-C as a terminal delivers it: Python's own handler. A parent that ignores SIGINT
    # (a background job of a non-interactive shell, as CI runs the suite) passes SIG_IGN
    # on, and Python then installs no handler: no press could land.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sent = []
    done = threading.Event()

    def interrupt() -> None:
        # Ctrl-C, pressed again every 0.25 s until it lands (as a user does): a SIGINT
        # handled while the interpreter runs a finalizer (`__del__`) is reported there
        # and dropped by Python itself. The delay counts from the first press.
        time.sleep(float(sys.argv[2]))
        for _ in range(8):
            if done.is_set():
                return
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)
            done.wait(0.25)

    pf = Prefetcher(SlowToLoad(4, load_s=float(sys.argv[1])), LoaderConfig(2, 2, True))
    threading.Thread(target=interrupt, daemon=True).start()
    began = time.perf_counter()
    try:
        pf.begin_pass(range(4))
        pf.next()
        raised = None
    except KeyboardInterrupt:
        raised = time.perf_counter()
    done.set()
    delay = None if raised is None else raised - sent[0]
    pf.close()
    time.sleep(0.2)
    me = psutil.Process()
    # Workers are the forkserver's children: none may outlive the interrupted start.
    left = [
        p.pid
        for child in me.children()
        for p in child.children()
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]
    # For a failure's message: how long the start ran and how many presses were sent.
    took = time.perf_counter() - began
    print(json.dumps({"delay": delay, "left": left, "presses": len(sent), "took": took}))
