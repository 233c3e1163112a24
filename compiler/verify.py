"""The IR's verifier: the invariants every stage keeps, checked (the tests run it after every pass)."""

from __future__ import annotations

from compiler.errors import IRError
from compiler.ir import Atom, Backprop, Const, Graph, Var
from compiler.ops import OPS


def verify(code: Graph | Backprop) -> Graph | Backprop:
    """Check the invariants of a graph, or of a forward and backward pass, and return it
    unchanged; raise IRError on the first breach.

    Checked, of each graph: every op is in the table; forward equations have the op's arity and
    backward ones bind exactly the names their rule uses; every variable is bound once and before
    use; no equation reads a variable whose name a later binding has taken over; outputs are
    bound. Of a pair: the backward pass's inputs are its upstream gradients, then values of the
    forward pass; the seed starts from the forward pass's output and binds the upstream gradient.
    """
    if isinstance(code, Graph):
        return _verify_graph(code)
    _verify_graph(code.forward)
    _verify_graph(code.backward)
    if code.backward.inputs[: len(code.upstream)] != code.upstream:
        raise IRError("the backward pass's inputs do not start with its upstream gradients")
    forward_values = {id(v) for v in code.forward.inputs} | {id(e.out) for e in code.forward.eqns}
    stray = [v.name for v in code.cache if id(v) not in forward_values]
    if stray:
        raise IRError(f"the backward pass reads {stray}, which the forward pass does not compute")
    seed = code.seed
    if seed is not None and (seed.inputs != code.forward.outputs[:1] or code.upstream[:1] != (seed.out,)):
        raise IRError(f"the seed {seed} does not start from the output and bind the upstream gradient")
    return code


def _verify_graph(graph: Graph) -> Graph:
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
        expected = len(row.operands) if eqn.rule is None else len(row.rule_names(eqn.rule))
        if row.packs is not None and eqn.rule is None:  # one to len(operands) parts
            expected = min(max(len(eqn.inputs), 1), expected)
        if len(eqn.inputs) != expected:
            raise IRError(f"{where}: {len(eqn.inputs)} operands, {eqn.op} takes {expected}")
        for a in eqn.reads:
            read(a, where)
        bind(eqn.out, where)
    for v in graph.outputs:
        read(v, "outputs")
    return graph
