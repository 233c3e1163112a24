"""The Huber loss of one residual, written with `if` as a textbook writes it: quadratic near
zero, linear past `delta`. flatgrad emits the branch as an `if` block, each side's flat code
under it, and the backward takes the side the forward took."""

import numpy as np


def huber(r, delta):
    a = np.abs(r)
    if a <= delta:
        return 0.5 * r * r
    else:
        return delta * (a - 0.5 * delta)
