"""Codegen: turn a differentiated graph into the source of a Python module.

Each equation becomes one assignment statement: the op table's expression for it (forward
expression or local-gradient rule) parsed once, its names substituted as syntax trees, and
rendered with astor through `unparse`, the one place flatgrad turns a tree into text. The
module's layout (docstring, imports, functions, decorators) lives in the Jinja template
`templates/module.py.j2`, which receives finished lines and decides nothing.
"""

from __future__ import annotations

import ast
import copy
import functools
import math
import operator
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import jinja2

import numpy as np

from compiler.errors import FlatgradError
from compiler.helpers import HELPERS, helper_source
from compiler.ir import MEMO_LIMIT, Atom, Const, Eqn, Graph, Var, stand_in
from compiler.ops import OPS, IndexOperand

with warnings.catch_warnings():  # astor 0.8.1 (its last release) warns on import on 3.12+
    warnings.simplefilter("ignore", DeprecationWarning)
    import astor

JIT_BACKENDS = ("numba",)
TEMPLATE = "module.py.j2"  # the emitted module; templates/ holds the report's too


def unparse(node: ast.AST) -> str:
    """Source text of a statement or module tree. Every rendering goes through here.

    astor would wrap long lines; a gate stays on one line, so its lines are joined as they come.
    """
    return astor.to_source(node, pretty_source="".join).rstrip("\n")


@functools.lru_cache(maxsize=None)
def _parsed(expr: str) -> ast.expr:
    return ast.parse(expr, mode="eval").body


def _np(attribute: str) -> ast.Attribute:
    return ast.Attribute(_load("np"), attribute, ast.Load())


def _call(function: ast.expr, *args: ast.expr) -> ast.Call:
    return ast.Call(function, list(args), [])


def _array_constant(value: np.ndarray) -> ast.expr:
    """An array literal the way a person writes it: `np.arange(4)`, `np.eye(3)`, `np.full(...)`."""
    default = value.dtype.name in ("float64", "int64")  # what NumPy makes of Python numbers
    dtype = [] if default else [ast.keyword("dtype", _np(value.dtype.name))]
    if value.ndim == 1 and value.dtype.kind in "iu" and np.array_equal(value, np.arange(len(value))):
        return ast.Call(_np("arange"), [_constant(len(value))], dtype)
    if value.ndim == 2 and value.shape[0] == value.shape[1] and np.array_equal(value, np.eye(len(value))):
        return ast.Call(_np("eye"), [_constant(len(value))], dtype)
    if value.size and np.all(value == value.flat[0]):
        return ast.Call(_np("full"), [_constant(value.shape), _constant(value.flat[0].item())], dtype)
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
        return _call(_load("slice"), *(_constant(b) for b in bounds))
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
        types: dict[str, object],
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
        return self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        """`x.shape`, `x.size`, `x.ndim` and `x.dtype` are known: write them in as literals."""
        if isinstance(node.value, ast.Name) and f"{node.value.id}.shape" in self.types:
            shape = self.types[f"{node.value.id}.shape"]
            dtype = self.types[f"{node.value.id}.dtype"]
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
            return self._drop_unit_factor(node, left, right)
        return _constant(fold(left, right))

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


def _constant_only(node: ast.expr) -> bool:
    """Whether `node` is arithmetic on literal numbers alone (`2`, `-0.5`, `1 / 8`)."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float)
    if isinstance(node, ast.UnaryOp):
        return _constant_only(node.operand)
    if isinstance(node, ast.BinOp):
        return _constant_only(node.left) and _constant_only(node.right)
    return False


class _TypedArithmetic(ast.NodeTransformer):
    """`x * 2.0` -> `x * np.float32(2.0)`, for numba: unlike NumPy, which lets a Python number
    take the array's dtype, numba computes float32 with a Python number in float64. Only the
    literal operands of arithmetic on values change; shapes, axes and indices stay as they are."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        if _constant_only(node):
            return node  # one number, typed where it meets a value
        self.generic_visit(node)
        node.left, node.right = (self._typed(side) for side in (node.left, node.right))
        return node

    def _typed(self, side: ast.expr) -> ast.expr:
        if not _constant_only(side):
            return side
        return _call(_np(self.dtype), side)


def _operand(atom: Atom) -> ast.expr:
    return _constant(atom.value) if isinstance(atom, Const) else ast.Name(atom.name, ast.Load())


def _types(bindings: dict[str, Atom]) -> dict[str, object]:
    return {f"{name}.{attr}": getattr(a, attr) for name, a in bindings.items() for attr in ("shape", "dtype")}


def expression(eqn: Eqn, jit: str | None = None) -> ast.expr:
    """The right-hand side of `eqn` as a syntax tree, for a backend."""
    row = OPS[eqn.op]
    if jit == "numba" and row.numba_when is not None:
        ndims = tuple(len(a.shape) for a in eqn.inputs[: len(row.params)]) if eqn.rule is None else ()
        if eqn.rule is None and not row.numba_when(ndims, eqn.static):
            where = f"{eqn.loc}: " if eqn.loc else ""
            raise FlatgradError(
                f"{where}{row.name} with {_show_static(eqn)} has no numba lowering yet; use jit=None (NumPy) here"
            )
    if eqn.rule is not None:
        names, text = row.rule_names(eqn.rule), row.rule(eqn.rule, jit)
    else:
        names = row.params
        text = row.forward_text(eqn.out.shape == (), jit)
    operands = dict(zip(names, eqn.inputs))
    bindings = {name: _operand(a) for name, a in operands.items()}
    types = _types(operands | {"out": eqn.out}) | {k: v for k, v in eqn.params if "." in k}
    static = {k: v for k, v in eqn.params if "." not in k}
    tree = copy.deepcopy(_parsed(text))
    if eqn.rule is None and text == row.scalar_forward and eqn.out.dtype not in _PYTHON_DTYPES:
        tree = _TypedLiterals(eqn.out.dtype).visit(tree)
    samples = {a.name: stand_in(a.shape, a.dtype) for a in eqn.inputs if isinstance(a, Var)}
    tree = _Substitute(bindings, static, types, samples).visit(tree)
    if jit == "numba" and eqn.out.dtype == "float32":
        tree = _TypedArithmetic(eqn.out.dtype).visit(tree)
    if eqn.accumulate is not None:
        # `grad_x + -t` reads better as `grad_x - t`, and is the same number
        negated = isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub)
        tree = ast.BinOp(_load(eqn.accumulate.name), ast.Sub() if negated else ast.Add(), tree.operand if negated else tree)
    return tree


def _show_static(eqn: Eqn) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in eqn.params if "." not in k) or "these operands"


@dataclass(frozen=True)
class Rendered:
    """One equation as a line of Python, with the names it calls (helpers, `np`)."""

    text: str
    calls: frozenset[str]
    uses_numpy: bool


# Rendering goes through astor once per distinct gate shape: unrolled loops repeat the same
# equations under other names, so a line is rendered with placeholder names and made into a
# function that puts the real names in their places, `{0} = {1} * {2}`. Both are identifiers,
# so the swap cannot change how the line parses.
_PLACEHOLDER = "__flatgrad_{}__"
_PLACEHOLDERS = re.compile(r"__flatgrad_(\d+)__")


@dataclass(frozen=True, eq=False)
class _LineForm:
    """A rendered line with holes for its names: `fill(names)` is the line with names[0] as the
    output, then the operand variables in order, then the gradient it accumulates onto."""

    fill: Callable[[Sequence[str]], str]
    calls: frozenset[str]
    uses_numpy: bool


def _filler(text: str) -> Callable[[Sequence[str]], str]:
    """A function that fills the placeholders of `text` with names: `names[k]` for the k-th.

    It is one f-string built from the placeholders alone; it reads the text's literal pieces as
    globals, so no character of the line is ever parsed as code. Filling a line this way takes
    about a third of what `str.format` takes, which counts at a line per equation.
    """
    pieces = _PLACEHOLDERS.split(text)  # literal, index, literal, ..., literal
    literals = {f"_{k}": piece for k, piece in enumerate(pieces) if k % 2 == 0 and piece}
    fields = "".join(
        ("{_%d}" % k if piece else "") if k % 2 == 0 else "{names[%d]}" % int(piece) for k, piece in enumerate(pieces)
    )
    return eval(f'lambda names: f"{fields}"', literals)  # the fields are ours: names and digits


_FORMS: dict[tuple, _LineForm] = {}


def _render_form(eqn: Eqn, jit: str | None) -> _LineForm:
    """Render `eqn` with placeholder names through astor, and make the text a format string."""
    counter = iter(range(len(eqn.inputs) + 2))

    def placeholder(v: Var) -> Var:
        return Var(_PLACEHOLDER.format(next(counter)), v.shape, v.dtype)

    out = placeholder(eqn.out)
    inputs = tuple(placeholder(a) if isinstance(a, Var) else a for a in eqn.inputs)
    accumulate = placeholder(eqn.accumulate) if eqn.accumulate is not None else None
    tree = expression(Eqn(eqn.op, inputs, out, eqn.rule, accumulate, eqn.loc, eqn.params), jit)
    calls = frozenset(n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name))
    uses_numpy = any(isinstance(n, ast.Name) and n.id == "np" for n in ast.walk(tree))
    text = unparse(ast.Assign([ast.Name(out.name, ast.Store())], tree, lineno=0))
    return _LineForm(_filler(text), calls, uses_numpy)


def render(eqn: Eqn, jit: str | None = None) -> Rendered:
    """`eqn` as one line of Python: `grad_w1 = x1 * grad_s1`."""
    (text,), (form,) = _render_lines((eqn,), jit)
    return Rendered(text, form.calls, form.uses_numpy)


def _render_lines(eqns: Sequence[Eqn], jit: str | None) -> tuple[list[str], list[_LineForm]]:
    """Each equation's line, in order, and the distinct forms the lines took.

    This runs once per equation of the module, so it is written for speed: the form's key is
    one flat tuple of what the line depends on besides names (op, rule, static parameters, the
    types of its operands), and the equations of one kind share their params tuple (autodiff
    builds them so), so the tuple's repr is worked out once per tuple, not once per line.
    """
    params_keys: dict[int, str] = {}
    lines: list[str] = []
    forms: dict[int, _LineForm] = {}
    for eqn in eqns:
        params = eqn.params
        params_key = params_keys.get(id(params))
        if params_key is None:
            params_key = params_keys[id(params)] = repr(params)
        out = eqn.out
        accumulate = eqn.accumulate
        names = [out.name]  # the fields of the form, in order
        key = [eqn.op, eqn.rule, params_key, jit, out.shape, out.dtype, accumulate is None]
        for a in eqn.inputs:
            if type(a) is Var:
                names.append(a.name)
                key.append(a.shape)
                key.append(a.dtype)
            else:
                key.append(a.key())
                key.append(None)
        if accumulate is not None:
            names.append(accumulate.name)
        key = tuple(key)
        form = _FORMS.get(key)
        if form is None:
            form = _render_form(eqn, jit)
            if len(_FORMS) > MEMO_LIMIT:
                _FORMS.clear()
            _FORMS[key] = form
        forms[id(form)] = form
        lines.append(form.fill(names))
    return lines, list(forms.values())


def statement(eqn: Eqn, jit: str | None = None) -> str:
    """`eqn` as one line of Python: `grad_w1 = x1 * grad_s1`."""
    return render(eqn, jit).text


def _load(name: str) -> ast.Name:
    return ast.Name(name, ast.Load())


def _tuple(names: Sequence[str]) -> ast.Tuple:
    return ast.Tuple([_load(name) for name in names], ast.Load())


def _assign(target: ast.expr, value: ast.expr) -> str:
    return unparse(ast.Assign([target], value, lineno=0))


def _return(*values: ast.expr) -> str:
    value = values[0] if len(values) == 1 else ast.Tuple(list(values), ast.Load())
    return unparse(ast.Return(value))


def cached_values(graph: Graph) -> tuple[Var, ...]:
    """What the backward equations read from the forward pass, in forward order."""
    read: set[Atom] = set()  # Var and Const hash by identity
    for eqn in graph.backward_eqns[1:]:
        read.update(eqn.inputs)
        if eqn.accumulate is not None:
            read.add(eqn.accumulate)
    candidates = list(graph.inputs) + [eqn.out for eqn in graph.forward_eqns]
    return tuple([v for v in candidates if v in read])


# The header names at most this many cached values; a long program's cache is summed up.
HEADER_NAMES = 24


def _listing(names: Sequence[str]) -> str:
    """`a, b, c`, or for many names the first ones and how many more: a header stays readable."""
    if len(names) <= HEADER_NAMES:
        return ", ".join(names)
    return f"{', '.join(names[:HEADER_NAMES])} and {len(names) - HEADER_NAMES} more"


def _names(names: Sequence[str]) -> str:
    """A tuple of names as an assignment writes it (`a, b` or `a,`), as `unparse` would, without
    walking a tree of tens of thousands of names."""
    return ", ".join(names) + ("," if len(names) == 1 else "")


@functools.cache
def _itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def describe(v: Var) -> str:
    """`float64 scalar` or `float32[4, 3]`."""
    return f"{v.dtype} scalar" if v.shape == () else f"{v.dtype}[{', '.join(map(str, v.shape))}]"


@dataclass(frozen=True)
class Provenance:
    """Where an emitted module came from, for its header."""

    function: str  # the traced function's name, e.g. `neuron`
    source: str  # `examples/neuron.py:neuron`
    command: str  # the command that regenerates the module


@dataclass(frozen=True)
class Function:
    """One emitted function: what the template lays out."""

    name: str
    params: tuple[str, ...]
    doc: str
    sections: tuple[tuple[str, tuple[str, ...]], ...]  # (comment, lines); an empty comment prints none


def _signature(name: str, params: Sequence[str]) -> str:
    return f"{name}({', '.join(params)})"


def explanation(eqn: Eqn, gates: dict[str, str]) -> str:
    """What a backward line does, for a learner: its gate, the gate's pattern, the forward line
    it differentiates, and the chain rule it applies (local gradient times upstream)."""
    if eqn.gate is None:
        if eqn.op == "ones_like":
            return "the seed: the gradient of the output with respect to itself is 1"
        return "no path from this input to the output: its gradient is 0"
    forward = gates[eqn.gate]
    row = OPS[eqn.op]
    if eqn.rule is None:  # a step autodiff added after a gate's rule
        what = {
            "astype": f"casts the gradient back to {eqn.out.dtype}, the dtype of the value",
        }.get(eqn.op, f"sums the gradient over the axes `{forward.split(' = ')[0]}`'s operand was broadcast along")
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


# numba's compile time grows faster than linearly with a function's length: under numba a long
# body is split into part functions of at most this many lines, called in turn.
NUMBA_PART_LINES = 250


def _reads(eqn: Eqn) -> list[str]:
    return [a.name for a in eqn.reads if isinstance(a, Var)]


def split_into_parts(
    name: str, eqns: Sequence[Eqn], texts: Sequence[str], bound_before: Sequence[str], read_after: Sequence[str]
) -> tuple[list[Function], list[str]]:
    """Straight-line code as part functions of at most NUMBA_PART_LINES lines, and the lines that
    call them in turn. Each part takes the names it reads that were bound before it and returns
    the names it binds that are read after it (`read_after` counts as read after the end)."""
    if len(eqns) <= NUMBA_PART_LINES:
        return [], list(texts)
    parts: list[Function] = []
    calls: list[str] = []
    available = set(bound_before)
    for index, start in enumerate(range(0, len(eqns), NUMBA_PART_LINES)):
        chunk = eqns[start : start + NUMBA_PART_LINES]
        later = set(read_after).union(*(_reads(e) for e in eqns[start + NUMBA_PART_LINES :]))
        takes = list(dict.fromkeys(n for e in chunk for n in _reads(e) if n in available))
        gives = list(dict.fromkeys(e.out.name for e in chunk if e.out.name in later))
        available.update(e.out.name for e in chunk)
        part = f"_{name}_part{index}"
        body = [*texts[start : start + NUMBA_PART_LINES], _return(_tuple(gives))]
        parts.append(Function(part, tuple(takes), f"Lines {start + 1}-{start + len(chunk)} of `{name}`.", (("", tuple(body)),)))
        call = ast.Call(_load(part), [_load(n) for n in takes], [])
        calls.append(_assign(ast.Tuple([ast.Name(n, ast.Store()) for n in gives], ast.Store()), call) if gives else unparse(ast.Expr(call)))
    return parts, calls


def functions(
    graph: Graph,
    provenance: Provenance,
    jit: str | None = None,
    explain: bool = False,
    folded: Graph | None = None,
    texts: Sequence[str] | None = None,
    cache: Sequence[Var] | None = None,
) -> tuple[Function, ...]:
    """The module's functions, their bodies finished lines (with `explain`, each backward line
    carries a comment saying which gate it differentiates and how). `value_and_grad` runs
    `folded`, the graph with its seed folded in (`passes.fold_seed`), where given; `backward`
    always takes the seed as its argument. `texts` are the lines of `graph`'s equations followed
    by `folded`'s, as `_render_lines` gives them, and `cache` is `cached_values(graph)` (each
    worked out here when not given)."""
    if texts is None:
        texts, _ = _render_lines(graph.eqns + (folded.eqns if folded is not None else ()), jit)
    n_forward = len(graph.forward_eqns)
    params = tuple(v.name for v in graph.inputs)
    output = graph.outputs[0].name
    grads = _tuple([g.name for g in graph.outputs[1:]])
    grads_text = "(" + ", ".join(g.name for g in graph.outputs[1:]) + ("," if len(grads.elts) == 1 else "") + ")"
    seed, *backward = graph.backward_eqns
    forward_lines = tuple(texts[:n_forward])
    gates = {e.out.name: text for e, text in zip(graph.forward_eqns, forward_lines)} if explain else {}

    def backward_lines(eqns: Sequence[Eqn], lines: Sequence[str]) -> tuple[str, ...]:
        if not explain:
            return tuple(lines)
        return tuple(f"{text}  # {explanation(eqn, gates)}" for eqn, text in zip(eqns, lines))

    own_backward = backward_lines(graph.backward_eqns, texts[n_forward : len(graph.eqns)])
    cached = [v.name for v in (cached_values(graph) if cache is None else cache)]
    unpack = (f"{_names(cached)} = cache",) if cached else ()
    call = _signature(provenance.function, params)
    recompute = ast.Subscript(ast.Call(_load("value_and_grad"), list(map(_load, params)), []), ast.Constant(1))
    grad_names = [g.name for g in graph.outputs[1:]]
    parts: list[Function] = []

    def body(name: str, eqns: Sequence[Eqn], texts: Sequence[str], before: Sequence[str], after: Sequence[str]) -> tuple[str, ...]:
        if jit != "numba":
            return tuple(texts)
        more, calls = split_into_parts(name, eqns, texts, before, after)
        parts.extend(more)
        return tuple(calls)

    forward_eqns = list(graph.forward_eqns)
    inline = folded or graph
    if folded is None:
        inline_forward, inline_backward = forward_lines, own_backward
    else:
        folded_texts = texts[len(graph.eqns) :]
        n_inline = len(folded.forward_eqns)
        inline_forward = tuple(folded_texts[:n_inline])
        inline_backward = backward_lines(folded.backward_eqns, folded_texts[n_inline:])
    everything = body("value_and_grad", inline.eqns, (*inline_forward, *inline_backward), params, [output, *grad_names])
    split = jit == "numba" and len(everything) < len(inline.eqns)
    return (
        Function("forward", params, f"Return {call}.", (("", (*body("forward", forward_eqns, forward_lines, params, [output]), _return(_load(output)))),)),
        Function(
            "value_and_grad",
            params,
            f"Return ({output}, {grads_text}): the value of {call} and its gradients.",
            (("", (*everything, _return(_load(output), grads))),)
            if split
            else (
                ("forward pass", inline_forward),
                ("backward pass", (*inline_backward, _return(_load(output), grads))),
            ),
        ),
        Function("grad", params, f"Return {grads_text}, the gradients of {call}.", (("", (_return(recompute),)),)),
        Function(
            "forward_with_cache",
            params,
            f"Return ({output}, cache): the value of {call} and what `backward` reads.",
            (("", (
                *body("forward_with_cache", forward_eqns, forward_lines, params, [output, *cached]),
                f"cache = {_names(cached)}" if cached else "cache = ()", _return(_load(output), _load("cache")),
            )),),
        ),
        Function(
            "backward",
            (seed.out.name, "cache"),
            f"Return {grads_text} from the upstream gradient {seed.out.name} and `forward_with_cache`'s cache.",
            (("", (*unpack, *body("backward", backward, own_backward[1:], [seed.out.name, *cached], grad_names), _return(grads))),),
        ),
        *parts,
    )


def _environment() -> jinja2.Environment:
    here = Path(__file__).resolve().parent
    # In a wheel the templates ship inside the package; in a source checkout they sit beside it.
    search = [str(here / "templates"), str(here.parent / "templates")]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # the report is HTML and escapes what it shows; the emitted module is Python
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
    )


@functools.lru_cache(maxsize=None)
def template(name: str) -> jinja2.Template:
    """A template of `templates/` (the emitted module's, the report's)."""
    return _environment().get_template(name)


def emit_module(
    graph: Graph, provenance: Provenance, jit: str | None = None, explain: bool = False, folded: Graph | None = None
) -> str:
    """The whole module for a differentiated graph (see `autodiff.differentiate`); `folded` is
    the graph `value_and_grad` runs instead, with the seed folded in (`passes.fold_seed`)."""
    if jit not in (None, *JIT_BACKENDS):
        raise ValueError(f"jit must be None or one of {JIT_BACKENDS}, not {jit!r}")
    texts, forms = _render_lines(graph.eqns + (folded.eqns if folded is not None else ()), jit)
    called = set().union(*(form.calls for form in forms))
    helpers = [helper_source(name) for name in HELPERS if name in called]
    uses_numpy = bool(helpers) or any(form.uses_numpy for form in forms)
    cache = cached_values(graph)
    return template(TEMPLATE).render(
        provenance=provenance,
        jit=jit,
        uses_numpy=uses_numpy,
        helpers=helpers,
        inputs=[(v.name, describe(v)) for v in graph.inputs],
        output=graph.outputs[0].name,
        grads=[g.name for g in graph.outputs[1:]],
        seed=graph.backward_eqns[0].out.name,
        constants=[(name, repr(value)) for name, value in graph.constants],
        cache=_listing([v.name for v in cache]),
        cache_bytes=sum(math.prod(v.shape) * _itemsize(v.dtype) for v in cache),
        signature=_signature(provenance.function, [v.name for v in graph.inputs]),
        functions=functions(graph, provenance, jit, explain, folded, texts, cache),
    )
