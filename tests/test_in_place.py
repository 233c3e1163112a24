"""Optimize mode's reuse of arrays the function made (compiler.codegen.in_place), and the passes
that leave less to allocate (a kept-axes sum reshaped, a negation before a sum)."""

import numpy as np
import pytest

import compiler
from compiler import passes
from compiler.autodiff import differentiate
from compiler.codegen.in_place import reuse_arrays
from compiler.verify import verify

M = ((4, 3), "float64")
TYPES = {name: M for name in ("a", "b", "g", "n", "z", "x", "grad_s5", "grad_scores")}
TYPES |= {"v": ((4,), "float64"), "c": ((), "float64"), "big": ((2, 4, 3), "float64")}


def _reused(*lines: str, jit=None, types=TYPES) -> list[str]:
    return list(reuse_arrays((("", lines),), types, jit)[0][1])


def test_an_accumulation_into_an_array_the_function_made_is_written_in_place():
    assert _reused("g = a * 2", "g = g + b", "return g") == ["g = a * 2", "g += b", "return g"]
    assert _reused("g = a * 2", "g = b * g", "return g") == ["g = a * 2", "g *= b", "return g"]
    # not into a parameter, a view, or an array a line may have kept a view of
    assert _reused("g = g + b", "return g") == ["g = g + b", "return g"]
    assert _reused("g = a.T", "g = g + b") == ["g = a.T", "g = g + b"]
    viewed = ("g = a * 2", "z = g.T", "g = g + b", "return g, z")
    assert _reused(*viewed) == list(viewed)
    # nor where the sum reads a view of it, nor where the result is bigger than the array
    assert _reused("g = a * 2", "g = g + g.T") == ["g = a * 2", "g = g + g.T"]
    assert _reused("g = a * 2", "g = g - b", types=TYPES | {"g": None}) == ["g = a * 2", "g = g - b"]


def test_a_result_is_written_over_an_operand_that_dies_with_it():
    lines = ("n = a @ b", "z = (a > 0) * n", "return z")
    assert _reused(*lines) == ["n = a @ b", "z = np.multiply(a > 0, n, out=n)", "return z"]
    assert _reused(*lines, jit="numba")[1] == "z = np.multiply(a > 0, n, n)"  # numba: `out` by position
    assert _reused("n = a @ b", "z = -n", "return z")[1] == "z = np.negative(n, out=n)"
    # a sum of it, made before the write, may be read: a view of it may not
    assert _reused("n = a @ b", "z = n * n.sum()", "return z")[1] == "z = np.multiply(n, n.sum(), out=n)"
    assert _reused("n = a @ b", "z = n * n.T", "return z")[1] == "z = n * n.T"


def test_an_operand_read_later_or_of_another_type_is_left_alone():
    assert _reused("n = a @ b", "z = a * n", "return z, n")[1] == "z = a * n"
    bigger = TYPES | {"z": ((2, 4, 3), "float64")}
    assert _reused("n = a @ b", "z = big * n", "return z", types=bigger)[1] == "z = big * n"
    assert _reused("n = a @ b", "z = n > 0", "return z")[1] == "z = n > 0"  # not a ufunc's arithmetic
    assert _reused("c = np.sum(a)", "z = c * 2.0", types=TYPES | {"z": ((), "float64")})[1] == "z = c * 2.0"
    branch = ("n = a @ b", "if c > 0:", "    z = n * 2", "else:", "    z = n * 3", "return z")
    assert _reused(*branch) == list(branch)


def test_a_fill_read_by_arithmetic_is_its_number_where_the_result_keeps_its_shape():
    assert _reused("z = 2 * a * np.full((4, 3), 1.0 / 12)", "return z")[0] == "z = 2 * a * (1.0 / 12)"
    assert _reused("z = np.full((4, 3), c) - a", "return z")[0] == "z = c - a"
    # the fill is what gives the result its shape, or is not arithmetic's operand: it stays
    assert _reused("z = v * np.full((4, 3), c)", "return z")[0] == "z = v * np.full((4, 3), c)"
    assert _reused("z = np.full((4, 3), c)", "return z")[0] == "z = np.full((4, 3), c)"
    assert _reused("z = f(np.full((4, 3), c))", "return z")[0] == "z = f(np.full((4, 3), c))"


def test_an_index_range_several_lines_read_is_made_once():
    lines = ("c = s[np.arange(4), y]", "z = updated(s, (np.arange(4), y), 0)", "r = np.arange(4)", "return c, z, r")
    assert _reused(*lines) == [
        "rows = np.arange(4)", "c = s[rows, y]", "z = updated(s, (rows, y), 0)", "r = np.arange(4)", "return c, z, r"
    ]
    taken = ("rows = a * 2", "c = s[np.arange(4), y] + rows", "d = s[np.arange(4), 0]", "return c, d")
    assert _reused(*taken)[1:3] == ["rows_1 = np.arange(4)", "c = s[rows_1, y] + rows"]
    assert _reused("c = s[np.arange(4), y]", "return c") == ["c = s[np.arange(4), y]", "return c"]


def test_writes_and_scatter_adds_go_into_the_array_itself():
    lines = ("n = a * 2", "x = updated(n, (np.arange(4), y), 0)", "return x")
    assert _reused(*lines) == ["n = a * 2", "n[np.arange(4), y] = 0", "x = n", "return x"]
    scatter = ("grad_s5 = a * 2", "grad_scores = grad_s5 + scatter((4, 3), (np.arange(4), y), v, np.float64)",
               "return grad_scores")
    assert _reused(*scatter)[1:3] == ["grad_s5[np.arange(4), y] += v", "grad_scores = grad_s5"]
    pairs = ("grad_s5 = a * 2", "grad_scores = grad_s5 + add_pairs((4, 3), np.arange(4), y, v, np.float64)",
             "return grad_scores")
    assert _reused(*pairs, jit="numba")[1] == "add_pairs_to(grad_s5, np.arange(4), y, v)"
    at = ("grad_s5 = a * 2", "grad_scores = grad_s5 + add_at((4, 3), (r, y), v, np.float64)", "return grad_scores")
    assert _reused(*at)[1] == "np.add.at(grad_s5, (r, y), v)"


def _svm(xp):
    def svm(X, y, W, b):
        N = X.shape[0]
        scores = X @ W + b
        correct = scores[xp.arange(N), y]
        margins = xp.maximum(0, scores - correct[:, None] + 1.0)
        return xp.sum(margins) / N + 0.5 * xp.sum(W * W)

    return svm


@pytest.mark.parametrize("jit", [None, pytest.param("numba", marks=pytest.mark.numba)])
def test_a_hinge_loss_reuses_its_arrays_and_matches_autograd(jit):
    autograd = pytest.importorskip("autograd")
    import autograd.numpy as anp

    rng = np.random.default_rng(0)
    X, y, W, b = rng.normal(size=(6, 4)), rng.integers(0, 3, 6), rng.normal(size=(4, 3)), rng.normal(size=3)
    program = compiler.gradient(_svm(np), X, y, W, b, wrt=("W", "b"), optimize=True, jit=jit)
    body = program.source.split("\ndef value_and_grad(")[1].split("\n\n\n")[0]
    # as a person writes it: the sum of the margins' gradient negated per row, added in place
    summed, added = {
        None: ("-grad_s3.sum(axis=1)", "grad_s3[rows, y] += grad_correct"),
        "numba": ("-sum_along(grad_s3, 1)", "add_pairs_to(grad_s3, rows, y, grad_correct)"),
    }[jit]
    assert f"grad_correct = {summed}\n    {added}\n    grad_scores = grad_s3\n" in body, body
    assert "grad_W += X.T @ grad_scores" in body and "keepdims" not in body, body
    value, grads = program.value_and_grad(X, y, W, b)
    expected = autograd.grad(_svm(anp), argnum=(2, 3))(X, y, W, b)
    np.testing.assert_allclose(value, _svm(np)(X, y, W, b), rtol=1e-12)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # the gradients are the caller's own: writing into one changes no other, nor the inputs
    again = program.value_and_grad(X, y, W, b)[1]
    for got in again:
        got *= 0.0
    for got, want in zip(program.value_and_grad(X, y, W, b)[1], expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_a_kept_axes_sum_reshaped_back_is_one_sum_and_a_negation_comes_after_it():
    def f(x, c):
        return np.sum(np.tanh(x - c[:, None]))

    x, c = np.ones((4, 3)), np.ones(4)
    traced = verify(compiler.trace(f, x, c))
    graph = passes.optimize(differentiate(traced, ("x", "c")), check=verify)
    ops = [(e.op, e.rule) for e in graph.backward.eqns]
    assert ("sum_keep", None) not in ops and ("new_axes", "x") not in ops, ops
    summed = next(i for i, (op, rule) in enumerate(ops) if op == "sum")
    assert ops[summed + 1] == ("sub", "y"), ops  # the subtrahend's -grad, after the sum
    program = compiler.gradient(f, x, c, optimize=True)
    rng = np.random.default_rng(1)
    xs, cs = rng.normal(size=(4, 3)), rng.normal(size=4)
    expected = compiler.gradient(f, x, c).grad(xs, cs)
    for got, want in zip(program.grad(xs, cs), expected):
        np.testing.assert_allclose(got, want, rtol=1e-13)
