"""Optimizing passes for `optimize=True`: pure functions from a graph to a graph.

Readable mode (the default) runs only `drop_unread_zeroing` (it drops a copy per write into an
array that changes no result): the lecture's one-gate-per-line code, copies and all. Optimize
mode runs `optimize_forward` on the traced graph (before autodiff, so fused gates get their own
simple local gradients), `optimize` on the differentiated function's
forward and backward passes seen as one straight line, and `fold_seed` on that for the body of
`value_and_grad`, which starts from the number 1.0. Each
pass keeps the graph's outputs, its numbers and the IR's invariants (`verify.verify`); the tests run
the verifier after every pass.
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import functools
from typing import Callable, Iterable, Sequence

import numpy as np

from compiler.ir import Atom, Backprop, Const, Eqn, Graph, KindKeys, Var, sample_of, stand_in
from compiler.naming import is_temporary
from compiler.ops import OPS, Op

Pass = Callable[[Graph], Graph]


def _uses(graph: Graph) -> dict[int, int]:
    """How many times each variable is read (outputs count as reads)."""
    counts: dict[int, int] = {}
    for eqn in graph.eqns:
        for a in eqn.inputs:
            if type(a) is Var:
                counts[id(a)] = counts.get(id(a), 0) + 1
        if eqn.accumulate is not None:
            counts[id(eqn.accumulate)] = counts.get(id(eqn.accumulate), 0) + 1
    for v in graph.outputs:
        counts[id(v)] = counts.get(id(v), 0) + 1
    return counts


def _rebuild(graph: Graph, kept: Iterable[Eqn], replace: dict[int, Atom]) -> Graph:
    """The graph with only the `kept` equations, reads renamed through `replace`."""

    def sub(a: Atom) -> Atom:
        while isinstance(a, Var) and id(a) in replace:
            a = replace[id(a)]
        return a

    eqns = []
    for eqn in kept:
        if replace and _reads_any(eqn, replace):  # equations are frozen: share the rest
            accumulate = sub(eqn.accumulate) if eqn.accumulate is not None else None
            assert accumulate is None or isinstance(accumulate, Var)
            eqn = dataclasses.replace(eqn, inputs=tuple(sub(a) for a in eqn.inputs), accumulate=accumulate)
        eqns.append(eqn)
    outputs = tuple(sub(v) for v in graph.outputs)
    assert all(isinstance(v, Var) for v in outputs)
    return Graph(graph.inputs, tuple(eqns), outputs, graph.constants, graph.static)  # type: ignore[arg-type]


def _reads_any(eqn: Eqn, ids: dict[int, object] | set[int]) -> bool:
    """Whether `eqn` reads a variable whose id is in `ids`."""
    for a in eqn.inputs:
        if id(a) in ids:
            return True
    return eqn.accumulate is not None and id(eqn.accumulate) in ids


class _Positions:
    """Where each variable is bound and last read, and where each name is bound, in one graph.

    Worked out at the first question: most equations a pass looks at ask none."""

    def __init__(self, graph: Graph) -> None:
        self._graph: Graph | None = graph
        self.bound: dict[int, int] = {}
        self.last_read: dict[int, int] = {}
        self.bindings: dict[str, list[int]] = {}

    def _work_out(self, graph: Graph) -> None:
        bound, last_read, bindings = self.bound, self.last_read, self.bindings
        for i, eqn in enumerate(graph.eqns):
            for a in eqn.inputs:
                if type(a) is Var:
                    last_read[id(a)] = i
            if eqn.accumulate is not None:
                last_read[id(eqn.accumulate)] = i
            out = eqn.out
            bound[id(out)] = i
            binds = bindings.get(out.name)
            if binds is None:
                bindings[out.name] = [i]
            else:
                binds.append(i)
        for v in graph.outputs:
            last_read[id(v)] = len(graph.eqns)

    def can_read_instead(self, old: Var, new: Var) -> bool:
        """Whether every read of `old` can read `new` instead: `new`'s name is not bound again
        before the last read of `old` (gradient accumulation rebinds names)."""
        if self._graph is not None:
            self._work_out(self._graph)
            self._graph = None
        start, end = self.bound.get(id(new), -1), self.last_read.get(id(old), -1)
        binds = self.bindings.get(new.name, [])
        return bisect.bisect_right(binds, start) == bisect.bisect_left(binds, end)


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop every equation no output needs: unused forward values, and gradients of values that
    lead to no requested input. Keeps: the outputs and everything they read."""
    live = {id(v) for v in graph.outputs}
    kept = []
    eqns = graph.eqns
    for index in range(len(eqns) - 1, -1, -1):
        eqn = eqns[index]
        if id(eqn.out) in live:
            kept.append(eqn)
            for a in eqn.inputs:
                if type(a) is Var:
                    live.add(id(a))
            if eqn.accumulate is not None:
                live.add(id(eqn.accumulate))
    if len(kept) == len(eqns):
        return graph  # nothing dead: the same graph
    return _rebuild(graph, reversed(kept), {})


@functools.lru_cache(maxsize=None)
def _copied_name(text: str) -> str | None:
    """The operand an expression passes through unchanged (`x` for `x`, `grad` for `grad`)."""
    node = ast.parse(text, mode="eval").body
    return node.id if isinstance(node, ast.Name) else None


@functools.lru_cache(maxsize=None)
def _copied_position(op: str, rule: str | None) -> int | None:
    """Where among an equation's operands is the one its expression passes through, if any."""
    row = OPS[op]
    names = row.operands if rule is None else row.rule_names(rule)
    copied = _copied_name(row.forward if rule is None else row.grads[rule])
    return names.index(copied) if copied in names else None


def copy_source(eqn: Eqn) -> Atom | None:
    """If `eqn` only passes one operand through (`grad_s2 = grad_s3`), that operand (a value of
    the same shape and dtype, or a number)."""
    if eqn.accumulate is not None:
        return None
    position = _copied_position(eqn.op, eqn.rule)
    if position is None:
        return None
    source = eqn.inputs[position]
    if isinstance(source, Var) and (source.shape, source.dtype) == (eqn.out.shape, eqn.out.dtype):
        return source
    if isinstance(source, Const) and eqn.out.shape == () and source.dtype == eqn.out.dtype:
        return source
    return None


def _replace_values(graph: Graph, replacement: Callable[[Eqn, Callable[[Atom], Atom]], Atom | None]) -> Graph:
    """Drop each equation for whose value `replacement` names another atom, and read that atom
    instead. `replacement` gets the equation and a function giving what an operand now reads.
    Keeps: equations that bind outputs (they carry the output's name), values a gradient
    accumulates onto where the atom is a number (`grad_x = grad_x + ...` needs a variable), and
    values where the atom is a variable whose name is rebound before their last read."""
    outputs = {id(v) for v in graph.outputs}
    accumulated = {id(e.accumulate) for e in graph.eqns if e.accumulate is not None}
    positions = _Positions(graph)
    replace: dict[int, Atom] = {}

    def current(a: Atom) -> Atom:
        """What `a` reads now (only variables are replaced)."""
        replaced = replace.get(id(a))
        while replaced is not None:
            a = replaced
            replaced = replace.get(id(a))
        return a

    kept = []
    for eqn in graph.eqns:
        source = replacement(eqn, current)
        source = current(source) if source is not None else None
        readable = (isinstance(source, Const) and id(eqn.out) not in accumulated) or (
            isinstance(source, Var) and positions.can_read_instead(eqn.out, source)
        )
        if readable and id(eqn.out) not in outputs:
            replace[id(eqn.out)] = source  # type: ignore[assignment]
        else:
            kept.append(eqn)
    return _rebuild(graph, kept, replace) if replace else graph


def propagate_copies(graph: Graph) -> Graph:
    """Read the source of a copy (the add gate's `grad_s2 = grad_s3`) instead of the copy, and
    drop the copy. Keeps what `_replace_values` keeps."""
    return _replace_values(graph, lambda eqn, current: copy_source(eqn))


def _picked(item: object, length: int) -> range | None:
    """The places along an axis of `length` that one element of a basic index picks (an int or a
    slice); None for any other element."""
    if isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
        return range(int(item) % length, int(item) % length + 1) if length else None
    if isinstance(item, slice):
        return range(*item.indices(length))
    return None


def _apart(a: object, b: object, shape: tuple[int, ...]) -> bool:
    """Whether two basic indices (ints and slices) into an array of `shape` pick no place in
    common: along some axis, their places are apart (`[:, 0, 2, 3]` and `[:, 1, 2, 3]`). False
    where either is another kind of index, or where that cannot be told cheaply."""
    a, b = (i if isinstance(i, tuple) else (i,) for i in (a, b))
    for x, y, length in zip(a, b, shape):
        one, other = _picked(x, length), _picked(y, length)
        if one is None or other is None:
            return False
        if not one or not other:
            return True
        if one.step == other.step == 1:
            if one.stop <= other.start or other.stop <= one.start:
                return True
        elif len(one) * len(other) <= 4096 and not set(one) & set(other):
            return True
    return False


def _zeroing_unread(eqn: Eqn, readers: dict[int, list[Eqn]], outputs: set[int]) -> bool:
    """Whether the places the write gate's gradient rule `updated(grad, index, 0)` zeroes are
    never read: what reads the result (and what that passes it on to) is only other write
    gates' gradients, each reading or zeroing places apart from these. A course's convolution
    writes each output position once, and its backward need not zero them one by one."""
    index, shape = dict(eqn.params)["index"], eqn.out.shape
    pending = [eqn.out]
    while pending:
        value = pending.pop()
        if id(value) in outputs:
            return False
        for reader in readers.get(id(value), ()):
            if reader.op != "setitem" or reader.accumulate is value or reader.inputs[0] is not value:
                return False
            if reader.rule == "x":  # passes on the places it does not zero itself
                pending.append(reader.out)
            elif reader.rule != "v" or not _apart(index, dict(reader.params)["index"], shape):
                return False
    return True


def drop_unread_zeroing(graph: Graph) -> Graph:
    """Read the gradient itself instead of `updated(grad, index, 0)`, the write gate's gradient
    with the overwritten places zeroed, where no later line reads those places (see
    `_zeroing_unread`). Readable mode runs this pass too: the code is the gates' all the same,
    less a copy of the whole array per write that changes no result."""
    readers: dict[int, list[Eqn]] = {}
    for e in graph.eqns:
        for a in e.reads:
            if isinstance(a, Var):
                readers.setdefault(id(a), []).append(e)
    outputs = {id(v) for v in graph.outputs}

    def source(eqn: Eqn, current: Callable[[Atom], Atom]) -> Atom | None:
        zeroes = eqn.op == "setitem" and eqn.rule == "x" and eqn.accumulate is None
        return eqn.inputs[0] if zeroes and _zeroing_unread(eqn, readers, outputs) else None

    return _replace_values(graph, source)


def _number(atom: Atom) -> object:
    """The Python number a constant operand holds, or None (a variable, an array)."""
    if isinstance(atom, Const) and not isinstance(atom.value, np.ndarray):
        return atom.value
    return None


def _evaluate(eqn: Eqn, values: Sequence[object]) -> np.ndarray:
    """What `eqn`'s expression makes of these operand values (numbers, arrays or stand-ins)."""
    row = OPS[eqn.op]
    static = dict(eqn.params)
    with np.errstate(all="ignore"):
        if eqn.rule is None:
            return np.asarray(row.compute(*values, **static))
        # a name the rule reads only for its shape or dtype (`np.full(x.shape, grad)`)
        known = {name: stand_in(shape, dtype) for name, shape, dtype in eqn.types}
        bindings = known | dict(zip(row.rule_names(eqn.rule), values))
        return np.asarray(row.evaluate_rule(eqn.rule, bindings, static))


def _evaluated(eqn: Eqn, inputs: tuple[Atom, ...]) -> Const | None:
    """A scalar equation whose operands are all numbers, as the number it computes: the same
    expression on the same literals the emitted line would evaluate, so the same number."""
    if eqn.out.shape != () or eqn.accumulate is not None or not all(isinstance(a, Const) for a in inputs):
        return None
    try:
        result = _evaluate(eqn, [a.value for a in inputs])  # type: ignore[union-attr]
    except ArithmeticError:  # `1 / 0` on Python numbers: leave it to raise where the user runs it
        return None
    folded = Const(result.item()) if result.shape == () and result.dtype.kind in "biuf" else None  # not complex
    return folded if folded is not None and folded.dtype == eqn.out.dtype else None


def _passed_through(eqn: Eqn, inputs: tuple[Atom, ...]) -> Atom | None:
    """The operand a forward equation returns unchanged because the other is the op's identity
    number (`x + 0`, `x * 1`, `x ** 1`), if it has the result's shape and dtype."""
    row = OPS[eqn.op]
    if eqn.rule is not None or not row.identity:
        return None
    operands = dict(zip(row.operands, inputs))
    for param, number in row.identity.items():
        value = _number(operands[param])
        if value is None or isinstance(value, bool) or value != number:
            continue
        (other,) = (a for p, a in operands.items() if p != param)
        if (other.shape, other.dtype) == (eqn.out.shape, eqn.out.dtype):
            return other
    return None


def fold_constants(graph: Graph) -> Graph:
    """Compute at build time what reads only numbers (`grad_s5 = 1 / 8 * 1.0` is `0.125`), and
    read `x` for `x + 0`, `x - 0`, `x * 1`, `x / 1` and `x ** 1`. Keeps: arrays (a folded array
    would be built again at each read), every type (a value is replaced only by one of its own
    shape and dtype), and what `_replace_values` keeps."""

    def folded(eqn: Eqn, current: Callable[[Atom], Atom]) -> Atom | None:
        for a in eqn.inputs:
            if type(current(a)) is Const:  # both folds need a number among the operands
                inputs = tuple([current(a) for a in eqn.inputs])
                return _evaluated(eqn, inputs) or _passed_through(eqn, inputs)
        return None

    return _replace_values(graph, folded)


@functools.lru_cache(maxsize=None)
def _filled_name(text: str) -> str | None:
    """The operand an expression repeats to fill an array (`grad` for `np.full(x.shape, grad)`)."""
    node = ast.parse(text, mode="eval").body
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "np.full" and len(node.args) == 2:
        return node.args[1].id if isinstance(node.args[1], ast.Name) else None
    return None


_ARITHMETIC = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Constant, ast.expr_context,
               ast.operator, ast.unaryop, ast.cmpop)


@functools.lru_cache(maxsize=None)
def _arithmetic(text: str) -> bool:
    """Whether an expression is operators on names and numbers only: NumPy and numba alike take
    a number wherever it reads an array (but `@`, which takes none)."""
    nodes = ast.walk(ast.parse(text, mode="eval"))
    return all(isinstance(node, _ARITHMETIC) and not isinstance(node, ast.MatMult) for node in nodes)


@functools.lru_cache(maxsize=None)
def _texts(op: str, rule: str | None) -> tuple[str, ...]:
    """Every expression an equation of `op` (and `rule`) may be emitted as, whatever the backend
    and the result's shape."""
    row = OPS[op]
    if rule is not None:
        return (row.grads[rule], row.numba_grads.get(rule, row.grads[rule]))
    return tuple(text for text in (row.forward, row.numba_forward, row.scalar_forward) if text)


@functools.lru_cache(maxsize=None)
def _filled_operand(op: str, rule: str) -> str | None:
    """The operand a gradient rule repeats to fill an array, under every backend, or None."""
    texts = _texts(op, rule)
    return _filled_name(texts[0]) if all(_filled_name(t) for t in texts) else None


def fill_source(eqn: Eqn) -> Atom | None:
    """If `eqn` fills an array with one number (the sum gate's `grad_s6 = np.full((4, 3),
    grad_s7)`), that number: a scalar operand of the array's dtype."""
    if eqn.rule is None or eqn.accumulate is not None:
        return None
    filled = _filled_operand(eqn.op, eqn.rule)
    if filled is None:
        return None
    source = dict(zip(OPS[eqn.op].rule_names(eqn.rule), eqn.inputs)).get(filled)
    return source if source is not None and (source.shape, source.dtype) == ((), eqn.out.dtype) else None


def broadcast_fills(graph: Graph) -> Graph:
    """In arithmetic, read the number a fill repeats instead of the fill: `2 * W * grad_s7`, not
    `2 * W * grad_s6` after `grad_s6 = np.full((4, 3), grad_s7)`; the arithmetic broadcasts it
    to the same result. Keeps: the fill for every other reader (dead-code elimination drops it
    when none is left), and each reader whose result would change shape or dtype
    (`-grad_s6` alone is the fill's shape only because the fill is)."""
    fills = {id(e.out): source for e in graph.eqns if (source := fill_source(e)) is not None}
    if not fills:
        return graph
    positions = _Positions(graph)

    def number(a: Atom) -> Atom:
        """The number `a` repeats, where `a` is a fill and its number is still readable."""
        source = fills.get(id(a))
        if source is None or not (isinstance(source, Const) or positions.can_read_instead(a, source)):  # type: ignore[arg-type]
            return a
        return source

    kept = []
    for eqn in graph.eqns:
        inputs = tuple(map(number, eqn.inputs))
        if inputs != eqn.inputs and all(_arithmetic(t) for t in _texts(eqn.op, eqn.rule)):
            try:
                result = _evaluate(eqn, [sample_of(a) for a in inputs])
            except ArithmeticError:  # Python numbers divided by zero: leave the line as it is
                result = None
            if result is not None and (result.shape, result.dtype.name) == (eqn.out.shape, eqn.out.dtype):
                eqn = dataclasses.replace(eqn, inputs=inputs)
        kept.append(eqn)
    return _rebuild(graph, kept, {})


@functools.lru_cache(maxsize=None)
def _reshaped_name(text: str) -> str | None:
    """The name an expression only reshapes (`grad` in `grad.reshape(x.shape)`, numba's
    `np.ascontiguousarray(grad).reshape(x.shape)`), or None."""
    node = ast.parse(text, mode="eval").body
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "reshape"):
        return None
    base = node.func.value
    if isinstance(base, ast.Call) and ast.unparse(base.func) == "np.ascontiguousarray" and len(base.args) == 1:
        base = base.args[0]
    return base.id if isinstance(base, ast.Name) else None


def _reshaped(eqn: Eqn) -> Atom | None:
    """The operand whose elements `eqn`'s value is, in the value's shape (a reshape, or the
    gradient of one: `grad_correct = grad_s3.reshape((8,))`), under every backend."""
    if eqn.accumulate is not None:
        return None
    names = {_reshaped_name(text) for text in _texts(eqn.op, eqn.rule)}
    if len(names) != 1 or None in names:
        return None
    row = OPS[eqn.op]
    return dict(zip(row.rule_names(eqn.rule) if eqn.rule else row.operands, eqn.inputs)).get(names.pop())


def _without_kept_axes(eqn: Eqn, shape: tuple[int, ...], dtype: str) -> Eqn | None:
    """A reduction that keeps its axes (`x.sum(axis=1, keepdims=True)`) as the same reduction
    without them, by the row the same call takes with `keepdims=False`, if that has `shape` and
    `dtype`."""
    row = OPS[eqn.op]
    static = eqn.static
    if eqn.rule is not None or static.get("keepdims") is not True:
        return None
    static = {**static, "keepdims": False}
    (x,) = eqn.inputs
    for other in OPS.values():
        if other is row or (other.functions, other.methods) != (row.functions, row.methods):
            continue
        if not other.accepts((len(x.shape),), static):
            continue
        sample = np.asarray(other.compute(sample_of(x), **static))
        if (sample.shape, sample.dtype.name) != (shape, dtype):
            return None
        return Eqn(other.name, eqn.inputs, Var(eqn.out.name, shape, dtype), loc=eqn.loc,
                   params=tuple((name, static[name]) for name in other.static))
    return None


def drop_kept_axes(graph: Graph) -> Graph:
    """A reduction that keeps its axes, read only by a reshape that drops them again (the
    gradient of `correct[:, None]` after the broadcast's sum), as the reduction without them:
    `grad_correct = grad_s4.sum(axis=1)`, where the reduction was. Keeps: the reshape's result,
    by name and type, where its name is not bound between the two."""
    eqns = graph.eqns
    position = {id(e.out): index for index, e in enumerate(eqns)}
    bindings = _bindings(graph)
    uses = _uses(graph)
    replaced: dict[int, Eqn] = {}  # by the position of the reduction
    dropped: set[int] = set()  # positions of the reshapes
    for index, eqn in enumerate(eqns):
        source = _reshaped(eqn)
        at = position.get(id(source)) if isinstance(source, Var) else None
        if at is None or uses.get(id(source)) != 1 or _bound_between(bindings, eqn.out.name, at, index):
            continue
        reduced = _without_kept_axes(eqns[at], eqn.out.shape, eqn.out.dtype)
        if reduced is not None:
            replaced[at] = dataclasses.replace(reduced, out=eqn.out)
            dropped.add(index)
    if not replaced:
        return graph
    kept = [replaced.get(index, e) for index, e in enumerate(eqns) if index not in dropped]
    return _rebuild(graph, kept, {})


def _bindings(graph: Graph) -> dict[str, list[int]]:
    """Where each name is bound, by position."""
    bindings: dict[str, list[int]] = {}
    for index, e in enumerate(graph.eqns):
        bindings.setdefault(e.out.name, []).append(index)
    return bindings


def _bound_between(bindings: dict[str, list[int]], name: str, start: int, end: int) -> bool:
    return any(start < i < end for i in bindings.get(name, ()))


@functools.lru_cache(maxsize=None)
def _negated_name(text: str) -> str | None:
    """The name an expression negates (`grad` in `-grad`), or None."""
    node = ast.parse(text, mode="eval").body
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Name):
        return node.operand.id
    return None


@functools.lru_cache(maxsize=None)
def _sums(op: str) -> bool:
    """Whether a row's forward is a sum of its operand (`x.sum(axis=axis)`, `np.sum(x)`) under
    every backend: linear, so a negation may come after it."""
    for text in _texts(op, None):
        node = ast.parse(text, mode="eval").body
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sum"):
            return False
        operand = node.args[0] if ast.unparse(node.func) == "np.sum" and node.args else node.func.value
        if ast.unparse(operand) != "x":
            return False
    return True


def sum_before_negating(graph: Graph) -> Graph:
    """The sum of a negation, read nowhere else (the subtrahend's gradient summed over the
    axes it was broadcast along), as the negation of the sum: `grad_correct =
    -grad_s5.sum(axis=1)` negates one number a row, not every element of the matrix. Keeps:
    the sum's result by name and type, the negation's name for the sum before it is negated."""
    eqns = graph.eqns
    position = {id(e.out): index for index, e in enumerate(eqns)}
    bindings = _bindings(graph)
    uses = _uses(graph)
    swapped: dict[int, tuple[Eqn, Eqn]] = {}  # by the position of the sum
    dropped: set[int] = set()  # positions of the negations
    for index, eqn in enumerate(eqns):
        if eqn.rule is not None or eqn.accumulate is not None or len(eqn.inputs) != 1 or not _sums(eqn.op):
            continue
        (negated,) = eqn.inputs
        at = position.get(id(negated))
        if at is None or uses.get(id(negated)) != 1 or not is_temporary(negated.name):
            continue  # a name from the user's source keeps its meaning
        negation = eqns[at]
        names = {_negated_name(text) for text in _texts(negation.op, negation.rule)}
        if negation.accumulate is not None or len(names) != 1 or None in names or len(negation.inputs) != 1:
            continue
        (operand,) = negation.inputs
        if type(operand) is not Var or _bound_between(bindings, operand.name, at, index):
            continue
        total = Var(negated.name, eqn.out.shape, eqn.out.dtype)
        (name,) = names
        types = tuple((fact[0], total.shape, total.dtype) if fact[0] == name else fact for fact in negation.types)
        swapped[index] = (
            dataclasses.replace(eqn, inputs=(operand,), out=total),
            dataclasses.replace(negation, inputs=(total,), out=eqn.out, types=types),
        )
        dropped.add(at)
    if not swapped:
        return graph
    kept: list[Eqn] = []
    for index, eqn in enumerate(eqns):
        if index not in dropped:
            kept.extend(swapped.get(index, (eqn,)))
    return _rebuild(graph, kept, {})


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """Compute each distinct expression once, forward and backward alike: a later equation with
    the same op, rule, operands and static parameters reads the earlier result. Keeps:
    accumulations (they rebind a name) and the equations that bind outputs."""
    outputs = {id(v) for v in graph.outputs}
    positions = _Positions(graph)
    first: dict[tuple, Var] = {}
    replace: dict[int, Atom] = {}
    keys = KindKeys()
    kept = []
    for eqn in graph.eqns:
        # what makes `eqn` the same computation as another equation: op, rule, static
        # parameters, and operands (a variable by identity, through what replaced it)
        key = [eqn.op, eqn.rule, keys.params(eqn)]
        for a in eqn.inputs:
            if type(a) is Var:
                key.append(id(replace.get(id(a), a)))
            else:
                key.append(a.key())
        key = tuple(key)
        earlier = first.get(key)
        if (
            earlier is not None
            and eqn.accumulate is None
            and id(eqn.out) not in outputs
            and positions.can_read_instead(eqn.out, earlier)
        ):
            replace[id(eqn.out)] = earlier
            continue
        if eqn.accumulate is None:
            first.setdefault(key, eqn.out)
        kept.append(eqn)
    return _rebuild(graph, kept, replace) if replace else graph


# --- gate fusion (forward graphs) -------------------------------------------------------------


@functools.lru_cache(maxsize=None)
@functools.cache
def _fusions(for_stability: bool = False) -> dict[str, tuple[tuple[Op, ast.Call], ...]]:
    """The table's fusion patterns (`for_stability`: those readable mode applies too), parsed
    once, by the op of their outermost call: an equation is tried only against the patterns
    that could end in it."""
    by_top: dict[str, list[tuple[Op, ast.Call]]] = {}
    for row in OPS.values():
        if for_stability and not row.fuse_for_stability:
            continue
        for text in row.fuses:
            tree = ast.parse(text, mode="eval").body
            assert isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name), text
            by_top.setdefault(tree.func.id, []).append((row, tree))
    return {op: tuple(patterns) for op, patterns in by_top.items()}


# A subpattern's structure, to see the same subpattern written twice (patterns are parsed once,
# so their nodes live for good and key the cache by identity)
_structure = functools.lru_cache(maxsize=None)(ast.dump)


class _Match:
    """One attempt to match a fusion pattern against the value an equation makes.

    A pattern is an expression of op calls by row name (`div(1, add(1, exp(neg(x))))`),
    numbers, and names: a name in an operand place binds an operand, a name given to a keyword
    binds a static parameter (`sum_keep(e, axis=axis)`), a number given to a keyword must be its
    value (`softmax(x, axis=1)`). A subpattern that appears twice must be the same value both
    times. Every value inside the pattern must be read only inside it, except a named one
    (`probs := softmax(x, axis=1)`): that value stays, and the fused gate reads it as an operand.
    """

    def __init__(self, producers: dict[int, Eqn], uses: dict[int, int]) -> None:
        self.producers = producers
        self.uses = uses
        self.operands: dict[str, Atom] = {}
        self.static: dict[str, object] = {}
        self.inner: dict[int, int] = {}  # inner value -> reads of it inside the pattern
        self.seen: dict[str, Atom] = {}

    def __call__(self, pattern: ast.expr, atom: Atom, absorbed: bool = False, kept: bool = False) -> bool:
        """Whether `atom` is the value `pattern` spells. An `absorbed` value disappears into the
        fused gate; a `kept` one (a named value and what it reads) stays."""
        if isinstance(pattern, ast.Name):
            return self.operands.setdefault(pattern.id, atom) is atom
        if isinstance(pattern, ast.NamedExpr):
            return self(pattern.target, atom) and self(pattern.value, atom, kept=True)
        if isinstance(pattern, ast.Constant):
            return isinstance(atom, Const) and not isinstance(atom.value, np.ndarray) and atom.value == pattern.value
        if not (isinstance(pattern, ast.Call) and isinstance(pattern.func, ast.Name) and isinstance(atom, Var)):
            return False
        if absorbed:
            self.inner[id(atom)] = self.inner.get(id(atom), 0) + 1
        shape = _structure(pattern)
        if shape in self.seen:
            return self.seen[shape] is atom
        self.seen[shape] = atom
        eqn = self.producers.get(id(atom))
        if eqn is None or eqn.op != pattern.func.id or len(eqn.inputs) != len(pattern.args):
            return False
        static = eqn.static
        for keyword in pattern.keywords:
            if keyword.arg not in static:
                return False
            if isinstance(keyword.value, ast.Constant):
                if static[keyword.arg] != keyword.value.value:
                    return False
            elif not isinstance(keyword.value, ast.Name):
                return False
            elif self.static.setdefault(keyword.value.id, static[keyword.arg]) != static[keyword.arg]:
                return False
        return all(self(p, a, absorbed=not kept, kept=kept) for p, a in zip(pattern.args, eqn.inputs))

    def self_contained(self) -> bool:
        """Whether no value inside the pattern is read from outside it."""
        return all(self.uses.get(v, 0) == reads for v, reads in self.inner.items())


def fuse_gates(graph: Graph, for_stability: bool = False) -> Graph:
    """Rewrite a forward pattern into the one gate it spells (`1 / (1 + np.exp(-x))` into
    sigmoid, `np.maximum(0, x)` into relu), from the op table's `fuses`; `for_stability`: only
    the rows whose fused gate is stable where the spelled-out one is not. Keeps: the fused
    value's name and every value read outside the pattern."""
    producers = {id(e.out): e for e in graph.eqns}
    uses = _uses(graph)
    fused: dict[int, Eqn] = {}
    dropped: set[int] = set()
    fusions = _fusions(for_stability)
    for eqn in graph.eqns:
        for row, pattern in fusions.get(eqn.op, ()):
            match = _Match(producers, uses)
            if not (match(pattern, eqn.out) and match.self_contained()):
                continue
            operands = tuple(match.operands[p] for p in row.operands)
            static = {k: match.static[k] for k in row.static}
            if row.fuse_when is not None and not row.fuse_when(dict(zip(row.operands, operands)), static):
                continue
            sample = np.asarray(row.compute(*(sample_of(a) for a in operands), **static))
            if (sample.shape, sample.dtype.name) == (eqn.out.shape, eqn.out.dtype):
                fused[id(eqn.out)] = Eqn(row.name, operands, eqn.out, loc=eqn.loc, params=tuple(static.items()))
                dropped.update(match.inner)
                break
    kept = [fused.get(id(e.out), e) for e in graph.eqns if id(e.out) not in dropped]
    return _rebuild(graph, kept, {})


def _run(graph: Graph, passes: Iterable[Pass], check: Callable[[Graph], Graph] | None) -> Graph:
    for each in passes:
        graph = each(graph)
        if check is not None:
            check(graph)
    return graph


# CSE first, so that a pattern's repeated part is one value (`np.exp(x)` written twice); fusion
# twice, as a fused gate can be part of a larger pattern (softmax, then cross-entropy)
FORWARD_PASSES: tuple[Pass, ...] = (
    fold_constants, eliminate_common_subexpressions, fuse_gates, fuse_gates, eliminate_dead_code,
)
GRADIENT_PASSES: tuple[Pass, ...] = (
    drop_unread_zeroing,
    fold_constants,
    broadcast_fills,
    propagate_copies,
    drop_kept_axes,
    sum_before_negating,
    eliminate_common_subexpressions,
    eliminate_dead_code,
)


def drop_unread_zeroing_of(pair: Backprop, check: Callable[[Graph], Graph] | None = None) -> Backprop:
    """Readable mode's pass over the differentiated function: `drop_unread_zeroing`."""
    joined = _run(_joined(pair, pair.upstream), (drop_unread_zeroing,), check)
    return _split(joined, pair, pair.upstream, pair.seed)


def fuse_for_stability(graph: Graph) -> Graph:
    """Readable mode's one pass: the fusions that change a gate's numerical stability, not
    what the lecture's code shows (`1 / (1 + np.exp(-x))` stays one line, its gradient the
    sigmoid's `(1 - s) * s`, finite at x = -1000)."""
    return fuse_gates(graph, for_stability=True)


def optimize_forward(graph: Graph, check: Callable[[Graph], Graph] | None = None) -> Graph:
    """The forward passes, before autodiff; `check` (the verifier, in tests) runs after each."""
    return _run(graph, FORWARD_PASSES, check)


def _joined(pair: Backprop, upstream: tuple[Var, ...]) -> Graph:
    """The forward and backward passes as one straight line, so that a pass sees across them (a
    backward gate that computes again what the forward pass has computed reads it instead)."""
    forward, backward = pair.forward, pair.backward
    return dataclasses.replace(
        forward, inputs=forward.inputs + upstream, eqns=forward.eqns + backward.eqns,
        outputs=forward.outputs + backward.outputs,
    )


def _split(joined: Graph, pair: Backprop, upstream: tuple[Var, ...], seed: Eqn | None) -> Backprop:
    """`joined` (made by `_joined` from `pair`, then passed over) as a forward and a backward pass
    again. Passes drop and rewrite equations but never move one across the two passes' border,
    and the last of a rewritten run keeps its result: the forward pass ends with the last
    equation that binds one of its values."""
    forward_values = {id(e.out) for e in pair.forward.eqns}
    n_forward = max((index + 1 for index, e in enumerate(joined.eqns) if id(e.out) in forward_values), default=0)
    n_outputs = len(pair.forward.outputs)
    forward = dataclasses.replace(
        joined, inputs=pair.forward.inputs, eqns=joined.eqns[:n_forward], outputs=joined.outputs[:n_outputs]
    )
    backward_eqns, grads = joined.eqns[n_forward:], joined.outputs[n_outputs:]
    return Backprop.of(forward, backward_eqns, grads, upstream, seed, pair.differentiated)


def optimize(pair: Backprop, check: Callable[[Graph], Graph] | None = None) -> Backprop:
    """The passes over the differentiated function, forward and backward together; `check` runs
    after each."""
    return _split(_run(_joined(pair, pair.upstream), GRADIENT_PASSES, check), pair, pair.upstream, pair.seed)


# After the seed is read as 1.0: what it makes foldable, then what that leaves unread
SEED_PASSES: tuple[Pass, ...] = (fold_constants, broadcast_fills, propagate_copies, eliminate_dead_code)


def fold_seed(pair: Backprop, check: Callable[[Graph], Graph] | None = None) -> Backprop:
    """What `value_and_grad` runs: the seed `grad_L = 1.0` read as the number 1.0 and folded
    into the gates it reaches (`grad_s3 = (1 - L) * L`, not `(1 - L) * L * grad_L`). The module's
    `backward(grad_L, cache)` keeps the unfolded pair, as there the seed is its argument. Keeps:
    a seed that is not a float64 number (a float32 seed is `np.float32(1.0)`, no Python literal)."""
    seed = pair.seed
    if (
        seed is None
        or seed.out.dtype != "float64"
        or any(v is seed.out for v in pair.backward.outputs)
        or any(e.accumulate is seed.out for e in pair.backward.eqns)
    ):
        return pair
    joined = _joined(pair, ())
    unseeded = _rebuild(joined, joined.eqns, {id(seed.out): Const(1.0)})
    folded = _run(unseeded if check is None else check(unseeded), SEED_PASSES, check)
    return _split(folded, pair, (), None)


def gradients_only(pair: Backprop) -> tuple[Eqn, ...]:
    """The equations of `pair`'s forward and backward passes that its gradients need, in order:
    what `grad` runs in optimize mode, without the lines only the value needs (a loss's data
    and regularisation sums, the margins' total). `pair` has its seed folded in (`fold_seed`)."""
    assert pair.seed is None, "the seed is folded into the gates it reaches"
    joined = _joined(pair, ())
    return eliminate_dead_code(dataclasses.replace(joined, outputs=pair.backward.outputs)).eqns


def recompute_views(pair: Backprop, at_first_read: bool = True) -> Backprop:
    """The pair with every view the backward pass reads (a slice, `.T`, a reshape: see
    `Op.view`) computed again from what it views, instead of kept in the cache: each just
    before the first line that reads it (a convolution's backward takes each window where its
    position's gradients start, so that a loop over the positions takes it in its body), or
    with `at_first_read` False all at the backward's start (optimize mode, whose views may be
    shared by a loop's iterations: `x[i + 1]` of one is `x[i]` of the next). With
    `at_first_read`, a line that reads the upstream gradients alone moves next to its first
    reader as well.

    A view costs nothing to take again, and a course's backward keeps its layer's inputs and
    takes `x.reshape(N, -1)` anew: the cache holds fewer, larger values (an unrolled convolution
    keeps `x_pad` instead of every window of it, which a numba cache of a tuple of hundreds of
    arrays takes minutes to compile). Only the module's `forward_with_cache` and `backward` run
    this pair; `value_and_grad` has every view at hand already."""
    made = {id(e.out): e for e in pair.forward.eqns}
    recomputed: dict[int, Eqn] = {}
    pending = [v for v in pair.cache if _is_view(made.get(id(v)))]
    while pending:
        eqn = made[id(pending.pop())]
        if id(eqn.out) in recomputed:
            continue
        recomputed[id(eqn.out)] = eqn
        pending += [a for a in eqn.reads if isinstance(a, Var) and _is_view(made.get(id(a)))]
    if not at_first_read:  # the forward's own values, as they were
        if not recomputed:
            return pair
        order = [e for e in pair.forward.eqns if id(e.out) in recomputed]
        return Backprop.of(pair.forward, (*order, *pair.backward.eqns), pair.backward.outputs, pair.upstream,
                           pair.seed, pair.differentiated)
    # parts of the upstream gradients (a stack's, `dh_2 = dout[:, 2]`, all first in the
    # backward) go next to their first reader too: a loop over the steps takes its own
    upstream = {id(v) for v in pair.upstream}
    sunk = {
        id(e.out): e for e in pair.backward.eqns
        if e.accumulate is None and e.rule is not None and _part_of_grad(OPS[e.op].grads[e.rule])
        and all(id(a) in upstream for a in e.inputs)
    }
    if not recomputed and not sunk:
        return pair
    # the backward's own values, under the forward's names: taken again, not read from the forward
    again = {key: Var(eqn.out.name, eqn.out.shape, eqn.out.dtype) for key, eqn in recomputed.items()}
    eqns: list[Eqn] = []

    def sub(atom: Atom) -> Atom:
        return again.get(id(atom), atom)

    def rewired(eqn: Eqn) -> Eqn:
        if not _reads_any(eqn, again):
            return eqn
        accumulate = eqn.accumulate if eqn.accumulate is None else again.get(id(eqn.accumulate), eqn.accumulate)
        return dataclasses.replace(eqn, inputs=tuple(sub(a) for a in eqn.inputs), accumulate=accumulate)

    def take(atom: Atom) -> None:  # the view, after the views it is taken of
        line = sunk.pop(id(atom), None)
        if line is not None:
            eqns.append(line)
        eqn = recomputed.pop(id(atom), None)
        if eqn is None:
            return
        for a in eqn.reads:
            take(a)
        eqns.append(dataclasses.replace(rewired(eqn), out=again[id(atom)]))

    for eqn in pair.backward.eqns:
        if id(eqn.out) in sunk:
            continue
        for a in eqn.reads:
            take(a)
        eqns.append(rewired(eqn))
    for v in pair.backward.outputs:
        take(v)
    outputs = tuple(again.get(id(v), v) for v in pair.backward.outputs)
    return Backprop.of(pair.forward, tuple(eqns), outputs, pair.upstream, pair.seed, pair.differentiated)


@functools.lru_cache(maxsize=None)
def _part_of_grad(text: str) -> bool:
    """Whether a gradient rule takes a part of the upstream gradient: `grad[index]`."""
    node = ast.parse(text, mode="eval").body
    return isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "grad"


def _is_view(eqn: Eqn | None) -> bool:
    return eqn is not None and eqn.accumulate is None and OPS[eqn.op].view
