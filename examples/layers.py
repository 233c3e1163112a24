"""A course's layers, forward passes only, written as an assignment's layers.py writes them:
flatgrad writes each backward (`flatgrad emit examples/layers.py:affine_forward ... --layer`).
"""

import numpy as np


def affine_forward(x, w, b):
    """A fully connected layer: each example's features flattened, times w, plus b."""
    out = x.reshape(x.shape[0], -1) @ w + b
    return out


def relu_forward(x):
    out = np.maximum(0, x)
    return out


def affine_relu_forward(x, w, b):
    """The sandwich: an affine layer, then a ReLU."""
    a = affine_forward(x, w, b)
    out = relu_forward(a)
    return out


def softmax_loss(x, w, b, y):
    """A softmax classifier's loss, with its scores beside it (trace with has_aux)."""
    scores = x @ w + b
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    loss = -np.sum(log_probs[np.arange(x.shape[0]), y]) / x.shape[0]
    return loss, scores


def batchnorm_forward(x, gamma, beta):
    """Batch normalization in training mode: the batch's mean and variance."""
    eps = 1e-5
    mu = np.mean(x, axis=0)
    xc = x - mu
    var = np.mean(xc**2, axis=0)
    xhat = xc / np.sqrt(var + eps)
    out = gamma * xhat + beta
    return out


def layernorm_forward(x, gamma, beta):
    """Layer normalization: each example's mean and variance over its features."""
    eps = 1e-5
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    var = (xc**2).mean(axis=1, keepdims=True)
    out = gamma * (xc / np.sqrt(var + eps)) + beta
    return out


def dropout_forward(x, mask):
    """Inverted dropout in training mode, the mask (1 where kept) drawn by the caller."""
    p = 0.5  # the probability of keeping a unit
    out = x * mask / p
    return out


def conv_forward_naive(x, w, b):
    """A convolution, stride 1 and padding 1, with loops over the output positions."""
    stride, pad = 1, 1
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, H_out, W_out))
    for i in range(H_out):
        for j in range(W_out):
            window = x_pad[:, :, i * stride : i * stride + HH, j * stride : j * stride + WW]
            for f in range(F):
                out[:, f, i, j] = np.sum(window * w[f], axis=(1, 2, 3)) + b[f]
    return out


def max_pool_forward_naive(x):
    """2x2 max pooling, stride 2, with loops over the output positions."""
    size, stride = 2, 2
    N, C, H, W = x.shape
    out = np.zeros((N, C, (H - size) // stride + 1, (W - size) // stride + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            window = x[:, :, i * stride : i * stride + size, j * stride : j * stride + size]
            out[:, :, i, j] = np.max(window, axis=(2, 3))
    return out


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One step of a vanilla RNN."""
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h


def rnn_forward(x, h0, Wx, Wh, b):
    """A vanilla RNN over a short sequence x of shape (N, T, D): the hidden states (N, T, H)."""
    h = h0
    hs = []
    for t in range(x.shape[1]):
        h = rnn_step_forward(x[:, t, :], h, Wx, Wh, b)
        hs.append(h)
    return np.stack(hs, axis=1)
