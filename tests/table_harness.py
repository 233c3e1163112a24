"""The harness of tests/test_ops.py: the op table read into test cases, a user's function for
each case, and the oracles its gradients are checked against.

- A `Case` is one call of one row through one entry point, with operand shapes and static
  arguments: broadcasting shapes for the rows written for numbers, the row's own example
  `shapes` for array rows, static arguments drawn from a few candidates per static *name* and
  kept where the row's `when` accepts them (`cases_of`, `GRADIENT_CASES`, ...).
- `user_function(case)` writes the user's code for a case (`out = np.add(x, y)`, `x += y`,
  `x[i, 1:3] = v`, ...), reducing an array output to a scalar as `np.sum(out * W)` with fixed
  random weights `W`, and its twin for autograd through the row's `forward` expression
  (`oracle_forward`); `draw_args` draws inputs from the row's `domain`, away from kinks.
- The oracles: `check_against_fd` (NumPy running the user's function, central differences)
  and `check_against_autograd` (HIPS autograd); `build` is `compiler.gradient` with the IR
  verified.
"""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import operator
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from autograd.tracer import getval

import compiler
from compiler.ops import INDEX_PARAMS, OPS, IndexOperand, Op, resolve_index_operands
from compiler.verify import verify

FD_RTOL, FD_ATOL = 1e-6, 1e-6
AG_RTOL, AG_ATOL = 1e-10, 1e-12
KINK_MARGIN = 1e-3  # drawn inputs keep this far from each other, from 0 and from static bounds
COND_DOMAIN = (-3.0, 3.0)  # the two floats compared to make a bool input (a bool param's None domain)


# --- the table, read ------------------------------------------------------------------------


ROWS = [row for row in OPS.values() if row.entry_points()]


def sample_result(row: Op) -> np.ndarray:
    """What the row's forward makes of stand-ins: its example shapes filled with 0.5, or numbers
    (True for a bool operand), with every static None."""
    operands = [np.full(shape, 0.5) for shape in row.shapes] or [
        np.True_ if name in row.bool_operands else 0.5 for name in row.operands
    ]
    return np.asarray(row.compute(*operands, **dict.fromkeys(row.static)))


def makes_bools(row: Op) -> bool:
    """A comparison: no gradient, a bool output."""
    return not row.grads and sample_result(row).dtype == bool


DIFFERENTIABLE = [row for row in ROWS if row.grads]
# bools of bools (`m1 & m2`, `~m`): tested as the condition of np.where, like comparisons
MASK_LOGIC = [row for row in ROWS if not row.grads and row.bool_operands and makes_bools(row)]
COMPARISONS = [row for row in ROWS if makes_bools(row) and row not in MASK_LOGIC]
FILLS = [row for row in ROWS if not row.grads and not makes_bools(row)]


def is_elementwise(row: Op) -> bool:
    """A row written for numbers, which NumPy broadcasts: it has no example shapes."""
    return not row.shapes


def index_params(row: Op) -> tuple[str, ...]:
    return tuple(p for p in row.operands if p in INDEX_PARAMS)


def writes(row: Op) -> bool:
    return ("operator", "__setitem__") in row.entry_points()


def label(kind: str, name: str) -> str:
    return {"ufunc": f"np.{name}", "function": f"np.{name}", "method": f".{name}()", "attribute": f".{name}",
            "gate": f"compiler.{name}"}.get(kind, name)


def rng_for(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


def weights(shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """Fixed weights that reduce an output of `shape` to a scalar, np.sum(out * W)."""
    return rng_for("weights", shape).uniform(0.5, 1.5, shape).astype(dtype)


# --- shapes and static arguments ------------------------------------------------------------

# Broadcasting shapes of the elementwise rows, by arity: scalar, vector, row, column, matrix.
BROADCAST_SHAPES = {
    1: [((),), ((3,),), ((1, 3),), ((4, 1),), ((4, 3),)],
    2: [
        ((), ()), ((4, 3), (4, 3)), ((4, 3), (3,)), ((3,), (4, 3)), ((4, 1), (1, 3)),
        ((1, 3), (4, 1)), ((), (4, 3)), ((4, 3), ()), ((4, 3), (4, 1)), ((1, 3), (3,)),
    ],
    3: [((), (), ()), ((4, 3), (3,), (4, 1)), ((4, 1), (), (1, 3)), ((3,), (4, 3), ()), ((), (4, 1), (4, 3))],
}

# Candidates for each static parameter, by its name; a row keeps those its `when` accepts.
AXES = (None, 0, 1, -1, (0, 1))
NORM_ORDERS = ({"ord": "fro", "axis": None}, {"ord": 2, "axis": 1}, {"ord": 2, "axis": None}, {"ord": 1, "axis": 1})
TENSORDOT_AXES = (2, ((1, 2), (1, 0)), ([2], [0]), 0)  # for operands of shapes (2, 3, 3) and (3, 3, 4)
# for operands of shapes (2, 3) and (3, 2); a repeated index and a lone summed one are refused
SUBSCRIPTS = ("ij,jk->ik", "ij,jk", "ij,ji->", "ij,jk->kji", "ij,ji->ij", "ii,jk->ik", "ij,jk->i")
CLIP_BOUNDS = ((-1.0, 1.0), (None, 0.5), (-0.5, None))
# Indices as user code writes them; `i` and `j` are index arrays (the rows' operands i and j).
INDEX_TEXTS = (
    "1", "-1", ":, 2", "1:3", "1:", ":, 2:", "::2, 1:", "None, 0", "..., 1", "0, 1", "::-1, -2", ":, None",
    "None", "..., None", "None, :, None",
    "i", ":, i", "i, 2", "-1, i", "i, 1:3", "i, j",
)


# Candidates of the layout rows' statics, by the names a call passes (keyword: value).
LAYOUT_STATICS = {
    ("axes",): [{"axes": a} for a in (None, (1, 0), (0, 1), (1, 0, 2), (2, 0, 1), (-1, 0, 1))],
    ("axis1", "axis2"): [{"axis1": 0, "axis2": 2}, {"axis1": -1, "axis2": 1}, {"axis1": 1, "axis2": 1}],
    ("destination", "source"): [{"source": s, "destination": d} for s, d in ((0, 2), (-1, 0), ((0, 1), (2, 0)))],
    ("axis", "start"): [{"axis": a, "start": s} for a, s in ((2, 0), (0, 3), (1, 0), (-1, 1))],
    ("axis", "shift"): [{"shift": s, "axis": a} for s, a in ((2, None), (1, 0), (-1, 1), ((1, 2), (0, 1)))],
    ("reps",): [{"reps": r} for r in (2, (2, 1), (1, 2, 3))],
    ("axis", "repeats"): [{"repeats": r, "axis": a} for r, a in ((2, None), (3, 0), (2, 1), (2, -1))],
    ("k",): [{"k": k} for k in (0, 1, -1)],
    ("axis1", "axis2", "offset"): [{"offset": o, "axis1": a, "axis2": b}
                                   for o, a, b in ((0, 0, 1), (1, 0, 1), (-1, 0, 1), (1, 1, 0))],
    ("constant_values", "mode", "pad_width"): [
        {"pad_width": w, "mode": "constant", "constant_values": c} for w, c in ((1, 0), (((1, 2), (0, 1)), 0.5))
    ],
    ("axis", "indices_or_sections"): [
        {"indices_or_sections": n, "axis": a} for n, a in ((2, 0), (3, 1), ([1, 4], 1), (2, -1), (4, 1))
    ],
}


@functools.lru_cache(maxsize=None)
def signature_of(text: str) -> inspect.Signature:
    namespace: dict = {}
    exec(f"def _({text}): pass", namespace)
    return inspect.signature(namespace["_"])


def call_statics(row: Op) -> tuple[str, ...]:
    """The static arguments a call passes: its signature's, or the row's statics where it has none.
    (A row may derive more statics from these, for its gradient: `inverse`, `parts`.)"""
    if not row.signature:
        return row.static
    params = signature_of(row.signature).parameters
    return tuple(p for p in params if p not in row.operands and p != row.packs)


def reshape_targets(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    size = int(np.prod(shape))
    return [(size,), (-1,), tuple(reversed(shape)), (1, -1)]


def parse_index(text: str) -> tuple:
    """The static index the tracer should record for `x[text]`: index arrays as IndexOperands."""
    return eval(f"np.index_exp[{text}]", {"np": np, **{n: IndexOperand(n) for n in INDEX_PARAMS}})


def normalized(row: Op, shapes: tuple, static: dict) -> dict:
    return row.normalize(shapes, dict(static)) if row.normalize else dict(static)


def static_candidates(row: Op, shapes: tuple) -> list[dict]:
    """The static arguments a call of `row` is tried with, as user code passes them."""
    names = set(call_statics(row))
    if not names:
        return [{}]
    if tuple(sorted(names)) in LAYOUT_STATICS:
        raw = LAYOUT_STATICS[tuple(sorted(names))]
    elif names == {"axis", "keepdims"}:
        raw = [{"axis": a, "keepdims": k} for k in (False, True) for a in AXES]
    elif names == {"lo", "hi"}:
        raw = [{"lo": lo, "hi": hi} for lo, hi in CLIP_BOUNDS]
    elif names == {"shape"}:
        raw = [{"shape": s} for s in reshape_targets(shapes[0])]
    elif names == {"axis"}:  # the rows that take no None or tuple drop them (_fits)
        raw = [{"axis": a} for a in (0, 1, -1, None, (0, 2))]
    elif names == {"dtype"}:  # casts between floats; a cast to integers passes no gradient
        raw = [{"dtype": "float64"}, {"dtype": "f8"}]
    elif names == {"axis", "ddof", "keepdims"}:
        raw = [{"axis": a, "ddof": 0, "keepdims": k} for k in (False, True) for a in AXES]
        raw += [{"axis": a, "ddof": 1, "keepdims": k} for a, k in ((None, False), (1, False), ((0, 1), True))]
    elif names == {"ord", "axis", "keepdims"}:
        raw = [{"ord": None, "axis": a, "keepdims": k} for k in (False, True) for a in AXES]
        raw += [{**order, "keepdims": False} for order in NORM_ORDERS]
    elif names == {"axes"}:
        raw = [{"axes": a} for a in TENSORDOT_AXES]
    elif names == {"subscripts"}:
        raw = [{"subscripts": s} for s in SUBSCRIPTS]
    else:
        raise AssertionError(f"no candidates for the static params {row.static} of {row.name}")
    return [s for s in raw if _fits(row, shapes, s)]


def _fits(row: Op, shapes: tuple, static: dict) -> bool:
    """Whether the row takes these statics for these shapes (an axis in range, a size-1 axis
    to squeeze, a split into equal parts; its `when`) and NumPy computes its forward with them."""
    try:
        static = normalized(row, shapes, static)
        if not row.accepts(tuple(len(s) for s in shapes), static):
            return False
        if not row.splits:  # (a split's static index holds all parts: each is computed on its own)
            row.compute(*[np.ones(s) for s in shapes], **static)
    except (TypeError, ValueError, IndexError):
        return False
    return True


# --- cases: one call of one entry point -------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One call: a row reached through one entry point, with operand shapes and statics.

    `shapes` holds one shape per row param (a bool's is that of the two floats compared to
    make it; an index array's is its length). Indexing rows carry their index as written
    (`index`), with the index arrays passed as int inputs or, with `const_index`, baked in.
    """

    row: Op
    kind: str
    name: str
    shapes: tuple[tuple[int, ...], ...]
    static: tuple[tuple[str, Any], ...] = ()
    index: str | None = None
    const_index: bool = False

    def __str__(self) -> str:
        parts = [self.row.name, label(self.kind, self.name)]
        parts.append("x".join(f"({','.join(map(str, s))})" for s in self.shapes))
        parts += [f"{k}={v!r}".replace(" ", "") for k, v in self.static]
        if self.index is not None:
            parts.append(f"[{self.index}]".replace(" ", "") + ("const" if self.const_index else ""))
        return "-".join(parts)

    @property
    def entry(self) -> tuple[str, str, str]:
        return (self.row.name, self.kind, self.name)

    def static_dict(self) -> dict:
        """The static arguments as the tracer should record them."""
        if self.index is not None:
            return {"index": parse_index(self.index)}
        values = tuple(s for p, s in zip(self.row.operands, self.shapes) if p not in INDEX_PARAMS)
        static = normalized(self.row, values, dict(self.static))
        return {"index": static["index"][0]} if self.row.splits else static  # the first part's equation

    @property
    def operands(self) -> tuple[str, ...]:
        """The row's operands this call passes: all, or as many as a join is given."""
        return self.row.operands[: len(self.shapes)] if self.row.packs else self.row.operands


def inplace_fits(shapes: tuple) -> bool:
    """`x op= y` keeps x's shape in NumPy (a scalar x is rebound instead)."""
    return shapes[0] == () or np.broadcast_shapes(*shapes) == shapes[0]


def elementwise_cases(row: Op) -> list[Case]:
    cases = []
    for kind, name in row.entry_points():
        for shapes in BROADCAST_SHAPES[len(row.operands)]:
            if kind == "inplace" and not inplace_fits(shapes):
                continue
            for static in static_candidates(row, shapes):
                cases.append(Case(row, kind, name, shapes, tuple(static.items())))
    return cases


def index_cases(row: Op) -> list[Case]:
    """Indices with as many index arrays as the row takes (its `when` decides); writes get
    distinct positions (repeated ones: test_ops.py's test_fixed_repeated_*), and values of
    several shapes: a number, the shape written, and its last axis (broadcast)."""
    n_values = len(row.operands) - len(index_params(row))
    value_ndims = tuple(len(s) for s in row.shapes[:n_values])
    cases = []
    for text in INDEX_TEXTS:
        static = parse_index(text)
        arrays = [part for part in static if isinstance(part, IndexOperand)]
        if not row.accepts(value_ndims + (1,) * len(arrays), {"index": static}):
            continue
        x_shape = row.shapes[0]
        lengths = [row.shapes[row.operands.index(p)] for p in index_params(row)]
        value_shapes = [()]
        if writes(row):
            if len(arrays) == 1:  # distinct positions along one axis: at most that axis's length
                axis = static.index(arrays[0])
                lengths = [(min(lengths[0][0], x_shape[axis]),)]
            arrays_of = {p: np.zeros(n, int) for p, n in zip(index_params(row), lengths)}
            target = np.zeros(x_shape)[resolve_index_operands(static, arrays_of)].shape
            value_shapes = list(dict.fromkeys([row.shapes[1], target, target[-1:]]))
        for kind, name in row.entry_points():
            for const_index in (False, True) if arrays else (False,):
                for v in value_shapes:
                    shapes = (x_shape, v) + tuple(lengths) if writes(row) else (x_shape, *lengths)
                    cases.append(Case(row, kind, name, shapes, (), text, const_index))
    return cases


def array_cases(row: Op) -> list[Case]:
    if "index" in row.static and not row.splits:
        return index_cases(row)
    return [
        Case(row, kind, name, row.shapes, tuple(static.items()))
        for kind, name in row.entry_points()
        for static in static_candidates(row, row.shapes)
    ]


def cases_of(row: Op) -> list[Case]:
    return elementwise_cases(row) if is_elementwise(row) else array_cases(row)


GRADIENT_CASES = [case for row in DIFFERENTIABLE for case in cases_of(row)]
COMPARISON_CASES = [case for row in COMPARISONS for case in elementwise_cases(row)]
MASK_CASES = [case for row in MASK_LOGIC for case in elementwise_cases(row)]
FILL_CASES = [case for row in FILLS for case in cases_of(row)]


def params(cases: list[Case], test: str) -> list:
    out = []
    for case in cases:
        out.append(pytest.param(case, id=str(case)))
    return out


# --- the user's function for a case, and its autograd twin -----------------------------------


def augmented(row: Op, target: str, value: str) -> str:
    """`x += y` for a row whose forward is `x + y`: the statement is the forward's operator."""
    body = ast.parse(row.forward, mode="eval").body
    assert isinstance(body, ast.BinOp), f"{row.name} has an in-place entry but no binary operator"
    return ast.unparse(ast.AugAssign(ast.Name(target, ast.Store()), body.op, ast.Name(value, ast.Load())))


def spelled_static(row: Op, kind: str, static: dict, leading: bool = False) -> list[str]:
    """The static arguments as a call writes them: positional, `*shape`, or keywords that
    differ from their defaults (`np.sum(x, axis=1)`, `x.reshape(2, 3)`, `np.clip(x, -1.0, 1.0)`);
    with `leading`, those the signature puts before the operands instead (`np.einsum('ij,jk', x, y)`)."""
    text = (row.method_signature if kind == "method" else None) or row.signature
    if not text:
        return []
    parts = []
    after_operands = False
    for p in signature_of(text).parameters.values():
        if p.name in row.operands or p.name == row.packs:
            after_operands = True
            continue
        if after_operands == leading:
            continue
        value = static[p.name]
        if p.kind is p.VAR_POSITIONAL:
            parts += [repr(v) for v in (value or ())]
        elif p.default is p.empty:
            parts.append(repr(value))
        elif value != p.default:
            parts.append(f"{p.name}={value!r}")
    return parts


def call_lines(case: Case, operands: list[str]) -> tuple[list[str], str]:
    """Lines of user code applying the case's entry point, and the name of the result."""
    row, kind, name, static = case.row, case.kind, case.name, dict(case.static)
    if kind == "inplace":
        return [augmented(row, operands[0], operands[1])], operands[0]
    if (kind, name) == ("operator", "__setitem__"):
        return [f"{operands[0]}[{case.index}] = {operands[1]}"], operands[0]
    if (kind, name) == ("operator", "__getitem__"):
        expr = f"{operands[0]}[{case.index}]"
    elif kind == "operator":
        expr = f"_op({', '.join(operands)})"  # __add__ -> operator.add, __neg__ -> operator.neg
    elif kind == "reflected":
        expr = f"{operands[1]}.{name}({operands[0]})"  # y.__radd__(x) computes x + y
    elif row.packs:  # np.concatenate([x0, x1, x2], axis=1)
        expr = f"np.{name}({', '.join(['[' + ', '.join(operands) + ']'] + spelled_static(row, kind, static))})"
    elif row.splits:  # the parts joined again in reverse order: each part's gradient is checked
        axis = static.get("axis", 0)
        parts = f"np.{name}({', '.join(operands + spelled_static(row, kind, static))})"
        expr = f"np.concatenate({parts}[::-1], axis={axis})"
    elif kind in ("ufunc", "function"):
        leading = spelled_static(row, kind, static, leading=True)
        expr = f"np.{name}({', '.join(leading + operands + spelled_static(row, kind, static))})"
    elif kind == "method":
        expr = f"{operands[0]}.{name}({', '.join(operands[1:] + spelled_static(row, kind, static))})"
    elif kind == "attribute":
        expr = f"{operands[0]}.{name}"
    else:
        assert kind == "gate", kind
        expr = f"compiler.{name}({', '.join(operands + spelled_static(row, kind, static))})"
    return [f"out = {expr}"], "out"


def functional_update(x, index, v):
    """`x[index] = v` as autograd can differentiate it: no write, the last write wins."""
    positions = np.arange(np.size(getval(x))).reshape(anp.shape(x))[index]
    placed = v * np.ones(positions.shape)
    last = {int(p): k for k, p in enumerate(np.ravel(positions))}
    scatter = np.zeros((np.size(getval(x)), positions.size))
    scatter[list(last), list(last.values())] = 1.0
    written = scatter.sum(axis=1)
    flat = anp.reshape(x, (-1,)) * (1.0 - written) + anp.dot(scatter, anp.reshape(placed, (-1,)))
    return anp.reshape(flat, anp.shape(x))


def autograd_softmax(x, axis):
    """The softmax helper, written with autograd.numpy."""
    e = anp.exp(x - anp.max(x, axis=axis, keepdims=True))
    return e / anp.sum(e, axis=axis, keepdims=True)


def autograd_roll(x, shift, axis):
    """np.roll along several axes, one axis at a time (autograd's rolls along one)."""
    if not isinstance(axis, tuple):
        return anp.roll(x, shift, axis)
    for s, a in zip(shift, axis):
        x = anp.roll(x, s, a)
    return x


def autograd_tile(x, reps):
    """np.tile as copies joined along each axis (autograd's tile fails for some reps)."""
    x = anp.reshape(x, (1,) * (len(reps) - anp.ndim(x)) + anp.shape(x))
    for axis, count in enumerate((1,) * (anp.ndim(x) - len(reps)) + reps):
        x = anp.concatenate([x] * count, axis=axis)
    return x


def autograd_diagonal(x, offset):
    """A matrix's diagonal `offset` as a gather (autograd's diagonal takes offset 0 only)."""
    if anp.ndim(x) == 1:
        return anp.diag(x, offset)
    rows, cols = getval(x).shape
    start_row, start_col = max(-offset, 0), max(offset, 0)
    length = max(min(rows - start_row, cols - start_col), 0)
    return x[np.arange(length) + start_row, np.arange(length) + start_col]


AUTOGRAD_SPELLINGS = {  # where autograd has no rule (ndarray.copy, np.flip, cbrt, `//`) or takes fewer arguments
    "x.copy()": "np.array(x)",
    "np.cbrt(x)": "np.sign(x) * np.abs(x) ** (1 / 3)",
    "x // y": "np.floor_divide(x, y)",  # an ArrayBox has no __floordiv__
    "np.flip(x, axis)": "x[at]",
    "np.roll(x, shift, axis)": "roll(x, shift, axis)",
    "np.tile(x, reps)": "tile(x, reps)",
    "np.diag(x, k)": "diagonal(x, k)",
    "np.diagonal(x, offset)": "diagonal(x, offset)",
    "np.pad(x, pad_width, constant_values=constant_values)":
        "np.pad(x, pad_width, 'constant', constant_values=constant_values)",
    # autograd's norm gradient with keepdims=True has the wrong shape (it expands the kept axis again)
    "np.linalg.norm(x, axis=axis, keepdims=True)": "np.sqrt(np.sum(x * x, axis=axis, keepdims=True))",
}
# the helpers a row's forward expression calls, as autograd can differentiate them
AUTOGRAD_NAMESPACE = {
    "np": anp, "updated": functional_update, "softmax": autograd_softmax, "roll": autograd_roll, "tile": autograd_tile,
    "diagonal": autograd_diagonal,
}


@functools.lru_cache(maxsize=None)
def oracle_forward(row: Op, static: tuple[str, ...] | None = None) -> Callable:
    """The row's forward expression over its params and statics (all, or those named), with np
    bound to autograd.numpy. A join takes its operands as one tuple; a split, all its parts."""
    text = AUTOGRAD_SPELLINGS.get(row.forward, row.forward)
    names = row.static if static is None else static
    if row.packs:
        packed = eval(f"lambda {', '.join((row.packs,) + names)}: {text}", dict(AUTOGRAD_NAMESPACE))
        return lambda *parts, **statics: packed(parts, **statics)
    if row.splits:
        return lambda x, index: [x[part] for part in index]
    return eval(f"lambda {', '.join(row.operands + names)}: {text}", dict(AUTOGRAD_NAMESPACE))


@dataclass
class UserFunction:
    case: Case
    f: Callable  # the user's function, calling the entry point
    oracle: Callable  # the same function for autograd, through the row's forward expression
    names: tuple[str, ...]  # f's parameters
    floats: tuple[str, ...]  # its float parameters (what flatgrad differentiates)
    constants: dict  # index arrays baked into f
    out_shape: tuple[int, ...]
    source: str

    def examples(self, dtype=np.float64) -> list:
        shapes = self.input_shapes()
        return [
            (np.ones(shapes[n], dtype) if shapes[n] else dtype(1.0))
            if n in self.floats
            else np.zeros(shapes[n], np.int64)
            for n in self.names
        ]

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {}
        for p, shape in zip(self.case.operands, self.case.shapes):
            if p in self.case.row.bool_operands:
                shapes[f"{p}_a"] = shapes[f"{p}_b"] = shape
            else:
                shapes[p] = shape
        return shapes


def draw_index_arrays(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Index arrays for the case's index: repeats for a gather (they must add up), distinct
    positions for a write; some spelled negative."""
    row = case.row
    static = parse_index(case.index)
    names = index_params(row)
    if not names:
        return {}
    sizes = [case.shapes[0][static.index(IndexOperand(n))] for n in names]
    length = case.shapes[row.operands.index(names[0])][0]
    if writes(row):
        combos = list(itertools.product(*map(range, sizes)))
        positions = np.array([combos[k] for k in rng.choice(len(combos), length, replace=False)]).T
    else:
        positions = np.stack([rng.integers(0, n, length) for n in sizes])
        positions[:, -1] = positions[:, 0]  # at least one position gathered twice
    negative = rng.random(positions.shape) < 0.3
    spelled = np.where(negative, positions - np.array(sizes)[:, None], positions)
    return {n: spelled[k].astype(np.int64) for k, n in enumerate(names)}


def sample_output_shape(case: Case) -> tuple[int, ...]:
    row = case.row
    if row.splits:  # the parts joined again
        return case.shapes[0]
    samples = []
    for p, shape in zip(row.operands, case.shapes):
        if p in row.bool_operands:
            samples.append(np.ones(shape, bool))
        elif p in INDEX_PARAMS:
            samples.append(np.zeros(shape, np.int64))
        else:
            sample = np.full(shape, 0.5) if shape else 0.5
            samples.append(DRAW_HOOKS.get(row.name, {}).get(p, lambda v: v)(sample))
    with np.errstate(all="ignore"):  # only the shape is wanted: 0.5 is outside some domains (arccosh)
        return np.shape(row.compute(*samples, **case.static_dict()))


def user_function(case: Case, dtype=np.float64) -> UserFunction:
    row = case.row
    names: list[str] = []
    floats: list[str] = []
    lines: list[str] = []
    constants = draw_index_arrays(case, rng_for(case, "const")) if case.const_index else {}
    for p in case.operands:
        if p in row.bool_operands:
            names += [f"{p}_a", f"{p}_b"]
            floats += [f"{p}_a", f"{p}_b"]
            lines.append(f"{p} = {p}_a > {p}_b")
        elif p in INDEX_PARAMS:
            if not case.const_index:
                names.append(p)
        else:
            names.append(p)
            floats.append(p)
    call, result = call_lines(case, list(case.operands))
    out_shape = sample_output_shape(case)
    W = weights(out_shape, dtype)
    ret = f"np.sum({result} * _W)" if out_shape else result
    source = f"def f({', '.join(names)}):\n" + "".join(f"    {line}\n" for line in lines + call) + f"    return {ret}\n"
    op = getattr(operator, case.name.strip("_"), None) if case.kind == "operator" else None
    namespace = {"np": np, "compiler": compiler, "_op": op, "_W": W, **constants}
    exec(compile(source, f"<{case}>", "exec"), namespace)

    static = normalized(row, case.shapes, dict(case.static)) if row.splits else case.static_dict()
    forward = oracle_forward(row, tuple(static))

    def oracle(*args):
        values = dict(zip(names, args)) | constants
        row_args = [
            np.greater(getval(values[f"{p}_a"]), getval(values[f"{p}_b"])) if p in row.bool_operands else values[p]
            for p in case.operands
        ]
        if is_elementwise(row) and out_shape:  # autograd's np.where does not sum a broadcast gradient back
            row_args = [a * np.ones(out_shape) if p in floats else a for p, a in zip(row.operands, row_args)]
        operands = dict(zip(row.operands, row_args))
        out = forward(*row_args, **{k: resolve_index_operands(v, operands) for k, v in static.items()})
        if row.splits:
            out = anp.concatenate(out[::-1], axis=dict(case.static).get("axis", 0))
        return anp.sum(out * W) if out_shape else out

    return UserFunction(case, namespace["f"], oracle, tuple(names), tuple(floats), constants, out_shape, source)


def away_from_kinks(values: np.ndarray, extra: tuple[float, ...] = ()) -> bool:
    """All values (and 0 and `extra`) at least KINK_MARGIN apart: no ties, no kinks."""
    points = np.sort(np.concatenate([np.ravel(values), [0.0], extra]))
    return bool(np.all(np.diff(points) > KINK_MARGIN))


def invertible(x: np.ndarray) -> np.ndarray:
    """A drawn matrix made diagonally dominant, so well conditioned: each diagonal entry grows
    by more than the row's other entries can add up to (the domain's bound, 3, times the size)."""
    return x + np.eye(x.shape[-1]) * 3.0 * x.shape[-1]


# Per row, per operand: what makes a drawn value one the row is smooth at (np.linalg's rows
# need invertible, well-conditioned matrices, which no interval of entries guarantees).
DRAW_HOOKS: dict[str, dict[str, Callable[[np.ndarray], np.ndarray]]] = {
    "det": {"x": invertible}, "inv": {"x": invertible}, "solve": {"x": invertible}, "solve_vec": {"x": invertible},
}


def draw_args(user: UserFunction, rng: np.random.Generator) -> list:
    """Arguments for f: floats from the row's domain (scalars as np.float64), index arrays."""
    case = user.case
    shapes = user.input_shapes()
    intervals = {}
    for p, interval in zip(case.row.operands, case.row.domain):
        if p in case.row.bool_operands:
            intervals[f"{p}_a"] = intervals[f"{p}_b"] = COND_DOMAIN
        elif interval is not None:
            intervals[p] = interval
    bounds = tuple(float(v) for _, v in case.static if isinstance(v, float))
    while True:
        floats = {n: rng.uniform(*intervals[n], shapes[n]) for n in user.floats}
        if away_from_kinks(np.concatenate([np.ravel(v) for v in floats.values()]), bounds):
            break
    for name, hook in DRAW_HOOKS.get(case.row.name, {}).items():
        floats[name] = hook(floats[name])
    arrays = draw_index_arrays(case, rng) if case.index is not None and not case.const_index else {}
    return [
        np.float64(floats[n]) if n in floats and not shapes[n] else floats.get(n, arrays.get(n)) for n in user.names
    ]


# --- oracles and checks -----------------------------------------------------------------------


def build(f, *examples, **kwargs) -> compiler.GradientProgram:
    """compiler.gradient, with the IR verified (forward graph and differentiated graph)."""
    verify(compiler.trace(f, *examples))
    prog = compiler.gradient(f, *examples, **kwargs)
    verify(prog.graph)
    return prog


def copies(args) -> list:
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def central_differences(f, args: list, position: int) -> np.ndarray:
    """d f / d args[position], element by element, f run by NumPy on float64 copies."""
    base = np.array(args[position], dtype=np.float64)
    grad = np.zeros(base.shape)
    with np.errstate(all="raise"):
        for element in np.ndindex(base.shape):
            step = 1e-6 * max(1.0, abs(base[element]))
            values = []
            for sign in (1, -1):
                moved = base.copy()
                moved[element] += sign * step
                arguments = copies(args)
                arguments[position] = moved[()] if moved.ndim == 0 else moved
                values.append(f(*arguments))
            grad[element] = (values[0] - values[1]) / (2 * step)
    return grad


def run(prog: compiler.GradientProgram, args: list):
    """prog.value_and_grad, checking that it leaves its arguments as they were."""
    before = copies(args)
    value, grads = prog.value_and_grad(*args)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b, err_msg="the emitted code wrote into an argument")
    return value, grads


def check_against_fd(prog: compiler.GradientProgram, f, names, args: list) -> None:
    """Value against NumPy running `f`, gradients against central differences; with scalar
    inputs, also that Python floats and NumPy float64 inputs give the same results."""
    value, grads = run(prog, args)
    assert len(grads) == len(prog.wrt)
    with np.errstate(all="raise"):
        expected = f(*copies(args))
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-13, atol=1e-15)
    for name, grad in zip(prog.wrt, grads):
        position = names.index(name)
        assert np.shape(grad) == np.shape(args[position]), name
        expected = central_differences(f, args, position)
        np.testing.assert_allclose(grad, expected, rtol=FD_RTOL, atol=FD_ATOL, err_msg=name)
    if all(np.ndim(a) == 0 for a in args):
        value_py, grads_py = prog.value_and_grad(*[float(a) for a in args])
        assert float(value_py) == float(value)
        assert [float(g) for g in grads_py] == [float(g) for g in grads]


def assert_close_to_autograd(actual, expected, err_msg: str = "") -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=AG_RTOL, atol=AG_ATOL, err_msg=err_msg
    )


def autograd_grads(fn, args: list, argnums) -> list:
    return [autograd.grad(fn, argnum=i)(*args) for i in argnums]


def check_against_autograd(prog: compiler.GradientProgram, oracle, names, args: list) -> None:
    value, grads = prog.value_and_grad(*args)
    assert_close_to_autograd(value, oracle(*args))
    positions = [names.index(n) for n in prog.wrt]
    for name, grad, expected in zip(prog.wrt, grads, autograd_grads(oracle, args, positions)):
        assert_close_to_autograd(grad, expected, err_msg=name)


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient of a broadcast result back to an operand of `shape`."""
    grad = np.asarray(grad)
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    return grad.sum(axis=tuple(k for k, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)
