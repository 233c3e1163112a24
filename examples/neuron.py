"""The lecture's sigmoid neuron: f(w, x) = sigmoid(w0 x0 + w1 x1 + w2)."""

import compiler


def neuron(w0, x0, w1, x1, w2):
    return compiler.sigmoid(w0 * x0 + w1 * x1 + w2)
