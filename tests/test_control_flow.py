"""Control flow in the user's function: static arguments (counts, flags, layer settings baked in
and checked at each call), branches on traced values emitted as `if` blocks, and the clear
errors for what cannot be traced (a loop on a value, too many paths)."""

from __future__ import annotations

import inspect

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import compiler
from compiler.cli import main
from compiler.errors import (
    BranchOnTracedValueError,
    LoopOnTracedValueError,
    SignatureError,
    TooManyPathsError,
    UndeclaredStaticError,
)
from tests.support import central_differences

# autograd warns where a path's value is a constant (`return 0`): its zero gradient is the oracle's
pytestmark = pytest.mark.filterwarnings("ignore:Output seems independent of input")


def sum_of_squares(x, n):
    total = 0.0
    for i in range(n):
        total = total + x[i] * x[i]
    return total


def windowed(x, k, scale):
    return scale * np.sum(np.tanh(x[:k]) ** 2)


def course_style(x, conv_param):  # a course's layer settings, a dict
    stride = conv_param["stride"]
    return np.sum(x[::stride] ** 3)


def test_a_static_count_unrolls_and_matches_the_oracles():
    x = np.array([0.3, -1.2, 2.0, 0.7])
    prog = compiler.gradient(sum_of_squares, np.ones(4), 3, static=("n",))
    value, (grad_x,) = prog.value_and_grad(x, 3)
    assert value == pytest.approx(sum_of_squares(x, 3))
    expected = autograd.grad(lambda x: sum_of_squares(x, 3))(x)
    np.testing.assert_allclose(grad_x, expected)
    np.testing.assert_allclose(grad_x, central_differences(sum_of_squares, {"x": x, "n": 3}, ["x"])[0], atol=1e-6)
    assert prog.wrt == ("x",)  # a static parameter has no gradient
    assert "    n: static = 3\n" in prog.source
    assert "--arg n=3 --static n" in prog.source


def test_a_static_value_is_checked_at_every_call():
    prog = compiler.gradient(sum_of_squares, np.ones(4), 3, static="n")
    for call in (prog.forward, prog.value_and_grad, prog.grad, prog.forward_with_cache):
        with pytest.raises(ValueError, match=r"n is static, and this code is written for n = 3, not 2"):
            call(np.ones(4), 2)
    assert "    if n != 3:\n" in prog.source


@pytest.mark.parametrize("optimize", [False, True])
def test_static_slice_bounds_and_scales(optimize):
    x = np.array([0.5, -0.4, 1.5, 0.2, -2.0])
    prog = compiler.gradient(windowed, np.ones(5), 2, 0.5, static=("k", "scale"), optimize=optimize)
    value, (grad_x,) = prog.value_and_grad(x, 2, 0.5)
    assert value == pytest.approx(windowed(x, 2, 0.5))
    np.testing.assert_allclose(grad_x, autograd.grad(lambda x: 0.5 * anp.sum(anp.tanh(x[:2]) ** 2))(x))
    with pytest.raises(ValueError, match="scale is static"):
        prog.grad(x, 2, 0.25)


def test_a_static_dict_of_settings_as_a_course_passes_them():
    x = np.linspace(-1.0, 1.0, 6)
    prog = compiler.gradient(course_style, x, {"stride": 2}, static="conv_param")
    (grad_x,) = prog.grad(x, {"stride": 2})
    np.testing.assert_allclose(grad_x, central_differences(course_style, {"x": x, "conv_param": {"stride": 2}},
                                                           ["x"])[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"written for conv_param = \{'stride': 2\}, not \{'stride': 3\}"):
        prog.grad(x, {"stride": 3})


def test_the_lazy_api_keeps_one_program_per_static_value():
    grad = compiler.grad(sum_of_squares, wrt="x", static=("n",))
    x = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(grad(x, 2), [2.0, 4.0, 0.0, 0.0])
    np.testing.assert_allclose(grad(x, 4), [2.0, 4.0, 6.0, 8.0])
    np.testing.assert_allclose(grad(x + 1.0, 2), [4.0, 6.0, 0.0, 0.0])
    assert len(grad.programs) == 2


def test_an_integer_used_as_a_count_without_static_names_the_fix():
    with pytest.raises(UndeclaredStaticError) as raised:
        compiler.gradient(sum_of_squares, np.ones(4), 3)
    message = str(raised.value)
    assert message.split(": ")[0] == f"tests/test_control_flow.py:{inspect.getsourcelines(sum_of_squares)[1] + 2}"
    assert "for i in range(n):" in message and 'static=("n",)' in message and "--static n" in message
    with pytest.raises(UndeclaredStaticError, match=r'static=\("k",\)'):
        compiler.gradient(windowed, np.ones(5), 2, 0.5)  # a slice bound


def test_static_names_are_checked():
    with pytest.raises(SignatureError, match="static names 'm', which is not a parameter"):
        compiler.gradient(sum_of_squares, np.ones(4), 3, static=("m",))
    with pytest.raises(SignatureError, match="static parameter 'x' is a ndarray"):
        compiler.gradient(sum_of_squares, np.ones(4), 3, static=("x", "n"))
    with pytest.raises(SignatureError, match="wrt names 'scale', which is static"):
        compiler.gradient(windowed, np.ones(5), 2, 0.5, static=("k", "scale"), wrt=("x", "scale"))
    with pytest.raises(SignatureError, match="numba function cannot take"):
        compiler.gradient(course_style, np.ones(6), {"stride": 2}, static="conv_param", jit="numba")


def test_the_command_line_takes_static_values(tmp_path, monkeypatch, capsys):
    (tmp_path / "user.py").write_text(
        "def sum_of_squares(x, n):\n    total = 0.0\n    for i in range(n):\n"
        "        total = total + x[i] * x[i]\n    return total\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["emit", "user.py:sum_of_squares", "--arg", "x=f64[4]", "--arg", "n=3", "--static", "n"]) == 0
    emitted = (tmp_path / "generated" / "sum_of_squares.py").read_text()
    assert "    if n != 3:\n" in emitted
    assert main(["check", "user.py:sum_of_squares", "--arg", "x=f64[4]", "--arg", "n=3", "--static", "n"]) == 0
    capsys.readouterr()
    assert main(["show", "user.py:sum_of_squares", "--arg", "x=f64[4]", "--static", "n"]) == 2
    err = capsys.readouterr().err
    assert err == "flatgrad: error: --static n needs its value: add --arg n=VALUE (e.g. --arg n=3)\n"
    assert main(["show", "user.py:sum_of_squares", "--arg", "x=f64[4]", "--arg", "n=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "user.py:3: `for i in range(n):`" in err and "--static n" in err


# --- branches on traced values ------------------------------------------------------------------
# Each function is written once against a NumPy namespace, and made twice: with NumPy for
# flatgrad, with autograd's for the oracle (which runs Python's branches on real numbers).


def _functions(np):
    def nested(x, y):
        if x > 0 and y > 0:
            return x * y
        elif x * x / 3.0 > 1.0:
            return np.sin(x) * y
        else:
            return -y * np.exp(x)

    def relu_if(x):
        return x * x if x > 0 else 0

    def loop_if(x, n):
        total = 0.0
        for i in range(n):
            if x[i] > 0:
                total = total + x[i] ** 2
            else:
                total = total - np.sin(x[i])
        return total

    def extremes(a, b):
        return max(a, b) * min(a, 2.0) + max(a * b, 0.5)

    def whole_array(x, scale):
        if np.all(x > 0):
            return scale * np.sum(np.log(x))
        elif np.any(x < -2.0):
            return 0
        return np.sum(x ** 2) / scale

    def clipped(X, w, clip):
        s = np.sum((X @ w) ** 2)
        if s > clip:
            return clip + np.log(s - clip + 1.0)
        return s

    return {f.__name__: f for f in (nested, relu_if, loop_if, extremes, whole_array, clipped)}


OURS, THEIRS = _functions(np), _functions(anp)
X_ROWS = np.random.default_rng(3).normal(size=(5, 3))

# (function, example arguments, static, points: one or more on each side of every branch)
BRANCHED = [
    ("nested", (1.0, 1.0), (), [(1.5, 2.0), (2.5, -1.0), (0.5, -1.0), (-2.0, 0.7), (-0.5, 0.7)]),
    ("relu_if", (1.0,), (), [(1.3,), (-0.4,)]),
    ("loop_if", (np.ones(3), 3), ("n",), [(np.array([0.5, -1.0, 2.0]), 3), (np.array([-0.3, 0.2, -2.0]), 3)]),
    ("extremes", (1.0, 2.0), (), [(1.0, 3.0), (3.0, 1.0), (2.5, 0.1), (-1.0, -2.0)]),
    ("whole_array", (np.ones(3), 2.0), (),
     [(np.array([0.5, 1.0, 2.0]), 2.0), (np.array([0.5, -3.0, 2.0]), 2.0), (np.array([0.5, -1.0, 2.0]), 2.0)]),
    ("clipped", (np.ones((5, 3)), np.ones(3), 1.0), (),
     [(X_ROWS, np.array([0.1, -0.2, 0.3]), 0.05), (X_ROWS, np.array([0.1, -0.2, 0.3]), 50.0)]),
]


def _float_positions(point, static):
    return [k for k, value in enumerate(point) if k not in static and np.asarray(value).dtype.kind == "f"]


def check_branched(prog, name, point, static_positions):
    """Value and gradients at `point` from value_and_grad and from backward(forward_with_cache),
    against the function itself, autograd and central differences."""
    ours, theirs = OURS[name], THEIRS[name]
    value, grads = prog.value_and_grad(*point)
    assert value == pytest.approx(ours(*point), rel=1e-12)
    positions = _float_positions(point, static_positions)
    expected = [autograd.grad(lambda *a: 1.0 * theirs(*a), k)(*point) for k in positions]  # `return 0` too
    names = list(inspect.signature(ours).parameters)
    differences = central_differences(ours, dict(zip(names, point)), [names[k] for k in positions])
    out, cache = prog.forward_with_cache(*point)
    from_cache = prog.backward(1.0, cache)
    assert out == pytest.approx(value, rel=1e-12)
    for ours_grad, cached, oracle, difference in zip(grads, from_cache, expected, differences):
        np.testing.assert_allclose(ours_grad, oracle, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cached, oracle, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours_grad, difference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimize", [False, True], ids=["readable", "optimized"])
@pytest.mark.parametrize("name, example, static, points", BRANCHED, ids=[case[0] for case in BRANCHED])
def test_each_side_of_every_branch_against_autograd_and_differences(name, example, static, points, optimize):
    prog = compiler.gradient(OURS[name], *example, static=static, optimize=optimize)
    assert "\n    if " in prog.source or name == "extremes"  # max/min of numbers stay one path
    positions = [list(inspect.signature(OURS[name]).parameters).index(s) for s in static]
    for point in points:
        check_branched(prog, name, point, positions)
    taken = {prog.path_at(*point).decisions for point in points}
    assert len(taken) == len(points) or name == "extremes"  # the points cover different paths


def test_a_branch_emits_an_if_block_with_each_sides_flat_code():
    prog = compiler.gradient(OURS["nested"], 1.0, 1.0)
    forward = prog.source.split("def forward(x, y):")[1].split("\n\n\n")[0]
    assert "    if x > 0:\n        if y > 0:\n            L = x * y\n" in forward
    assert "            if s1 > 1.0:\n" in forward  # the condition reads the values the path computed
    assert "    else:\n        s0 = x * x\n" in forward
    backward = prog.source.split("def backward(grad_L, cache):")[1].split("\n\n\n")[0]
    order = [backward.index(line) for line in ("    path = cache[0]\n", "    if path == 0:\n", "    elif path == 1:\n")]
    assert order == sorted(order)
    assert "tests/test_control_flow.py" in prog.source.split('"""')[1]  # the header names the branches


def test_explain_mode_names_each_branch_at_the_users_line():
    prog = compiler.gradient(OURS["relu_if"], 1.0, explain=True)
    where = f"tests/test_control_flow.py:{inspect.getsourcelines(OURS['relu_if'])[1] + 1}"
    assert f"    if x > 0:  # {where} `return x * x if x > 0 else 0`\n" in prog.source
    assert f"    else:  # {where} `return x * x if x > 0 else 0`, the other way\n" in prog.source


def test_the_picture_shows_the_path_the_arguments_take():
    prog = compiler.gradient(OURS["relu_if"], 1.0)
    assert 'label="×"' in prog.dot(2.0) and 'label="×"' not in prog.dot(-2.0)


def test_a_loop_on_a_value_is_refused_with_what_to_write():
    def halve(a):
        while abs(a) > 0.1:
            a = a / 2.0
        return a

    with pytest.raises(LoopOnTracedValueError) as raised:
        compiler.gradient(halve, 1.0)
    message = str(raised.value)
    line = inspect.getsourcelines(halve)[1] + 1
    assert message.startswith(f"tests/test_control_flow.py:{line}: `while abs(a) > 0.1:`")
    assert "for _ in range(50):" in message and "static" in message


def test_too_many_paths_are_refused_with_the_lines_that_make_them():
    where = r"\(at tests/test_control_flow.py:\d+\)"
    with pytest.raises(TooManyPathsError, match=rf"more than 64 paths .* {where}; .* np\.where"):
        compiler.gradient(OURS["loop_if"], np.ones(8), 8, static="n")


def test_an_arrays_truth_is_refused_with_the_reductions_to_write():
    def ambiguous(x):
        if x > 0:
            return np.sum(x)
        return -np.sum(x)

    with pytest.raises(BranchOnTracedValueError, match=r"asks an array of shape \(3,\) .* \(np\.all, np\.any"):
        compiler.gradient(ambiguous, np.ones(3))


def test_a_branch_in_a_module_with_named_sizes():
    prog = compiler.gradient(OURS["clipped"], np.ones((8, 3)), np.ones(3), 1.0, dims={"X": "N,3"})
    w = np.array([0.1, -0.2, 0.3])
    for clip in (0.05, 50.0):
        check_branched(prog, "clipped", (X_ROWS, w, clip), [])


@pytest.mark.numba
def test_branches_compile_under_numba():
    """numba types each function once across its paths: the cache's slots and the values each
    side returns agree in type."""
    for name, example, static, points in [BRANCHED[0], BRANCHED[2], BRANCHED[4]]:
        prog = compiler.gradient(OURS[name], *example, static=static, jit="numba", optimize=name == "loop_if")
        positions = [list(inspect.signature(OURS[name]).parameters).index(s) for s in static]
        for point in points:
            check_branched(prog, name, point, positions)


def test_a_layer_with_a_branch_keeps_its_path_in_the_cache():
    def leaky_forward(x, slope):
        if slope > 0:
            out = np.where(x > 0, x, slope * x)
        else:
            out = np.maximum(x, 0.0)
        return out

    prog = compiler.gradient(leaky_forward, np.ones((4, 3)), 0.1, layer=True)
    assert "def leaky_backward(dout, cache):" in prog.source
    x = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    dout = np.arange(12.0).reshape(4, 3)
    for slope in (0.1, -0.1):
        out, cache = prog.forward_with_cache(x, slope)
        dx, dslope = prog.backward(dout, cache)
        np.testing.assert_allclose(out, leaky_forward(x, slope))
        np.testing.assert_allclose(dx, np.where(x > 0, 1.0, slope if slope > 0 else 0.0) * dout)
        assert dslope == pytest.approx(np.sum(np.where(x > 0, 0.0, x) * dout) if slope > 0 else 0.0)


def test_a_settings_dict_without_static_names_the_fix():
    with pytest.raises(SignatureError, match=r"'conv_param' is a dict; .* static=\(\"conv_param\",\)"):
        compiler.gradient(course_style, np.ones(6), {"stride": 2})
