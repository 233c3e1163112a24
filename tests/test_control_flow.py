"""Control flow in the user's function: static arguments (counts, flags, layer settings baked in
and checked at each call) and the clear errors for what cannot be traced."""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import compiler
from compiler.cli import main
from compiler.errors import SignatureError, UndeclaredStaticError
from tests.support import central_differences


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
    assert message.split(": ")[0].endswith("test_control_flow.py:19")  # the user's for line
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
