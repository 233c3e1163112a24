"""Reverse mode: from a forward graph to a graph that also computes the gradients.

The backward pass starts with the seed `grad_L = 1.0` and walks the forward equations from the
output back to the inputs. Each gate through which gradient flows gets one backward equation
per differentiable input, applying that input's rule from the op table: local factor times
upstream gradient. A value used more than once sums its gradients by rebinding
(`grad_x = grad_x + ...`), so no array another name refers to is ever written into.
"""

from __future__ import annotations

from typing import Sequence

from compiler.errors import SignatureError
from compiler.ir import Eqn, Graph, Var
from compiler.naming import Namer
from compiler.ops import OPS


def active_values(forward: Graph, wrt: Sequence[Var]) -> set[int]:
    """The ids of the variables that depend on `wrt` through differentiable operands."""
    active = {id(v) for v in wrt}
    for eqn in forward.eqns:
        row = OPS[eqn.op]
        if any(
            isinstance(a, Var) and id(a) in active and row.differentiable(param)
            for param, a in zip(row.params, eqn.inputs)
        ):
            active.add(id(eqn.out))
    return active


def differentiate(forward: Graph, wrt: Sequence[str]) -> Graph:
    """Append the backward pass of `forward` with respect to the inputs named in `wrt`.

    The result's outputs are the forward output followed by one gradient per `wrt` name, in
    that order; `n_forward` marks where the backward equations start. Within one gate the
    gradients of the function's own inputs are written first, then those of intermediates,
    each group in argument order. An input the output does not depend on gets a zero gradient.
    """
    by_name = {v.name: v for v in forward.inputs}
    unknown = [name for name in wrt if name not in by_name]
    if unknown:
        raise SignatureError(f"wrt names {unknown}, which are not inputs of the function {list(by_name)}")
    wrt_vars = [by_name[name] for name in wrt]
    active = active_values(forward, wrt_vars)
    namer = Namer(taken=[v.name for v in forward.inputs] + [e.out.name for e in forward.eqns])
    grad_names: dict[int, str] = {}
    gradients: dict[int, Var] = {}

    def gradient_var(of: Var) -> Var:
        if id(of) not in grad_names:
            grad_names[id(of)] = namer.grad_name(of.name)
        return Var(grad_names[id(of)], of.shape, of.dtype)

    (output,) = forward.outputs
    seed = gradient_var(output)
    backward = [Eqn("ones_like", (output,), seed)]
    gradients[id(output)] = seed
    is_input = {id(v) for v in forward.inputs}

    for eqn in reversed(forward.eqns):
        upstream = gradients.get(id(eqn.out))
        if upstream is None:
            continue
        row = OPS[eqn.op]
        bindings = dict(zip(row.params, eqn.inputs)) | {"out": eqn.out, "grad": upstream}
        targets = [
            (param, a)
            for param, a in zip(row.params, eqn.inputs)
            if isinstance(a, Var) and id(a) in active and row.differentiable(param)
        ]
        targets.sort(key=lambda target: id(target[1]) not in is_input)  # stable: inputs first
        for param, a in targets:
            operands = tuple(bindings[name] for name in row.rule_names(param))
            grad = gradient_var(a)
            backward.append(
                Eqn(eqn.op, operands, grad, rule=param, accumulate=gradients.get(id(a)), loc=eqn.loc)
            )
            gradients[id(a)] = grad

    results = []
    for v in wrt_vars:
        if id(v) not in gradients:
            zero = gradient_var(v)
            backward.append(Eqn("zeros_like", (v,), zero))
            gradients[id(v)] = zero
        results.append(gradients[id(v)])
    return Graph(
        forward.inputs,
        forward.eqns + tuple(backward),
        (output, *results),
        n_forward=len(forward.eqns),
        constants=forward.constants,
    )
