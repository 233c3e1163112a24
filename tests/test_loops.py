"""Loops that stay loops (compiler.codegen.loops): a Python loop's iterations written back as a
`for` loop, forward and reversed backward, checked against autograd and the flat code."""

import sys

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ROOT, central_differences, pyflakes_messages

import compiler
from compiler.errors import FlatgradError

sys.path.insert(0, str(ROOT / "examples"))
import layers  # noqa: E402
from rosenbrock import rosenbrock  # noqa: E402


def recurrence(xp):
    def f(x, W):
        h = x[0]
        for t in range(1, x.shape[0]):
            h = xp.tanh(h @ W + x[t])
        return xp.sum(h * h)

    return f


def windows(xp):
    def f(x):
        total = 0.0
        for i in range(x.shape[0] - 2):
            total = total + xp.sum(x[i : i + 3] * xp.array([1.0, -2.0, 1.0])) ** 2
        return total

    return f


def cumulative(xp):
    def f(x, a):
        y = x[0] * a
        out = 0.0
        for i in range(1, x.shape[0]):
            y = y * a + xp.sin(x[i])
            out = out + y * x[i - 1]
        return out

    return f


def compounding(xp):
    def f(x):  # the first iteration's `1.0 * s2` is written `s2`: the loop starts past it
        p = 1.0
        out = 0.0
        for v in range(x.shape[0]):
            p = p * (1.0 + 0.01 * x[v])
            out = out + p
        return out

    return f


def shared_weights(xp):
    def f(x, w):  # w's gradient is started by the backward's first iteration, added to by the rest
        total = 0.0
        for i in range(x.shape[0]):
            total = total + xp.sum(xp.tanh(x[i] * w))
        return total

    return f


RNG = np.random.default_rng(7)
PROGRAMS = {
    "rosenbrock": (lambda xp: rosenbrock, (RNG.normal(size=9),)),
    "rosenbrock_40": (lambda xp: rosenbrock, (RNG.normal(size=40),)),  # optimize mode: carried reads stored
    "recurrence": (recurrence, (RNG.normal(size=(6, 3)), RNG.normal(size=(3, 3)) / 2)),
    "windows": (windows, (RNG.normal(size=8),)),
    "cumulative": (cumulative, (RNG.normal(size=7), 0.9)),
    "compounding": (compounding, (RNG.normal(size=8),)),
    "shared_weights": (shared_weights, (RNG.normal(size=(6, 4)), RNG.normal(size=4))),
}


def _assert_matches_autograd(prog, make, args):
    assert pyflakes_messages(prog.source) == ""  # every name a loop binds is read
    value, grads = prog.value_and_grad(*args)
    assert value == pytest.approx(make(anp)(*args), rel=1e-12)
    for k, ours in enumerate(grads):
        np.testing.assert_allclose(ours, autograd.grad(make(anp), k)(*args), rtol=1e-10, atol=1e-12)
    for k, ours in enumerate(prog.grad(*args)):
        np.testing.assert_allclose(ours, grads[k], rtol=1e-12, atol=1e-14)
    output, cache = prog.forward_with_cache(*args)
    assert output == pytest.approx(value, rel=1e-12) and prog.forward(*args) == pytest.approx(value, rel=1e-12)
    for ours, theirs in zip(prog.backward(1.0, cache), grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimize", [False, True], ids=["readable", "optimized"])
@pytest.mark.parametrize("name", PROGRAMS)
def test_loops_match_autograd_in_every_function(name, optimize):
    make, args = PROGRAMS[name]
    prog = compiler.gradient(make(np), *args, unroll=False, optimize=optimize)
    if not optimize:  # optimize mode's passes may join iterations (one read of x[i] for two)
        assert "    for i in range(" in prog.source
    _assert_matches_autograd(prog, make, args)


def test_the_loop_reads_like_the_source_loop():
    prog = compiler.gradient(rosenbrock, np.ones(6), unroll=False)
    body = prog.source.split("def value_and_grad(")[1].split("\n\n\n")[0]
    assert "total = 0.0\n    for i in range(5):\n        s0 = x[i + 1]\n        s1[i] = x[i]" in body
    assert "        total = s6 + s9\n    total_4 = total" in body  # the carried value, named as flat
    assert "grad_x[i + 1] += grad_s40" in body  # a scatter into one place: added in place
    assert "for i in range(4, 0, -1):" in body  # the backward loop, reversed


def test_a_gradient_the_first_iteration_starts_is_started_at_zero_before_the_loop():
    prog = compiler.gradient(shared_weights(np), *PROGRAMS["shared_weights"][1], unroll=False)
    body = prog.source.split("def value_and_grad(")[1].split("\n\n\n")[0]
    backward = body.split("# backward pass")[1]
    # the last source iteration's is the loop's too, not peeled off before it (the first source
    # iteration's stays flat after it: there the carried total's gradient is not passed on)
    assert "    grad_w = np.zeros((4,))\n" in backward and "    for i in range(5, 0, -1):\n" in backward
    assert "        grad_w = grad_w + s0[i] * " in backward and backward.count("grad_w = ") == 3
    _assert_matches_autograd(prog, shared_weights, PROGRAMS["shared_weights"][1])


def _running(x):
    out = np.zeros((3, 6))
    for k in range(1, 6):
        out[:, k] = out[:, k - 1] * 0.5 + np.tanh(x[:, k])
    return np.sum(out**2)


def test_a_write_whose_array_a_later_line_reads_stays_a_copy():
    x = RNG.normal(size=(3, 6))
    prog = compiler.gradient(_running, x, unroll=False)
    body = prog.source.split("def value_and_grad(")[1].split("# backward pass")[0]
    # each iteration reads the array it writes into (`out[:, k - 1]`), so the write stays `updated`
    assert "    for i in range(" in body and "updated(out" in body
    value, (grad,) = prog.value_and_grad(x)
    assert value == pytest.approx(_running(x), rel=1e-12)
    (expected,) = central_differences(_running, {"x": x}, ["x"])
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


def test_unroll_true_keeps_the_iterations_and_short_numpy_bodies_stay_flat_by_default():
    assert "for i in" not in compiler.gradient(rosenbrock, np.ones(6), unroll=True).source
    assert "for i in" not in compiler.gradient(rosenbrock, np.ones(6)).source  # 60 equations
    assert "for i in range(" in compiler.gradient(rosenbrock, np.ones(40)).source  # over 200
    with pytest.raises(FlatgradError, match="unroll='yes'"):
        compiler.gradient(rosenbrock, np.ones(6), unroll="yes")


@pytest.mark.parametrize("jit", [None, pytest.param("numba", marks=pytest.mark.numba)])
def test_an_rnn_layer_keeps_its_states_in_one_array_and_matches_autograd(jit):
    x, h0 = RNG.normal(size=(2, 9, 3)), RNG.normal(size=(2, 4))
    Wx, Wh, b = RNG.normal(size=(3, 4)), RNG.normal(size=(4, 4)), RNG.normal(size=4)
    prog = compiler.gradient(layers.rnn_forward, x, h0, Wx, Wh, b, layer=True, unroll=False, jit=jit)
    assert "h[0] = h0" in prog.source and "h[i + 1] = np.tanh(" in prog.source
    # the states stacked as the slice of their array they are (numba: a tuple of 9 compiles slowly)
    stacked = "np.ascontiguousarray(h[1:10].transpose((1, 0, 2)))" if jit else "np.stack(h[1:10], axis=1)"
    assert f"out = {stacked}" in prog.source
    # the backward takes each step's part of dout in the loop, as a course's does, not from a tuple
    assert "        dh_7 = dout[:, i - 1]\n" in prog.source and "_steps" not in prog.source
    out, cache = prog.forward_with_cache(x, h0, Wx, Wh, b)
    dout = RNG.normal(size=out.shape)

    def rnn(x, h0, Wx, Wh, b):
        h, hs = h0, []
        for t in range(x.shape[1]):
            h = anp.tanh(x[:, t, :] @ Wx + h @ Wh + b)
            hs.append(h)
        return anp.sum(anp.stack(hs, axis=1) * dout)

    args = (x, h0, Wx, Wh, b)
    np.testing.assert_allclose(anp.sum(out * dout), rnn(*args), rtol=1e-12)
    for k, ours in enumerate(prog.backward(dout, cache)):
        np.testing.assert_allclose(ours, autograd.grad(rnn, k)(*args), rtol=1e-10, atol=1e-12)


def _layer_matches(looped, flat, args, layer):
    """The looped layer against the flat one, and its input gradient against autograd."""
    assert pyflakes_messages(looped.source) == ""
    out, cache = looped.forward_with_cache(*args)
    expected, flat_cache = flat.forward_with_cache(*args)
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    dout = RNG.normal(size=out.shape)
    grads = looped.backward(dout, cache)
    for ours, theirs in zip(grads, flat.backward(dout, flat_cache)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-13)
    for k, ours in enumerate(grads):
        theirs = autograd.grad(lambda *a: anp.sum(layer(*a) * dout), k)(*args)
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)


def conv_naive(x, w, b):
    """layers.conv_forward_naive in autograd's NumPy (no in-place writes)."""
    x_pad = anp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="constant")
    H_out, W_out = x.shape[2], x.shape[3]
    rows = [anp.stack([anp.sum(x_pad[:, None, :, i:i + 3, j:j + 3] * w[None], axis=(2, 3, 4)) + b
                       for j in range(W_out)], axis=-1) for i in range(H_out)]
    return anp.stack(rows, axis=-2)


def max_pool_naive(x):
    rows = [anp.stack([anp.max(anp.max(x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2], axis=3), axis=2)
                       for j in range(x.shape[3] // 2)], axis=-1) for i in range(x.shape[2] // 2)]
    return anp.stack(rows, axis=-2)


def test_a_naive_convolution_writes_its_positions_as_one_nested_loop_and_matches_the_flat_code():
    x, w, b = RNG.normal(size=(2, 3, 5, 5)), RNG.normal(size=(2, 3, 3, 3)), RNG.normal(size=2)
    looped = compiler.gradient(layers.conv_forward_naive, x, w, b, layer=True, unroll=False)
    flat = compiler.gradient(layers.conv_forward_naive, x, w, b, layer=True, unroll=True)
    source = looped.source
    # the forward over the rows and columns, once; the backward over them in reverse, once, its
    # gradients started at zero before it (no first position peeled off), and dout read as it
    # is: the write gate's gradient zeroes no place that a later line reads. The cache is what
    # a course's is: each position's window is taken again in the backward, not stored
    assert "    for i in range(5):\n        for j in range(5):\n" in source
    assert "            window = x_pad[:, :, i:i + 3, j:j + 3]\n" in source and "    cache = w, x_pad\n" in source
    assert "            window_24 = x_pad[:, :, i:i + 3, j:j + 3]\n" in source
    # `out[:, f, i, j] = ...` writes into the one output array, not a copy of it per write
    assert "            out_1[:, 0, i, j] = s4\n" in source and "updated(" not in source
    assert "    db = np.zeros((2,))\n    dw = np.zeros((2, 3, 3, 3))\n    dx_pad = np.zeros((2, 3, 7, 7))\n" in source
    assert "    for i in range(4, -1, -1):\n        for j in range(4, -1, -1):\n" in source
    assert "            dx_pad[:, :, i:i + 3, j:j + 3] += dwindow" in source
    assert "updated(dout" not in source and "            ds249 = dout[:, 1, i, j]\n" in source
    assert source.count(" in range(") == 4 and len(source) < len(flat.source) / 5
    _layer_matches(looped, flat, (x, w, b), conv_naive)


def test_an_optimized_convolution_runs_its_positions_as_one_loop():
    # optimize mode takes each filter w[f] once, at the first position, which then differs from
    # the rest: the positions after it are one loop, its body reading w[f] as the first took it
    x, w, b = RNG.normal(size=(2, 3, 5, 5)), RNG.normal(size=(2, 3, 3, 3)), RNG.normal(size=2)
    looped = compiler.gradient(layers.conv_forward_naive, x, w, b, layer=True, unroll=False, optimize=True)
    flat = compiler.gradient(layers.conv_forward_naive, x, w, b, layer=True, unroll=True)
    source = looped.source
    assert "    for k in range(1, 25):\n" in source and "    for k in range(24, 0, -1):\n" in source
    assert "        s16 = window_1[i, j] * s5\n" in source and len(source) < len(flat.source) / 4
    _layer_matches(looped, flat, (x, w, b), conv_naive)


def test_the_benchmarks_convolution_is_one_loop_each_way():
    # a line that repeats once per filter (`ds = dout[:, f, i, j]`) starts each position; the
    # search first finds the loop a position's last line on, and moves its start back to there
    x, w, b = RNG.normal(size=(4, 3, 8, 8)), RNG.normal(size=(4, 3, 3, 3)), RNG.normal(size=4)
    looped = compiler.gradient(layers.conv_forward_naive, x, w, b, layer=True, unroll=False)
    flat = compiler.gradient(layers.conv_forward_naive, x, w, b, layer=True, unroll=True)
    assert "    for i in range(7, -1, -1):\n        for j in range(7, -1, -1):\n" in looped.source
    # and, inside, its 4 filters as a loop too: written once each way (the backward's first, which
    # starts dwindow, before it), as the course writes the layer
    assert "            for k in range(4):\n                s0 = w[k]\n" in looped.source
    assert "            for k in range(2, -1, -1):\n                ds1274 = dout[:, k, i, j]\n" in looped.source
    assert "                out_3[:, k, i, j] = s4\n" in looped.source and looped.source.count(" in range(") == 6
    out, cache = looped.forward_with_cache(x, w, b)
    expected, flat_cache = flat.forward_with_cache(x, w, b)
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    dout = RNG.normal(size=out.shape)
    for ours, theirs in zip(looped.backward(dout, cache), flat.backward(dout, flat_cache)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-13)


def test_naive_max_pooling_writes_its_positions_as_one_nested_loop():
    x = RNG.normal(size=(2, 3, 8, 6))
    looped = compiler.gradient(layers.max_pool_forward_naive, x, layer=True, unroll=False)
    flat = compiler.gradient(layers.max_pool_forward_naive, x, layer=True, unroll=True)
    source = looped.source
    assert "    for i in range(4):\n        for j in range(3):\n" in source
    assert "            window = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2]\n" in source
    assert "            s0[i, j] = window.max(axis=(2, 3))\n" in source and "    cache = x, s0\n" in source
    assert "    dx = np.zeros((2, 3, 8, 6))\n    for i in range(3, -1, -1):\n" in source
    assert "    for i in range(3, -1, -1):\n        for j in range(2, -1, -1):\n" in source
    assert "            dx[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2] += dwindow" in source
    _layer_matches(looped, flat, (x,), max_pool_naive)


def test_a_grid_loop_reads_its_earlier_values_and_the_code_after_it_reads_its_last():
    def f(x, w):
        total = 0.0
        for i in range(3):
            for j in range(4):
                total = total + np.sum(x[i:i + 2, j:j + 2] * w) ** 2
        return total * x[0, 0]

    make = lambda xp: f if xp is np else (lambda x, w: _autograd_grid(x, w))  # noqa: E731
    args = (RNG.normal(size=(4, 5)), RNG.normal(size=(2, 2)))
    prog = compiler.gradient(f, *args, unroll=False)
    assert "for i in range(3):\n        for j in range(4):" in prog.source
    _assert_matches_autograd(prog, make, args)
    explained = compiler.gradient(f, *args, unroll=False, explain=True)
    assert pyflakes_messages(explained.source) == ""
    np.testing.assert_allclose(explained.grad(*args)[0], prog.grad(*args)[0], rtol=1e-12)


def _autograd_grid(x, w):
    total = 0.0
    for i in range(3):
        for j in range(4):
            total = total + anp.sum(x[i:i + 2, j:j + 2] * w) ** 2
    return total * x[0, 0]


@pytest.mark.numba
def test_under_numba_a_convolution_over_a_grid_compiles_once_and_matches_the_flat_code():
    # two filters of two channels: each line on 4-d arrays compiles in a fraction of a second at
    # LLVM's -O2 (the module's `compiled_at_o2`); at numba's -O3, in seconds
    x, w, b = RNG.normal(size=(2, 2, 3, 3)), RNG.normal(size=(2, 2, 3, 3)), RNG.normal(size=2)
    looped = compiler.gradient(layers.conv_forward_naive, x, w, b, layer=True, jit="numba")
    flat = compiler.gradient(layers.conv_forward_naive, x, w, b, layer=True, unroll=True)
    assert "for i in range(3):\n        for j in range(3):" in looped.source
    assert "for i in range(2, -1, -1):\n        for j in range(2, -1, -1):" in looped.source
    _layer_matches(looped, flat, (x, w, b), conv_naive)


@pytest.mark.numba
def test_under_numba_loops_are_the_default_and_compile():
    x = RNG.normal(size=30)
    prog = compiler.gradient(rosenbrock, x, jit="numba")
    assert "for i in range(29):" in prog.source
    _assert_matches_autograd(prog, lambda xp: rosenbrock, (x,))


# Random loop programs: a carried number and a carried vector, each step one of these terms of
# x[i], x[i + 1] and the carried values (each reads both, so no line is dead), for NumPy and
# autograd alike
TERMS = (
    lambda xp, a, b, c, v: a * b,
    lambda xp, a, b, c, v: xp.sin(a) + b ** 2,
    lambda xp, a, b, c, v: xp.tanh(c + a) * b,
    lambda xp, a, b, c, v: (a - b) ** 2 / (1.0 + c * c),
    lambda xp, a, b, c, v: xp.exp(-a * b) * c,
    lambda xp, a, b, c, v: xp.sum(v * v) * (a - b),
)


def _random_loop(choices: list[int], vector: bool):
    def make(xp):
        def f(x, w):
            c, v = 0.5, w * 1.0
            for i in range(x.shape[0] - 1):
                a, b = x[i], x[i + 1]
                for k in choices:
                    c = c + TERMS[k](xp, a, b, c, v)
                if vector:
                    v = xp.tanh(v * a + b)
            return c + xp.sum(v)

        return f

    return make


@settings(derandomize=True, max_examples=40, deadline=None, database=None)
@given(
    choices=st.lists(st.integers(0, len(TERMS) - 1), min_size=1, max_size=3),
    vector=st.booleans(),
    n=st.integers(4, 12),
    optimize=st.booleans(),
)
def test_random_loop_programs_match_autograd(choices, vector, n, optimize):
    make = _random_loop(choices, vector)
    rng = np.random.default_rng(n)
    args = (rng.normal(size=n) / 2, rng.normal(size=3) / 2)
    prog = compiler.gradient(make(np), *args, unroll=False, optimize=optimize)
    _assert_matches_autograd(prog, make, args)


def test_repeated_blocks_in_a_body_become_an_inner_loop_only_where_their_names_stay_inside():
    from compiler.codegen.loops import _inner_loops

    blocks = ["a = x[0]", "b = a * 2", "out[0] = b", "c = x[1]", "d = c * 2", "out[1] = d",
              "e = x[2]", "f = e * 2", "out[2] = f"]
    taken = {"a", "b", "c", "d", "e", "f", "x", "out"}
    assert _inner_loops(["t = 1", *blocks], set(), taken) == [
        "t = 1", "for k in range(3):\n    a = x[k]\n    b = a * 2\n    out[k] = b"]
    assert _inner_loops(blocks, set(), taken | {"k"})[0].startswith("for m in range(3):")
    # a block's own value read after the blocks, or kept past the loop, or ints that do not move
    # by one step: the lines stay as they are
    assert _inner_loops([*blocks, "y = d + 1"], set(), taken) == [*blocks, "y = d + 1"]
    assert _inner_loops(blocks, {"f"}, taken) == blocks
    uneven = [line.replace("x[2]", "x[5]") for line in blocks]
    assert _inner_loops(uneven, set(), taken) == uneven
    # the index runs as the int that moves least; the others in terms of it (a strided window)
    strided = [f"{a} = x[{2 * k}:{2 * k + 3}]\nout[{k}] = {a}.sum()".split("\n") for k, a in enumerate("abc")]
    assert _inner_loops(sum(strided, []), set(), taken) == [
        "for k in range(3):\n    a = x[2 * k:2 * k + 3]\n    out[k] = a.sum()"]
