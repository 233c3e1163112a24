"""Optimize mode's rewrite of a function's lines to make fewer arrays: reusing those the function
itself made, as a person writes `grad_W2 += h.T @ dscores` rather than allocating the sum anew,
and making none for a number that arithmetic broadcasts anyway.

Why: every line of flat code allocates its result, and at large sizes the allocations (each a
fresh mapping of pages above glibc's mmap threshold) and the memory they hold cost more than the
arithmetic. Two rewrites, both on a function's finished lines, before its temporaries are
inlined (`codegen.inlining`):

- a fill that arithmetic reads (`2 * s3 * np.full((8, 3), c)`, the mean's gradient) becomes its
  number, where the other operands have the result's shape without it;
- an accumulation `g = g + E` becomes `g += E` where `g`'s array was made by an earlier line of
  the function and nothing else read it since;
- `z = A * n`, where `n` is an array the function made and this line is the only one that reads
  it, becomes `z = np.multiply(A, n, out=n)`: the result is written over `n` as `n` dies (under
  numba, whose ufuncs take `out` only by position, `np.multiply(A, n, n)`).

The rewrite is conservative. It needs each name's type (shape and dtype), and applies only
where the array written over has exactly the result's type, was made by an allocating
expression (arithmetic or a call that returns a new array, never a view of another one), and no
other line reads it: a line that read it could have kept a view of it. Lines it does not
understand (branches, loops, comments) count as reading every name they mention.
"""

from __future__ import annotations

import ast
import copy
import inspect
import itertools
from typing import Mapping, Sequence

import numpy as np

from compiler.codegen.expressions import in_brackets, name_and_value, simple_statement, unparse, words
from compiler.helpers import ADDED_INTO, HELPERS

# Calls whose result is a view that writes through to its operand
WRITABLE_VIEWS = frozenset(("reshape", "ravel", "transpose", "squeeze", "expand_dims", "swapaxes", "moveaxis"))
# Calls that may give back (a view of) an array they are passed, rather than a new one
VIEWING_CALLS = WRITABLE_VIEWS | frozenset((
    "broadcast_to", "asarray", "ascontiguousarray", "asfortranarray", "atleast_1d", "atleast_2d", "atleast_3d",
    "diagonal", "diag", "flip", "fliplr", "flipud", "view", "real", "imag",
))
# The ufunc each arithmetic operator calls, for a result written into an existing array
_UFUNCS: dict[type, str] = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "true_divide"}


def allocates(tree: ast.expr) -> bool:
    """Whether an expression certainly makes a new array (where its result is one): arithmetic
    does, and every call but those that may view their operand; a name, an attribute (`.T`) or
    an index may not."""
    if isinstance(tree, (ast.BinOp, ast.UnaryOp, ast.Compare)):
        return not isinstance(tree, ast.UnaryOp) or not isinstance(tree.op, ast.UAdd)
    if isinstance(tree, ast.Call):
        func = tree.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        return name is not None and name not in VIEWING_CALLS
    return False


def may_view(tree: ast.expr) -> bool:
    """Whether an expression's value may be (a view of) an array a name holds: a name, an
    attribute or index of one (`g.T`, `g[0]`), a viewing call on one; not arithmetic, nor a
    view of a fresh array (`sum_along(g, 1).reshape(...)`)."""
    while True:
        if isinstance(tree, ast.Name):
            return True
        if isinstance(tree, (ast.Attribute, ast.Subscript)):
            tree = tree.value
        elif isinstance(tree, ast.Call) and not allocates(tree):
            func = tree.func
            if isinstance(func, ast.Attribute) and not (isinstance(func.value, ast.Name) and func.value.id == "np"):
                tree = func.value  # `x.reshape(...)`
            elif tree.args:
                tree = tree.args[0]  # `np.ascontiguousarray(x)`
            else:
                return True
        else:
            return False


def _names_read(line: str, statement: ast.stmt | None) -> list[str]:
    if statement is None:  # every word of a line not understood counts as a read
        return words(line)
    return [n.id for n in ast.walk(statement) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]


def reuse_arrays(
    sections: Sequence[tuple[str, Sequence[str]]], types: Mapping[str, tuple[tuple[int, ...], str] | None],
    jit: str | None,
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A function's sections (see `module.Function`) with fills read by arithmetic as their
    numbers, accumulations written `+=`, results written over an operand that dies with them,
    writes and scatter-adds into the array itself, where that is safe (see the module's doc), and
    an index range several lines read made once. `types` gives each name's shape and dtype
    (None: the name has several)."""
    lines = [line for _, section in sections for line in section]
    statements = [simple_statement(line) for line in lines]
    reads = [_names_read(line, statement) for line, statement in zip(lines, statements)]
    last_read: dict[str, int] = {}
    for j, names in enumerate(reads):
        last_read.update(dict.fromkeys(names, j))
    owned: set[str] = set()  # names bound to an array a line made, which no line may have viewed since
    rewritten: list[tuple[str, ...]] = [(line,) for line in lines]
    for j, statement in enumerate(statements):
        assignment = name_and_value(statement)
        if assignment is not None:
            target, value = assignment
            unfilled = _fills_as_numbers(value, _array_type(types, target), types)
            if unfilled is not value:
                value = unfilled
                assignment = target, value
                rewritten[j] = (unparse(ast.Assign([ast.Name(target, ast.Store())], value)),)
            dying = {name for name in owned if last_read.get(name) == j}
            new = _written_in_place(target, value, owned, dying, types, jit)
            if new is not None:
                rewritten[j] = new
        if assignment is None or may_view(assignment[1]):
            owned.difference_update(reads[j])  # the line may keep a view of what it reads
        owned.difference_update(_bound(statement, lines[j]))
        if assignment is not None and allocates(assignment[1]) and _array_type(types, assignment[0]) is not None:
            owned.add(assignment[0])
    hoisted = _ranges_named_once([list(kept) for kept in rewritten])
    result, count = [], 0
    for comment, section in sections:
        result.append((comment, tuple(line for kept in hoisted[count:count + len(section)] for line in kept)))
        count += len(section)
    return tuple(result)


RANGE_NAME = "rows"  # an index `np.arange(N)` read by several lines, made once under this name


def _ranges_named_once(lines: list[list[str]]) -> list[list[str]]:
    """The lines (a list per original line) with an `np.arange(n)` that two or more lines read
    inside an expression (`scores[np.arange(N), y]`, a helper's rows) made once, before the
    first: `rows = np.arange(N)`. Such an array is only read, never written into."""
    flat = [(k, m) for k, kept in enumerate(lines) for m in range(len(kept))]
    statements = {(k, m): simple_statement(lines[k][m]) for k, m in flat}
    uses: dict[str, list[tuple[int, int]]] = {}
    for place, statement in statements.items():
        if statement is None:
            continue
        whole = statement.value if isinstance(statement, ast.Assign) else None
        for node in ast.walk(statement):
            if node is not whole and isinstance(node, ast.Call) and _a_range(node):
                uses.setdefault(unparse(node), []).append(place)
    taken = {word for kept in lines for line in kept for word in words(line)}
    names = (f"{RANGE_NAME}_{k}" if k else RANGE_NAME for k in itertools.count())
    made: dict[tuple[int, int], list[str]] = {}
    renames: dict[str, str] = {}
    for text, places in uses.items():
        if len(set(places)) < 2:
            continue
        name = next(n for n in names if n not in taken)
        taken.add(name)
        renames[text] = name
        made.setdefault(min(places), []).append(f"{name} = {text}")
    if not renames:
        return lines

    class Named(ast.NodeTransformer):
        def visit_Assign(self, node: ast.Assign) -> ast.stmt:
            if isinstance(node.value, ast.Call) and _a_range(node.value):
                return node  # an array of its own, which a caller may write into
            return self.generic_visit(node)

        def visit_Call(self, node: ast.Call) -> ast.expr:
            name = renames.get(unparse(node)) if _a_range(node) else None
            return ast.Name(name, ast.Load()) if name is not None else self.generic_visit(node)

    result = []
    for k, kept in enumerate(lines):
        new = []
        for m, line in enumerate(kept):
            new += made.get((k, m), [])
            statement = statements[k, m]
            new.append(line if statement is None else unparse(Named().visit(statement)))
        result.append(new)
    return result


def _a_range(node: ast.Call) -> bool:
    """Whether a call is `np.arange(n)` of a literal n."""
    return (unparse(node.func) == "np.arange" and len(node.args) == 1 and not node.keywords
            and isinstance(node.args[0], ast.Constant) and type(node.args[0].value) is int)


def _fills_as_numbers(
    value: ast.expr, result: tuple | None, types: Mapping[str, tuple[tuple[int, ...], str] | None]
) -> ast.expr:
    """`value` with each `np.full(shape, v)` that arithmetic reads written as `v`, where the
    other operands broadcast to the result's shape without it (`2 * s3 * np.full((8, 3), c)`
    is `2 * s3 * c`): the number fills no array. `value` itself where nothing changes."""
    if result is None:
        return value

    def shape(node: ast.expr) -> tuple[int, ...] | None:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return ()
        if isinstance(node, ast.Name):
            found = types.get(node.id)
            return found[0] if found is not None else None
        if isinstance(node, ast.UnaryOp):
            return shape(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _UFUNCS:
            left, right = shape(node.left), shape(node.right)
            try:
                return None if left is None or right is None else np.broadcast_shapes(left, right)
            except ValueError:
                return None
        if _filled(node) is not None:
            try:
                filled = ast.literal_eval(node.args[0])  # type: ignore[attr-defined]
            except ValueError:
                return None
            return tuple(filled) if isinstance(filled, tuple) else (filled,)
        return None

    class Unfill(ast.NodeTransformer):
        def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
            self.generic_visit(node)
            for side in ("left", "right"):
                number = _filled(getattr(node, side))
                if number is not None and shape(getattr(node, "right" if side == "left" else "left")) == result[0]:
                    setattr(node, side, number)
            return node

    if not any(_filled(node) is not None for node in ast.walk(value)) or shape(value) != result[0]:
        return value
    unfilled = Unfill().visit(copy.deepcopy(value))
    return unfilled if shape(unfilled) == result[0] else value


def _filled(node: ast.expr) -> ast.expr | None:
    """The number `np.full(shape, number)` repeats."""
    if isinstance(node, ast.Call) and unparse(node.func) == "np.full" and len(node.args) == 2 and not node.keywords:
        return node.args[1]
    return None


def _bound(statement: ast.stmt | None, line: str) -> set[str]:
    if statement is None:
        return set(words(line))
    return {n.id for n in ast.walk(statement) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _array_type(types: Mapping[str, tuple[tuple[int, ...], str] | None], name: str) -> tuple | None:
    """`name`'s type where it is one array type (not a number, not several types)."""
    found = types.get(name)
    return found if found is not None and found[0] != () else None


def _written_in_place(
    target: str, value: ast.expr, owned: set[str], dying: set[str],
    types: Mapping[str, tuple[tuple[int, ...], str] | None], jit: str | None,
) -> tuple[str, ...] | None:
    """The lines that compute `target = value` into an operand's array, or None. `owned`: the
    names whose arrays the function made and nothing views; `dying`: those this line reads last."""
    result_type = _array_type(types, target)
    if result_type is None:
        return None

    def reusable(node: ast.expr, *others: ast.expr, dies: bool = True) -> str | None:
        """The name `node` is, if its array may take the result: not where one of the `others`,
        read while the result is written, may be a view of it (`g + g.T` overlaps itself, and
        numba does not buffer); a new array made of it (`g.sum(axis=1)`) is read before."""
        if not isinstance(node, ast.Name) or node.id not in (dying if dies else owned):
            return None
        if _array_type(types, node.id) != result_type:
            return None
        if any(node.id in _names_read(unparse(other), None) and may_view(other) for other in others):
            return None
        return node.id

    def then_bind(name: str, *statements: str) -> tuple[str, ...]:
        return (*statements, f"{target} = {name}") if name != target else statements

    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "updated":
        x, index, values = value.args if len(value.args) == 3 else (None, None, None)
        name = reusable(x, index, values) if x is not None else None
        if name is not None:  # `x[index] = values` on an array nobody else reads
            return then_bind(name, unparse(ast.Assign([ast.Subscript(x, in_brackets(index), ast.Store())], values)))
        return None
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
        operands = [value.operand]
    elif isinstance(value, ast.BinOp) and type(value.op) in _UFUNCS:
        operands = [value.left, value.right]
    else:
        return None
    for position, operand in enumerate(operands):
        if isinstance(value, ast.BinOp) and (position == 0 or _commutes(value.op)):
            other = operands[1 - position]
            if reusable(operand, other, dies=False) == target:  # `g = g + E`: the name's own array
                return (unparse(ast.AugAssign(ast.Name(target, ast.Store()), value.op, other)),)
            name = reusable(operand, *_call_args(other))
            added = _added_into(name, other) if name is not None and isinstance(value.op, ast.Add) else None
            if added is not None:
                return then_bind(name, added)
        name = reusable(operand, *operands[:position], *operands[position + 1:])
        if name is not None and name != target:
            ufunc = "negative" if isinstance(value, ast.UnaryOp) else _UFUNCS[type(value.op)]
            func = ast.Attribute(ast.Name("np", ast.Load()), ufunc, ast.Load())
            into = ast.Name(name, ast.Load())
            if jit == "numba":  # numba's ufuncs take `out` by position only
                call = ast.Call(func, [*operands, into], [])
            else:
                call = ast.Call(func, operands, [ast.keyword("out", into)])
            return (unparse(ast.Assign([ast.Name(target, ast.Store())], call)),)
    return None


def _added_into(name: str, other: ast.expr) -> str | None:
    """`name + helper(shape, ..., values, dtype)` (zeros with values put in) as the statement that
    puts the values into `name`'s array instead."""
    if not (isinstance(other, ast.Call) and isinstance(other.func, ast.Name) and other.func.id in ADDED_INTO):
        return None
    params = list(inspect.signature(HELPERS[other.func.id]).parameters)
    if len(other.args) != len(params) or other.keywords:
        return None
    pieces = {param: unparse(arg) for param, arg in zip(params, other.args)}
    return unparse(ast.parse(ADDED_INTO[other.func.id].format(x=name, **pieces)).body[0])  # `x[i, j]`, not `x[(i, j)]`


def _call_args(node: ast.expr) -> list[ast.expr]:
    """A call's arguments, read before the call writes (the whole of anything else)."""
    return list(node.args) if isinstance(node, ast.Call) else [node]


def _commutes(op: ast.operator) -> bool:
    return isinstance(op, (ast.Add, ast.Mult))
