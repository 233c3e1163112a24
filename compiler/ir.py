"""The intermediate representation: values, equations and graphs.

Every stage of flatgrad (tracer, autodiff, passes, codegen) reads and writes these few frozen
dataclasses. A `Graph` is straight-line code in static single assignment form: each `Var` is
bound by exactly one equation (or is an input), and equations appear in execution order.

Names are part of the IR because the emitted code is for people: a `Var` carries the name it
will have in the generated source. Two distinct variables may share a name only when the later
one rebinds it (gradient accumulation, `grad_x = grad_x + ...`), and the verifier checks that
no equation reads a variable whose name has since been rebound.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Union

import numpy as np


def _slot_setters(cls: type, *fields: str) -> tuple:
    """Each field's slot setter, for a frozen class's own __init__.

    Every stage makes hundreds of thousands of variables and equations. The __init__ that
    dataclass writes for a frozen class goes through object.__setattr__ once per field; setting
    each slot through its descriptor does the same at about half the cost, and assigning a
    field afterwards still raises FrozenInstanceError.
    """
    return tuple(getattr(cls, field).__set__ for field in fields)


@dataclass(frozen=True, eq=False, slots=True, init=False)
class Var:
    """A value in the graph: its name in the emitted code, its shape and its NumPy dtype.

    Equality is identity: two variables with the same name (a rebinding) are still distinct.
    """

    name: str
    shape: tuple[int, ...] = ()
    dtype: str = "float64"

    def __init__(self, name: str, shape: tuple[int, ...] = (), dtype: str = "float64") -> None:
        _set_name(self, name)  # see _slot_setters
        _set_shape(self, shape)
        _set_dtype(self, dtype)

    def __repr__(self) -> str:
        return self.name


_set_name, _set_shape, _set_dtype = _slot_setters(Var, "name", "shape", "dtype")


@dataclass(frozen=True, eq=False)
class Const:
    """A literal operand: a Python number, or a NumPy array, baked into the code."""

    value: Union[float, int, bool, np.ndarray]

    @property
    def dtype(self) -> str:
        if isinstance(self.value, np.ndarray):
            return self.value.dtype.name
        if isinstance(self.value, bool):
            return "bool"
        return "int64" if isinstance(self.value, int) else "float64"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape if isinstance(self.value, np.ndarray) else ()

    def __repr__(self) -> str:
        if isinstance(self.value, np.ndarray):
            return f"const:{self.dtype}{list(self.shape)}"
        return repr(self.value)

    def key(self) -> tuple:
        """What makes two constants the same constant (for memo and CSE keys)."""
        if isinstance(self.value, np.ndarray):
            return ("array", self.value.dtype.str, self.value.shape, self.value.tobytes())
        return ("const", type(self.value).__name__, repr(self.value))


Atom = Union[Var, Const]


@functools.lru_cache(maxsize=None)
def dtype_name(dtype: np.dtype) -> str:
    """`dtype.name`, remembered: NumPy computes that property anew on every access."""
    return dtype.name


# Memo tables keyed by shapes and dtypes stay small; past this many entries they start over.
MEMO_LIMIT = 4096


class KindKeys:
    """Memo keys for kinds of equations: the one policy behind the hot paths' memo tables
    (autodiff's backward plans, common-subexpression elimination, codegen's line forms).

    A key is one flat tuple: the op, the rule, the static parameters' repr, what the caller
    adds, then what the memo depends on of each operand. Names never enter a key, so the
    equations of an unrolled loop share one memo entry.

    The static parameters and type facts are keyed by identity: autodiff gives every equation
    of one backward plan the same params and types tuples, so their repr is worked out once per
    plan, not once per equation. That holds while the tuples live, so a KindKeys serves one
    pass over one graph (or one kind of gate's plan).
    """

    def __init__(self) -> None:
        self._reprs: dict[tuple[int, int], str] = {}

    def params(self, eqn: Eqn) -> str:
        """The repr of `eqn`'s static parameters and type facts."""
        params, types = eqn.params, eqn.types
        text = self._reprs.get((id(params), id(types)))
        if text is None:
            text = self._reprs[(id(params), id(types))] = repr(params) + repr(types)
        return text

    def by_types(self, eqn: Eqn, *extra: object) -> tuple:
        """The key of work that depends on the operands' types, not on which values they are."""
        key = [eqn.op, eqn.rule, self.params(eqn), *extra]
        for a in eqn.inputs:
            if type(a) is Var:
                key.append(a.shape)
                key.append(a.dtype)
            else:
                key.append(a.key())
                key.append(None)
        return tuple(key)


def stand_in(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A concrete value of this shape and dtype, to learn what an expression makes of it.

    Integers and bools are zeros (an index of 0 is always in bounds); floats are ones (finite
    under log and division), plus the identity on a square matrix's diagonal, which makes it
    invertible (np.linalg.inv, solve and det's gradient).
    """
    if np.dtype(dtype).kind in "iub":
        return np.zeros(shape, dtype)
    if len(shape) >= 2 and shape[-1] == shape[-2]:
        return np.ones(shape, dtype) + np.eye(shape[-1], dtype=dtype)
    return np.ones(shape, dtype)


def sample_of(atom: Atom) -> object:
    """A concrete value of an operand's type: a constant as itself, a variable as its stand-in."""
    return atom.value if isinstance(atom, Const) else stand_in(atom.shape, atom.dtype)


@dataclass(frozen=True)
class Loc:
    """Where in the user's source an equation was traced."""

    file: str
    line: int
    function: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True, init=False)
class Eqn:
    """One gate: `out = op(*inputs)`.

    `rule` is None for the op's forward expression; otherwise it names the op parameter whose
    local gradient this equation computes (a backward gate), and `inputs` are bound, in order,
    to the names that gradient rule uses (see `ops.Op.rule_names`). When `accumulate` is set
    the equation adds its result to that earlier gradient: `out = accumulate + rule(...)`.

    `types` are the type facts of a backward gate: the shape and dtype each name of its rule
    had in the forward gate (`x`, `out`, `grad`), so that a rule may read `x.shape` of a value
    it does not take as an operand; codegen writes such facts in as literals.
    """

    op: str
    inputs: tuple[Atom, ...]
    out: Var
    rule: str | None = None
    accumulate: Var | None = None
    loc: Loc | None = None
    params: tuple[tuple[str, object], ...] = ()
    gate: str | None = None  # backward equations: the name of the forward gate's output
    types: tuple[tuple[str, tuple[int, ...], str], ...] = ()  # (name, shape, dtype) per rule name

    def __init__(
        self,
        op: str,
        inputs: tuple[Atom, ...],
        out: Var,
        rule: str | None = None,
        accumulate: Var | None = None,
        loc: Loc | None = None,
        params: tuple[tuple[str, object], ...] = (),
        gate: str | None = None,
        types: tuple[tuple[str, tuple[int, ...], str], ...] = (),
    ) -> None:
        _set_op(self, op)  # see _slot_setters
        _set_inputs(self, inputs)
        _set_out(self, out)
        _set_rule(self, rule)
        _set_accumulate(self, accumulate)
        _set_loc(self, loc)
        _set_params(self, params)
        _set_gate(self, gate)
        _set_types(self, types)

    @property
    def static(self) -> dict[str, object]:
        """The static parameters (axis, shape, index, ...) by name."""
        return dict(self.params)

    @property
    def reads(self) -> tuple[Atom, ...]:
        """Every operand, the accumulated gradient included."""
        return self.inputs + ((self.accumulate,) if self.accumulate is not None else ())

    def __str__(self) -> str:
        args = ", ".join(repr(a) for a in self.inputs)
        shown = [f"{k}={_show(v)}" for k, v in self.params]
        args += ("; " + ", ".join(shown)) if shown else ""
        head = self.op if self.rule is None else f"{self.op}.grad[{self.rule}]"
        text = f"{self.out.name} = {head}({args})"
        if self.accumulate is not None:
            text = f"{self.out.name} = {self.accumulate.name} + {head}({args})"
        return text


_set_op, _set_inputs, _set_out, _set_rule, _set_accumulate, _set_loc, _set_params, _set_gate, _set_types = (
    _slot_setters(Eqn, "op", "inputs", "out", "rule", "accumulate", "loc", "params", "gate", "types")
)


def _show(value: object) -> str:
    """A static parameter as the listing prints it (slices as `a:b`)."""
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, slice):
        parts = ["" if p is None else str(p) for p in (value.start, value.stop, value.step)]
        return ":".join(parts[:2] if value.step is None else parts)
    return repr(value)


@dataclass(frozen=True)
class Graph:
    """Straight-line code: inputs, equations in order, outputs."""

    inputs: tuple[Var, ...]
    eqns: tuple[Eqn, ...]
    outputs: tuple[Var, ...]
    constants: tuple[tuple[str, object], ...] = field(default=())
    # parameters declared static: their example values, baked into the code (the inputs of those
    # names are parameters the emitted functions check against these values and never read)
    static: tuple[tuple[str, object], ...] = field(default=())

    def __str__(self) -> str:
        return _listing(self.inputs, [self.eqns], self.outputs)


def _typed(v: Var) -> str:
    return f"{v.name}:{v.dtype}[{','.join(str(n) for n in v.shape)}]"


def _listing(inputs: tuple[Var, ...], sections: list[tuple[Eqn, ...]], outputs: tuple[Var, ...]) -> str:
    """The readable listing `str` gives: `{ lambda inputs . equations in (outputs) }`, a comment
    before each section after the first."""
    lines = ["{ lambda " + ", ".join(_typed(v) for v in inputs) + " ."]
    for index, eqns in enumerate(sections):
        if index:
            lines.append("  # backward")
        lines.extend(f"  {eqn}" for eqn in eqns)
    lines.append("  in (" + ", ".join(v.name for v in outputs) + ") }")
    return "\n".join(lines)


def values_read(eqns: tuple[Eqn, ...], outputs: tuple[Var, ...], candidates: list[Var]) -> tuple[Var, ...]:
    """Those of `candidates` that `eqns` read, or that are among `outputs`, and do not compute
    themselves, in candidates' order."""
    read: set[Atom] = set(outputs)  # Var and Const hash by identity
    for eqn in eqns:
        read.update(eqn.inputs)
        if eqn.accumulate is not None:
            read.add(eqn.accumulate)
    read.difference_update(eqn.out for eqn in eqns)
    return tuple([v for v in candidates if v in read])


@dataclass(frozen=True, eq=False)
class Decision:
    """A branch on a traced value (`if a > 0:`), as one path through the function takes it.

    `value` is what the branch asked for True or False; `condition` the equations (of the
    path's trace, in order) that compute it from the inputs, from which the module's `if` line
    is written; `source` the user's line.
    """

    value: Var
    taken: bool
    condition: tuple[Eqn, ...]
    loc: Loc | None = None
    source: str = ""


@dataclass(frozen=True, eq=False)
class Path:
    """One path through a function's branches on traced values: the decisions it takes, in
    the order the function meets them, and its straight-line forward graph."""

    decisions: tuple[Decision, ...]
    graph: Graph


@dataclass(frozen=True, eq=False)
class Branch:
    """One path through a function's branches, differentiated: the decisions it takes, its
    forward and backward pair, and the pair `value_and_grad` runs (seed folded), if another."""

    decisions: tuple[Decision, ...]
    pair: Backprop
    folded: Backprop | None = None


@dataclass(frozen=True)
class Backprop:
    """A differentiated function: its forward pass, its backward pass and the cache between them.

    `forward` maps the function's inputs to its outputs. `backward` is a graph of its own: its
    inputs are the `upstream` gradients (one per differentiated output, `grad_L`: the float
    outputs, or with `has_aux` the first; `differentiated` holds their positions), then the `cache`, the values
    of the forward pass it reads; its outputs are the gradients. `seed` is the equation that
    starts `value_and_grad`'s backward pass from the number one (`grad_L = 1.0`); None where
    that number has been folded into the gates it reaches (`passes.fold_seed`), and then the
    backward reads no upstream gradient.
    """

    forward: Graph
    backward: Graph
    upstream: tuple[Var, ...]
    seed: Eqn | None
    differentiated: tuple[int, ...] = (0,)  # the forward outputs the upstream gradients are of

    @classmethod
    def of(cls, forward: Graph, backward_eqns: tuple[Eqn, ...], grads: tuple[Var, ...],
           upstream: tuple[Var, ...], seed: Eqn | None, differentiated: tuple[int, ...] = (0,)) -> Backprop:
        """The pair, with the cache worked out: what `backward_eqns` read of the forward pass."""
        candidates = list(forward.inputs) + [e.out for e in forward.eqns]
        cache = values_read(backward_eqns, grads, candidates)
        return cls(forward, Graph(upstream + cache, backward_eqns, grads), upstream, seed, differentiated)

    @property
    def cache(self) -> tuple[Var, ...]:
        """What the backward pass reads of the forward pass, in forward order."""
        return self.backward.inputs[len(self.upstream):]

    # The listing's view, one straight line of code from the function's inputs to its value and
    # gradients: what a reader of `str(prog.graph)` and the tests of whole programs look at.
    @property
    def inputs(self) -> tuple[Var, ...]:
        return self.forward.inputs

    @property
    def outputs(self) -> tuple[Var, ...]:
        return self.forward.outputs + self.backward.outputs

    @property
    def constants(self) -> tuple[tuple[str, object], ...]:
        return self.forward.constants

    @property
    def static(self) -> tuple[tuple[str, object], ...]:
        return self.forward.static

    @property
    def forward_eqns(self) -> tuple[Eqn, ...]:
        return self.forward.eqns

    @property
    def backward_eqns(self) -> tuple[Eqn, ...]:
        """The backward pass's equations, `value_and_grad`'s seed first where there is one."""
        return ((self.seed,) if self.seed is not None else ()) + self.backward.eqns

    @property
    def eqns(self) -> tuple[Eqn, ...]:
        return self.forward.eqns + self.backward_eqns

    def __str__(self) -> str:
        return _listing(self.inputs, [self.forward_eqns, self.backward_eqns], self.outputs)
