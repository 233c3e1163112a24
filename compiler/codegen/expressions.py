"""An equation's right-hand side as a syntax tree: the op table's expression for it (forward
expression or local-gradient rule) parsed once, its names substituted as trees, literals built
as the parser builds them, arithmetic on literals folded. `unparse` is the one place flatgrad
turns a tree into text.
"""

from __future__ import annotations

import ast
import copy
import functools
import math
import operator
import re
import warnings
from typing import Mapping, Sequence

import numpy as np

from compiler.errors import FlatgradError
from compiler.helpers import HELPERS
from compiler.ir import Atom, Const, Eqn, Var, stand_in
from compiler.ops import OPS, IndexOperand

with warnings.catch_warnings():  # astor 0.8.1 (its last release) warns on import on 3.12+
    warnings.simplefilter("ignore", DeprecationWarning)
    import astor


def unparse(node: ast.AST) -> str:
    """Source text of a statement or module tree. Every rendering goes through here.

    astor would wrap long lines; a gate stays on one line, so its lines are joined as they come.
    """
    return astor.to_source(node, pretty_source="".join).rstrip("\n")


def simple_statement(line: str) -> ast.stmt | None:
    """An emitted line as one simple statement, or None where it is anything else (indented,
    compound, several lines, commented): what a rewrite of finished lines moves nothing across."""
    if "\n" in line or "#" in line or line[:1].isspace():
        return None
    try:
        body = ast.parse(line).body
    except SyntaxError:  # `if x > 0:` alone, its block in the lines after
        return None
    return body[0] if len(body) == 1 else None


def name_and_value(statement: ast.stmt | None) -> tuple[str, ast.expr] | None:
    """`(name, value)` for a statement `name = value`, else None."""
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        return statement.targets[0].id, statement.value
    return None


@functools.lru_cache(maxsize=None)
def _parsed(expr: str) -> ast.expr:
    return ast.parse(expr, mode="eval").body


def _np(attribute: str) -> ast.Attribute:
    return ast.Attribute(load("np"), attribute, ast.Load())


def _call(function: ast.expr, *args: ast.expr) -> ast.Call:
    return ast.Call(function, list(args), [])


def _array_constant(value: np.ndarray) -> ast.expr:
    """An array literal the way a person writes it: `np.arange(4)`, `np.eye(3)`, `np.zeros(3)`,
    `np.full(...)`."""
    default = value.dtype.name in ("float64", "int64")  # what NumPy makes of Python numbers
    dtype = [] if default else [ast.keyword("dtype", _np(value.dtype.name))]
    if value.ndim == 1 and value.dtype.kind in "iu" and np.array_equal(value, np.arange(len(value))):
        return ast.Call(_np("arange"), [_constant(len(value))], dtype)
    if value.ndim == 2 and value.shape[0] == value.shape[1] and np.array_equal(value, np.eye(len(value))):
        return ast.Call(_np("eye"), [_constant(len(value))], dtype)
    if value.size and np.all(value == value.flat[0]):
        first = value.flat[0].item()
        if value.dtype.kind != "b" and first in (0, 1):  # np.zeros and np.ones make float64 by default
            size = _constant(value.shape[0] if value.ndim == 1 else value.shape)
            dtype = [] if value.dtype.name == "float64" else [ast.keyword("dtype", _np(value.dtype.name))]
            return ast.Call(_np("ones" if first else "zeros"), [size], dtype)
        return ast.Call(_np("full"), [_constant(value.shape), _constant(first)], dtype)
    return ast.Call(_np("array"), [_constant(value.tolist())], [ast.keyword("dtype", _np(value.dtype.name))])


def _constant(value: object, subscript: bool = False) -> ast.expr:
    """A literal as the parser would build it (`-2.0` is a unary minus applied to 2.0).

    Inside a subscript a slice is written `a:b`; elsewhere `slice(a, b)`.
    """
    if isinstance(value, np.ndarray):
        return _array_constant(value)
    if isinstance(value, tuple):
        return ast.Tuple([_constant(v, subscript) for v in value], ast.Load())
    if isinstance(value, slice):
        if subscript:
            return ast.Slice(*(None if b is None else _constant(b) for b in (value.start, value.stop, value.step)))
        # slice(stop), slice(start, stop) or slice(start, stop, step): never drop a start
        bounds = [value.start, value.stop, value.step]
        if value.step is None:
            bounds = [value.stop] if value.start is None else bounds[:2]
        return _call(load("slice"), *(_constant(b) for b in bounds))
    if isinstance(value, np.dtype):
        return _np(value.name)
    if value is Ellipsis:
        return ast.Constant(Ellipsis)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        name = "nan" if math.isnan(value) else "inf"
        node: ast.expr = ast.Attribute(ast.Name("np", ast.Load()), name, ast.Load())
        return ast.UnaryOp(ast.USub(), node) if value < 0 else node
    return ast.parse(repr(value), mode="eval").body


_FOLDABLE = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.USub: operator.neg,
}


class _Substitute(ast.NodeTransformer):
    """Replace a rule's names by operands, folding arithmetic on literals.

    `2 - (2 != 0)` becomes `1` and `x ** 1` becomes `x`, so pow's rule reads `2 * x` for a
    constant exponent 2. Every rewrite is exact in floating point.
    """

    def __init__(
        self,
        bindings: dict[str, ast.expr],
        static: dict[str, object],
        types: dict[str, tuple[tuple[int, ...], str]],
        samples: dict[str, object] | None = None,
    ) -> None:
        self.bindings = bindings
        self.static = static
        self.types = types
        self.samples = samples or {}  # stand-ins of the operands, to learn a subexpression's type

    def _type(self, node: ast.expr) -> tuple | None:
        """The shape and dtype `node` evaluates to on the operands' stand-ins, if it can tell."""
        try:
            code = compile(ast.fix_missing_locations(ast.Expression(copy.deepcopy(node))), "<type>", "eval")
            with np.errstate(all="ignore"):
                value = np.asarray(eval(code, {"np": np, **HELPERS, **self.samples}))  # our own rule text
        except Exception:
            return None
        return value.shape, value.dtype

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if node.id in self.static:
            return self._static(self.static[node.id], subscript=False)
        return copy.deepcopy(self.bindings.get(node.id, node))

    def _static(self, value: object, subscript: bool) -> ast.expr:
        if isinstance(value, IndexOperand):
            return copy.deepcopy(self.bindings[value.name])
        if isinstance(value, tuple):
            if subscript and len(value) == 1:
                return self._static(value[0], subscript)
            return ast.Tuple([self._static(v, subscript) for v in value], ast.Load())
        return _constant(value, subscript)

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        if isinstance(node.slice, ast.Name) and node.slice.id in self.static:
            node.value = self.visit(node.value)
            node.slice = self._static(self.static[node.slice.id], subscript=True)
            return node
        item = node.slice
        if (  # `grad[parts[1]]`: one index out of a static tuple of them, written as an index
            isinstance(item, ast.Subscript) and isinstance(item.value, ast.Name) and item.value.id in self.static
            and isinstance(item.slice, ast.Constant) and type(item.slice.value) is int
        ):
            node.value = self.visit(node.value)
            node.slice = self._static(self.static[item.value.id][item.slice.value], subscript=True)  # type: ignore[index]
            return node
        self.generic_visit(node)
        # an item of a known tuple (`x.shape[0]`, a static's `subscripts[1]`): the item itself
        position = _literal(node.slice)
        if isinstance(node.value, ast.Tuple) and type(position) is int and -len(node.value.elts) <= position < len(
            node.value.elts
        ):
            return node.value.elts[position]
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        """`x.shape`, `x.size`, `x.ndim` and `x.dtype` are known: write them in as literals."""
        if isinstance(node.value, ast.Name) and node.value.id in self.types:
            shape, dtype = self.types[node.value.id]
            known = {"shape": shape, "size": int(np.prod(shape)), "ndim": len(shape)}  # type: ignore[arg-type]
            if node.attr in known:
                return _constant(known[node.attr])
            if node.attr == "dtype":
                return _np(str(dtype))
        return self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        fold = _FOLDABLE.get(type(node.op))
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(node.op, ast.Pow) and right == 1:
            return node.left
        if fold is None or left is None or right is None:
            return self._fold_scale(self._drop_unit_factor(node, left, right))
        return _constant(fold(left, right))

    def _fold_scale(self, node: ast.expr) -> ast.expr:
        """`2 * x * 0.001` is `0.002 * x` where one factor is a power of two: scaling by one is
        exact, so both orders round alike (the square gate's `2 * x * grad` at a folded grad)."""
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)):
            return node
        outer, inner = (node.right, node.left) if _literal(node.right) is not None else (node.left, node.right)
        b = _literal(outer)
        if b is None or not (isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Mult)):
            return node
        factor, rest = (inner.left, inner.right) if _literal(inner.left) is not None else (inner.right, inner.left)
        a = _literal(factor)
        if a is None or isinstance(a, bool) or isinstance(b, bool) or not (_power_of_two(a) or _power_of_two(b)):
            return node
        kept, whole = self._type(rest), self._type(node)
        if kept is None or kept != whole or kept[1].kind != "f" or not 0 < abs(a * b) < math.inf:
            return node
        return ast.BinOp(_constant(a * b), ast.Mult(), rest)

    def _drop_unit_factor(self, node: ast.BinOp, left: object, right: object) -> ast.expr:
        """`e * 1.0` (or `1.0 * e`, `e / 1.0`) is `e` when `e` already has the product's type:
        exact for every float, but not for a bool mask, which the product turns into floats."""
        if isinstance(node.op, ast.Mult) and 1 in (left, right):
            other = node.left if right == 1 else node.right
        elif isinstance(node.op, ast.Div) and right == 1:
            other = node.left
        else:
            return node
        kept = self._type(other)
        return other if kept is not None and kept == self._type(node) else node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        """A rule's `e.reshape(out.shape)` is `e` where e already has out's shape: the rule is
        written for every shape, and most often needs no reshape."""
        func, args = node.func, node.args
        reshape = isinstance(func, ast.Attribute) and func.attr == "reshape" and len(args) == 1
        to_out = reshape and ast.unparse(args[0]) == "out.shape"  # read before the visit writes it in
        self.generic_visit(node)
        if not to_out:
            return node
        reshaped, shape = node.func.value, self.types["out"][0]  # type: ignore[attr-defined]
        kept = self._type(reshaped)
        return reshaped if kept is not None and kept[0] == shape else node

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        compare = _COMPARABLE.get(type(node.ops[0])) if len(node.ops) == 1 else None
        left, right = _literal(node.left), _literal(node.comparators[0])
        if compare is None or left is None or right is None:
            return node
        return _constant(compare(left, right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        self.generic_visit(node)
        operand = _literal(node.operand)
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.UnaryOp) and operand is not None:
            return _constant(-operand)
        return node


_COMPARABLE = {ast.Eq: operator.eq, ast.NotEq: operator.ne}


def _power_of_two(number: int | float) -> bool:
    mantissa, _ = math.frexp(number)
    return abs(mantissa) == 0.5


def _literal(node: ast.expr) -> int | float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal(node.operand)
        return None if inner is None else -inner
    return None


# NumPy dtypes a Python literal already has; a scalar form's literals take any other output dtype.
_PYTHON_DTYPES = ("float64", "int64", "bool")


class _TypedLiterals(ast.NodeTransformer):
    """`1.0` -> `np.float32(1.0)`: keeps a float32 scalar's seed and fills float32."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype

    def visit_Constant(self, node: ast.Constant) -> ast.expr:
        if type(node.value) not in (int, float):
            return node
        return _call(_np(self.dtype), node)


# NumPy's named numbers, which rules and bounds write as such (`np.pi / 180`, `-np.inf`)
_NUMPY_NUMBERS = ("pi", "e", "inf", "nan")


def _numpy_attribute(node: ast.expr) -> str | None:
    """`attr` of `np.attr`, else None."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "np":
        return node.attr
    return None


def _constant_only(node: ast.expr) -> bool:
    """Whether `node` is arithmetic on literal numbers alone (`2`, `-0.5`, `1 / 8`, `np.pi / 180`)."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float)
    if isinstance(node, ast.Attribute):
        return _numpy_attribute(node) in _NUMPY_NUMBERS
    if isinstance(node, ast.UnaryOp):
        return _constant_only(node.operand)
    if isinstance(node, ast.BinOp):
        return _constant_only(node.left) and _constant_only(node.right)
    return False


class _OneAxisExpansions(ast.NodeTransformer):
    """`np.expand_dims(g, (1, 2))` -> `np.expand_dims(np.expand_dims(g, 1), 2)`, for numba, whose
    np.expand_dims takes one axis. The axes are sorted, so each insertion leaves the later
    positions where the tuple means them."""

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        several = len(node.args) == 2 and isinstance(node.args[1], ast.Tuple)
        if _numpy_attribute(node.func) != "expand_dims" or not several:
            return node
        expanded = node.args[0]
        for axis in node.args[1].elts:
            expanded = _call(_np("expand_dims"), expanded, axis)
        return expanded


def _every_row(index: ast.expr, count: ast.expr | int | None) -> bool:
    """Whether an index is `(np.arange(count), columns)`: every row once, in order."""
    if not (isinstance(index, ast.Tuple) and len(index.elts) == 2):
        return False
    rows = index.elts[0]
    if not (isinstance(rows, ast.Call) and _numpy_attribute(rows.func) == "arange" and len(rows.args) == 1):
        return False
    expected = ast.Constant(count) if isinstance(count, int) else count
    return not rows.keywords and expected is not None and ast.dump(rows.args[0]) == ast.dump(expected)


class _OnePerRow(ast.NodeTransformer):
    """Where an index picks every row once, no two picks share a place, so a plain write adds
    up nothing: `add_at((N, 3), (np.arange(N), y), g, dtype)` -> `scatter(...)` (`scores[np.arange(N),
    y]`'s gradient, as a person writes it), `log_softmax_pick_grad(probs, (np.arange(N), y), g)`
    -> `log_softmax_pick_grad_rows(probs, y, g)`. `rows` gives the row count of an operand."""

    def __init__(self, rows: Mapping[str, int]) -> None:
        self.rows = rows

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        called = node.func.id if isinstance(node.func, ast.Name) else None
        if called == "add_at" and len(node.args) == 4 and isinstance(node.args[0], ast.Tuple):
            if _every_row(node.args[1], node.args[0].elts[0]):
                return ast.Call(ast.Name("scatter", ast.Load()), node.args, [])
        if called == "log_softmax_pick_grad" and len(node.args) == 3 and isinstance(node.args[0], ast.Name):
            probs, index, grad = node.args
            if _every_row(index, self.rows.get(probs.id)):
                return ast.Call(ast.Name("log_softmax_pick_grad_rows", ast.Load()), [probs, index.elts[1], grad], [])
        return node


class _MatrixSums(ast.NodeTransformer):
    """`x.sum(axis=0)` of a float matrix -> `sum_along(x, 0)`, for numba, whose own sum along an
    axis takes over a second to compile (a bias's gradient in every layer). Runs on the op
    table's text, where the operands' names have their types."""

    def __init__(self, types: Mapping[str, tuple[tuple[int, ...], str]], static: Mapping[str, object]) -> None:
        self.types, self.static = types, static

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr == "sum" and isinstance(func.value, ast.Name)):
            return node
        shape, dtype = self.types.get(func.value.id, ((), ""))
        keywords = {k.arg: k.value for k in node.keywords}
        axis = keywords.get("axis")
        if isinstance(axis, ast.Name):
            value = self.static.get(axis.id)
            axis = ast.Constant(value[0] if isinstance(value, tuple) and len(value) == 1 else value)
        matrix = len(shape) == 2 and dtype in ("float64", "float32") and not node.args and list(keywords) == ["axis"]
        if not (matrix and isinstance(axis, ast.Constant) and axis.value in (0, 1) and type(axis.value) is int):
            return node
        return ast.Call(ast.Name("sum_along", ast.Load()), [func.value, axis], [])


class _TypedArithmetic(ast.NodeTransformer):
    """`x * 2.0` -> `x * np.float32(2.0)`, for numba: unlike NumPy, which lets a Python number
    take the array's dtype, numba computes float32 with a Python number in float64. Only the
    literal operands of arithmetic on values, and of ufuncs (`np.maximum(x, 0.0)`), change;
    shapes, axes and indices stay as they are."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        if _constant_only(node):
            return node  # one number, typed where it meets a value
        self.generic_visit(node)
        node.left, node.right = (self._typed(side) for side in (node.left, node.right))
        return node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        if isinstance(getattr(np, _numpy_attribute(node.func) or "", None), np.ufunc):
            node.args = [self._typed(arg) for arg in node.args]
        return node

    def _typed(self, side: ast.expr) -> ast.expr:
        if not _constant_only(side):
            return side
        return _call(_np(self.dtype), side)


def _operand(atom: Atom) -> ast.expr:
    return _constant(atom.value) if isinstance(atom, Const) else ast.Name(atom.name, ast.Load())


def _types(eqn: Eqn, operands: dict[str, Atom]) -> dict[str, tuple[tuple[int, ...], str]]:
    """The shape and dtype of each name the equation's expression may read: its operands, `out`,
    and the names of a backward rule that are not its operands (`Eqn.types`)."""
    types = {name: (a.shape, a.dtype) for name, a in operands.items()}
    types["out"] = (eqn.out.shape, eqn.out.dtype)  # a backward rule's `out` is in `eqn.types`
    return types | {name: (shape, dtype) for name, shape, dtype in eqn.types}


def expression(eqn: Eqn, jit: str | None = None) -> ast.expr:
    """The right-hand side of `eqn` as a syntax tree, for a backend."""
    row = OPS[eqn.op]
    if jit == "numba" and row.numba_when is not None:
        ndims = tuple(len(a.shape) for a in eqn.inputs[: len(row.operands)]) if eqn.rule is None else ()
        if eqn.rule is None and not row.numba_when(ndims, eqn.static):
            where = f"{eqn.loc}: " if eqn.loc else ""
            raise FlatgradError(
                f"{where}{row.name} with {_show_static(eqn)} has no numba lowering yet; use jit=None (NumPy) here"
            )
    if eqn.rule is not None:
        names, text = row.rule_names(eqn.rule), row.rule(eqn.rule, jit)
    else:
        names = row.operands
        text = row.forward_text(eqn.out.shape == (), jit)
    operands = dict(zip(names, eqn.inputs))
    bindings = {name: _operand(a) for name, a in operands.items()}
    if row.packs is not None and eqn.rule is None:  # `np.concatenate(xs, ...)` reads all operands
        bindings[row.packs] = ast.Tuple([_operand(a) for a in eqn.inputs], ast.Load())
    types = _types(eqn, operands)
    static = dict(eqn.params)
    tree = copy.deepcopy(_parsed(text))
    if eqn.rule is None and text == row.scalar_forward and eqn.out.dtype not in _PYTHON_DTYPES:
        tree = _TypedLiterals(eqn.out.dtype).visit(tree)
    samples = {a.name: stand_in(a.shape, a.dtype) for a in eqn.inputs if isinstance(a, Var)}
    if jit == "numba":
        tree = _MatrixSums(types, static).visit(tree)
    tree = _Substitute(bindings, static, types, samples).visit(tree)
    if jit == "numba":
        tree = _OneAxisExpansions().visit(tree)
    else:
        tree = _OnePerRow({name: sample.shape[0] for name, sample in samples.items() if np.ndim(sample)}).visit(tree)
    if jit == "numba" and eqn.out.dtype == "float32":
        tree = _TypedArithmetic(eqn.out.dtype).visit(tree)
    if eqn.accumulate is not None:
        # `grad_x + -t` reads better as `grad_x - t`, and is the same number
        negated = isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub)
        operation = ast.Sub() if negated else ast.Add()
        tree = ast.BinOp(load(eqn.accumulate.name), operation, tree.operand if negated else tree)
    return tree


def _show_static(eqn: Eqn) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in eqn.params) or "these operands"



IDENTIFIER = re.compile(r"[A-Za-z_]\w*")  # a word of a line of code: a name it may read or bind


def words(line: str) -> list[str]:
    """The words of a line of code, in order: the names it may read or bind (and attributes,
    keywords and the like, which only make a check that uses them more careful)."""
    return IDENTIFIER.findall(line)


def in_brackets(index: ast.expr) -> ast.expr:
    """An index made as a value (`(slice(None), 1, slice(2, 4))`, a helper's argument) as it is
    written inside brackets: `x[:, 1, 2:4]`."""
    elements = index.elts if isinstance(index, ast.Tuple) else [index]
    sliced = [_slice_written(e) for e in elements]
    return sliced[0] if len(sliced) == 1 else ast.Tuple(sliced, ast.Load())


def _slice_written(node: ast.expr) -> ast.expr:
    """`slice(1, None)` as the `1:` it is written as in an index."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "slice"):
        return node
    parts = [None if isinstance(a, ast.Constant) and a.value is None else a for a in node.args]
    if len(parts) == 1:
        parts = [None, parts[0]]
    return ast.Slice(*parts + [None] * (3 - len(parts)))


def load(name: str) -> ast.Name:
    """A name read: `x`."""
    return ast.Name(name, ast.Load())


def tuple_of(names: Sequence[str]) -> ast.Tuple:
    """A tuple of names read: `(a, b)`."""
    return ast.Tuple([load(name) for name in names], ast.Load())


def assign(target: ast.expr, value: ast.expr) -> str:
    """`target = value` as a line."""
    return unparse(ast.Assign([target], value, lineno=0))


def returns(*values: ast.expr) -> str:
    """`return value` (several values as a tuple) as a line."""
    value = values[0] if len(values) == 1 else ast.Tuple(list(values), ast.Load())
    return unparse(ast.Return(value))
