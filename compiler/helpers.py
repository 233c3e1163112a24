"""Small functions that emitted code calls where one NumPy expression cannot say it.

A scatter needs a fresh array and a write into it; numba cannot compile `np.add.at` or
`np.max(x, axis=...)`. The op table's rules name these functions, and codegen copies the source
of each one a module uses into that module, so emitted code still needs only NumPy (and numba).
Each function writes only into an array it has just made.
"""

from __future__ import annotations

import inspect

import numpy as np


def scatter(shape, index, values, dtype):
    """Zeros of `shape`, with `values` written at a basic index (slices, integers, None)."""
    out = np.zeros(shape, dtype)
    out[index] = values
    return out


def add_at(shape, index, values, dtype):
    """Zeros of `shape`, with `values` added at an index with arrays: repeated indices add up."""
    out = np.zeros(shape, dtype)
    np.add.at(out, index, values)
    return out


def add_rows(shape, rows, values, dtype):
    """`add_at` for the index `(rows,)`, as a loop numba compiles."""
    out = np.zeros(shape, dtype)
    for k in range(rows.shape[0]):
        out[rows[k]] += values[k]
    return out


def add_pairs(shape, rows, cols, values, dtype):
    """`add_at` for the index `(rows, cols)` of a matrix, as a loop numba compiles."""
    out = np.zeros(shape, dtype)
    for k in range(rows.shape[0]):
        out[rows[k], cols[k]] += values[k]
    return out


def updated(x, index, values):
    """A copy of `x` with `values` written at `index`: `x[index] = values` without the mutation."""
    out = x.copy()
    out[index] = values
    return out


def last_writes(shape, index):
    """For `x[index] = v`: True where a write is the last to reach its place (indices repeat)."""
    order = np.full(shape, -1)
    ids = np.arange(order[index].size).reshape(order[index].shape)
    order[index] = ids
    return order[index] == ids


def softmax(x, axis):
    """exp(x) / sum(exp(x)) along `axis`, shifted by the maximum so that exp cannot overflow."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_along(x, axis):
    """`softmax(x, axis)` of a matrix, as loops numba compiles."""
    out = np.empty_like(x)
    if axis == 1:
        for i in range(x.shape[0]):
            e = np.exp(x[i] - np.max(x[i]))
            out[i] = e / e.sum()
    else:
        for j in range(x.shape[1]):
            e = np.exp(x[:, j] - np.max(x[:, j]))
            out[:, j] = e / e.sum()
    return out


def extreme_along(x, axis, largest):
    """`np.max(x, axis=axis)` (or `np.min` when not `largest`) of a matrix, as loops numba compiles."""
    if axis == 0:
        out = x[0].copy()
        for i in range(1, x.shape[0]):
            out = np.maximum(out, x[i]) if largest else np.minimum(out, x[i])
        return out
    out = np.empty(x.shape[0], x.dtype)
    for i in range(x.shape[0]):
        out[i] = np.max(x[i]) if largest else np.min(x[i])
    return out


HELPERS = {
    fn.__name__: fn
    for fn in (scatter, add_at, add_rows, add_pairs, updated, last_writes, softmax, softmax_along, extreme_along)
}


def helper_source(name: str) -> str:
    """The source of one helper, as it is copied into an emitted module."""
    return inspect.getsource(HELPERS[name]).rstrip("\n")
