"""Ctrl-C in a terminal, then `fit` again on the same wrapped dataset.

Run under `setsid` by tests/test_process_mode_paths.py: a callback sends SIGINT to the
whole process group (as a terminal's Ctrl-C does: worker processes included) at step 3
of the first fit. The script catches the KeyboardInterrupt and fits again; the second
fit must train every batch.
"""

import os
import signal

import keras
import numpy as np

import keras_loadtune as klt

# As in a fresh terminal, whatever the parent ignored: Ctrl-C raises KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)


class Rows(keras.utils.PyDataset):
    def __len__(self):
        return 12

    def __getitem__(self, index):
        return np.full((4, 3), index, "float32"), np.zeros((4, 1), "float32")


class CtrlC(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 3:
            os.killpg(os.getpgrp(), signal.SIGINT)


class Count(keras.callbacks.Callback):
    steps = 0

    def on_train_batch_end(self, batch, logs=None):
        Count.steps += 1


if __name__ == "__main__":
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    data = klt.wrap(Rows(workers=2, use_multiprocessing=True))
    try:
        model.fit(data, epochs=3, verbose=0, callbacks=[CtrlC()])
        print("first fit was not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
    model.fit(data, epochs=2, verbose=0, callbacks=[Count()])
    print("second fit steps", Count.steps)
    data.close()
