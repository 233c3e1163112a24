"""The lecture's first example: f(x, y, z) = (x + y) z."""


def simple(x, y, z):
    q = x + y
    return q * z
