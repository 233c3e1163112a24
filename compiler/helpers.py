"""Small functions that emitted code calls where one NumPy expression cannot say it.

A scatter needs a fresh array and a write into it; numba cannot compile `np.add.at` or
`np.max(x, axis=...)`. The op table's rules name these functions, and codegen copies the source
of each one a module uses into that module, so emitted code still needs only NumPy (and numba).
Each function writes only into an array it has just made, but the `_to` ones, which add into
the array they are given: optimize mode calls them on an array that dies there (`codegen.in_place`).
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Iterable

import numpy as np


def scatter(shape, index, values, dtype):
    """Zeros of `shape`, with `values` written at an index: a basic one (slices, integers, None),
    or index arrays that name no place twice (`(np.arange(N), y)`)."""
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
    return add_rows_to(np.zeros(shape, dtype), rows, values)


def add_pairs(shape, rows, cols, values, dtype):
    """`add_at` for the index `(rows, cols)` of a matrix, as a loop numba compiles."""
    return add_pairs_to(np.zeros(shape, dtype), rows, cols, values)


def add_rows_to(x, rows, values):
    """`add_rows` into an existing array: `x` with `values` added at the rows (repeats add up)."""
    for k in range(rows.shape[0]):
        x[rows[k]] += values[k]
    return x


def add_pairs_to(x, rows, cols, values):
    """`add_pairs` into an existing array: `x` with `values` added at `(rows, cols)`."""
    for k in range(rows.shape[0]):
        x[rows[k], cols[k]] += values[k]
    return x


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
    """`softmax(x, axis)` of a matrix, as loops numba compiles (element by element: its array
    expressions on a row and on a column take seconds to compile)."""
    lines = x if axis == 1 else x.T
    out = np.empty_like(x)
    values = out if axis == 1 else out.T
    for i in range(lines.shape[0]):
        top = lines[i, 0]
        for j in range(1, lines.shape[1]):
            top = max(top, lines[i, j])
        total = 0.0
        for j in range(lines.shape[1]):
            values[i, j] = np.exp(lines[i, j] - top)
            total += values[i, j]
        for j in range(lines.shape[1]):
            values[i, j] /= total
    return out


def extreme_along(x, axis, largest):
    """`np.max(x, axis=axis)` (or `np.min` when not `largest`) as loops numba compiles: of a
    matrix along either axis, or of any array along its last axis or axes, flattened."""
    if isinstance(axis, int) and axis == 0 and x.ndim == 2:  # a matrix's columns
        out = x[0].copy()
        for i in range(1, x.shape[0]):
            out = np.maximum(out, x[i]) if largest else np.minimum(out, x[i])
        return out
    count = 1  # the elements along the last axes, one row of them per position before
    if isinstance(axis, int):
        count = x.shape[axis]
    else:
        for a in axis:
            count *= x.shape[a]
    rows = np.ascontiguousarray(x).reshape((x.size // count, count))
    out = np.empty(rows.shape[0], x.dtype)
    for i in range(rows.shape[0]):
        out[i] = np.max(rows[i]) if largest else np.min(rows[i])
    return out


def sum_along(x, axis):
    """`x.sum(axis=axis)` of a float matrix, as loops numba compiles in a tenth of a second
    (its own sum along an axis takes more than one)."""
    rows, cols = x.shape
    if axis == 0:
        out = np.zeros(cols, x.dtype)
        for i in range(rows):
            for j in range(cols):
                out[j] += x[i, j]
    else:
        out = np.zeros(rows, x.dtype)
        for i in range(rows):
            for j in range(cols):
                out[i] += x[i, j]
    return out


def logsumexp(x, axis, keepdims):
    """log(sum(exp(x))) along `axis`, shifted by the maximum so that exp cannot overflow."""
    top = x.max(axis=axis, keepdims=True)
    out = np.log(np.exp(x - top).sum(axis=axis, keepdims=True)) + top
    return out if keepdims else out.squeeze(axis)


def logsumexp_all(x):
    """log(sum(exp(x))) over all of x, shifted by the maximum so that exp cannot overflow."""
    top = np.max(x)
    return np.log(np.sum(np.exp(x - top))) + top


def logsumexp_along(x, axis):
    """`logsumexp(x, axis, False)` of a matrix, as loops numba compiles."""
    lines = x if axis == 1 else x.T
    out = np.empty(lines.shape[0], x.dtype)
    for i in range(lines.shape[0]):
        top = np.max(lines[i])
        out[i] = np.log(np.sum(np.exp(lines[i] - top))) + top
    return out


def log_softmax_pick(x, probs, index):
    """log(probs[index]) where probs is the softmax of x along axis 1, the index naming (rows,
    columns), without the log of a probability that underflowed to 0: each picked score minus
    its row's log-sum-exp, which is the row's largest probability's score minus that
    probability's log (at least 1/C, never 0)."""
    picked = probs[index]
    # with no probability below the normal numbers, the log of each is as exact
    if picked.size == 0 or picked.min() >= np.finfo(probs.dtype).tiny:
        return np.log(picked)
    rows = index[0]
    top = probs.argmax(axis=1)[rows]
    return x[index] - x[rows, top] + np.log(probs[rows, top])


def log_softmax_pick_pairs(x, probs, rows, cols):
    """`log_softmax_pick` for the index `(rows, cols)`, as loops numba compiles."""
    out = np.empty(rows.shape[0], x.dtype)
    for k in range(rows.shape[0]):
        row = rows[k]
        top = np.argmax(probs[row])
        out[k] = x[row, cols[k]] - x[row, top] + np.log(probs[row, top])
    return out


def log_softmax_pick_grad(probs, index, grad):
    """The gradient of log(probs[index]) with respect to the scores whose softmax along axis 1
    is `probs`, the index naming (rows, columns): onehot - probs, each row weighted by its
    upstream gradient; a row picked more than once adds up."""
    n, c = probs.shape
    # the forward pass has checked the index; bincount adds up repeats, as np.add.at would
    flat = np.ravel_multi_index(index, (n, c), mode="wrap")
    out = probs * -np.bincount(flat // c, grad, n)[:, None]
    out += np.bincount(flat, grad, n * c).reshape(n, c)
    return out


def log_softmax_pick_grad_rows(probs, cols, grad):
    """`log_softmax_pick_grad` for the index `(np.arange(N), cols)`, one pick in every row."""
    out = probs * -grad[:, None]
    out[np.arange(probs.shape[0]), cols] += grad
    return out


def log_softmax_pick_grad_pairs(probs, rows, cols, grad):
    """`log_softmax_pick_grad` for the index `(rows, cols)`, as loops numba compiles."""
    weights = np.zeros(probs.shape[0], probs.dtype)
    for k in range(rows.shape[0]):
        weights[rows[k]] += grad[k]
    out = np.empty_like(probs)
    # element by element: a broadcast product takes a second to compile
    for i in range(probs.shape[0]):
        for j in range(probs.shape[1]):
            out[i, j] = -probs[i, j] * weights[i]
    for k in range(rows.shape[0]):
        out[rows[k], cols[k]] += grad[k]
    return out


def on_diagonal(shape, offset, values, dtype):
    """Zeros of a matrix's `shape`, with `values` on its diagonal `offset` (above the main one
    where positive): the gradient of `np.diagonal`, as a loop numba compiles."""
    out = np.zeros(shape, dtype)
    row, col = max(-offset, 0), max(offset, 0)
    for k in range(values.shape[0]):
        out[row + k, col + k] = values[k]
    return out


def tiled(x, spread, split):
    """`np.tile` and `np.repeat` as numba compiles them: `x` reshaped to `spread` (size-1 axes
    where the copies go) and broadcast to `split`, as a fresh array; reshaping that gives the
    result."""
    return np.ascontiguousarray(np.broadcast_to(np.ascontiguousarray(x).reshape(spread), split))


def prod_others(x, axis):
    """For each element of x, the product of the others it is multiplied with in
    `np.prod(x, axis)` (all of x for axis None): prod's local gradient. Products from the left
    times products from the right, so an element that is 0 gets the right gradient, where
    out / x would divide 0 by 0."""
    axes = tuple(range(x.ndim)) if axis is None else axis if isinstance(axis, tuple) else (axis,)
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    moved = np.transpose(x, kept + axes)
    lines = moved.reshape(moved.shape[: len(kept)] + (-1,))
    ones = np.ones_like(lines[..., :1])
    left = np.cumprod(np.concatenate([ones, lines[..., :-1]], axis=-1), axis=-1)
    right = np.cumprod(np.concatenate([ones, lines[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    return np.transpose((left * right).reshape(moved.shape), np.argsort(kept + axes))


def prod_along(x, axis):
    """`np.prod(x, axis=axis)` of a matrix, as loops numba compiles."""
    lines = x if axis == 1 else x.T
    out = np.empty(lines.shape[0], x.dtype)
    for i in range(lines.shape[0]):
        out[i] = np.prod(lines[i])
    return out


def prod_others_flat(x):
    """`prod_others(x, None)`, as a loop numba compiles."""
    flat = x.ravel()
    n = flat.size
    left = np.ones_like(flat)
    right = np.ones_like(flat)
    for i in range(1, n):
        left[i] = left[i - 1] * flat[i - 1]
        right[n - 1 - i] = right[n - i] * flat[n - i]
    return (left * right).reshape(x.shape)


def prod_others_along(x, axis):
    """`prod_others(x, axis)` of a matrix, as loops numba compiles."""
    out = np.ones_like(x)
    lines = x if axis == 1 else x.T
    others = out if axis == 1 else out.T  # a view: writing into it fills out
    n = lines.shape[1]
    right = np.ones(n, x.dtype)
    for k in range(lines.shape[0]):
        for i in range(1, n):
            others[k, i] = others[k, i - 1] * lines[k, i - 1]
            right[n - 1 - i] = right[n - i] * lines[k, n - i]
        for i in range(n):
            others[k, i] *= right[i]
    return out


def cumsum_from_end(x, axis):
    """The sums of a matrix's elements from each place to the end along `axis` (np.cumsum run
    backwards: cumsum's gradient), as loops numba compiles."""
    out = np.empty_like(x)
    lines = x if axis == 1 else x.T
    sums = out if axis == 1 else out.T  # a view: writing into it fills out
    n = lines.shape[1]
    for k in range(lines.shape[0]):
        sums[k, n - 1] = lines[k, n - 1]
        for i in range(n - 2, -1, -1):
            sums[k, i] = sums[k, i + 1] + lines[k, i]
    return out


def cross_of_rows(x, y):
    """`np.cross(x, y)` of matrices of 3-vectors in their rows, written out: numba compiles this
    in well under a second, its own np.cross of matrices in seconds."""
    return np.stack(
        (
            x[:, 1] * y[:, 2] - x[:, 2] * y[:, 1],
            x[:, 2] * y[:, 0] - x[:, 0] * y[:, 2],
            x[:, 0] * y[:, 1] - x[:, 1] * y[:, 0],
        ),
        axis=1,
    )


def kron_grad_x(y, grad):
    """The gradient of np.kron(x, y) (matrices) for x: each block of grad times y, summed, as
    loops numba compiles (NumPy writes it as an einsum)."""
    p, q = y.shape
    out = np.empty((grad.shape[0] // p, grad.shape[1] // q), grad.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(grad[i * p : (i + 1) * p, j * q : (j + 1) * q] * y)
    return out


def kron_grad_y(x, grad):
    """The gradient of np.kron(x, y) (matrices) for y: the blocks of grad weighted by x and
    added up, as loops numba compiles (NumPy writes it as an einsum)."""
    m, n = x.shape
    p, q = grad.shape[0] // m, grad.shape[1] // n
    out = np.zeros((p, q), grad.dtype)
    for i in range(m):
        for j in range(n):
            out += x[i, j] * grad[i * p : (i + 1) * p, j * q : (j + 1) * q]
    return out


HELPERS = {
    fn.__name__: fn
    for fn in (
        scatter, add_at, add_rows, add_pairs, add_rows_to, add_pairs_to, updated,
        last_writes, softmax, softmax_along, extreme_along, sum_along,
        logsumexp, logsumexp_all, logsumexp_along, log_softmax_pick, log_softmax_pick_pairs,
        log_softmax_pick_grad, log_softmax_pick_grad_rows, log_softmax_pick_grad_pairs,
        on_diagonal, tiled,
        prod_others, prod_along, prod_others_flat, prod_others_along, cumsum_from_end, cross_of_rows,
        kron_grad_x, kron_grad_y,
    )
}


# The helpers that make zeros of a shape and put values in at an index, and what does the same
# to an array that exists (`codegen.in_place`): a statement by the helper's parameter names,
# `x` the array
ADDED_INTO = {
    "scatter": "{x}[{index}] += {values}",  # its index names no place twice
    "add_at": "np.add.at({x}, {index}, {values})",
    "add_rows": "add_rows_to({x}, {rows}, {values})",
    "add_pairs": "add_pairs_to({x}, {rows}, {cols}, {values})",
}


def helper_source(name: str) -> str:
    """The source of one helper, as it is copied into an emitted module."""
    return _source(name)


@functools.cache
def _source(name: str) -> str:
    return inspect.getsource(HELPERS[name]).rstrip("\n")


@functools.cache
def _callees(name: str) -> frozenset[str]:
    body = _source(name).partition("\n")[2]
    return frozenset(re.findall(r"\b(\w+)\(", body)) & HELPERS.keys()


def helpers_needed(called: Iterable[str]) -> list[str]:
    """The helpers named in `called`, and those they call in turn, in the order of HELPERS."""
    needed = set(called) & HELPERS.keys()
    pending = list(needed)
    while pending:
        for callee in _callees(pending.pop()) - needed:
            needed.add(callee)
            pending.append(callee)
    return [name for name in HELPERS if name in needed]
