"""A Keras training script without `if __name__ == "__main__":`; its dataset lives here.

Run by tests/test_process_mode_paths.py on each backend. The loader starts in process
mode (as the tuner may choose on its own) and the tuner is free to switch. The body
must run exactly once: each run appends one line to $KLT_BODY_LOG.
"""

import os
import time

import keras
import numpy as np

import keras_loadtune as klt

with open(os.environ["KLT_BODY_LOG"], "a") as log:
    log.write(f"{os.getpid()}\n")


class Pixels(keras.utils.PyDataset):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale = np.float32(0.5)

    def __len__(self):
        return 24

    def __getitem__(self, index):
        time.sleep(0.005)
        x = np.full((8, 4), index * self.scale, "float32")
        return x, np.zeros((8, 1), "float32")


model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile("sgd", "mse")
tuner = klt.LoadTuner(storage=None, verbose=0, max_tuning_steps=40)
data = tuner.wrap(Pixels(workers=2, use_multiprocessing=True))
history = model.fit(data, epochs=2, verbose=0, callbacks=[tuner])
print("steps", len(history.history["loss"]), "pids", len(set(data.worker_pids)) >= 0)
data.close()
print("fit done")
