"""Optimize mode's inlining of temporaries read once (compiler.codegen.inlining)."""

import numpy as np
import pytest

import compiler
from compiler.codegen.inlining import LINE_LIMIT, inline_single_uses


def _inlined(*lines: str) -> list[str]:
    return list(inline_single_uses((("", lines),))[0][1])


def test_a_chain_of_temporaries_becomes_one_line_and_user_names_keep_theirs():
    assert _inlined("s0 = X @ W1", "s1 = s0 + b1", "h = np.maximum(s1, 0.0)", "return h") == [
        "h = np.maximum(X @ W1 + b1, 0.0)",
        "return h",
    ]
    assert _inlined("h = X @ W1", "s1 = h + b1", "out = s1 * 2") == ["h = X @ W1", "out = (h + b1) * 2"]


def test_precedence_is_kept_by_the_syntax_tree():
    assert _inlined("s0 = a + b", "s1 = s0 * c", "L = -s1") == ["L = -((a + b) * c)"]


def test_a_temporary_read_twice_or_by_a_return_or_the_cache_stays():
    assert _inlined("s0 = a + b", "L = s0 * s0") == ["s0 = a + b", "L = s0 * s0"]
    assert _inlined("s0 = a + b", "return s0") == ["s0 = a + b", "return s0"]
    assert _inlined("s0 = a + b", "cache = s0, a") == ["s0 = a + b", "cache = s0, a"]


def test_nothing_moves_across_a_barrier_or_a_rebinding_of_what_it_reads():
    branch = ("s0 = a + b", "if a > 0:", "    L = s0", "else:", "    L = 0.0")
    assert _inlined(*branch) == list(branch)
    rebinding = ("s0 = grad_a * 2", "grad_a = grad_a + c", "L = s0 + grad_a")
    assert _inlined(*rebinding) == list(rebinding)
    commented = ("s0 = a + b  # why", "L = s0 * c")
    assert _inlined(*commented) == list(commented)


def test_sections_are_kept_apart_and_long_lines_are_not_made():
    sections = (("forward pass", ("s0 = a + b",)), ("backward pass", ("grad_a = s0 * c",)))
    assert inline_single_uses(sections) == (("forward pass", ("s0 = a + b",)), ("backward pass", ("grad_a = s0 * c",)))
    long_name = "x" * (LINE_LIMIT - 10)
    assert _inlined(f"s0 = {long_name} + 1", "L = s0 * 2") == [f"s0 = {long_name} + 1", "L = s0 * 2"]


@pytest.mark.parametrize("jit", [None, pytest.param("numba", marks=pytest.mark.numba)])
def test_inlined_modules_match_autograd(jit):
    autograd = pytest.importorskip("autograd")
    import autograd.numpy as anp

    def make(xp):
        def f(x, w):
            z = xp.tanh(x @ w + 1.0) * 2.0 - x[:, :1]
            return xp.sum(xp.exp(-z * z) / (1.0 + z * z)) / x.shape[0]

        return f

    x, w = np.random.default_rng(3).normal(size=(5, 3)), np.random.default_rng(4).normal(size=(3, 2))
    prog = compiler.gradient(make(np), x, w, optimize=True, jit=jit)
    body = prog.source.split("\ndef value_and_grad(")[1].split("\n\n\n")[0]
    assert "s0 = " not in body  # x @ w read once: written where it is read
    value, (grad_x, grad_w) = prog.value_and_grad(x, w)
    assert value == pytest.approx(make(anp)(x, w), rel=1e-12)
    np.testing.assert_allclose(grad_x, autograd.grad(make(anp), 0)(x, w), rtol=1e-10)
    np.testing.assert_allclose(grad_w, autograd.grad(make(anp), 1)(x, w), rtol=1e-10)
