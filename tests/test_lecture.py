"""The lecture's examples, the naming rules, and the public API, end to end."""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.verify import verify

NEURON_AT = (2.0, -1.0, -3.0, -2.0, -3.0)


def neuron(w0, x0, w1, x1, w2):
    return compiler.sigmoid(w0 * x0 + w1 * x1 + w2)


def simple(x, y, z):
    q = x + y
    return q * z


def body(source: str, function: str) -> list[str]:
    """The statements of one emitted function, stripped, without its docstring, comments and the
    check of its arguments."""
    lines = source.split(f"\ndef {function}(", 1)[1].split("\n\n\n", 1)[0].splitlines()[2:]
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith(("#", "check_arguments("))]


def test_golden_neuron_forward_lines():
    prog = compiler.gradient(neuron, *NEURON_AT)
    assert body(prog.source, "forward") == [
        "s0 = w0 * x0",
        "s1 = w1 * x1",
        "s2 = s0 + s1",
        "s3 = s2 + w2",
        "L = 1 / (1 + np.exp(-s3))",
        "return L",
    ]


def test_golden_neuron_backward_lines():
    prog = compiler.gradient(neuron, *NEURON_AT)
    lines = body(prog.source, "value_and_grad")
    backward = lines[lines.index("grad_L = 1.0") :]
    assert backward == [
        "grad_L = 1.0",
        "grad_s3 = (1 - L) * L * grad_L",
        "grad_w2 = grad_s3",
        "grad_s2 = grad_s3",
        "grad_s0 = grad_s2",
        "grad_s1 = grad_s2",
        "grad_w1 = x1 * grad_s1",
        "grad_x1 = w1 * grad_s1",
        "grad_w0 = x0 * grad_s0",
        "grad_x0 = w0 * grad_s0",
        "return L, (grad_w0, grad_x0, grad_w1, grad_x1, grad_w2)",
    ]


def test_golden_neuron_values():
    value, grads = compiler.gradient(neuron, *NEURON_AT).value_and_grad(*NEURON_AT)
    assert value == pytest.approx(0.7311, abs=1e-4)
    assert grads == pytest.approx((-0.1966, 0.3932, -0.3932, -0.5898, 0.1966), abs=1e-4)


def test_simple_values_and_names():
    prog = compiler.gradient(simple, -2.0, 5.0, -4.0)
    value, grads = prog.value_and_grad(-2.0, 5.0, -4.0)
    assert value == -12.0
    assert grads == (-4.0, -4.0, 3.0)
    assert prog.wrt == ("x", "y", "z")
    assert body(prog.source, "forward")[:2] == ["q = x + y", "L = q * z"]
    assert "grad_q = z * grad_L" in prog.source


def test_program_members():
    prog = compiler.gradient(simple, 1.0, 2.0, 3.0)
    assert prog.forward(-2.0, 5.0, -4.0) == -12.0
    assert prog.grad(-2.0, 5.0, -4.0) == (-4.0, -4.0, 3.0)
    assert prog.value_and_grad(x=-2.0, y=5.0, z=-4.0)[0] == -12.0
    assert verify(prog.graph) is prog.graph
    listing = str(prog.graph)
    assert "q = add(x, y)" in listing and "# backward" in listing


def test_forward_with_cache_and_backward_pair():
    prog = compiler.gradient(neuron, *NEURON_AT)
    value, cache = prog.module.forward_with_cache(*NEURON_AT)
    grads = prog.module.backward(1.0, cache)
    assert value == pytest.approx(0.7311, abs=1e-4)
    assert grads == pytest.approx(prog.grad(*NEURON_AT))
    doubled = prog.module.backward(2.0, cache)
    assert doubled == pytest.approx(tuple(2 * g for g in grads))
    # the cache holds what backward reads: the multiplier inputs and the sigmoid's output
    assert "cache = w0, x0, w1, x1, L" in prog.source


def test_fan_out_accumulates_by_rebinding():
    def f(x, y):
        a = x * y
        return a + x * x

    prog = compiler.gradient(f, 3.0, 2.0)
    assert prog.grad(3.0, 2.0) == pytest.approx((2.0 + 6.0, 3.0))
    assert "grad_x = grad_x + " in prog.source
    verify(prog.graph)


def test_loop_rebinding_names_each_value():
    def f(x, w):
        h = x
        for _ in range(3):
            h = h * w
        return h

    prog = compiler.gradient(f, 2.0, 0.5)
    assert body(prog.source, "forward") == ["h = x * w", "h_1 = h * w", "h_2 = h_1 * w", "return h_2"]
    assert prog.grad(2.0, 0.5) == pytest.approx((0.125, 3 * 2.0 * 0.25))


def layer(x, w):
    out = x * w + 1.0
    return out


def test_outer_name_beats_helper_name():
    def f(x, w):
        h = layer(x, w)
        return np.tanh(h)

    lines = body(compiler.gradient(f, 1.0, 2.0).source, "forward")
    assert lines[:2] == ["s0 = x * w", "h = s0 + 1.0"]
    assert lines[2] == "L = np.tanh(h)"


def test_names_and_lines_follow_a_generator_resumed_from_different_frames():
    # The tracer reuses the user's stack while ops come from the same frame, except from a
    # generator's, which each resumption may call from elsewhere: names and lines stay right.
    def f(x, w):
        def layers(h):
            for _ in range(3):
                h = np.tanh(h * w)
                yield h

        steps = layers(x)

        def take(g):
            out = next(g)
            return out

        a = take(steps)
        b = next(steps)
        c = take(steps)
        return a + b * c

    graph = compiler.trace(f, 0.5, 0.9)
    assert [e.out.name for e in graph.eqns] == ["s0", "a", "s1", "b", "s2", "c", "s3", "L"]
    assert [e.loc.function for e in graph.eqns] == ["layers"] * 6 + ["f", "f"]
    assert compiler.check_grad(f, 0.5, 0.9) < 1e-6


def test_names_never_shadow_the_module():
    def f(x, y):
        grad = x * y  # a builtin-free but module-reserved name
        forward = grad + 1.0
        return forward * y

    source = compiler.gradient(f, 1.0, 2.0).source
    assert "grad_1 = x * y" in source and "forward_1 = grad_1 + 1.0" in source
    assert "\n    grad = " not in source and "\n    forward = " not in source


def test_a_parameter_named_like_a_builtin_keeps_its_name():
    """Emitted lines call no `input` or `sum`: names like these stay the user's, in `wrt`, the
    signature and the gradients' names; only `slice`, which codegen writes, would collide."""

    def f(input, sum, slice):
        max = input * sum
        return np.sum(max[1:]) * slice

    prog = compiler.gradient(f, np.ones(3), 2.0, 0.5)
    assert prog.wrt == ("input", "sum", "slice_1")
    assert "def forward(input, sum, slice_1):" in prog.source and "max = input * sum" in prog.source
    assert "grad_input" in prog.source
    np.testing.assert_allclose(prog.grad(np.ones(3), 2.0, 0.5)[0], [0.0, 1.0, 1.0])


def test_returned_source_name_is_kept():
    def f(x):
        result = np.exp(x)
        return result

    assert body(compiler.gradient(f, 1.0).source, "forward") == ["result = np.exp(x)", "return result"]


def test_output_that_is_an_input():
    prog = compiler.gradient(lambda x, y: x, 1.0, 2.0)
    assert prog.grad(3.0, 4.0) == (1.0, 0.0)


def test_wrt_subset_and_integer_inputs():
    def f(x, n, y):
        return x**n * y

    prog = compiler.gradient(f, 2.0, 3, 1.5)
    assert prog.wrt == ("x", "y")
    assert prog.grad(2.0, 3, 1.5) == pytest.approx((3 * 4.0 * 1.5, 8.0))
    only_y = compiler.gradient(f, 2.0, 3, 1.5, wrt="y")
    assert only_y.wrt == ("y",) and only_y.grad(2.0, 3, 1.5) == pytest.approx((8.0,))
    assert "grad_x" not in only_y.source
    with pytest.raises(compiler.FlatgradError, match="only float inputs"):
        compiler.gradient(f, 2.0, 3, 1.5, wrt="n")
    with pytest.raises(compiler.FlatgradError, match="not a parameter"):
        compiler.gradient(f, 2.0, 3, 1.5, wrt=["x", "q"])


def test_lazy_grad_and_value_and_grad():
    df = compiler.grad(simple, wrt="z")
    assert df(-2.0, 5.0, -4.0) == 3.0
    vg = compiler.value_and_grad(simple)
    assert vg(-2.0, 5.0, -4.0) == (-12.0, (-4.0, -4.0, 3.0))
    vg(np.float32(1.0), 1.0, 1.0)
    assert len(vg.programs) == 2  # one program per argument signature


def test_check_grad():
    assert compiler.check_grad(neuron, *NEURON_AT) < 1e-8


def test_gates_work_on_numbers_and_arrays():
    assert compiler.sigmoid(0.0) == 0.5
    assert np.allclose(compiler.relu(np.array([-1.0, 2.0])), [0.0, 2.0])


def test_trace_returns_the_forward_graph():
    graph = compiler.trace(simple, 1.0, 2.0, 3.0)
    assert [e.op for e in graph.eqns] == ["add", "mul"]
    assert [v.name for v in graph.inputs] == ["x", "y", "z"]
    assert graph.outputs[0].name == "L"


def test_program_rejects_wrong_arguments():
    prog = compiler.gradient(simple, 1.0, 2.0, 3.0)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'z'"):
        prog.grad(1.0, 2.0)  # the emitted function's own signature
    with pytest.raises(ValueError, match=r"simple: z must be a float64 number, not an array of shape \(3,\)"):
        prog.grad(1.0, 2.0, np.ones(3))


def test_constants_from_globals_are_listed():
    prog = compiler.gradient(scaled, 1.0)
    assert "SCALE = 2.5" in prog.source
    assert prog.grad(1.0) == (2.5,)


SCALE = 2.5


def scaled(x):
    return SCALE * x


def test_explain_names_each_backward_line_s_gate_and_forward_line():
    def f(x, y):
        q = x * y
        return np.sum(np.tanh(q) + x)

    prog = compiler.gradient(f, np.ones(3), np.ones(3), explain=True)
    forward = body(prog.source, "forward")
    function = prog.source.split("\ndef value_and_grad(", 1)[1].split("\n\n\n", 1)[0]
    backward = [line.strip() for line in function.split("# backward pass\n")[1].splitlines()[:-1]]
    assert backward[0] == "grad_L = 1.0  # the seed: the gradient of the output with respect to itself is 1"
    gate = {"mul": "mul gate", "add": "add gate", "tanh": "tanh gate", "sum_all": "sum gate"}
    for line in backward[1:]:
        if line.startswith("# from "):  # where the user wrote the gate
            assert line.startswith("# from tests/test_lecture.py:"), line
        elif line.startswith("# "):  # a block: the forward line it differentiates, its gate
            quoted, words = line[2:].split(": ", 1)
            assert quoted in forward, line
            op = next(e.op for e in prog.graph.forward_eqns if quoted.startswith(e.out.name + " = "))
            assert words.startswith(gate[op]), line
        else:
            assert line.split("  # ")[1].startswith("local "), line
    assert "# q = x * y: mul gate, swap multiplier" in "\n".join(backward)
    assert "grad_y = x * grad_q  # local x × upstream grad_q" in backward
    assert any(line.endswith(", added to grad_x") for line in backward)
    # explanations are comments: the numbers do not change
    plain = compiler.gradient(f, np.ones(3), np.ones(3))
    args = (np.array([0.1, 0.2, 0.3]), np.array([1.0, -1.0, 2.0]))
    for ours, theirs in zip(prog.grad(*args), plain.grad(*args)):
        np.testing.assert_array_equal(ours, theirs)


def test_explain_says_an_input_without_a_path_gets_zero():
    prog = compiler.gradient(lambda x, y: np.sin(x), 1.0, 2.0, explain=True)
    lines = [line for line in body(prog.source, "value_and_grad") if line.startswith("grad_y = ")]
    assert lines == ["grad_y = 0.0  # no path from this input to the output: its gradient is 0"]


def test_explain_mode_names_a_gate_whose_line_optimize_mode_dropped():
    def f(x):
        out = +x  # a copy: optimize mode reads x instead
        return out * 2.0

    source = compiler.gradient(f, 1.0, explain=True, optimize=True).source
    assert "# out: a line optimize mode dropped" in source
