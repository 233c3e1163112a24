"""The lecture's staged computation, with fan-out: x and y each feed several gates.

f(x, y) = (x + sigmoid(y)) / (sigmoid(x) + (x + y) ** 2)
"""

import numpy as np


def staged(x, y):
    sigy = 1.0 / (1 + np.exp(-y))  # sigmoid in numerator
    num = x + sigy
    sigx = 1.0 / (1 + np.exp(-x))  # sigmoid in denominator
    xpy = x + y
    xpysqr = xpy**2
    den = sigx + xpysqr
    invden = 1.0 / den
    f = num * invden
    return f
