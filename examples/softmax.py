"""A softmax classifier: scores = X W + b, cross-entropy loss, L2 regularization."""

import numpy as np

REG = 1e-3


def softmax(X, y, W, b):
    N = X.shape[0]
    scores = X @ W + b
    shifted = scores - np.max(scores, axis=1, keepdims=True)  # for numerical stability
    exp_scores = np.exp(shifted)
    probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    correct_logprobs = -np.log(probs[np.arange(N), y])
    data_loss = np.sum(correct_logprobs) / N
    reg_loss = 0.5 * REG * np.sum(W * W)
    return data_loss + reg_loss
