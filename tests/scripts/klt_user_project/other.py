"""Another module of the user's project."""

import numpy as np


def batch(i):
    return np.full((2, 2), i, np.float32)
