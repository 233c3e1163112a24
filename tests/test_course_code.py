"""NumPy as course solutions write it: arrays made inside the function, filled with traced
values or indexed by traced labels, boolean masks, and the ndarray spellings. Checked against
central differences on plain NumPy and against HIPS autograd where autograd can run the code."""

from __future__ import annotations

import threading

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from support import central_differences

import compiler
from compiler.errors import UnsupportedAttributeError, UnsupportedOperationError

RNG = np.random.default_rng(7)
X, Y_LABELS, W = RNG.normal(size=(6, 4)), np.array([0, 2, 1, 2, 0, 1]), RNG.normal(size=(4, 3))


def _check(f, args: dict, wrt: list[str]) -> compiler.GradientProgram:
    """Build `f`, and check its value and gradients against plain NumPy and central differences."""
    prog = compiler.gradient(f, **args, wrt=wrt)
    value, grads = prog.value_and_grad(*args.values())
    assert value == pytest.approx(f(**args), rel=1e-12)
    for ours, theirs in zip(grads, central_differences(f, args, wrt)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    return prog


def test_one_hot_labels_from_an_identity_made_in_the_function():
    def loss(X, y, W):
        scores = X.dot(W)
        Y = np.eye(W.shape[1])[y]
        return np.sum((scores - Y) ** 2)

    prog = compiler.gradient(loss, X, Y_LABELS, W, wrt="W")
    assert "Y = np.eye(3)[y]" in prog.source
    oracle = autograd.grad(lambda W: anp.sum((anp.dot(X, W) - anp.eye(3)[Y_LABELS]) ** 2))(W)
    np.testing.assert_allclose(prog.grad(X, Y_LABELS, W)[0], oracle, rtol=1e-12)


def test_an_array_made_in_the_function_filled_with_traced_values():
    def f(a, b):
        out = np.zeros(3)
        out[0] = a
        out[2] = a * b
        return np.sum(out * out)

    prog = _check(f, {"a": 1.5, "b": -2.0}, ["a", "b"])
    assert "out = updated(np.zeros(3), (0,), a)" in prog.source


def test_augmented_assignment_into_a_made_array():
    def f(x):
        total = np.zeros_like(x)
        for k in range(3):
            total += x * k
        return np.sum(total ** 2)

    _check(f, {"x": RNG.normal(size=4)}, ["x"])


def test_a_made_array_written_only_with_numbers_stays_a_constant():
    def f(x):
        w = np.arange(3.0)
        w[0] = 5.0
        return np.sum(x * w)

    prog = _check(f, {"x": RNG.normal(size=3)}, ["x"])
    assert "np.array([5.0, 1.0, 2.0]" in prog.source


def test_an_array_of_traced_numbers():
    def f(a, b, c):
        v = np.array([a, b * c, 2.0])
        return np.sum(v * v)

    _check(f, {"a": 1.0, "b": 2.0, "c": -0.5}, ["a", "b", "c"])


def test_writes_under_a_boolean_mask():
    def relu_backward_style(s):
        dx = np.zeros_like(s)
        dx[s > 0] = 1
        return np.sum(dx * s)

    def leaky(x):
        x = x.copy()
        x[x < 0] *= 0.01
        return np.sum(x ** 2)

    x = np.array([[-1.0, 0.5, 2.0], [-3.0, 1.5, -0.25]])
    assert "np.where(s0, 1, dx)" in _check(relu_backward_style, {"s": x}, ["s"]).source
    assert "np.where(s0, s1, x_1)" in _check(leaky, {"x": x}, ["x"]).source


def test_a_masked_read_that_feeds_a_full_sum():
    def f(x):
        return np.sum(x[x > 1.0]) + x[x > 0].sum() * 2

    _check(f, {"x": np.array([-1.0, 0.5, 2.0, -3.0, 1.25])}, ["x"])


def test_a_constant_mask_selects_known_places():
    mask = np.array([True, False, True, True])

    def f(x):
        return np.sum(x[mask] ** 2)

    _check(f, {"x": RNG.normal(size=4)}, ["x"])


@pytest.mark.parametrize(
    "body",
    [lambda x: np.mean(x[x > 0]), lambda x: len(x[x > 0]) * np.sum(x), lambda x: np.sum(x[x > 0][0])],
    ids=["mean", "len", "index"],
)
def test_a_masked_read_whose_length_matters_is_refused_at_the_users_line(body):
    with pytest.raises(UnsupportedOperationError, match=r"test_course_code.py:\d+: .*data-dependent length"):
        compiler.gradient(body, np.ones(4))


def test_builtin_max_and_min_of_traced_numbers_are_np_maximum_and_minimum():
    """Python's max and min pick the first of tied values, as np.maximum and np.minimum's rows do."""

    def f(a, b, c):
        return max(a, b) * min(a, c, 1.0) + max([a * 2.0, b])

    prog = _check(f, {"a": 1.0, "b": 3.0, "c": 0.5}, ["a", "b", "c"])
    assert "np.maximum(a, b)" in prog.source and "np.minimum(s1, 1.0)" in prog.source
    assert prog.grad(1.0, 2.0, 0.5)[0] == 2.0  # max(2a, b) at a tie: the first, 2a
    assert max(3, 4) == 4 and min([5, 2]) == 2  # untouched outside a trace


def test_divmod_and_mask_operators():
    def f(x, y):
        whole, rest = divmod(x, y)
        inside = (x > -1.0) & ~(x > 2.0) | (y < 0.0)
        return np.sum(np.where(inside, rest * whole, x))

    _check(f, {"x": np.array([-2.5, -0.3, 1.7, 2.6]), "y": np.array([0.7, 1.3, 0.9, 1.1])}, ["x", "y"])


def test_a_loop_over_the_rows_of_an_array():
    def f(X, w):
        total = 0.0
        for x in X:  # each row, as NumPy iterates
            total += np.sum(np.tanh(x * w))
        return total

    _check(f, {"X": RNG.normal(size=(3, 2)), "w": RNG.normal(size=2)}, ["X", "w"])
    with pytest.raises(UnsupportedOperationError, match="iterating over a traced number"):
        compiler.gradient(lambda a: sum(v for v in a), 1.0)


def test_type_facts_of_traced_values_are_numbers():
    def f(x):
        n = np.size(x) + np.ndim(x) + np.shape(x)[0] + len(x)
        return np.sum(x) / n

    prog = _check(f, {"x": RNG.normal(size=(3, 2))}, ["x"])
    assert "/ 14" in prog.source


def test_an_unknown_attribute_is_a_flatgrad_error_at_the_users_line():
    def f(x):
        assert not hasattr(x, "frobnicate")  # hasattr still answers
        return x.frobnicate()

    with pytest.raises(UnsupportedAttributeError, match=r"test_course_code.py:\d+: .*no attribute .frobnicate"):
        compiler.gradient(f, np.ones(3))


def test_creation_functions_are_numpys_own_outside_a_trace_and_in_other_threads():
    seen = []

    def other_thread():
        seen.append(type(np.zeros(2)))

    def f(x):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        return np.sum(x * np.ones(3))

    compiler.gradient(f, np.ones(3))
    assert seen == [np.ndarray]
    assert type(np.zeros(2)) is np.ndarray and np.zeros.__module__ == "numpy"


def _course_examples() -> list[tuple]:
    from course_net import course_net
    from course_softmax import course_softmax

    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)
    net = dict(X=X, y=y, W1=rng.normal(size=(4, 8)), b1=rng.normal(size=8) * 0.1, W2=rng.normal(size=(8, 3)),
               b2=np.zeros(3))
    softmax = dict(W=rng.normal(size=(5, 3)), X=X, y=y)
    return [(course_net, net, ["W1", "b1", "W2", "b2"]), (course_softmax, softmax, ["W"])]


@pytest.mark.parametrize("example", range(2), ids=["course_net", "course_softmax"])
def test_the_course_examples_against_central_differences(example):
    f, args, wrt = _course_examples()[example]
    _check(f, args, wrt)


@pytest.mark.numba
def test_the_course_examples_under_numba_agree_with_numpy():
    for f, args, wrt in _course_examples():
        numpy_grads = compiler.gradient(f, **args, wrt=wrt).grad(*args.values())
        jitted = compiler.gradient(f, **args, wrt=wrt, jit="numba")
        for ours, theirs in zip(jitted.grad(*args.values()), numpy_grads):
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
