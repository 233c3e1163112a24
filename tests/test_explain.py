"""Explain mode's comments are checked by evaluation, not read: every explained backward line's
`local A × upstream B` (or matrix product) comment, plus what it says the line adds to, must
equal the line's right-hand side when the module runs, on every golden example in both modes
and on random programs. A comment that cannot be evaluated fails."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import EXAMPLES, LAYER_EXAMPLES, ROOT
from test_random_programs import (
    array_function,
    array_programs,
    array_values_are_safe,
    as_function,
    inputs_for,
    numbers_are_safe,
    programs,
)

import compiler
from compiler.check import check_inputs
from compiler.cli import example_arguments, load_function
from compiler.codegen.explain import claimed

# Comments on backward lines that stand for no gate: no product to check
NOT_A_GATE = ("the seed: ", "no path from this input", "a view of the forward pass")
ADDED = re.compile(r", added to (?P<target>[^()]+?)(?: \(so far (?P<before>[^()]+)\))?$")  # grad_x[i + 1]
WIDTH = 100


def instrumented(source: str) -> tuple[str, int]:
    """The module with a check after every explained backward line: its target equals what the
    comment claims. Returns the source and how many lines it checks."""
    out, checked = [], 0
    for number, line in enumerate(source.splitlines(), 1):
        code, sep, comment = line.partition("  # ")
        statement = code.strip()
        if not sep or not statement or statement.startswith(("#", "if ", "elif ", "else")) or '"""' in line:
            out.append(line)
            continue
        if comment.startswith(NOT_A_GATE):
            out.append(line)
            continue
        product = claimed(comment)
        assert product is not None, f"line {number}: a comment that cannot be evaluated: {line}"
        target = statement.split(" += " if " += " in statement else " = ", 1)[0]  # a loop adds in place
        indent = code[: len(code) - len(code.lstrip())]
        added = ADDED.search(comment)
        if added:  # what the target (or the name it stands for) holds before the line
            assert added["target"] == target, f"line {number}: adds to {added['target']}, not its target: {line}"
            product = f"{added['before'] or target} + {product}"
        # the claim is about the right-hand side: evaluated before the line rebinds any name
        check = f"{indent}_check({target}, _expected, {number}, {line.strip()!r})"
        out += [f"{indent}_expected = {product}", line, check]
        checked += 1
    return "\n".join(out), checked


def _check(value, expected, number: int, line: str) -> None:
    assert np.shape(value) == np.shape(expected), f"line {number}: {line}: shape {np.shape(expected)}"
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=f"{number}: {line}")


def check_comments(prog: compiler.GradientProgram, args: tuple) -> int:
    """Run `prog`'s module with every explained line checked, through value_and_grad (where the
    function has one) and through backward from forward_with_cache; how many lines it checked."""
    source, checked = instrumented(prog.source)
    namespace: dict = {"_check": _check, "__name__": "explained"}
    exec(compile(source, "<explained>", "exec"), namespace)
    with np.errstate(all="ignore"):
        if prog.graph.seed is not None and not prog.layer:
            namespace["value_and_grad"](*args)
        layer = prog.layer
        out, cache = namespace[layer.forward if layer else "forward_with_cache"](*args)
        outputs = out if isinstance(out, tuple) else (out,)
        upstream = [np.random.default_rng(1).normal(size=np.shape(outputs[k])) for k in prog.graph.differentiated]
        upstream = [u if np.shape(u) else float(u) for u in upstream]
        namespace[layer.backward if layer else "backward"](*upstream, cache)
    return checked


def long_lines(source: str) -> list[str]:
    """The explained lines (code and comment) wider than WIDTH."""
    return [line for line in source.splitlines() if "  # local" in line and len(line) > WIDTH]


GOLDEN = [(f"examples/{stem}.py:{stem}", options) for stem, options in EXAMPLES.items()] + [
    (f"examples/layers.py:{name}", options) for name, options in LAYER_EXAMPLES.items()
]


@pytest.mark.parametrize("optimize", [False, True], ids=["readable", "optimized"])
@pytest.mark.parametrize("target, options", GOLDEN, ids=[t.rsplit(":", 1)[1] for t, _ in GOLDEN])
def test_every_comment_of_every_example_evaluates_to_its_line(target, options, optimize, monkeypatch):
    monkeypatch.chdir(ROOT)
    fn, _, _ = load_function(target)
    examples = example_arguments(fn, [v for k, v in zip(options, options[1:]) if k == "--arg"])
    wrt = tuple(options[options.index("--wrt") + 1].split(",")) if "--wrt" in options else None
    flags = {"layer": "--layer" in options, "has_aux": "--has-aux" in options, "wrt": wrt, "optimize": optimize}
    dims = examples.dims or None
    prog = compiler.gradient(fn, **examples.values, explain=True, dims=dims, **flags)
    values, _ = check_inputs(prog, examples.numbers, seed=0)
    assert check_comments(prog, tuple(values.values())) > 0


@settings(derandomize=True, max_examples=700, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_comment_of_a_random_program_evaluates_to_its_line(data):
    program = data.draw(programs(), label="program")
    args = data.draw(inputs_for(program), label="inputs")
    assume(numbers_are_safe(program, args))
    f = as_function(program)
    optimize = data.draw(st.booleans(), label="optimize")
    prog = compiler.gradient(f, *[1.0] * len(args), explain=True, optimize=optimize)
    check_comments(prog, tuple(args))


@settings(derandomize=True, max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_comment_of_a_random_array_program_evaluates_to_its_line(data):
    program = data.draw(array_programs(), label="program")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    args = [np.float64(rng.uniform(-2.0, 2.0)) if not s else rng.uniform(-2.0, 2.0, s) for s in program.shapes]
    assume(array_values_are_safe(program, args))
    f = array_function(program)
    optimize = data.draw(st.booleans(), label="optimize")
    prog = compiler.gradient(f, *args, explain=True, optimize=optimize)
    check_comments(prog, tuple(args))


def test_a_wrong_comment_fails_the_check():
    """The check can fail: a comment whose product is not the line is caught."""
    prog = compiler.gradient(lambda x, y: x * y, 2.0, 3.0, explain=True)
    line = "grad_x = y * grad_L  # local y × upstream grad_L"
    wrong = prog.source.replace(line, line.replace("local y", "local x"))
    assert wrong != prog.source
    prog.source = wrong
    with pytest.raises(AssertionError, match="local x × upstream grad_L"):
        check_comments(prog, (2.0, 3.0))


def test_the_staged_sigmoid_is_one_gate_with_a_stable_gradient_in_readable_mode():
    def staged_sigmoid(x):
        return 1.0 / (1 + np.exp(-x)) * 3.0

    prog = compiler.gradient(staged_sigmoid, 1.0, explain=True)
    assert re.search(r"(s\d) = 1 / \(1 \+ np.exp\(-x\)\)\n.*\(1 - \1\) \* \1 \*", prog.source, re.DOTALL)
    with np.errstate(over="ignore"):
        value, (grad_x,) = prog.value_and_grad(-1000.0)
    assert value == 0.0 and grad_x == 0.0  # not nan: exp(1000) overflows in the spelled-out gates


def test_a_broadcast_operands_gradient_is_one_line_of_its_shape():
    prog = compiler.gradient(lambda X, b: np.sum(np.tanh(X + b)), np.ones((4, 3)), np.ones(3), explain=True)
    lines = [line.strip() for line in prog.source.splitlines()]
    comment = "b was broadcast along axis 0: local 1 × upstream grad_s0.sum(axis=0)"
    assert f"grad_b = grad_s0.sum(axis=0)  # {comment}" in lines
    assert not any(line.startswith("grad_b = grad_s0  #") for line in lines)


def _looped_programs():
    """Programs whose loops are written as loops (`unroll=False`): a number carried (Rosenbrock),
    a state carried and stored (an RNN layer), a loop over rows and columns (a naive convolution)."""
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    import layers
    from rosenbrock import rosenbrock

    rng = np.random.default_rng(3)
    rnn = (rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 4)), rng.normal(size=(3, 4)), rng.normal(size=(4, 4)),
           rng.normal(size=4))
    conv = (rng.normal(size=(2, 3, 5, 5)), rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2))
    return {
        "rosenbrock": (rosenbrock, (rng.normal(size=9),), {}),
        "rnn": (layers.rnn_forward, rnn, {"layer": True}),
        "conv": (layers.conv_forward_naive, conv, {"layer": True}),
    }


@pytest.mark.parametrize("optimize", [False, True], ids=["readable", "optimized"])
@pytest.mark.parametrize("name", ["rosenbrock", "rnn", "conv"])
def test_every_comment_inside_a_loop_evaluates_to_its_line(name, optimize):
    """A loop's body carries the gate comments of the flat code, written with the body's names
    (`s3[i]`, `x[i + 1]`, `grad_x[i] += ...`), and each still equals its line at every iteration."""
    fn, args, flags = _looped_programs()[name]
    prog = compiler.gradient(fn, *args, explain=True, unroll=False, optimize=optimize, **flags)
    backward = prog.source.split(f"def {prog.layer.backward if prog.layer else 'backward'}(")[1]
    assert re.search(r"\n    for [ik] in range\(", backward)  # the convolution's positions: `for k`, divmod
    assert check_comments(prog, args) > 0
