"""Reverse mode: from a forward graph to a graph that also computes the gradients.

The backward pass starts with the seed `grad_L = 1.0` and walks the forward equations from the
output back to the inputs. Each gate through which gradient flows gets one backward equation
per differentiable input, applying that input's rule from the op table: local factor times
upstream gradient. A value used more than once sums its gradients by rebinding
(`grad_x = grad_x + ...`), so no array another name refers to is ever written into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from compiler.errors import SignatureError
import numpy as np

from compiler.ir import MEMO_LIMIT, Const, Eqn, Graph, Var, dtype_name, stand_in
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


def _sample(v: Var | Const) -> object:
    return v.value if isinstance(v, Const) else stand_in(v.shape, v.dtype)


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
    types: the rule's operand names, the local gradient's shape and dtype, the static types
    codegen writes in, and the steps that follow the rule."""

    names: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    static_types: tuple[tuple[str, object], ...]
    steps: tuple[_Step, ...]


# Unrolled loops apply the same rule to values of the same types again and again: work out each
# kind of contribution once. Keyed by `_gate_key` and the rule.
_CONTRIBUTIONS: dict[tuple, _Contribution] = {}


def _gate_key(eqn: Eqn, bindings: dict[str, Var | Const]) -> tuple:
    """What a gate's contributions depend on: its op, static parameters and the types of its
    bindings (which are the op's parameters, `out` and `grad`, in that order)."""
    types = tuple([(v.shape, v.dtype) if isinstance(v, Var) else v.key() for v in bindings.values()])
    return (eqn.op, repr(eqn.params), types)


def _contribution(gate_key: tuple, eqn: Eqn, rule: str, bindings: dict[str, Var | Const]) -> _Contribution:
    """The contribution of `eqn`'s rule for `rule` to that operand's gradient (memoized)."""
    key = (gate_key, rule)
    known = _CONTRIBUTIONS.get(key)
    if known is None:
        known = _work_out_contribution(eqn, rule, bindings)
        if len(_CONTRIBUTIONS) > MEMO_LIMIT:
            _CONTRIBUTIONS.clear()
        _CONTRIBUTIONS[key] = known
    return known


def _work_out_contribution(eqn: Eqn, rule: str, bindings: dict[str, Var | Const]) -> _Contribution:
    """The local gradient's type, on stand-ins of the operands; then the steps that bring it to
    the operand's shape (a sum where the operand was broadcast) and dtype (a cast where the rule
    promoted a float32 value)."""
    row = OPS[eqn.op]
    of = bindings[rule]
    sample = np.asarray(row.evaluate_rule(rule, {k: _sample(v) for k, v in bindings.items()}, eqn.static))
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
    return _Contribution(row.rule_names(rule), sample.shape, dtype_name(sample.dtype), static_types, tuple(steps))


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

    def contribute(of: Var, eqn: Eqn, rule: str, operands: tuple, how: _Contribution) -> None:
        """Append `of`'s gradient term from one gate: the rule, then its steps, the last of them
        adding onto `of`'s earlier gradient, if any."""
        previous = gradients.get(of)
        steps = how.steps
        # the last step adds onto an earlier gradient; the steps before it need a name of their own
        name = namer.claim(f"{grad_name(of)}_term") if previous is not None and steps else grad_name(of)
        term = Var(name, how.shape, how.dtype)
        # without static parameters of its own, a backward equation shares its static types'
        # tuple with every equation of its kind (codegen keys its cache of lines on it)
        params = eqn.params + how.static_types if eqn.params else how.static_types
        backward.append(Eqn(eqn.op, operands, term, rule, None if steps else previous, eqn.loc, params, eqn.out.name))
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

    for eqn in reversed(forward.eqns):
        upstream = gradients.get(eqn.out)
        if upstream is None:
            continue
        row = OPS[eqn.op]
        # the operands that get a gradient: the function's own inputs first, then the rest
        inputs_first: list[tuple[str, Var]] = []
        intermediates: list[tuple[str, Var]] = []
        for param, a in zip(row.params, eqn.inputs):
            if a in active and row.differentiable(param):
                (inputs_first if a in is_input else intermediates).append((param, a))
        if not inputs_first and not intermediates:
            continue
        bindings = dict(zip(row.params, eqn.inputs))
        bindings["out"] = eqn.out
        bindings["grad"] = upstream
        gate_key = _gate_key(eqn, bindings)
        for param, a in inputs_first + intermediates:
            how = _contribution(gate_key, eqn, param, bindings)
            contribute(a, eqn, param, tuple([bindings[name] for name in how.names]), how)

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
