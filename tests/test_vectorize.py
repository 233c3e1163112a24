"""Vectorized gradients: a scalar function's value and gradients at every point of arrays, in
one compiled numba loop over the points (`vectorize=True`, or `"parallel"` for every core)."""

from __future__ import annotations

import autograd
import numpy as np
import pytest
from huber import huber
from neuron import neuron

import compiler
from compiler.errors import FlatgradError, SignatureError


@pytest.mark.numba
def test_value_and_gradients_at_every_point_of_broadcast_arrays():
    prog = compiler.gradient(neuron, 2.0, -1.0, -3.0, -2.0, -3.0, jit="numba", vectorize=True)
    rng = np.random.default_rng(0)
    w0, x0, x1 = rng.normal(size=(4, 3)), rng.normal(size=(1, 3)), rng.normal(size=3)
    value, grads = prog.value_and_grad(w0, x0, -3.0, x1, 0.5)
    assert value.shape == (4, 3) and all(g.shape == (4, 3) for g in grads)
    for index in np.ndindex(4, 3):
        point = (w0[index], x0[0, index[1]], -3.0, x1[index[1]], 0.5)
        expected_value, expected = prog.module.value_and_grad(*map(float, point))
        assert value[index] == pytest.approx(expected_value, rel=1e-14)
        np.testing.assert_allclose([g[index] for g in grads], expected, rtol=1e-14)
        np.testing.assert_allclose([g[index] for g in grads], autograd.grad(neuron_ag, (0, 1, 2, 3, 4))(*point))
    np.testing.assert_array_equal(prog.grad(w0, x0, -3.0, x1, 0.5)[0], grads[0])
    assert "def value_and_grad_many(w0, x0, w1, x1, w2):" in prog.source
    assert "    value_and_grad_many(...) -> (L, (grad_w0, grad_x0, grad_w1, grad_x1, grad_w2)), arrays" in prog.source


def neuron_ag(w0, x0, w1, x1, w2):
    import autograd.numpy as anp

    return 1.0 / (1.0 + anp.exp(-(w0 * x0 + w1 * x1 + w2)))


@pytest.mark.numba
def test_a_branched_function_in_parallel_takes_each_points_side():
    prog = compiler.gradient(huber, 1.0, 1.0, jit="numba", vectorize="parallel")
    r = np.linspace(-3.0, 3.0, 13)
    value, (grad_r, grad_delta) = prog.value_and_grad(r, 1.0)
    np.testing.assert_allclose(value, [huber(x, 1.0) for x in r])
    np.testing.assert_allclose(grad_r, np.clip(r, -1.0, 1.0))
    np.testing.assert_allclose(grad_delta, np.where(np.abs(r) <= 1.0, 0.0, np.abs(r) - 1.0))
    assert "numba.prange(" in prog.source and "parallel=True" in prog.source


def test_vectorize_is_for_scalar_functions_under_numba():
    with pytest.raises(FlatgradError, match="vectorize needs jit='numba'"):
        compiler.gradient(neuron, *[1.0] * 5, vectorize=True)
    with pytest.raises(FlatgradError, match="vectorize='gpu'"):
        compiler.gradient(neuron, *[1.0] * 5, jit="numba", vectorize="gpu")
    with pytest.raises(SignatureError, match=r"takes the arrays x; trace it on numbers"):
        compiler.gradient(lambda x: np.sum(x * x), np.ones(3), jit="numba", vectorize=True)


def test_the_command_line_emits_the_vectorized_functions(tmp_path, monkeypatch, capsys):
    from support import ROOT

    from compiler.cli import main

    monkeypatch.chdir(ROOT)
    out = tmp_path / "neuron_many.py"
    assert main(["emit", "examples/neuron.py:neuron", "--jit", "numba", "--vectorize", "-o", str(out)]) == 0
    source = out.read_text()
    assert "def value_and_grad_many(" in source and "--jit numba --vectorize -o" in source
    capsys.readouterr()
    assert main(["show", "examples/neuron.py:neuron", "--vectorize"]) == 2
    assert capsys.readouterr().err == (
        "flatgrad: error: --vectorize needs --jit numba: the points are looped over in compiled code\n"
    )
