"""The IR: its listing, its verifier, and the round trip through emitted code."""

from __future__ import annotations

import dataclasses

import pytest
from simple import simple
from staged import staged

import compiler
from compiler.autodiff import differentiate
from compiler.errors import IRError
from compiler.ir import Const, Eqn, Graph, Var
from compiler.verify import verify


def test_listing_is_one_equation_per_line():
    graph = differentiate(compiler.trace(simple, 1.0, 2.0, 3.0), ["x", "y", "z"])
    assert str(graph) == "\n".join(
        [
            "{ lambda x:float64[], y:float64[], z:float64[] .",
            "  q = add(x, y)",
            "  L = mul(q, z)",
            "  # backward",
            "  grad_L = ones_like(L)",
            "  grad_z = mul.grad[y](q, grad_L)",
            "  grad_q = mul.grad[x](z, grad_L)",
            "  grad_x = add.grad[x](grad_q)",
            "  grad_y = add.grad[y](grad_q)",
            "  in (L, grad_x, grad_y, grad_z) }",
        ]
    )


def test_every_stage_verifies():
    forward = verify(compiler.trace(staged, 1.0, 2.0))
    backward = verify(differentiate(forward, ["x", "y"]))
    assert backward.forward_eqns == forward.eqns
    accumulations = [e for e in backward.backward_eqns if e.accumulate is not None]
    assert [str(e) for e in accumulations] == [
        "grad_x = grad_x + neg.grad[x](grad_s3)",
        "grad_x = grad_x + add.grad[x](grad_num)",
        "grad_y = grad_y + neg.grad[x](grad_s0)",
    ]


x, y = Var("x"), Var("y")


@pytest.mark.parametrize(
    "graph, says",
    [
        (Graph((x,), (Eqn("mul", (x, y), Var("s")),), ()), "read before it is bound"),
        (Graph((x,), (Eqn("neg", (x,), x),), ()), "bound twice"),
        (Graph((x,), (Eqn("frobnicate", (x,), Var("s")),), ()), "unknown op"),
        (Graph((x,), (Eqn("mul", (x,), Var("s")),), ()), "1 operands, mul takes 2"),
        (Graph((x,), (Eqn("mul", (x, x, x), Var("s"), rule="x"),), ()), "3 operands, mul takes 2"),
        (Graph((x,), (), (Var("s"),)), "read before it is bound"),
        (Graph((x,), (Eqn("neg", (x,), Var("x")), Eqn("neg", (x,), Var("t"))), ()), "after its name was rebound"),
    ],
)
def test_verifier_catches_broken_graphs(graph, says):
    with pytest.raises(IRError, match=says):
        verify(graph)


def test_constants_are_operands():
    graph = verify(Graph((x,), (Eqn("mul", (Const(2.0), x), s := Var("s")),), (s,)))
    assert str(graph.eqns[0]) == "s = mul(2.0, x)"


@pytest.mark.parametrize("f, args", [(simple, (1.0, 2.0, 3.0)), (staged, (1.0, 2.0))], ids=["simple", "staged"])
def test_round_trip_through_the_emitted_forward(f, args):
    """Tracing the emitted forward code gives the same IR listing: names and gates survive
    (the staged sigmoid, fused for its stable gradient, is written as the op table spells it:
    `1 / (1 + ...)` for the user's `1.0 / (1 + ...)`)."""
    prog = compiler.gradient(f, *args)
    fused = ("sigy = div(1.0, ", "sigx = div(1.0, ")
    expected = str(compiler.trace(f, *args))
    for line in fused:
        expected = expected.replace(line, line.replace("1.0", "1"))
    assert str(compiler.trace(prog.module.forward, *args)) == expected


def test_a_backward_gate_carries_its_rules_types_as_a_field_not_as_params():
    """`np.sum`'s rule reads `x.shape` of a value it does not take as an operand: the backward
    gate knows x's type from `Eqn.types`, and its static parameters are the gate's own."""
    import numpy as np

    graph = differentiate(compiler.trace(lambda x: np.sum(x * 2.0), np.ones((3, 4))), ["x"])
    (summed,) = [e for e in graph.backward_eqns if e.op == "sum_all"]
    assert ("x", (3, 4), "float64") in summed.types
    assert all("." not in name for name, _ in summed.params)
    assert compiler.codegen.statement(summed) == "grad_s0 = np.full((3, 4), grad_L)"


def test_a_differentiated_function_is_a_forward_and_a_backward_pass_with_the_cache_between():
    """The backward pass is a graph of its own: it takes the upstream gradient and the cache,
    the forward values it reads, and gives the gradients."""
    pair = verify(differentiate(compiler.trace(simple, 1.0, 2.0, 3.0), ["x", "y", "z"]))
    assert [v.name for v in pair.forward.inputs] == ["x", "y", "z"]
    assert [v.name for v in pair.forward.outputs] == ["L"]
    assert [v.name for v in pair.upstream] == ["grad_L"]
    assert [v.name for v in pair.cache] == ["z", "q"]  # in forward order: inputs, then gates
    assert [v.name for v in pair.backward.inputs] == ["grad_L", "z", "q"]
    assert [v.name for v in pair.backward.outputs] == ["grad_x", "grad_y", "grad_z"]
    assert str(pair.seed) == "grad_L = ones_like(L)" and pair.seed not in pair.backward.eqns
    assert verify(pair.backward) is pair.backward  # it verifies alone: it reads only its inputs


def test_verifier_catches_a_backward_pass_that_reads_what_the_forward_does_not_compute():
    pair = differentiate(compiler.trace(simple, 1.0, 2.0, 3.0), ["x", "y", "z"])
    stranger = Var("r")
    inputs = (*pair.backward.inputs, stranger)
    broken = dataclasses.replace(pair, backward=dataclasses.replace(pair.backward, inputs=inputs))
    with pytest.raises(IRError, match=r"reads \['r'\], which the forward pass does not compute"):
        verify(broken)
    with pytest.raises(IRError, match="do not start with its upstream gradients"):
        verify(dataclasses.replace(pair, upstream=(stranger,)))
