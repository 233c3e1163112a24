"""Reverse mode: from a forward graph to its backward pass (`ir.Backprop`).

The backward pass starts from the upstream gradient `grad_L` (in `value_and_grad`, the seed
`grad_L = 1.0`) and walks the forward equations from the
output back to the inputs. Each gate through which gradient flows gets one backward equation
per differentiable input, applying that input's rule from the op table: local factor times
upstream gradient. A value used more than once sums its gradients by rebinding
(`grad_x = grad_x + ...`), so no array another name refers to is ever written into.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from compiler.errors import SignatureError
from compiler.ir import MEMO_LIMIT, Backprop, Eqn, Graph, KindKeys, Var, dtype_name, sample_of, stand_in
from compiler.naming import GRAD_PREFIX, Namer, term_name
from compiler.ops import OPS


def differentiated_outputs(forward: Graph, has_aux: bool = False) -> tuple[int, ...]:
    """The positions of the outputs the backward pass takes an upstream gradient for: every float
    output, or with `has_aux` the first alone (the others are returned, never differentiated)."""
    if has_aux:
        return (0,)
    return tuple(i for i, v in enumerate(forward.outputs) if np.dtype(v.dtype).kind == "f")


def differentiate(
    forward: Graph, wrt: Sequence[str], grad_prefix: str = GRAD_PREFIX, has_aux: bool = False
) -> Backprop:
    """The backward pass of `forward` with respect to the inputs named in `wrt`, beside it.

    The backward pass starts from the upstream gradients `grad_L`, one per differentiated
    output (`differentiated_outputs`) and of its shape (for an array output the gradients are a
    vector-Jacobian product, for several the sum of theirs), and gives one gradient per
    `wrt` name, each named `grad_prefix` + the value's name (`grad_x`, or a course's `dx`).
    Within one gate the function's own inputs get their gradients first, then intermediates,
    each in argument order. An operand broadcast against the gate's output has its gradient
    summed back to its shape. An input the output does not depend on gets a zero gradient.
    """
    wrt_vars = _inputs_named(forward, wrt)
    taken = [v.name for v in forward.inputs] + [e.out.name for e in forward.eqns]
    names = _GradNames(Namer(taken, grad_prefix))
    plans = _Plans(forward, active_values(forward, wrt_vars))
    differentiated = differentiated_outputs(forward, has_aux)
    outputs = [forward.outputs[i] for i in differentiated]
    starts = tuple(Var(names.upstream(v, set(taken)), v.shape, v.dtype) for v in outputs)
    # one number's backward pass starts, in `value_and_grad`, from the number one; arrays' and
    # several outputs' only from the upstream gradients `backward` is given
    scalar = differentiated == (0,) and outputs[0].shape == ()
    seed = Eqn("ones_like", (outputs[0],), starts[0]) if scalar else None
    backward: list[Eqn] = []
    grads: dict[Var, Var] = dict(zip(outputs, starts))  # a Var hashes by identity
    for eqn in reversed(forward.eqns):
        upstream = grads.get(eqn.out)
        if upstream is None:
            continue
        values = eqn.inputs + (eqn.out, upstream)
        for target in plans.targets(eqn, upstream):
            of = eqn.inputs[target.position]
            grads[of] = _contribute(backward, eqn, target, target.pick(values), of, grads.get(of), names)
    for v in wrt_vars:
        if v not in grads:  # the output does not depend on v
            backward.append(Eqn("zeros_like", (v,), Var(names.grad(v), v.shape, v.dtype)))
            grads[v] = backward[-1].out
    return Backprop.of(forward, tuple(backward), tuple(grads[v] for v in wrt_vars), starts, seed, differentiated)


def active_values(forward: Graph, wrt: Sequence[Var]) -> set[Var]:
    """The float variables that depend on `wrt` through differentiable operands (a Var hashes
    by identity). An integer or bool value (`argmax`, `astype(int)`) is an input of later ops,
    never differentiated."""
    active = set(wrt)
    for eqn in forward.eqns:
        if not eqn.out.dtype.startswith("float"):
            continue
        row = OPS[eqn.op]
        for param, a in zip(row.operands, eqn.inputs):
            if a in active and row.differentiable(param):
                active.add(eqn.out)
                break
    return active


def _inputs_named(forward: Graph, wrt: Sequence[str]) -> list[Var]:
    """The inputs of `forward` named in `wrt`, in that order."""
    by_name = {v.name: v for v in forward.inputs}
    unknown = [name for name in wrt if name not in by_name]
    if unknown:
        raise SignatureError(f"wrt names {unknown}, which are not inputs of the function {list(by_name)}")
    return [by_name[name] for name in wrt]


class _GradNames:
    """The names of gradients, each claimed when the backward pass first needs it."""

    def __init__(self, namer: Namer) -> None:
        self._namer = namer
        self._grads: dict[Var, str] = {}

    def grad(self, of: Var) -> str:
        """The name of `of`'s gradient."""
        name = self._grads.get(of)
        if name is None:
            name = self._grads[of] = self._namer.grad_name(of.name)
        return name

    def upstream(self, of: Var, forward_names: set[str]) -> str:
        """The name of output `of`'s upstream gradient, claimed before any other gradient's: that of
        the name the source gave it (`dout` for `out_49`, the last of a rebound `out`)."""
        base = re.sub(r"_\d+$", "", of.name)
        rebound = base != of.name and (base in forward_names or f"{base}_1" in forward_names - {of.name})
        name = self._grads[of] = self._namer.grad_name(base if rebound else of.name)
        return name

    def term(self, of: Var) -> str:
        """A fresh name for a term of `of`'s gradient that is summed or cast before it adds on."""
        return self._namer.claim(term_name(self.grad(of)))


def _contribute(
    backward: list[Eqn], eqn: Eqn, target: _Target, operands: tuple, of: Var, previous: Var | None, names: _GradNames
) -> Var:
    """Append the equations that add gate `eqn`'s term onto `of`'s gradient so far, `previous`
    (None before the first term): the rule's, then its steps (a sum, a cast). Return `of`'s new
    gradient.

    They are appended here rather than returned: a sequence built and taken apart per term
    costs about 2% of `differentiate`.
    """
    steps = target.steps
    if not steps:  # the common case, kept fast: the rule's equation adds on itself
        term = Var(names.grad(of), target.shape, target.dtype)
        backward.append(
            Eqn(eqn.op, operands, term, target.rule, previous, eqn.loc, target.params, eqn.out.name, target.types)
        )
        return term
    if OPS[eqn.op].grads[target.rule] == "grad":  # the gradient passes through: the step reads it
        (term,) = operands
        name = names.term(of) if len(steps) > 1 else ""
    else:
        # a term of its own name: `of`'s gradient never holds a value of another shape (and the
        # last equation reads `previous`, so the ones before it must not rebind its name)
        name = names.term(of)
        term = Var(name, target.shape, target.dtype)
        backward.append(
            Eqn(eqn.op, operands, term, target.rule, None, eqn.loc, target.params, eqn.out.name, target.types)
        )
    for index, step in enumerate(steps, 1):
        last = index == len(steps)
        reduced = Var(names.grad(of) if last else name, step.shape, step.dtype)
        accumulate = previous if last else None
        backward.append(Eqn(step.op, (term,), reduced, None, accumulate, eqn.loc, step.params, eqn.out.name))
        term = reduced
    return term


@dataclass(frozen=True)
class _Step:
    """One equation that brings a local gradient to its operand's shape or dtype (a sum, a cast)."""

    op: str
    params: tuple[tuple[str, object], ...]
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class _Target:
    """One operand of a gate that gets a gradient, and how its backward equations are written."""

    position: int  # among the gate's operands
    rule: str  # the op parameter whose gradient rule applies
    pick: Callable[[tuple], tuple]  # the rule's operands, out of the gate's operands, `out` and `grad`
    params: tuple[tuple[str, object], ...]  # the gate's static parameters
    types: tuple[tuple[str, tuple[int, ...], str], ...]  # each rule name's shape and dtype (`Eqn.types`)
    shape: tuple[int, ...]  # of the rule's result
    dtype: str  # of the rule's result
    steps: tuple[_Step, ...]  # what brings the rule's result to the operand's shape and dtype


# Unrolled loops apply the same gate to values of the same types again and again: work out each
# kind of gate's backward plan once. Keyed in `_Plans.targets`.
_PLANS: dict[tuple, tuple[_Target, ...]] = {}


class _Plans:
    """The backward plan of each gate of one forward graph: the targets of its rules."""

    def __init__(self, forward: Graph, active: set[Var]) -> None:
        self._active = active
        self._is_input = set(forward.inputs)
        self._keys = KindKeys()

    # a method rather than __call__, which costs more per gate
    def targets(self, eqn: Eqn, upstream: Var) -> tuple[_Target, ...]:
        """The targets of `eqn`'s plan, for an upstream gradient of `upstream`'s type."""
        active, is_input = self._active, self._is_input
        # what the gate's backward equations depend on besides names: its operands' types, and
        # which of them get a gradient and are the function's own inputs
        key = [eqn.op, self._keys.params(eqn), eqn.out.shape, eqn.out.dtype, upstream.shape, upstream.dtype]
        for a in eqn.inputs:
            if type(a) is Var:
                key.append(a.shape)
                key.append(a.dtype)
                key.append((a in is_input) + 1 if a in active else 0)
            else:
                key.append(a.key())
        key = tuple(key)
        plan = _PLANS.get(key)
        if plan is None:
            plan = _PLANS[key] = _plan(eqn, upstream, _order(eqn, active, is_input))
            if len(_PLANS) > MEMO_LIMIT:
                _PLANS.clear()
        return plan


def _order(eqn: Eqn, active: set[Var], is_input: set[Var]) -> tuple[int, ...]:
    """The positions of the gate's operands that get a gradient: the function's own inputs
    first, then the rest, each in argument order."""
    row = OPS[eqn.op]
    positions = [
        i for i, (param, a) in enumerate(zip(row.operands, eqn.inputs)) if a in active and row.differentiable(param)
    ]
    return tuple(sorted(positions, key=lambda i: eqn.inputs[i] not in is_input))


def _plan(eqn: Eqn, upstream: Var, order: tuple[int, ...]) -> tuple[_Target, ...]:
    """The targets of `eqn`'s backward gate, the operands at `order`, worked out on stand-ins."""
    row = OPS[eqn.op]
    bindings = dict(zip(row.operands, eqn.inputs)) | {"out": eqn.out, "grad": upstream}
    # (a row that packs its operands names more than a gate may take: those it took)
    places = {name: i for i, name in enumerate(row.operands[: len(eqn.inputs)] + ("out", "grad"))}
    # one params and one types tuple for the whole plan: memo keys work out their repr once
    # (see ir.KindKeys)
    params = eqn.params
    types = tuple((name, v.shape, v.dtype) for name, v in bindings.items())
    targets = []
    for position in order:
        rule = row.operands[position]
        local = np.asarray(row.evaluate_rule(rule, {k: sample_of(v) for k, v in bindings.items()}, eqn.static))
        pick = _picker(tuple(places[name] for name in row.rule_names(rule)))
        steps = _steps(local, bindings[rule])
        targets.append(_Target(position, rule, pick, params, types, local.shape, dtype_name(local.dtype), steps))
    return tuple(targets)


def _picker(positions: tuple[int, ...]) -> Callable[[tuple], tuple]:
    """A function that takes the items at `positions` out of a tuple, as a tuple."""
    if len(positions) == 1:
        (only,) = positions
        return lambda values: (values[only],)
    return operator.itemgetter(*positions)


def _steps(local: np.ndarray, of: Var) -> tuple[_Step, ...]:
    """The equations that bring a local gradient (`local`, on stand-ins) to its operand's type:

    - a sum over the leading axes broadcasting added to the operand;
    - a sum, keeping dims, over the axes where the operand has size 1 and `local` has not;
    - a cast where the rule promoted a float32 operand.
    """
    lead = tuple(range(local.ndim - len(of.shape)))
    sizes = zip(of.shape, local.shape[len(lead):])  # each remaining axis's, in the operand and in `local`
    kept = tuple(i for i, (mine, theirs) in enumerate(sizes) if mine == 1 and theirs != 1)
    sums = (("sum", lead), ("sum_keep", kept))
    planned = [(op, {"axis": axes, "keepdims": op == "sum_keep"}) for op, axes in sums if axes]
    if dtype_name(local.dtype) != of.dtype and np.dtype(of.dtype).kind == "f":
        planned.append(("astype", {"dtype": np.dtype(of.dtype)}))
    steps = []
    shape, dtype = local.shape, dtype_name(local.dtype)
    for op, static in planned:
        row = OPS[op]
        if row.normalize is not None:
            static = row.normalize((shape,), static)
        result = np.asarray(row.compute(stand_in(shape, dtype), **static))
        shape, dtype = result.shape, dtype_name(result.dtype)
        steps.append(_Step(op, tuple(static.items()), shape, dtype))
    return tuple(steps)
