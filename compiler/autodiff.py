"""Reverse mode: from a forward graph to a graph that also computes the gradients.

The backward pass starts with the seed `grad_L = 1.0` and walks the forward equations from the
output back to the inputs. Each gate through which gradient flows gets one backward equation
per differentiable input, applying that input's rule from the op table: local factor times
upstream gradient. A value used more than once sums its gradients by rebinding
(`grad_x = grad_x + ...`), so no array another name refers to is ever written into.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Sequence

from compiler.errors import SignatureError
import numpy as np

from compiler.ir import MEMO_LIMIT, Const, Eqn, Graph, Var, dtype_name, sample_of, stand_in
from compiler.naming import Namer
from compiler.ops import OPS


def active_values(forward: Graph, wrt: Sequence[Var]) -> set[Var]:
    """The variables that depend on `wrt` through differentiable operands (a Var hashes by
    identity)."""
    active = set(wrt)
    for eqn in forward.eqns:
        row = OPS[eqn.op]
        for param, a in zip(row.params, eqn.inputs):
            if a in active and row.differentiable(param):
                active.add(eqn.out)
                break
    return active


@dataclass(frozen=True)
class _Step:
    """One equation that brings a local gradient to its operand's shape or dtype (a sum, a cast)."""

    op: str
    params: tuple[tuple[str, object], ...]
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class _Contribution:
    """How one rule of one gate contributes to its operand's gradient, for operands of given
    types: the local gradient's shape and dtype, the static types codegen writes in, and the
    steps that follow the rule."""

    shape: tuple[int, ...]
    dtype: str
    static_types: tuple[tuple[str, object], ...]
    steps: tuple[_Step, ...]


@dataclass(frozen=True)
class _Target:
    """One operand of a gate that gets a gradient: its position among the gate's operands, the
    rule, `pick`, which takes the rule's operands out of the gate's operands followed by `out`
    and `grad`, how the rule's result reaches the operand's gradient, and the backward
    equation's static parameters (the gate's, then the types codegen writes in)."""

    position: int
    rule: str
    pick: Callable[[tuple], tuple]
    how: _Contribution
    params: tuple[tuple[str, object], ...]


def _picker(positions: tuple[int, ...]) -> Callable[[tuple], tuple]:
    """A function that takes the items at `positions` out of a tuple, as a tuple."""
    if len(positions) == 1:
        (only,) = positions
        return lambda values: (values[only],)
    return operator.itemgetter(*positions)


# Unrolled loops apply the same gate to values of the same types again and again: work out each
# kind of gate's backward plan once. Keyed as in `differentiate`.
_PLANS: dict[tuple, tuple[_Target, ...]] = {}


def _plan(eqn: Eqn, upstream: Var, order: tuple[int, ...]) -> tuple[_Target, ...]:
    """The targets of `eqn`'s backward gate, the operands at `order`."""
    row = OPS[eqn.op]
    bindings = dict(zip(row.params, eqn.inputs)) | {"out": eqn.out, "grad": upstream}
    places = {name: i for i, name in enumerate(row.params + ("out", "grad"))}
    targets = []
    for position in order:
        rule = row.params[position]
        how = _work_out_contribution(eqn, rule, bindings)
        # every backward equation of a plan shares one params tuple (codegen keys its cache of
        # lines on it)
        params = eqn.params + how.static_types
        targets.append(_Target(position, rule, _picker(tuple(places[n] for n in row.rule_names(rule))), how, params))
    return tuple(targets)


def _order(eqn: Eqn, active: set[Var], is_input: set[Var]) -> tuple[int, ...]:
    """The positions of the gate's operands that get a gradient: the function's own inputs
    first, then the rest, each in argument order."""
    row = OPS[eqn.op]
    positions = [i for i, (param, a) in enumerate(zip(row.params, eqn.inputs)) if a in active and row.differentiable(param)]
    return tuple(sorted(positions, key=lambda i: eqn.inputs[i] not in is_input))


def _work_out_contribution(eqn: Eqn, rule: str, bindings: dict[str, Var | Const]) -> _Contribution:
    """The local gradient's type, on stand-ins of the operands; then the steps that bring it to
    the operand's shape (a sum where the operand was broadcast) and dtype (a cast where the rule
    promoted a float32 value)."""
    row = OPS[eqn.op]
    of = bindings[rule]
    sample = np.asarray(row.evaluate_rule(rule, {k: sample_of(v) for k, v in bindings.items()}, eqn.static))
    lead = tuple(range(sample.ndim - len(of.shape)))
    kept = tuple(
        i for i, (mine, theirs) in enumerate(zip(of.shape, sample.shape[len(lead):])) if mine == 1 and theirs != 1
    )
    planned = [(op, {"axis": axes, "keepdims": op == "sum_keep"}) for op, axes in (("sum", lead), ("sum_keep", kept)) if axes]
    if dtype_name(sample.dtype) != of.dtype and np.dtype(of.dtype).kind == "f":
        planned.append(("astype", {"dtype": np.dtype(of.dtype)}))
    steps = []
    shape, dtype = sample.shape, dtype_name(sample.dtype)
    for op, static in planned:
        step_row = OPS[op]
        if step_row.normalize is not None:
            static = step_row.normalize((shape,), static)
        result = np.asarray(step_row.compute(stand_in(shape, dtype), **static))
        shape, dtype = result.shape, dtype_name(result.dtype)
        steps.append(_Step(op, tuple(static.items()), shape, dtype))
    static_types = tuple(
        (f"{name}.{attr}", getattr(v, attr)) for name, v in bindings.items() for attr in ("shape", "dtype")
    )
    return _Contribution(sample.shape, dtype_name(sample.dtype), static_types, tuple(steps))


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
    # keyed by the variables themselves: a Var hashes by identity
    grad_names: dict[Var, str] = {}
    gradients: dict[Var, Var] = {}
    backward: list[Eqn] = []

    def grad_name(of: Var) -> str:
        name = grad_names.get(of)
        if name is None:
            name = grad_names[of] = namer.grad_name(of.name)
        return name

    def contribute(of: Var, eqn: Eqn, target: _Target, operands: tuple) -> None:
        """Append `of`'s gradient term from one gate: the rule, then its steps (a sum, a cast),
        the last of them adding onto `of`'s earlier gradient, if any."""
        previous = gradients.get(of)
        how = target.how
        steps = how.steps
        if not steps:  # the common case: the rule's result is the term, and adds on itself
            term = Var(grad_name(of), how.shape, how.dtype)
            backward.append(Eqn(eqn.op, operands, term, target.rule, previous, eqn.loc, target.params, eqn.out.name))
            gradients[of] = term
            return
        # the last step adds onto an earlier gradient; the steps before it need a name of their own
        name = namer.claim(f"{grad_name(of)}_term") if previous is not None else grad_name(of)
        term = Var(name, how.shape, how.dtype)
        backward.append(Eqn(eqn.op, operands, term, target.rule, None, eqn.loc, target.params, eqn.out.name))
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            reduced = Var(grad_name(of) if last else name, step.shape, step.dtype)
            backward.append(
                Eqn(step.op, (term,), reduced, accumulate=previous if last else None, loc=eqn.loc,
                    params=step.params, gate=eqn.out.name)
            )
            term = reduced
        gradients[of] = term

    (output,) = forward.outputs
    seed = Var(grad_name(output), output.shape, output.dtype)
    backward.append(Eqn("ones_like", (output,), seed))
    gradients[output] = seed
    is_input = set(forward.inputs)

    params_keys: dict[int, str] = {}
    for eqn in reversed(forward.eqns):
        out = eqn.out
        upstream = gradients.get(out)
        if upstream is None:
            continue
        inputs = eqn.inputs
        params = eqn.params
        params_key = params_keys.get(id(params))
        if params_key is None:
            params_key = params_keys[id(params)] = repr(params)
        # the key of the gate's plan: what its backward equations depend on besides names (its
        # operands' types, and which of them get a gradient and are the function's own inputs)
        key = [eqn.op, params_key, out.shape, out.dtype, upstream.shape, upstream.dtype]
        for a in inputs:
            if type(a) is Var:
                key.append(a.shape)
                key.append(a.dtype)
                key.append((a in is_input) + 1 if a in active else 0)
            else:
                key.append(a.key())
        key = tuple(key)
        targets = _PLANS.get(key)
        if targets is None:
            targets = _PLANS[key] = _plan(eqn, upstream, _order(eqn, active, is_input))
            if len(_PLANS) > MEMO_LIMIT:
                _PLANS.clear()
        if not targets:
            continue
        values = inputs + (out, upstream)
        for target in targets:
            contribute(inputs[target.position], eqn, target, target.pick(values))

    results = []
    for v in wrt_vars:
        if v not in gradients:
            zero = Var(grad_name(v), v.shape, v.dtype)
            backward.append(Eqn("zeros_like", (v,), zero))
            gradients[v] = zero
        results.append(gradients[v])
    return Graph(
        forward.inputs,
        forward.eqns + tuple(backward),
        (output, *results),
        n_forward=len(forward.eqns),
        constants=forward.constants,
    )
