"""The IR's verifier: the invariants every stage keeps, checked (the tests run it after every pass)."""

from __future__ import annotations

from compiler.errors import IRError
from compiler.ir import Atom, Const, Graph, Var
from compiler.ops import OPS


def verify(graph: Graph) -> Graph:
    """Check the graph's invariants and return it unchanged; raise IRError on the first breach.

    Checked: every op is in the table; forward equations have the op's arity and backward ones
    bind exactly the names their rule uses; every variable is bound once and before use; no
    equation reads a variable whose name a later binding has taken over; outputs are bound.
    """
    bound: dict[int, Var] = {}
    current: dict[str, Var] = {}

    def bind(v: Var, where: str) -> None:
        if id(v) in bound:
            raise IRError(f"{where}: {v.name} is bound twice")
        bound[id(v)] = v
        current[v.name] = v

    def read(a: Atom, where: str) -> None:
        if isinstance(a, Const):
            return
        if id(a) not in bound:
            raise IRError(f"{where}: {a.name} is read before it is bound")
        if current[a.name] is not a:
            raise IRError(f"{where}: {a.name} is read after its name was rebound")

    for v in graph.inputs:
        bind(v, "inputs")
    for i, eqn in enumerate(graph.eqns):
        where = f"equation {i} ({eqn})"
        if eqn.op not in OPS:
            raise IRError(f"{where}: unknown op {eqn.op!r}")
        row = OPS[eqn.op]
        expected = len(row.params) if eqn.rule is None else len(row.rule_names(eqn.rule))
        if len(eqn.inputs) != expected:
            raise IRError(f"{where}: {len(eqn.inputs)} operands, {eqn.op} takes {expected}")
        for a in eqn.reads:
            read(a, where)
        bind(eqn.out, where)
    for v in graph.outputs:
        read(v, "outputs")
    if graph.n_forward is not None and not 0 <= graph.n_forward <= len(graph.eqns):
        raise IRError(f"n_forward={graph.n_forward} is out of range")
    return graph
