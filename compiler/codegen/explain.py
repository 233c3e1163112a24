"""Explain mode: what each backward line does, for a learner."""

from __future__ import annotations

import ast

from compiler.codegen.expressions import expression, unparse
from compiler.ir import Eqn, Var
from compiler.ops import OPS


def explanation(eqn: Eqn, gates: dict[str, str]) -> str:
    """What a backward line does, for a learner: its gate, the gate's pattern, the forward line
    it differentiates, and the chain rule it applies (local gradient times upstream)."""
    if eqn.gate is None:
        if eqn.op == "ones_like":
            return "the seed: the gradient of the output with respect to itself is 1"
        return "no path from this input to the output: its gradient is 0"
    # optimize mode may have dropped the gate's own line (a copy `out = +x` reads x instead)
    forward = gates.get(eqn.gate, f"{eqn.gate}, a line optimize mode dropped")
    row = OPS[eqn.op]
    if eqn.rule is None:  # a step autodiff added after a gate's rule
        what = {
            "astype": f"casts the gradient back to {eqn.out.dtype}, the dtype of the value",
        }.get(eqn.op, f"sums the gradient over the axes `{eqn.gate}`'s operand was broadcast along")
        return f"{what} (`{forward}`)"
    tree = expression(eqn)
    if eqn.accumulate is not None:
        tree = tree.right
    upstream_var = dict(zip(row.rule_names(eqn.rule), eqn.inputs))["grad"]
    upstream = upstream_var.name if isinstance(upstream_var, Var) else repr(upstream_var)
    rule = unparse(ast.Expr(tree))
    if rule == upstream:
        chain = f"passes upstream {upstream} through"
    elif isinstance(tree, ast.UnaryOp) and unparse(ast.Expr(tree.operand)) == upstream:
        chain = f"local -1 × upstream {upstream}"
    elif isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.Mult) and unparse(ast.Expr(tree.right)) == upstream:
        chain = f"local {unparse(ast.Expr(tree.left))} × upstream {upstream}"
    else:
        chain = f"chain rule: {rule}"
    if eqn.accumulate is not None:
        chain += f", added to {eqn.accumulate.name} (the value feeds several gates)"
    return f"{row.pattern} at `{forward}` — {chain}"
