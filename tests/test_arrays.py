"""The array examples end to end: the seed's SVM net, the softmax classifier and the tanh MLP,
against autograd, at several shapes, with fresh data after tracing, in NumPy and numba."""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from mlp import mlp
from softmax import softmax
from svm_net import REG, svm_net

import compiler


def data(N, D, H, C, seed):
    rng = np.random.default_rng(seed)
    return dict(
        X=rng.normal(size=(N, D)),
        y=rng.integers(0, C, N),
        W1=rng.normal(size=(D, H)) * 0.5,
        b1=rng.normal(size=H) * 0.1,
        W2=rng.normal(size=(H, C)) * 0.5,
        b2=rng.normal(size=C) * 0.1,
    )


def svm_net_oracle(X, y, W1, b1, W2, b2):
    """The same loss written without in-place updates, which autograd cannot trace."""
    N = X.shape[0]
    scores = anp.maximum(0, X @ W1 + b1) @ W2 + b2
    correct = scores[np.arange(N), y]
    not_correct = np.arange(scores.shape[1])[None, :] != y[:, None]
    margins = anp.maximum(0, scores - correct[:, None] + 1.0) * not_correct
    return anp.sum(margins) / N + REG * (anp.sum(W1 * W1) + anp.sum(W2 * W2))


LAYERS = ("W1", "b1", "W2", "b2")


@pytest.mark.parametrize("shape", [(8, 4, 8, 3), (5, 3, 6, 4), (1, 2, 3, 2)], ids=str)
def test_svm_net_against_autograd_with_fresh_data(shape):
    prog = compiler.gradient(svm_net, **data(*shape, seed=0), wrt=LAYERS)
    assert prog.wrt == LAYERS
    for seed in (1, 2):  # the program is traced once; values come fresh
        d = data(*shape, seed=seed)
        value, grads = prog.value_and_grad(*d.values())
        assert value == pytest.approx(svm_net_oracle(**d), rel=1e-12)
        expected = autograd.grad(lambda *w: svm_net_oracle(d["X"], d["y"], *w), (0, 1, 2, 3))(
            *(d[k] for k in LAYERS)
        )
        for ours, theirs, name in zip(grads, expected, LAYERS):
            assert ours.shape == d[name].shape
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12, err_msg=name)


def test_softmax_and_mlp_against_autograd():
    d = data(8, 4, 8, 3, seed=3)
    X, y, W, b = d["X"], d["y"], d["W2"][:4], d["b2"]

    def softmax_oracle(W, b):
        scores = X @ W + b
        shifted = scores - anp.max(scores, axis=1, keepdims=True)
        logprobs = shifted - anp.log(anp.sum(anp.exp(shifted), axis=1, keepdims=True))
        return -anp.sum(logprobs[np.arange(8), y]) / 8 + 0.5 * 1e-3 * anp.sum(W * W)

    value, grads = compiler.gradient(softmax, X, y, W, b, wrt=("W", "b")).value_and_grad(X, y, W, b)
    assert value == pytest.approx(softmax_oracle(W, b), rel=1e-12)
    for ours, theirs in zip(grads, autograd.grad(softmax_oracle, (0, 1))(W, b)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)

    t = np.random.default_rng(4).normal(size=(8, 3))
    layers = [d[k] for k in LAYERS]
    value, grads = compiler.gradient(mlp, X, t, *layers, wrt=LAYERS).value_and_grad(X, t, *layers)
    expected = autograd.grad(lambda *w: mlp(X, t, *w), (0, 1, 2, 3))(*layers)  # mlp is plain NumPy
    assert value == pytest.approx(mlp(X, t, *layers))
    for ours, theirs in zip(grads, expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.numba
def test_numba_agrees_with_numpy_on_the_net():
    """One jitted array program (compiling is slow): the SVM net, which lowers keepdims, add.at
    and the in-place update for numba."""
    d = data(8, 4, 8, 3, seed=5)
    plain = compiler.gradient(svm_net, **d, wrt=LAYERS)
    jitted = compiler.gradient(svm_net, **d, wrt=LAYERS, jit="numba")
    assert "def add_pairs(" in jitted.source and "np.add.at" not in jitted.source
    fresh = data(8, 4, 8, 3, seed=6)
    value, grads = jitted.value_and_grad(*fresh.values())
    expected_value, expected_grads = plain.value_and_grad(*fresh.values())
    assert value == pytest.approx(expected_value, rel=1e-12)
    for ours, theirs in zip(grads, expected_grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_wrong_shapes_and_dtypes_are_named():
    d = data(8, 4, 8, 3, seed=0)
    prog = compiler.gradient(svm_net, **d, wrt=LAYERS)
    small = data(5, 4, 8, 3, seed=0)
    with pytest.raises(ValueError, match=r"svm_net: X must be float64\[8, 4\], not ndarray float64\[5, 4\]"):
        prog.grad(*small.values())
    with pytest.raises(ValueError, match=r"svm_net: W1 must be float64\[4, 8\], not ndarray float32\[4, 8\]"):
        prog.grad(*{**d, "W1": d["W1"].astype(np.float32)}.values())
    lazy = compiler.grad(svm_net, wrt="W1")
    assert lazy(**d).shape == (4, 8)
    assert lazy(**small).shape == (4, 8)  # a new signature is traced again
    assert len(lazy.programs) == 2


def test_the_lazy_api_keeps_one_program_for_every_named_size():
    lazy = compiler.value_and_grad(svm_net, wrt="W1", dims={"X": "N,4", "y": "N"})
    for n in (8, 5, 1, 16):
        d = data(n, 4, 8, 3, seed=n)
        value, grad_W1 = lazy(**d)
        expected = compiler.gradient(svm_net, **d, wrt="W1").value_and_grad(*d.values())
        np.testing.assert_allclose(value, expected[0])
        np.testing.assert_allclose(grad_W1, expected[1][0])
    assert len(lazy.programs) == 1
    lazy(**data(8, 4, 6, 3, seed=0))  # another hidden size, fixed: traced again
    assert len(lazy.programs) == 2
    with pytest.raises(compiler.FlatgradError, match=r"dims\['X'\] fixes an axis at 4"):
        lazy(**data(8, 5, 8, 3, seed=0))


def test_float32_in_float32_out():
    d = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in data(8, 4, 8, 3, seed=0).items()}
    prog = compiler.gradient(svm_net, **d, wrt=LAYERS)
    value, grads = prog.value_and_grad(*d.values())
    assert all(g.dtype == np.float32 for g in grads)
    point = data(8, 4, 8, 3, seed=0)
    reference = compiler.gradient(svm_net, **point, wrt=LAYERS).grad(*point.values())
    for ours, theirs in zip(grads, reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_array_code_stays_one_gate_per_line_with_user_names():
    prog = compiler.gradient(svm_net, **data(8, 4, 8, 3, seed=0), wrt=LAYERS)
    lines = [line.strip() for line in prog.source.splitlines()]
    for expected in (
        "h = np.maximum(0, s1)",
        "correct = scores[np.arange(8), y]",
        "margins_1 = updated(margins, (np.arange(8), y), 0)",
        "grad_b2 = grad_scores.sum(axis=0)",  # one gate, one line, the right shape
        "grad_W2 = grad_W2 + h.T @ grad_s2",
        "grad_h = grad_s2 @ W2.T",
    ):
        assert expected in lines
    assert "REG = 0.001" in prog.source
    assert "cache = X, y, W1, W2, s1, h, s5" in prog.source


def test_a_gather_of_one_pick_per_row_scatters_its_gradient_with_a_plain_write():
    """`s[np.arange(N), y]` picks each row once: no two picks share a place, so the gradient is
    written (`scatter`), not added up (`add_at`); `s[y, np.arange(N)]` may repeat rows."""
    def f(s, idx):
        return np.sum(s[np.arange(4), idx] ** 2) + np.sum(s[idx, np.arange(4)])

    prog = compiler.gradient(f, np.ones((4, 4)), np.array([0, 1, 1, 2]))
    assert "scatter((4, 4), (np.arange(4), idx), " in prog.source
    assert "add_at((4, 4), (idx, np.arange(4)), " in prog.source
    s, idx = np.random.default_rng(1).normal(size=(4, 4)), np.array([0, 1, 1, 2])
    expected = 2 * np.where(np.arange(4)[None, :] == idx[:, None], s, 0.0)  # the squared picks
    np.add.at(expected, (idx, np.arange(4)), 1.0)
    np.testing.assert_allclose(prog.grad(s, idx)[0], expected)
