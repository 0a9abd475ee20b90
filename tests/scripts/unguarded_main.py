"""A training script without `if __name__ == "__main__":` whose dataset class lives in `__main__`.

Run by tests/test_engine_processes.py as a script and as `python -c`. Its body must run
exactly once (each run appends one line to $KLT_BODY_LOG): worker processes get the class
by value and never import this file.
"""

import os

import numpy as np

from keras_loadtune import LoaderConfig
from keras_loadtune.engine import EndOfPass, Prefetcher

with open(os.environ["KLT_BODY_LOG"], "a") as log:
    log.write(f"{os.getpid()}\n")


class Squares:
    def __init__(self, n):
        self.values = np.arange(n)

    def __getitem__(self, index):
        return int(self.values[index]) ** 2, os.getpid()


pf = Prefetcher(Squares(8), LoaderConfig(2, 4, True))
for _ in range(2):
    pf.begin_pass(range(8))
    got = []
    while True:
        try:
            got.append(pf.next())
        except EndOfPass:
            break
    in_workers = {pid for _, pid in got} - {os.getpid()}
    print(" ".join(str(v) for v, _ in got), "|", len(in_workers) > 0, flush=True)
pf.close()
