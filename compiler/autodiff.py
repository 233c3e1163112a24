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
import numpy as np

from compiler.ir import MEMO_LIMIT, Const, Eqn, Graph, Var, dtype_name, stand_in, type_token
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


def _sample(v: Var | Const) -> object:
    return v.value if isinstance(v, Const) else stand_in(v.shape, v.dtype)


_RULE_RESULTS: dict[tuple, np.ndarray] = {}


def _rule_result(eqn: Eqn, rule: str, bindings: dict[str, Var | Const]) -> np.ndarray:
    """A stand-in of the local gradient's value: its shape and dtype (memoized: unrolled loops
    apply the same rule to values of the same types again and again)."""
    key = (
        eqn.op, rule, repr(eqn.params),
        tuple((k, v.shape, v.dtype) if isinstance(v, Var) else (k, v.key()) for k, v in bindings.items()),
    )
    if key not in _RULE_RESULTS:
        samples = {k: _sample(v) for k, v in bindings.items()}
        value = np.asarray(OPS[eqn.op].evaluate_rule(rule, samples, eqn.static))
        if len(_RULE_RESULTS) > MEMO_LIMIT:
            _RULE_RESULTS.clear()
        _RULE_RESULTS[key] = type_token(value)
    return _RULE_RESULTS[key]


def _static_types(bindings: dict[str, Var | Const]) -> tuple[tuple[str, object], ...]:
    """The shapes and dtypes a rule may read as `x.shape`, `x.dtype`: codegen writes them in."""
    return tuple(
        (f"{name}.{attr}", getattr(v, attr)) for name, v in bindings.items() for attr in ("shape", "dtype")
    )


def differentiate(forward: Graph, wrt: Sequence[str]) -> Graph:
    """Append the backward pass of `forward` with respect to the inputs named in `wrt`.

    The result's outputs are the forward output followed by one gradient per `wrt` name, in
    that order; `n_forward` marks where the backward equations start. Within one gate the
    gradients of the function's own inputs are written first, then those of intermediates,
    each group in argument order. Where an operand was broadcast against the gate's output,
    its gradient is summed back to the operand's shape. An input the output does not depend on
    gets a zero gradient.
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
    backward: list[Eqn] = []

    def grad_name(of: Var) -> str:
        if id(of) not in grad_names:
            grad_names[id(of)] = namer.grad_name(of.name)
        return grad_names[id(of)]

    def contribute(of: Var, eqn: Eqn, rule: str, operands: tuple, bindings: dict) -> None:
        """Append `of`'s gradient term from one gate: the rule, then the steps that bring it to
        `of`'s shape (a sum where `of` was broadcast) and dtype (a cast where the rule promoted
        a float32 value), the last of them adding onto `of`'s earlier gradient, if any."""
        sample = _rule_result(eqn, rule, bindings)
        lead = tuple(range(sample.ndim - len(of.shape)))
        kept = tuple(
            i for i, (mine, theirs) in enumerate(zip(of.shape, sample.shape[len(lead):])) if mine == 1 and theirs != 1
        )
        steps = [(op, {"axis": axes, "keepdims": op == "sum_keep"}) for op, axes in (("sum", lead), ("sum_keep", kept)) if axes]
        if dtype_name(sample.dtype) != of.dtype and np.dtype(of.dtype).kind == "f":
            steps.append(("astype", {"dtype": np.dtype(of.dtype)}))
        previous = gradients.get(id(of))
        # the last step adds onto an earlier gradient; the steps before it need a name of their own
        name = namer.claim(f"{grad_name(of)}_term") if previous is not None and steps else grad_name(of)
        term = Var(name, sample.shape, dtype_name(sample.dtype))
        backward.append(
            Eqn(eqn.op, operands, term, rule=rule, accumulate=None if steps else previous, loc=eqn.loc,
                params=eqn.params + _static_types(bindings), gate=eqn.out.name)
        )
        for index, (op, static) in enumerate(steps):
            step_row = OPS[op]
            if step_row.normalize is not None:
                static = step_row.normalize((term.shape,), static)
            result = np.asarray(step_row.compute(stand_in(term.shape, term.dtype), **static))
            last = index == len(steps) - 1
            reduced = Var(grad_name(of) if last else name, result.shape, dtype_name(result.dtype))
            backward.append(
                Eqn(op, (term,), reduced, accumulate=previous if last else None, loc=eqn.loc,
                    params=tuple(static.items()), gate=eqn.out.name)
            )
            term = reduced
        gradients[id(of)] = term

    (output,) = forward.outputs
    seed = Var(grad_name(output), output.shape, output.dtype)
    backward.append(Eqn("ones_like", (output,), seed))
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
            contribute(a, eqn, param, operands, bindings)

    results = []
    for v in wrt_vars:
        if id(v) not in gradients:
            zero = Var(grad_name(v), v.shape, v.dtype)
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
