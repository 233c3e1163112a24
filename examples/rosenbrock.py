"""The Rosenbrock function written as a loop over the coordinates, as numerical code writes it.

Its iterations repeat one structure, so flatgrad writes them as a `for` loop (forward) and the
reversed loop (backward) instead of one block of lines per coordinate: see "Loops that stay
loops" in the README.
"""


def rosenbrock(x):
    total = 0.0
    for i in range(x.shape[0] - 1):
        total = total + 100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2
    return total
