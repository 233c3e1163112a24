"""Functions that return an array (issue 14, item 1): the module's `backward(grad_out, cache)`
is the vector-Jacobian product, checked against autograd's at random upstream gradients."""

from __future__ import annotations

import importlib.util
import inspect

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import make_vjp
from support import ROOT, assert_fresh, pyflakes_messages

import compiler
from compiler.cli import main


# Course layers, written as an assignment writes the forward; `xp` is NumPy or autograd's.
def affine(x, w, b, xp=np):
    return x.reshape(x.shape[0], -1) @ w + b


def relu(x, xp=np):
    return xp.maximum(0, x)


def affine_relu(x, w, b, xp=np):
    return xp.maximum(0, affine(x, w, b, xp))


def batchnorm(x, gamma, beta, xp=np):
    """Training mode: normalized with the batch's mean and variance."""
    mu = x.mean(axis=0)
    xc = x - mu
    var = (xc**2).mean(axis=0)
    xhat = xc / xp.sqrt(var + 1e-5)
    return gamma * xhat + beta


def layernorm(x, gamma, beta, xp=np):
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    var = (xc**2).mean(axis=1, keepdims=True)
    return gamma * (xc / xp.sqrt(var + 1e-5)) + beta


def rnn_step(x, h, Wx, Wh, b, xp=np):
    return xp.tanh(x @ Wx + h @ Wh + b)


RNG = np.random.default_rng(0)
LAYERS = {
    "affine": (affine, (RNG.normal(size=(4, 2, 3)), RNG.normal(size=(6, 5)), RNG.normal(size=5)), {"x": "N,2,3"}),
    "relu": (relu, (RNG.normal(size=(4, 5)),), {"x": "N,5"}),
    "affine_relu": (affine_relu, (RNG.normal(size=(4, 6)), RNG.normal(size=(6, 5)), RNG.normal(size=5)), {"x": "N,6"}),
    "batchnorm": (batchnorm, (RNG.normal(size=(6, 5)), RNG.normal(size=5), RNG.normal(size=5)), {"x": "N,5"}),
    "layernorm": (layernorm, (RNG.normal(size=(6, 5)), RNG.normal(size=5), RNG.normal(size=5)), {"x": "N,5"}),
    "rnn_step": (
        rnn_step,
        (RNG.normal(size=(3, 4)), RNG.normal(size=(3, 5)), RNG.normal(size=(4, 5)), RNG.normal(size=(5, 5)),
         RNG.normal(size=5)),
        {"x": "N,4", "h": "N,5"},
    ),
}


def _vjp(layer, args, dout):
    """autograd's vector-Jacobian product of the layer at `args`."""
    vjp, _ = make_vjp(lambda *xs: layer(*xs, xp=anp), argnum=tuple(range(len(args))))(*args)
    return vjp(dout)


@pytest.mark.parametrize("name", list(LAYERS))
def test_backward_is_autograds_vector_jacobian_product(name):
    layer, args, dims = LAYERS[name]
    prog = compiler.gradient(layer, *args, dims=dims)
    assert pyflakes_messages(prog.source) == ""
    assert "def value_and_grad" not in prog.source and "def backward(grad_" in prog.source
    params = list(inspect.signature(layer).parameters)
    for n in (args[0].shape[0], 1, 7):  # the example's batch, and others: N is named
        point = [np.resize(a, (n, *a.shape[1:])) if p in dims else a for p, a in zip(params, args)]
        point = [a + 0.01 * RNG.normal(size=a.shape) for a in point]
        out, cache = prog.forward_with_cache(*point)
        np.testing.assert_allclose(out, layer(*point), rtol=1e-12)
        np.testing.assert_allclose(prog.forward(*point), out, rtol=0)
        dout = RNG.normal(size=out.shape)
        grads = prog.backward(dout, cache)
        assert_fresh(grads, point, name)
        for ours, theirs in zip(grads, _vjp(layer, point, dout)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    assert compiler.check_grad(layer, *args) < 1e-6


def test_an_array_output_has_no_grad_but_says_where_backward_is():
    prog = compiler.gradient(relu, np.ones((2, 3)))
    with pytest.raises(compiler.FlatgradError, match=r"prog.grad: the function returns an array .*prog.backward"):
        prog.grad(np.ones((2, 3)))
    with pytest.raises(compiler.FlatgradError, match="prog.value_and_grad"):
        prog.value_and_grad(np.ones((2, 3)))
    _, cache = prog.forward_with_cache(np.ones((2, 3)))
    with pytest.raises(ValueError, match="relu: grad_out must be float64 of out's shape, not ndarray \\(3, 2\\)"):
        prog.backward(np.ones((3, 2)), cache)


def test_integer_outputs_are_still_refused():
    with pytest.raises(compiler.FlatgradError, match="must return a float scalar or array"):
        compiler.gradient(lambda x: np.argmax(x, axis=1), np.ones((2, 3)))


def test_the_command_line_checks_a_layer(tmp_path, monkeypatch, capsys):
    (tmp_path / "layers.py").write_text(
        "import numpy as np\n\n\ndef affine_forward(x, w, b):\n    out = x.reshape(x.shape[0], -1) @ w + b\n"
        "    return out\n"
    )
    monkeypatch.chdir(tmp_path)
    args = ["--arg", "x=f64[N,2,3]", "--arg", "w=f64[6,4]", "--arg", "b=f64[4]"]
    assert main(["check", "layers.py:affine_forward", *args]) == 0
    assert "tolerance 1e-06: ok" in capsys.readouterr().out
    assert main(["emit", "layers.py:affine_forward", *args, "-o", "affine.py"]) == 0
    source = (tmp_path / "affine.py").read_text()
    assert "def backward(grad_out, cache):" in source and "grad_x = grad_s0.reshape((N, 2, 3))" in source


@pytest.mark.numba
def test_backward_under_numba():
    layer, args, dims = LAYERS["batchnorm"]
    prog = compiler.gradient(layer, *args, dims=dims, jit="numba")
    point = [np.resize(args[0], (9, 5)), *args[1:]]
    out, cache = prog.forward_with_cache(*point)
    dout = RNG.normal(size=out.shape)
    for ours, theirs in zip(prog.backward(dout, cache), _vjp(layer, point, dout)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1) @ w + b
    return out


def softmax_loss(x, y):
    """A loss layer: a number out, the gradient of the scores back."""
    shifted = x - x.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.sum(log_probs[np.arange(x.shape[0]), y]) / x.shape[0]


def test_a_layer_module_is_the_pair_a_course_asks_for(tmp_path):
    x, w, b = RNG.normal(size=(4, 2, 3)), RNG.normal(size=(6, 5)), RNG.normal(size=5)
    prog = compiler.gradient(affine_forward, x, w, b, layer=True, dims={"x": "N,2,3"})
    source = prog.source
    assert "def affine_forward(x, w, b):" in source and "def affine_backward(dout, cache):" in source
    assert "def forward(" not in source and "def backward(" not in source and "def value_and_grad(" not in source
    assert "    affine_forward(...) -> (out, cache)\n    affine_backward(dout, cache) -> (dx, dw, db)\n" in source
    assert "    dw = s0.T @ ds1\n" in source and "--layer" in source
    assert "    s0 = x.reshape((N, 6))\n" in source  # a view, taken again: the cache is (x, w)
    assert "    return dx, dw, db\n" in source  # dx views ds0, which no one else holds: no copy
    # the module drops into an assignment's layers.py: import it alone and run it at another N
    prog.save(tmp_path / "layers.py")
    spec = importlib.util.spec_from_file_location("layers_module", tmp_path / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = RNG.normal(size=(7, 2, 3))
    out, cache = module.affine_forward(x, w, b)
    dout = RNG.normal(size=out.shape)
    for ours, theirs in zip(module.affine_backward(dout, cache), _vjp(affine, (x, w, b), dout)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    np.testing.assert_allclose(prog.forward(x, w, b), out)
    with pytest.raises(compiler.FlatgradError, match="a layer module has only affine_forward and affine_backward"):
        prog.grad(x, w, b)


def test_a_loss_layer_gives_the_gradient_of_its_scores():
    x, y = RNG.normal(size=(5, 3)), np.array([0, 2, 1, 1, 0])
    prog = compiler.gradient(softmax_loss, x, y, layer=True, dims={"x": "N,3", "y": "N"})
    assert "def softmax_loss_backward(dL, cache):" in prog.source
    loss, cache = prog.forward_with_cache(x, y)
    (dx,) = prog.backward(1.0, cache)
    probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dx, (probs - np.eye(3)[y]) / 5, rtol=1e-12)


def test_the_command_line_draws_and_checks_several_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    target = str(ROOT / "examples" / "layers.py") + ":softmax_loss"
    args = ["--arg", "x=f64[N,6]", "--arg", "w=f64[6,3]", "--arg", "b=f64[3]", "--arg", "y=i64[N]"]
    assert main(["check", target, *args]) == 0
    assert "tolerance 1e-06: ok" in capsys.readouterr().out
    assert main(["graph", target, *args, "-o", "g.dot"]) == 0
    dot = (tmp_path / "g.dot").read_text()
    assert 'out0 [shape=plaintext, label="loss"]' in dot and 'out1 [shape=plaintext, label="scores"]' in dot
    assert main(["emit", target, *args, "--has-aux", "-o", "loss.py"]) == 0
    header = "    value_and_grad(...) -> ((loss, scores), (grad_x, grad_w, grad_b))\n"
    assert header in (tmp_path / "loss.py").read_text()
