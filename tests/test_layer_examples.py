"""The course's layers (examples/layers.py) and their golden layer modules (issue 14): each
backward, imported from generated/ where flatgrad is not needed, against autograd's
vector-Jacobian product and central differences, at the traced batch and another; and a
course-style training loop run on generated forwards and backwards alone."""

from __future__ import annotations

import importlib.util
import inspect
import shutil

import autograd.numpy as anp
import layers
import numpy as np
import pytest
from autograd import grad, make_vjp
from support import LAYER_EXAMPLES, ROOT

import compiler
from compiler.cli import main, parse_spec

# autograd's copy of the layers: the same source with autograd's NumPy
AUTOGRAD_LAYERS: dict = {}
exec(
    (ROOT / "examples" / "layers.py").read_text().replace("import numpy as np", "import autograd.numpy as np"),
    AUTOGRAD_LAYERS,
)
# written with in-place updates of an array (out[:, f, i, j] = ...), which autograd cannot follow
IN_PLACE = {"conv_forward_naive", "max_pool_forward_naive"}


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arguments(name, n, seed, options=None):
    """Arguments of the shapes the layer's golden module (or `options`) is written for, with n
    examples."""
    options = options or LAYER_EXAMPLES[name]
    given = dict(options[i + 1].split("=", 1) for i, o in enumerate(options) if o == "--arg")
    rng = np.random.default_rng(seed)
    values = {}
    for param in inspect.signature(getattr(layers, name)).parameters:
        spec = parse_spec(param, given[param].replace("N", str(n)))
        if spec.dtype.startswith("int"):
            values[param] = rng.integers(0, 3, spec.shape)
        elif param == "mask":
            values[param] = (rng.uniform(size=spec.shape) < 0.5).astype(float)
        else:
            values[param] = rng.normal(size=spec.shape)
    return values


def outputs_of(layer, values):
    out = layer(**values)
    return out if isinstance(out, tuple) else (out,)


def central_vjp(layer, values, douts, differentiated):
    """The gradient of sum(out_i * dout_i) in each float argument, by central differences."""
    def projected(**point):
        outs = outputs_of(layer, point)
        return sum(np.sum(outs[i] * d) for i, d in zip(differentiated, douts))

    grads = []
    for param, value in values.items():
        if np.asarray(value).dtype.kind != "f":
            continue
        g = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            steps = []
            for sign in (1, -1):
                moved = value.copy()
                moved[index] += sign * 1e-6
                steps.append(projected(**{**values, param: moved}))
            g[index] = (steps[0] - steps[1]) / 2e-6
        grads.append(g)
    return grads


def autograd_vjp(name, values, douts, differentiated):
    floats = [i for i, v in enumerate(values.values()) if np.asarray(v).dtype.kind == "f"]
    layer = AUTOGRAD_LAYERS[name]

    def projected(*xs):
        point = dict(values)
        for i, x in zip(floats, xs):
            point[list(values)[i]] = x
        out = layer(**point)
        outs = out if isinstance(out, tuple) else (out,)
        return sum(anp.sum(outs[i] * d) for i, d in zip(differentiated, douts))

    vjp, _ = make_vjp(projected, argnum=tuple(range(len(floats))))(*(list(values.values())[i] for i in floats))
    return vjp(1.0)


def check_layer(module, name, n, seed, options=None):
    options = options or LAYER_EXAMPLES[name]
    values = arguments(name, n, seed, options)
    forward, backward = getattr(module, name), getattr(module, name.replace("forward", "backward")
                                                      if "forward" in name else f"{name}_backward")
    out, cache = forward(*values.values())
    expected = outputs_of(getattr(layers, name), values)
    outs = out if isinstance(out, tuple) else (out,)
    for ours, theirs in zip(outs, expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    differentiated = [0] if "--has-aux" in options else list(range(len(outs)))
    rng = np.random.default_rng(seed + 1)
    douts = [rng.normal(size=np.shape(outs[i])) if np.shape(outs[i]) else 1.0 for i in differentiated]
    grads = backward(*douts, cache)
    oracles = [central_vjp(getattr(layers, name), values, douts, differentiated)]
    if name not in IN_PLACE:
        oracles.append(autograd_vjp(name, values, douts, differentiated))
    for oracle in oracles:
        assert len(grads) == len(oracle)
        for ours, theirs in zip(grads, oracle):
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(LAYER_EXAMPLES))
def test_golden_layer_backward_matches_autograd_and_central_differences(name, tmp_path):
    module = load(shutil.copy(ROOT / "generated" / f"{name}.py", tmp_path / f"{name}_module.py"))
    for n, seed in [(8, 0), (3, 1)]:  # the traced batch, and another: N is read from the arguments
        check_layer(module, name, n, seed)


NUMBA_CHECKED = ["affine_relu_forward", "softmax_loss", "batchnorm_forward", "rnn_step_forward"]


@pytest.mark.numba
@pytest.mark.parametrize("name", NUMBA_CHECKED)
def test_golden_numba_layer_backward(name, tmp_path):
    module = load(shutil.copy(ROOT / "generated" / f"{name}_numba.py", tmp_path / f"{name}_numba_module.py"))
    check_layer(module, name, 5, 2)


# The pooling's loop, at one output position: numba compiles each line of rank-4 broadcasting
# for seconds, so the golden sizes would take minutes (see benchmarks/bench_layers.py). The
# convolution is compiled as a grid of positions in tests/test_loops.py.
ONE_POSITION = {
    "max_pool_forward_naive": ["--arg", "x=f64[N,2,2,2]", "--layer"],
}


@pytest.mark.numba
@pytest.mark.parametrize("name", list(ONE_POSITION))
def test_numba_loop_layer_backward(name, tmp_path):
    target = tmp_path / f"{name}_numba_module.py"
    options = [*ONE_POSITION[name], "--jit", "numba", "-o", str(target)]
    assert main(["emit", f"{ROOT}/examples/layers.py:{name}", *options]) == 0
    check_layer(load(target), name, 3, 4, ONE_POSITION[name])


# --------------------------------------------------------------------------- a training loop

def two_layer_loss(X, y, W1, b1, W2, b2):
    """The same net in autograd's NumPy: affine - relu - affine - softmax."""
    h = anp.maximum(0, X @ W1 + b1)
    scores = h @ W2 + b2
    shifted = scores - anp.max(scores, axis=1, keepdims=True)
    log_probs = shifted - anp.log(anp.sum(anp.exp(shifted), axis=1, keepdims=True))
    return -anp.sum(log_probs[np.arange(X.shape[0]), y]) / X.shape[0]


def test_a_training_loop_runs_on_generated_layers_alone():
    rng = np.random.default_rng(0)
    N, D, H, C = 30, 6, 10, 3
    X, y = rng.normal(size=(N, D)), rng.integers(0, C, N)
    params = {"W1": rng.normal(size=(D, H)) * 0.3, "b1": np.zeros(H), "W2": rng.normal(size=(H, C)) * 0.3,
              "b2": np.zeros(C)}
    hidden = compiler.gradient(layers.affine_relu_forward, X, params["W1"], params["b1"], layer=True,
                               dims={"x": "N,6"})
    loss_layer = compiler.gradient(layers.softmax_loss, np.ones((8, H)), params["W2"], params["b2"], y[:8],
                                   layer=True, has_aux=True, dims={"x": "N,10", "y": "N"})
    ours, theirs = dict(params), {k: v.copy() for k, v in params.items()}
    gradients = grad(two_layer_loss, (2, 3, 4, 5))
    learning_rate, curve, expected = 0.5, [], []
    for _ in range(200):
        h, hidden_cache = hidden.forward_with_cache(X, ours["W1"], ours["b1"])
        (loss, _scores), loss_cache = loss_layer.forward_with_cache(h, ours["W2"], ours["b2"], y)
        dh, dW2, db2 = loss_layer.backward(1.0, loss_cache)
        dX, dW1, db1 = hidden.backward(dh, hidden_cache)
        for key, g in zip(("W1", "b1", "W2", "b2"), (dW1, db1, dW2, db2)):
            ours[key] -= learning_rate * g  # in place, on the gradients as returned
        curve.append(loss)
        expected.append(two_layer_loss(X, y, *theirs.values()))
        for key, g in zip(("W1", "b1", "W2", "b2"), gradients(X, y, *theirs.values())):
            theirs[key] = theirs[key] - learning_rate * g
    np.testing.assert_allclose(curve, expected, rtol=1e-9)
    assert curve[-1] < 0.5 * curve[0]


def pool_by_rows(x):
    """Max pooling as many course solutions write it: each window's rows flattened, then the
    maximum of each (a reshape of a slice, which numba reshapes only once made contiguous)."""
    N, C, H, W = x.shape
    out = np.zeros((N, C, H // 2, W // 2))
    for i in range(H // 2):
        for j in range(W // 2):
            out[:, :, i, j] = x[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(N, C, -1).max(axis=2)
    return out


@pytest.mark.numba
def test_numba_pools_a_flattened_window():
    x = np.random.default_rng(5).normal(size=(3, 2, 2, 2))
    program = compiler.gradient(pool_by_rows, x, layer=True, jit="numba")
    out, cache = program.forward_with_cache(x)
    np.testing.assert_allclose(out, pool_by_rows(x), rtol=1e-12)
    dout = np.random.default_rng(6).normal(size=out.shape)
    (dx,) = program.backward(dout, cache)
    np.testing.assert_allclose(dx, central_vjp(pool_by_rows, {"x": x}, [dout], [0])[0], rtol=1e-6, atol=1e-7)
