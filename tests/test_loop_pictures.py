"""Loops in explain mode and in pictures: a loop's body carries the flat code's gate comments,
and `prog.dot` draws a loop the module writes as a loop once, in a box."""

from __future__ import annotations

import re
import shutil
import sys

import numpy as np
import pytest
from support import ROOT

import compiler
from compiler import visualize

sys.path.insert(0, str(ROOT / "examples"))
import layers  # noqa: E402
from neuron import neuron  # noqa: E402
from rosenbrock import rosenbrock  # noqa: E402

RNG = np.random.default_rng(11)
GATE = re.compile(r"^\s+g\d+ \[shape=", re.MULTILINE)
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


def _loop_bodies(source: str, function: str) -> list[list[str]]:
    """The lines inside each top-level `for` loop of an emitted function."""
    text = source.split(f"\ndef {function}(")[1].split("\n\n\ndef ")[0]
    bodies, body = [], None
    for line in text.splitlines():
        if line.startswith("    for "):
            body = []
            bodies.append(body)
        elif body is not None and line.startswith("        "):
            body.append(line.strip())
        else:
            body = None
    return bodies


def _rnn_args():
    return (RNG.normal(size=(2, 5, 3)), RNG.normal(size=(2, 4)), RNG.normal(size=(3, 4)), RNG.normal(size=(4, 4)),
            RNG.normal(size=4))


# ----------------------------------------------------------------------------- explain mode


def test_explained_loops_carry_the_gate_comments_and_give_the_flat_gradients():
    x = RNG.normal(size=9)
    looped = compiler.gradient(rosenbrock, x, explain=True, unroll=False)
    flat = compiler.gradient(rosenbrock, x, explain=True, unroll=True)
    (forward,) = _loop_bodies(looped.source, "forward_with_cache")
    assert not any("#" in line for line in forward)  # the forward pass has no comments, as flat
    for function in ("value_and_grad", "backward"):
        backward = _loop_bodies(looped.source, function)[-1]
        code = [line for line in backward if not line.startswith("#")]
        # every gate line explained; `x[i]` taken again where the backward reads it, and said so
        retaken = "  # a view of the forward pass, taken again"
        assert code and all("  # local " in line or line.endswith(retaken) for line in code)
        comments = "\n".join(backward)
        # the block comments name the forward loop's lines, with the body's names and index
        assert "# s4 = s3[i] ** 2: pow gate" in comments and "# s0 = x[i + 1]: index gate" in comments
        assert "from examples/rosenbrock.py:12: total = total + 100.0" in comments  # the user's file:line
        assert re.search(r"(grad_s\d+) = 2 \* s3\[i\] \* (grad_s\d+)  # local 2 \* s3\[i\] × upstream \2", comments)
        assert re.search(r"grad_x\[i \+ 1\] \+= (grad_s\d+)  # local 1 × upstream \1, added to grad_x\[i \+ 1\]",
                         comments)
        bound = {line.split(" = ")[0] for line in code}  # the body's own names (the view it takes)
        flat_names = set(re.findall(r"\bs\d\d\b|x\[\d\]", comments)) - bound
        assert not flat_names  # no one iteration's names or places
    value, grads = looped.value_and_grad(x)
    expected_value, expected = flat.value_and_grad(x)
    assert value == pytest.approx(expected_value, rel=1e-13)
    np.testing.assert_allclose(grads[0], expected[0], rtol=1e-12)
    _, cache = looped.forward_with_cache(x)
    np.testing.assert_allclose(looped.backward(1.0, cache)[0], expected[0], rtol=1e-12)
    np.testing.assert_allclose(looped.grad(x)[0], expected[0], rtol=1e-12)
    step = 1e-6 * np.eye(9)
    central = [(rosenbrock(x + e) - rosenbrock(x - e)) / 2e-6 for e in step]
    np.testing.assert_allclose(grads[0], central, rtol=1e-6, atol=1e-6)


def test_an_explained_rnn_layer_names_its_stored_states_in_the_comments():
    args = _rnn_args()
    looped = compiler.gradient(layers.rnn_forward, *args, layer=True, explain=True, unroll=False)
    flat = compiler.gradient(layers.rnn_forward, *args, layer=True, explain=True, unroll=True)
    (body,) = _loop_bodies(looped.source, "rnn_backward")
    assert "# h[i + 1] = np.tanh(s4): tanh gate, local gradient 1 - tanh^2 from its output" in body
    assert any(line.endswith("× upstream dh_3") and "(1 - h[i + 1] ** 2)" in line for line in body)
    out, cache = looped.forward_with_cache(*args)
    expected, flat_cache = flat.forward_with_cache(*args)
    dout = RNG.normal(size=out.shape)
    for ours, theirs in zip(looped.backward(dout, cache), flat.backward(dout, flat_cache)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- pictures


def test_rosenbrock_draws_one_iteration_in_a_loop_box():
    x = RNG.normal(size=9)
    prog = compiler.gradient(rosenbrock, x, unroll=False)
    dot = prog.dot(x)
    assert dot.count("subgraph cluster_") == 1 and 'label="for i in range(8)"' in dot
    box = dot.split("subgraph cluster_loop0 {")[1].split("  }")[0]
    assert len(GATE.findall(box)) == 11 and len(GATE.findall(dot)) == 11  # one iteration, not 8
    assert "g10 -> g6 [label=<<b>total</b>>, style=dashed" in dot  # the carried value, back into the box
    assert "in0 -> g0 [label=<<b>x</b><br/>" in dot  # from before the loop, with its value
    out = next(line for line in dot.splitlines() if line.startswith("  g10 -> out"))
    assert f"{rosenbrock(x):.2f}" in out  # out of the box: the value after the loop
    assert prog.dot(x) == dot  # deterministic


def test_an_rnn_draws_its_carried_state_as_an_edge_back_into_the_box():
    args = _rnn_args()
    dot = compiler.gradient(layers.rnn_forward, *args, layer=True, unroll=False).dot(*args)
    assert dot.count("subgraph cluster_") == 1 and len(GATE.findall(dot)) == 6 + 1  # the step, then the stack
    assert re.search(r"g5 -> g2 \[label=<<b>h</b>>, style=dashed", dot)  # the state, carried
    assert re.search(r"in1 -> g2 \[label=<<b>h0</b><br/>", dot)  # the first iteration's, from before the loop
    for t in range(1, 6):  # what the loop keeps, as the code after it reads it
        assert re.search(rf"g5 -> g\d+ \[label=<<b>h\[{t}\]</b><br/>", dot)


def test_a_loop_that_reads_another_loops_array_draws_an_edge_between_the_boxes():
    def two(x):
        ys = [np.sin(x[i]) * 2.0 for i in range(5)]
        total = 0.0
        for i in range(5):
            total = total + ys[i] * x[i + 1]
        return total

    x = RNG.normal(size=6)
    dot = compiler.gradient(two, x, unroll=False).dot(x)
    assert dot.count("subgraph cluster_") == 2
    first, second = (dot.split(f"subgraph cluster_loop{k} {{")[1].split("  }")[0] for k in (0, 1))
    last = re.findall(r"(g\d+) \[shape", first)[-1]
    gates = re.findall(r"(g\d+) \[shape", second)
    assert re.search(rf"{last} -> {gates[1]} \[label=<<b>\w+</b>>\];", dot)  # the whole array, one edge


def test_flat_programs_draw_every_iteration_as_before():
    x = RNG.normal(size=6)
    looped = compiler.gradient(rosenbrock, x, unroll=False)
    flat = compiler.gradient(rosenbrock, x)  # 60 equations: flat by default
    assert "cluster" not in flat.dot(x) and len(GATE.findall(flat.dot(x))) == 55
    assert visualize.dot_source(looped.graph, (x,)) == flat.dot(x)  # unroll=True: every iteration
    at = (2.0, -1.0, -3.0, -2.0, -3.0)
    golden = (ROOT / "tests" / "golden" / "neuron.dot").read_text()
    assert compiler.gradient(neuron, *at, unroll=False).dot(*at) == golden  # no loop: as it was


@needs_dot
def test_a_loop_box_is_drawn_by_graphviz(tmp_path):
    args = _rnn_args()
    dot = compiler.gradient(layers.rnn_forward, *args, layer=True, unroll=False).dot(*args)
    svg = visualize.render(dot, tmp_path / "rnn.svg").read_text()
    assert "for i in range(5)" in svg and svg.count('class="cluster"') == 1
