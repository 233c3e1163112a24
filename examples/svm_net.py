"""The seed's two-layer net: scores = W2 max(0, W1 x), multiclass hinge loss, L2 regularization.

Written as a course assignment writes it, in-place update of the margins included.
"""

import numpy as np

REG = 1e-3  # L2 strength: a global number, baked into the emitted code


def svm_net(X, y, W1, b1, W2, b2):
    N = X.shape[0]
    h = np.maximum(0, X @ W1 + b1)
    scores = h @ W2 + b2
    correct = scores[np.arange(N), y]
    margins = np.maximum(0, scores - correct[:, None] + 1.0)
    margins[np.arange(N), y] = 0
    data_loss = np.sum(margins) / N
    reg_loss = REG * (np.sum(W1 * W1) + np.sum(W2 * W2))
    return data_loss + reg_loss
