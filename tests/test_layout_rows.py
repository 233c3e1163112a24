"""The shape and layout rows (ravel ... pad), the joins and np.split: course spellings, the
emitted lines, errors, and numba.

Each row is also checked through every entry point against central differences and autograd by
tests/test_ops.py, from the table. Here: what that cannot see. The numba tests put several rows
into one traced function, as numba compiles each function once (about a second each).
"""

from __future__ import annotations

import numpy as np
import pytest
from table_harness import build, rng_for

import compiler
from compiler.errors import FlatgradError, TracingError

HERE = "test_layout_rows.py"


def weighted(a):
    """A scalar that gives each element of `a` its own gradient (weights 1, 2, 3, ... in order),
    written with a constant numba compiles fast (`np.arange(12)`, not a literal of 12 floats)."""
    flat = np.ravel(a)
    return np.sum(flat * np.arange(flat.shape[0])) + np.sum(flat)


def check(f, *args, jit=None, rtol=1e-7):
    """Build `f` (IR verified), then its value against NumPy's and its gradients against
    central differences."""
    prog = build(f, *args, jit=jit)
    value, grads = prog.value_and_grad(*args)
    np.testing.assert_allclose(value, f(*args), rtol=1e-12)
    assert compiler.check_grad(f, *args) < rtol
    return prog, grads


# --- course spellings --------------------------------------------------------------------------


def test_bias_trick_concatenates_a_column_of_ones():
    """`np.concatenate([X, np.ones((N, 1))], axis=1)`: one line, the constant written in, and X's
    gradient sliced out of the joined one."""

    def f(X, W):
        N = X.shape[0]
        Xb = np.concatenate([X, np.ones((N, 1))], axis=1)
        return np.sum(np.maximum(0.0, Xb @ W))

    rng = rng_for("bias trick")
    prog, _ = check(f, rng.normal(size=(5, 3)), rng.normal(size=(4, 2)))
    explained = compiler.gradient(f, np.ones((5, 3)), np.ones((4, 2)), explain=True).source
    assert ": join" in explained
    assert "grad_X = grad_Xb[:, 0:3]  # local 1 × upstream grad_Xb[:, 0:3]" in explained
    assert "Xb = np.concatenate((X, np.ones((5, 1))), axis=1)" in prog.source
    assert "grad_X = grad_Xb[:, 0:3]" in prog.source


def test_stack_of_traced_scalars_is_an_array_of_them():
    def f(a, b, c):
        v = np.stack([a, b * c, c])
        return np.sum(v * np.array([1.0, 2.0, 3.0]))

    prog, grads = check(f, 1.5, -2.0, 0.5)
    assert "v = np.array((a, s0, c))" in prog.source
    assert "grad_a = grad_v[0]" in prog.source
    assert [float(g) for g in grads] == [1.0, 2.0 * 0.5, 2.0 * -2.0 + 3.0]


def test_split_parts_are_each_used():
    def f(x):
        left, middle, right = np.split(x, 3, axis=1)
        return np.sum(left * middle) + weighted(right)

    prog, _ = check(f, rng_for("split").normal(size=(2, 6)))
    assert "left = x[:, 0:2]" in prog.source and "right = x[:, 4:6]" in prog.source


def test_array_split_and_split_at_indices():
    def f(x):
        a, b, c = np.array_split(x, 3)  # lengths 3, 2, 2
        first, rest = np.split(x, [2], axis=0)
        return weighted(a) + 2.0 * weighted(c) - np.sum(b) + weighted(first) * np.sum(rest)

    check(f, rng_for("array_split").normal(size=(7, 2)))


def test_joins_of_vectors_and_numbers():
    def f(v, w, s):
        rows = np.vstack([v, w, v * s])  # vectors as rows
        flat = np.hstack([v, s, w])  # numbers and vectors along axis 0
        cols = np.column_stack([v, w])  # vectors as columns
        return weighted(rows) + weighted(flat) + weighted(cols) + weighted(np.stack([v, w], axis=1))

    rng = rng_for("joins")
    check(f, rng.normal(size=3), rng.normal(size=3), 0.7)


def test_reshape_minus_one_and_transposes():
    def f(x):
        flat = x.reshape(-1)
        return weighted(flat) + weighted(x.transpose(1, 2, 0)) + weighted(np.transpose(x)) + weighted(x.T[0])

    prog, _ = check(f, rng_for("transpose").normal(size=(2, 3, 4)))
    assert "x.transpose((1, 2, 0))" in prog.source and ".transpose((2, 0, 1))" in prog.source  # the inverse


def test_transpose_of_a_matrix_stays_dot_t():
    """The full reversal is `.T` however it is spelled, with no statics in the listing."""
    prog = build(lambda x: weighted(np.transpose(x, (1, 0)) + x.transpose() + x.T), np.ones((2, 3)))
    transposes = [e for e in prog.graph.forward_eqns if e.op == "transpose"]
    assert len(transposes) == 3 and all(e.params == () for e in transposes)
    assert "s0 = x.T" in prog.source and "transpose(" not in prog.source


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "f, message",
    [
        (lambda x: np.sum(np.squeeze(x, 0)), r"np.squeeze cannot take these arguments: cannot squeeze out an axis"),
        (lambda x: np.sum(np.swapaxes(x, 0, 3)), r"np.swapaxes cannot take these arguments: axis 3 is out of bounds"),
        (lambda x: np.sum(np.split(x, 4)[0]), r"np.split cannot take these arguments: .* 4 equal parts"),
        (lambda x: np.sum(np.pad(x, 1, mode="edge")), r"mode='edge' has no gradient rule"),
        (lambda x: np.sum(np.repeat(x, [1, 2, 1])), r"np.repeat cannot take these arguments: repeats"),
        (lambda x: np.sum(np.concatenate(x)), r"np.concatenate of one array has no rule"),
        (lambda x: np.sum(np.concatenate(np.ones(3), x)), r"np.concatenate of one array has no rule"),
        (lambda x: np.sum(np.concatenate([x, x], axis=None)), r"axis=None joins the flattened arrays"),
        (lambda x: np.sum(np.concatenate([x] * 33)), r"np.concatenate of 33 arrays has no rule"),
        (lambda x: np.sum(np.concatenate([x, x], out=x)), r"np.concatenate called with these arguments"),
        (lambda x: np.sum(np.transpose(x, (0, 0))), r"not a permutation"),
        (lambda x: np.sum(np.diag(x[None])), r"np.diag on operands of 3-d shape has no rule"),
    ],
)
def test_bad_arguments_are_flatgrad_errors_at_the_users_line(f, message):
    with pytest.raises(FlatgradError, match=rf"{HERE}:\d+: .*{message}"):
        compiler.gradient(f, np.ones((3, 2)))


def test_a_split_part_is_a_view():
    def f(x):
        a, b = np.split(x, 2)
        a[0] = 1.0
        return np.sum(x)

    with pytest.raises(TracingError, match="writing into a view"):
        compiler.gradient(f, np.ones((4, 2)))


# --- numba --------------------------------------------------------------------------------------


def all_weighted(*results):
    """One scalar of several results, each element with its own gradient: one line joins them,
    so the function numba compiles stays short."""
    return weighted(np.concatenate([np.ravel(r) for r in results]))


def reshaping(x, v):
    """ravel, flatten, squeeze, expand_dims, atleast_*d, swapaxes, moveaxis, rollaxis, transpose."""
    t = x.transpose(1, 0, 2)  # a non-contiguous operand
    return all_weighted(
        t.flatten(), np.squeeze(x[:, :1], 1), np.expand_dims(v, (0, 2)), np.atleast_1d(v) + np.atleast_2d(v),
        np.atleast_3d(v), np.swapaxes(x, 0, 2), np.moveaxis(x, (0, 1), (-1, 0)), np.rollaxis(x, 2),
        np.squeeze(np.expand_dims(v, 0)).T,
    )


def copying(x, m):
    """flip, fliplr, flipud, roll, tile, repeat, diag, diagonal, triu, tril, pad."""
    return all_weighted(
        np.flip(x, (0, 2)), np.fliplr(m), np.flipud(m.T), np.roll(m, 2), np.tile(m, (2, 1, 2)),
        np.repeat(m, 2, axis=1), m.repeat(3), np.diag(np.diag(m, 1), -1), m.T.diagonal(1),
        np.triu(m, 1) - np.tril(m.T).T, np.pad(m, ((1, 0), (2, 1)), constant_values=0.5),
    )


def joining(x, m, s):
    """concatenate, stack (of arrays and of numbers), vstack, hstack, column_stack, split."""
    left, right = np.split(x, 2, axis=2)
    return np.sum(left * right) + all_weighted(
        np.concatenate([m, np.ones((3, 1)), m.T.T * 2.0], axis=1), np.stack([m, m * s], axis=1),
        np.stack([s, s * s, 2.0]), np.vstack([m[:1], m]), np.hstack([m, m[:, :1]]), np.column_stack([m[:, 0], m]),
    )


@pytest.mark.numba
@pytest.mark.parametrize("f", [reshaping, copying, joining], ids=lambda f: f.__name__)
def test_numba_agrees_with_numpy(f):
    rng = rng_for("numba", f.__name__)
    x, m, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(3, 4)), rng.normal(size=3)
    args = {"reshaping": (x, v), "copying": (x, m), "joining": (x, m, 0.7)}[f.__name__]
    numpy_value, numpy_grads = build(f, *args).value_and_grad(*args)
    jitted = build(f, *args, jit="numba")
    value, grads = jitted.value_and_grad(*args)
    assert type(jitted.module.value_and_grad).__module__.startswith("numba")
    np.testing.assert_allclose(value, numpy_value, rtol=1e-12)
    for grad, expected in zip(grads, numpy_grads):
        np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-14)
    assert compiler.check_grad(f, *args) < 1e-7


@pytest.mark.parametrize(
    "f, op",
    [
        (lambda x: weighted(np.roll(x, 1, axis=0)), "roll"),
        (lambda x: weighted(np.atleast_1d(x[0, 0])), "atleast_1d"),
        (lambda x: weighted(np.vstack([x[0, 0], x[0, 1]])), "vstack"),
        (lambda x: weighted(np.tile(x[0, 0], 2)), "tile"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_numba_refuses_at_build_time_what_it_cannot_compile(f, op):
    with pytest.raises(FlatgradError, match=rf"{HERE}:\d+: {op} with .* has no numba lowering yet"):
        compiler.gradient(f, np.ones((3, 2)), jit="numba")
