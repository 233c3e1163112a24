"""The operation table: everything flatgrad knows about each operation, in one row.

A row is data. Its forward expression and its local gradients are Python expressions over the
row's parameter names, plus `out` (the gate's output) and `grad` (the upstream gradient) in
the gradient rules. Each gradient is written local factor first, upstream last, so the emitted
line reads as the lecture writes it: `grad_w1 = x1 * grad_s1`. What a backward gate reads from
the forward pass (the cache) is derived from the names its rule uses.

The tracer maps operators, ufuncs, array functions and `compiler.<gate>` calls to rows through
the `operators`/`reflected`/`ufuncs`/`functions`/`gate` fields and checks that `bool_operands`
get bools; autodiff applies `grads`; the optimizer's gate fusion rewrites the forward patterns
in `fuses` (calls of rows by name) into the row, and its folding passes an operand through where
the other is the number in `identity` (`x + 0`, `x * 1`);
codegen renders `forward` and `grads`; the tests draw inputs from `domain`. No other module
lists operations.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from compiler.helpers import HELPERS

# A closed interval the tests draw an input from; None for inputs that are not drawn (bools).
Interval = tuple[float, float] | None


# Python's operators as user code spells them, by their dunder's stem (`__add__`, `__radd__`
# and `__iadd__` are all `+`): for listings and for the errors about operators without a row.
OPERATOR_SYMBOLS = {
    "add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**", "matmul": "@",
    "neg": "unary -", "pos": "unary +", "abs": "abs()", "invert": "~", "and": "&", "or": "|", "xor": "^",
    "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "getitem": "x[i]", "setitem": "x[i] = v",
    "divmod": "divmod()", "lshift": "<<", "rshift": ">>",
}
UNARY_OPERATORS = ("neg", "pos", "abs", "invert")


def operator_symbol(dunder: str) -> str:
    """`+` for `__add__` and `__radd__`, `+=` for `__iadd__`; the dunder itself if unknown."""
    stem = dunder.strip("_")
    if stem in OPERATOR_SYMBOLS:
        return OPERATOR_SYMBOLS[stem]
    if stem[0] in "ri" and stem[1:] in OPERATOR_SYMBOLS:  # reflected, or in place
        return OPERATOR_SYMBOLS[stem[1:]] + ("=" if stem[0] == "i" else "")
    return dunder


@dataclass(frozen=True, eq=False)
class Op:
    """One operation: a row of the table. Only `name`, `operands` and `forward` are required; a
    row without `grads` passes no gradient (comparisons, fills, argmax)."""

    # --- what the operation is ------------------------------------------------------------------
    name: str  # the row's name, as the IR listing shows it (`mul`, `sum_keep`)
    operands: tuple[str, ...]  # names of the traced operands, in call order (`x`, `y`)
    forward: str  # the emitted expression over `operands` and `static` (`x * y`)
    # per differentiable operand: its local gradient times `grad`, over `operands`, `static`,
    # `out` (the gate's output) and `grad` (the upstream gradient), local factor first
    grads: Mapping[str, str] = field(default_factory=dict)
    pattern: str = ""  # the lecture's name for the gate's behaviour, shown in explain mode

    # --- how user code reaches it (the tracer) --------------------------------------------------
    operators: tuple[str, ...] = ()  # dunders on a traced value (`__mul__`)
    reflected: tuple[str, ...] = ()  # reflected dunders, a traced value on the right (`__rmul__`)
    inplace: tuple[str, ...] = ()  # augmented assignments (`__imul__`), traced as a rebinding
    ufuncs: tuple[str, ...] = ()  # NumPy ufuncs by name (`multiply`)
    functions: tuple[str, ...] = ()  # NumPy functions by name, through __array_function__ (`dot`)
    methods: tuple[str, ...] = ()  # ndarray methods (`x.sum()`)
    attributes: tuple[str, ...] = ()  # ndarray attributes (`x.T`)
    gate: bool = False  # also reachable as `compiler.<name>` (`compiler.sigmoid`)

    # --- how a call is read ---------------------------------------------------------------------
    static: tuple[str, ...] = ()  # names of static arguments, baked into the line (`axis`)
    signature: str | None = None  # the call's Python signature, when not just `operands`
    method_signature: str | None = None  # the method's, when it differs (`x, *shape`)
    bool_operands: tuple[str, ...] = ()  # operands that must be bool arrays (`where`'s `cond`)
    # which of several rows with one entry point takes a call, by operand ranks and statics
    when: Callable[[tuple[int, ...], Mapping[str, object]], bool] | None = None
    # the statics in one canonical form (`axis=-1` as `axis=1`), from the operand shapes
    normalize: Callable[[tuple[tuple[int, ...], ...], dict], dict] | None = None
    view: bool = False  # NumPy returns a view of the first operand: writing through it is refused
    # the signature's parameter holding a sequence of operands (np.concatenate's): the call takes
    # one to len(`operands`) of them, the k-th named operands[k] with its own rule, and `forward`
    # reads them all as one tuple under this name (`np.concatenate(xs, axis=axis)`)
    packs: str | None = None
    # the call gives a list (np.split): `normalize` makes the static `index` a tuple of indices,
    # one per part, and each part is an equation of its own with its index as `index`
    splits: bool = False

    # --- emitted text beside `forward` (codegen) ------------------------------------------------
    scalar_forward: str | None = None  # the expression when the output is a scalar (`1.0`)
    numba_forward: str | None = None  # the expression under numba, where NumPy's does not compile
    numba_grads: Mapping[str, str] = field(default_factory=dict)  # gradients under numba, likewise
    numba_when: Callable[[tuple[int, ...], Mapping[str, object]], bool] | None = None  # numba_* apply

    # --- optimize mode (passes) -----------------------------------------------------------------
    fuses: tuple[str, ...] = ()  # forward patterns, calls of rows by name, rewritten into this row
    fuse_when: Callable[[Mapping[str, object], Mapping[str, object]], bool] | None = None
    # readable mode fuses this row too: the fused gate's local gradient is finite where the
    # spelled-out gates' is not (the sigmoid's (1 - s) s, where exp(-x) overflows)
    fuse_for_stability: bool = False
    identity: Mapping[str, float] = field(default_factory=dict)  # operand: the number it is a no-op at

    # --- tests ----------------------------------------------------------------------------------
    domain: tuple[Interval, ...] = ()  # per operand, the interval inputs are drawn from
    shapes: tuple[tuple[int, ...], ...] = ()  # per operand, an example shape (array rows only)

    @functools.cache  # rows live as long as the table; every pass asks this per equation
    def rule_names(self, wrt: str) -> tuple[str, ...]:
        """The operands the local gradient with respect to `wrt` reads, in canonical order.

        A name read only for its static `.shape`, `.size`, `.ndim` or `.dtype` is not an
        operand: codegen writes those in as literals, and the cache does not keep the array.
        """
        names = _names_used(self.grads[wrt], self.operands + ("out", "grad") + self.static)
        arrays = INDEX_PARAMS if "index" in names else ()  # the index reads the index arrays
        return tuple(n for n in self.operands + ("out", "grad") if n in names or n in arrays)

    def rule(self, wrt: str, jit: str | None = None) -> str:
        """The text of the local gradient with respect to `wrt`, for a backend."""
        return self.numba_grads.get(wrt, self.grads[wrt]) if jit == "numba" else self.grads[wrt]

    def forward_text(self, scalar: bool, jit: str | None = None) -> str:
        """The text of the forward expression, for a scalar output or not, for a backend."""
        if scalar and self.scalar_forward is not None:
            return self.scalar_forward
        return self.numba_forward if jit == "numba" and self.numba_forward else self.forward

    def differentiable(self, param: str) -> bool:
        return param in self.grads

    def entry_points(self) -> tuple[tuple[str, str], ...]:
        """Every way user code reaches this op, as (kind, name): kind is `operator`, `reflected`,
        `ufunc`, `function` or `gate`. Empty for the fills autodiff makes."""
        return (
            tuple(("operator", d) for d in self.operators)
            + tuple(("reflected", d) for d in self.reflected)
            + tuple(("ufunc", u) for u in self.ufuncs)
            + tuple(("function", f) for f in self.functions)
            + tuple(("method", m) for m in self.methods)
            + tuple(("attribute", a) for a in self.attributes)
            + tuple(("inplace", d) for d in self.inplace)
            + ((("gate", self.name),) if self.gate else ())
        )

    def accepts(self, ndims: tuple[int, ...], static: Mapping[str, object]) -> bool:
        """Whether this row handles a call with operands of these ranks and these static values."""
        return self.when is None or self.when(ndims, static)

    def compute(self, *args: object, **static: object) -> object:
        """Evaluate the forward expression on concrete numbers or arrays.

        `static` holds the values `normalize` gave, which may leave out a static the expression
        does not read in that case (`.T` has no `axes`)."""
        operands = dict(zip(self.operands, args))
        static = {k: resolve_index_operands(v, operands) for k, v in static.items()}
        if self.packs is not None:
            return _compiled(self.forward, (self.packs, *static))(args, **static)
        return _compiled(self.forward, self.operands + tuple(static))(*args, **static)


    def evaluate_rule(self, wrt: str, bindings: Mapping[str, object], static: Mapping[str, object]) -> object:
        """Evaluate the local gradient with respect to `wrt` on concrete operands.

        `bindings` holds the row's params, `out` and `grad`; used to learn a gradient's shape.
        The stand-ins it is given (ones) may sit on a pole of the rule (arccosh's at x == 1):
        what comes out there is not wanted, so NumPy's warnings about it are not shown.
        """
        names = self.operands + ("out", "grad") + self.static
        values = {**bindings, **{k: resolve_index_operands(v, bindings) for k, v in static.items()}}
        with np.errstate(all="ignore"):
            return _compiled(self.grads[wrt], names)(**{n: values.get(n) for n in names})


STATIC_ATTRIBUTES = ("shape", "size", "ndim", "dtype")
# Indexing rows name their index-array operands i and j; a static `index` refers to them.
INDEX_PARAMS = ("i", "j")


@functools.lru_cache(maxsize=None)
def _names_used(expr: str, candidates: tuple[str, ...]) -> tuple[str, ...]:
    tree = ast.parse(expr, mode="eval")
    static_reads = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in STATIC_ATTRIBUTES and isinstance(node.value, ast.Name)
    }
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in static_reads}
    return tuple(name for name in candidates if name in used)


@functools.lru_cache(maxsize=None)
def _compiled(expr: str, params: tuple[str, ...]) -> Callable[..., object]:
    code = compile(f"lambda {', '.join(params)}: {expr}", f"<flatgrad op: {expr}>", "eval")
    return eval(code, {"np": np, **HELPERS})  # the table's own expressions, never user input


_X = ((-3.0, 3.0),)
_XY = ((-3.0, 3.0), (-3.0, 3.0))
_POSITIVE = ((0.1, 5.0),)


def _elementwise_rows() -> tuple[Op, ...]:
    """The elementwise NumPy surface beyond the lecture's gates: each row is a function of
    numbers, which NumPy broadcasts, with its local gradient from calculus (the list is HIPS
    autograd's, so that it can serve as the tests' oracle).

    Each domain is an interval on which the function is smooth, away from poles, branch cuts
    and kinks, so that central differences can check it. Rows whose result is piecewise
    constant (floor, sign, `//`) or a bool (isnan, logical_and) pass no gradient: their
    derivative is 0 wherever it exists.
    """

    def unary(name: str, grad: str | None, pattern: str, domain=_X, ufuncs: tuple[str, ...] | None = None,
              **more) -> Op:
        return Op(name, ("x",), f"np.{name}(x)", {"x": grad} if grad else {}, pattern=pattern,
                  ufuncs=(name,) if ufuncs is None else ufuncs, domain=domain, **more)

    def binary(name: str, grads: dict[str, str], pattern: str, domain=_XY, **more) -> Op:
        return Op(name, ("x", "y"), f"np.{name}(x, y)", grads, pattern=pattern, ufuncs=(name,), domain=domain,
                  **more)

    flat = "piecewise constant, passes no gradient"
    predicate = "a bool of x, passes no gradient"
    return (
        # --- hyperbolic and inverse trigonometric gates --------------------------------------------
        unary("sinh", "np.cosh(x) * grad", "sinh gate: local gradient cosh(x)"),
        unary("cosh", "np.sinh(x) * grad", "cosh gate: local gradient sinh(x)"),
        unary("arcsin", "1 / np.sqrt(1 - x ** 2) * grad", "arcsin gate: local gradient 1/sqrt(1 - x^2)",
              domain=((-0.9, 0.9),)),
        unary("arccos", "-1 / np.sqrt(1 - x ** 2) * grad", "arccos gate: local gradient -1/sqrt(1 - x^2)",
              domain=((-0.9, 0.9),)),
        unary("arctan", "1 / (1 + x ** 2) * grad", "arctan gate: local gradient 1/(1 + x^2)"),
        unary("arcsinh", "1 / np.sqrt(x ** 2 + 1) * grad", "arcsinh gate: local gradient 1/sqrt(x^2 + 1)"),
        unary("arccosh", "1 / np.sqrt(x ** 2 - 1) * grad", "arccosh gate: local gradient 1/sqrt(x^2 - 1)",
              domain=((1.2, 4.0),)),
        unary("arctanh", "1 / (1 - x ** 2) * grad", "arctanh gate: local gradient 1/(1 - x^2)",
              domain=((-0.9, 0.9),)),
        # --- exponentials and logarithms -------------------------------------------------------------
        unary("log1p", "1 / (1 + x) * grad", "log1p gate: local gradient 1/(1 + x)", domain=((-0.9, 3.0),)),
        unary("expm1", "(out + 1) * grad", "expm1 gate: local gradient exp(x) = out + 1, from its output"),
        unary("log2", "1 / (x * np.log(2.0)) * grad", "log2 gate: local gradient 1/(x ln 2)", domain=_POSITIVE),
        unary("log10", "1 / (x * np.log(10.0)) * grad", "log10 gate: local gradient 1/(x ln 10)",
              domain=_POSITIVE),
        unary("exp2", "np.log(2.0) * out * grad", "exp2 gate: local gradient ln(2) 2^x, from its output"),
        # --- powers and scalings -------------------------------------------------------------------------
        unary("reciprocal", "-out ** 2 * grad", "reciprocal gate: local gradient -1/x^2 = -out^2, from its output",
              domain=((0.5, 3.0),)),
        # cbrt is smooth on both sides of 0 but not at it; one side is enough for the check
        unary("cbrt", "1 / (3 * out ** 2) * grad", "cbrt gate: local gradient 1/(3 cbrt(x)^2), from its output",
              domain=_POSITIVE),
        unary("deg2rad", "np.pi / 180 * grad", "deg2rad gate: scales by pi/180", ufuncs=("deg2rad", "radians")),
        unary("rad2deg", "180 / np.pi * grad", "rad2deg gate: scales by 180/pi", ufuncs=("rad2deg", "degrees")),
        # sin(pi x)/(pi x); its gradient (cos(pi x) - out)/x divides by x + (x == 0), which is x except at
        # 0, where the numerator is 0 and the gradient (0) comes out right instead of 0/0
        unary("sinc", "(np.cos(np.pi * x) - out) / (x + (x == 0)) * grad",
              "sinc gate: local gradient (cos(pi x) - sinc(x))/x, from its output", ufuncs=(),
              functions=("sinc",)),
        # --- a kink, and a copy -------------------------------------------------------------------------
        # at its kink, 0, fabs passes the gradient np.sign gives there: 0 (as abs does)
        unary("fabs", "np.sign(x) * grad", "abs gate: router with the sign of x"),
        # finite values pass through; nan and the infinities become numbers that do not depend on x
        unary("nan_to_num", "np.isfinite(x) * grad", "copy where x is finite, else no gradient", ufuncs=(),
              functions=("nan_to_num",)),
        # --- binary gates ----------------------------------------------------------------------------------
        # hypot is smooth away from the origin, arctan2 away from it and from its branch cut (the
        # first argument 0, the second negative): the first argument is drawn positive. At the
        # origin neither has a gradient, and their rules give 0/0 = nan there, as autograd's do
        binary("hypot", {"x": "x / out * grad", "y": "y / out * grad"},
               "hypot gate: local gradients x/out and y/out, from its output", domain=((0.5, 3.0), (-3.0, 3.0))),
        binary("arctan2", {"x": "y / (x ** 2 + y ** 2) * grad", "y": "-x / (x ** 2 + y ** 2) * grad"},
               "arctan2 gate: local gradients y/(x^2 + y^2) and -x/(x^2 + y^2)", domain=((0.5, 3.0), (-3.0, 3.0))),
        binary("logaddexp", {"x": "np.exp(x - out) * grad", "y": "np.exp(y - out) * grad"},
               "log-add-exp gate: local gradients exp(x - out) and exp(y - out), from its output"),
        binary("logaddexp2", {"x": "np.exp2(x - out) * grad", "y": "np.exp2(y - out) * grad"},
               "log-add-exp2 gate: local gradients 2^(x - out) and 2^(y - out), from its output"),
        # fmax/fmin are maximum/minimum that skip a nan: the gradient follows the value chosen
        binary("fmax", {"x": "((x >= y) | np.isnan(y)) * grad", "y": "((x < y) | np.isnan(x)) * grad"},
               "max gate: router (a tie goes to the first argument, a nan's gradient to the other)"),
        binary("fmin", {"x": "((x <= y) | np.isnan(y)) * grad", "y": "((x > y) | np.isnan(x)) * grad"},
               "min gate: router (a tie goes to the first argument, a nan's gradient to the other)"),
        # x % y = x - floor(x / y) y, with floor(x / y) constant between the jumps; at a jump (x / y
        # a whole number) the rule reads floor's value there, as autograd's does
        Op("mod", ("x", "y"), "x % y", {"x": "grad", "y": "-np.floor(x / y) * grad"},
           pattern="mod gate: distributor to x, -floor(x/y) to y",
           operators=("__mod__",), reflected=("__rmod__",), inplace=("__imod__",), ufuncs=("remainder",),
           domain=((-3.0, 3.0), (0.5, 3.0))),
        # --- piecewise constant: no gradient -----------------------------------------------------------
        Op("floordiv", ("x", "y"), "x // y", pattern=f"floor division: {flat}",
           operators=("__floordiv__",), reflected=("__rfloordiv__",), inplace=("__ifloordiv__",),
           ufuncs=("floor_divide",), domain=((-3.0, 3.0), (0.5, 3.0))),
        unary("sign", None, f"sign: {flat}"),
        unary("floor", None, f"floor: {flat}"),
        unary("ceil", None, f"ceil: {flat}"),
        # np.round and np.around (decimals=0) and x.round() round half to even, as rint does
        unary("rint", None, f"round: {flat}", functions=("round", "around"), methods=("round",)),
        # np.fix rounds toward zero, as trunc does (and numba has no np.fix)
        unary("trunc", None, f"trunc: {flat}", functions=("fix",)),
        # --- bools -------------------------------------------------------------------------------------------
        unary("isfinite", None, f"isfinite: {predicate}"),
        unary("isnan", None, f"isnan: {predicate}"),
        unary("isinf", None, f"isinf: {predicate}"),
        unary("isposinf", None, f"isposinf: {predicate}", ufuncs=(), functions=("isposinf",)),
        unary("isneginf", None, f"isneginf: {predicate}", ufuncs=(), functions=("isneginf",)),
        unary("logical_not", None, f"logical not: {predicate}"),
        # whole-array truth, as a branch asks it (`if np.all(x > 0):`)
        unary("all", None, "all: one bool of every element, passes no gradient", ufuncs=(), functions=("all",),
              methods=("all",)),
        unary("any", None, "any: one bool of the elements, passes no gradient", ufuncs=(), functions=("any",),
              methods=("any",)),
        *(
            binary(f"logical_{kind}", {}, f"logical {kind}: a bool of x and y, passes no gradient")
            for kind in ("and", "or", "xor")
        ),
        # `&`, `|`, `^` and `~` of masks, as course code combines them (`(x > 0) & (x < 1)`). Of bools
        # they are the logical ones; of integers they would be bitwise, which no gradient needs
        *(
            Op(f"mask_{kind}", ("x", "y"), f"x {symbol} y",
               pattern=f"mask {kind}: a bool of x and y, passes no gradient",
               operators=(f"__{kind}__",), reflected=(f"__r{kind}__",), inplace=(f"__i{kind}__",),
               ufuncs=(f"bitwise_{kind}",), bool_operands=("x", "y"), domain=(None, None))
            for kind, symbol in (("and", "&"), ("or", "|"), ("xor", "^"))
        ),
        # `~` of a Python bool is an int (~True == -2): a number is negated with `not`
        Op("mask_not", ("x",), "~x", pattern="mask not: a bool of x, passes no gradient", operators=("__invert__",),
           ufuncs=("invert",), bool_operands=("x",), scalar_forward="not x", domain=(None,)),
    )


@dataclass(frozen=True)
class IndexOperand:
    """Stands, in a static index, for the index array passed as the operand named `name`."""

    name: str

    def __repr__(self) -> str:
        return self.name


def resolve_index_operands(value: object, operands: Mapping[str, object]) -> object:
    """`value` with each IndexOperand replaced by the operand it names."""
    if isinstance(value, IndexOperand):
        return operands[value.name]
    if isinstance(value, tuple):
        return tuple(resolve_index_operands(v, operands) for v in value)
    return value


def _ranks(ranks: tuple[int, ...]) -> Callable[[tuple[int, ...], Mapping[str, object]], bool]:
    return lambda ndims, static: ndims == ranks


def _arrays(count: int, operands: int = 1) -> Callable[[tuple[int, ...], Mapping[str, object]], bool]:
    """Indexing rows: `operands` values indexed or written, then `count` index arrays."""
    return lambda ndims, static: len(ndims) == operands + count


def _adds_axes_only(static: Mapping[str, object]) -> bool:
    """Whether a static index only adds axes: None, with full slices and Ellipsis around it."""
    index = static["index"]
    parts = index if isinstance(index, tuple) else (index,)
    full = slice(None)
    return any(p is None for p in parts) and all(p is None or p is Ellipsis or p == full for p in parts)


def _bound(value: object, default: float) -> float:
    return default if value is None else float(value)  # type: ignore[arg-type]


def _reshape(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    shape = static["shape"]
    if isinstance(shape, tuple) and len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]  # x.reshape((3, 4)) as well as x.reshape(3, 4)
    shape = tuple(int(n) for n in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    size = int(np.prod(shapes[0]))
    if shape.count(-1) == 1:
        known = int(np.prod([n for n in shape if n != -1]))
        shape = tuple(size // known if n == -1 else n for n in shape)
    return {"shape": shape}


def _axes(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """Reductions: `axis` as None, one non-negative int or a sorted tuple; `keepdims` as a bool."""
    ndim = len(shapes[0])
    axis, keepdims = static["axis"], bool(static["keepdims"])
    if axis is None:
        return {"axis": tuple(range(ndim)) if keepdims else None, "keepdims": keepdims}
    axes = tuple(sorted({int(a) % ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,))}))
    return {"axis": axes[0] if len(axes) == 1 else axes, "keepdims": keepdims}


def _one_pick_per_row(operands: Mapping[str, object], static: Mapping[str, object]) -> bool:
    """`probs[rows, cols]` of a matrix, rows and cols of one length, paired one to one."""
    probs, rows, cols = (operands[name].shape for name in ("probs", "i", "j"))  # type: ignore[attr-defined]
    pairs = static["index"] == (IndexOperand("i"), IndexOperand("j"))
    return pairs and len(probs) == 2 and len(rows) == 1 and rows == cols


def _logsumexp_rows() -> tuple[Op, ...]:
    """log(sum(exp(x))) over all axes, some axes, and with keepdims: optimize mode fuses these
    from the plain and from the max-shifted spelling into a stable gate whose local gradient is
    exp(x - out), the softmax. No user code names them."""
    stable = "add({top}, log({sum}(exp(sub(x, {top})){keys})))"
    rows = []
    variants = (("_all", "max_all(x)", "sum_all", ""), ("_keep", "max_keep(x, axis=axis)", "sum_keep", ", axis=axis"))
    for suffix, top, summed, keys in variants:
        shifted = stable.format(top=top, sum=summed, keys=keys)
        commuted = "add(log({sum}(exp(sub(x, {top})){keys})), {top})".format(top=top, sum=summed, keys=keys)
        forward = "logsumexp_all(x)" if suffix == "_all" else "logsumexp(x, axis, True)"
        rows.append(
            Op(f"logsumexp{suffix}", ("x",), forward, {"x": "np.exp(x - out) * grad"},
               pattern="log-sum-exp gate: local gradient exp(x - out), the softmax of x, from its output",
               static=() if suffix == "_all" else ("axis",),
               numba_forward=None if suffix == "_all" else "logsumexp_along(x, axis).reshape(out.shape)",
               numba_when=None if suffix == "_all" else lambda nd, st: nd == (2,) and isinstance(st["axis"], int),
               fuses=(f"log({summed}(exp(x){keys}))", shifted, commuted),
               domain=_X, shapes=((3, 4),))
        )
    rows.append(
        Op("logsumexp", ("x",), "logsumexp(x, axis, False)",
           {"x": "np.exp(x - np.expand_dims(out, axis)) * np.expand_dims(grad, axis)"},
           pattern="log-sum-exp gate: local gradient exp(x - out), the softmax of x, from its output",
           static=("axis",), numba_forward="logsumexp_along(x, axis)",
           numba_when=lambda nd, st: nd == (2,) and isinstance(st["axis"], int),
           fuses=("log(sum(exp(x), axis=axis))",), domain=_X, shapes=((3, 4),))
    )
    return tuple(rows)


def _optional_axis(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`axis` as None or one non-negative int."""
    return {"axis": None if static["axis"] is None else _axis_index(static["axis"], len(shapes[0]))}


def _axis_index(axis: object, ndim: int) -> int:
    """`axis` of an array of `ndim` axes as a non-negative int; NumPy's error where it is none."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"an axis is an integer, not {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return int(axis) % ndim


def _axis_tuple(axis: object, ndim: int) -> tuple[int, ...]:
    """One axis or several, as non-negative ints in the order given (repeats are an error)."""
    axes = tuple(_axis_index(a, ndim) for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in {axis!r}")
    return axes


def _one_or_all(axes: tuple[int, ...]) -> int | tuple[int, ...]:
    """A static as user code writes it: one axis as an int, several as a tuple."""
    return axes[0] if len(axes) == 1 else axes


def _transposed(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`x.T`, `x.transpose(1, 0, 2)`, `np.transpose(x, (1, 0, 2))`: the full reversal of the
    axes (what `.T` does) as no static at all, so the transpose row writes `x.T`; any other
    permutation as `axes` and its `inverse`, which transposes the gradient back."""
    ndim, axes = len(shapes[0]), static["axes"]
    if isinstance(axes, tuple) and len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
        axes = axes[0]  # x.transpose((1, 0, 2)) as well as x.transpose(1, 0, 2)
    if axes is None or axes == ():
        return {}
    perm = tuple(_axis_index(a, ndim) for a in axes)
    if sorted(perm) != list(range(ndim)):
        raise ValueError(f"axes {tuple(axes)} are not a permutation of the {ndim} axes")
    if perm == tuple(reversed(range(ndim))):
        return {}
    return {"axes": perm, "inverse": tuple(int(i) for i in np.argsort(perm))}


def _layout_rows() -> tuple[Op, ...]:
    """Shape and layout functions: each moves, copies, drops or pads elements without arithmetic,
    so each local gradient sends the upstream gradient back the way the elements came (reshaped,
    transposed, sliced, or the copies summed).

    Statics arrive as NumPy spells them and leave `normalize` as non-negative axes; a static the
    signature does not name (`inverse`, `at`, `split`, `parts`) is derived there for the
    gradient rule or for numba. numba 0.68 reshapes only contiguous arrays, and an upstream
    gradient may be a transposed one, so the numba rules that reshape it make it contiguous
    first (a no-op when it is).

    Joining (concatenate, stack, vstack, hstack, column_stack) takes a list of values: such a row
    `packs` them, one line `s3 = np.concatenate((a, b, c), axis=0)` over all its operands (up to
    32), and each part's rule is the upstream gradient at that part's place, `grad[parts[k]]`,
    written as a plain index: `grad_a = grad_s3[0:2]`. np.split gives a list: each part is an
    equation `x[index]` of its own (`splits`), whose gradient is written back where it came from.
    """
    back = "grad.reshape(x.shape)"
    numba_back = {"x": "np.ascontiguousarray(grad).reshape(x.shape)"}
    to_out = "np.ascontiguousarray(x).reshape(out.shape)"
    reshaped = "reshape: the gradient reshaped back"
    arrays_only = lambda nd, st: nd[0] > 0  # noqa: E731 -- numba has these for arrays, not for numbers
    rows = [
        Op("ravel", ("x",), "np.ravel(x)", {"x": back}, pattern=reshaped, functions=("ravel",), methods=("ravel",),
           numba_grads=numba_back, numba_when=arrays_only, domain=_X, shapes=((3, 4),), view=True),
        Op("flatten", ("x",), "x.flatten()", {"x": back}, pattern=reshaped, methods=("flatten",),
           when=arrays_only, numba_grads=numba_back, domain=_X, shapes=((3, 4),)),
        Op("squeeze", ("x",), "np.squeeze(x, axis)", {"x": back}, pattern=reshaped,
           functions=("squeeze",), methods=("squeeze",), static=("axis",), signature="x, axis=None",
           normalize=_squeezed, numba_forward=to_out, numba_grads=numba_back,
           numba_when=lambda nd, st: nd[0] > len(st["axis"] if isinstance(st["axis"], tuple) else (st["axis"],)),
           domain=_X, shapes=((3, 1, 4),), view=True),
        Op("expand_dims", ("x",), "np.expand_dims(x, axis)", {"x": back}, pattern=reshaped,
           functions=("expand_dims",), static=("axis",), signature="x, axis",
           normalize=_expanded, numba_forward=to_out, numba_grads=numba_back, numba_when=arrays_only,
           domain=_X, shapes=((3, 4),), view=True),
        *(
            Op(f"atleast_{n}d", ("x",), f"np.atleast_{n}d(x)", {"x": back}, pattern=reshaped,
               functions=(f"atleast_{n}d",), numba_grads=numba_back, numba_when=arrays_only,
               domain=_X, shapes=((4,),), view=True)
            for n in (1, 2, 3)
        ),
        Op("swapaxes", ("x",), "np.swapaxes(x, axis1, axis2)", {"x": "np.swapaxes(grad, axis1, axis2)"},
           pattern="swapaxes: the gradient's axes swapped back", functions=("swapaxes",), methods=("swapaxes",),
           static=("axis1", "axis2"), signature="x, axis1, axis2",
           normalize=lambda shapes, st: {k: _axis_index(st[k], len(shapes[0])) for k in ("axis1", "axis2")},
           domain=_X, shapes=((2, 3, 4),), view=True),
        Op("moveaxis", ("x",), "np.moveaxis(x, source, destination)",
           {"x": "np.moveaxis(grad, destination, source)"}, pattern="moveaxis: the gradient's axes moved back",
           functions=("moveaxis",), static=("source", "destination"), signature="x, source, destination",
           normalize=_moved, domain=_X, shapes=((2, 3, 4),), view=True),
        # rollaxis(x, axis, start) is moveaxis(x, axis, destination) for the destination it means
        Op("rollaxis", ("x",), "np.moveaxis(x, axis, destination)", {"x": "np.moveaxis(grad, destination, axis)"},
           pattern="moveaxis: the gradient's axes moved back", functions=("rollaxis",),
           static=("axis", "start", "destination"), signature="x, axis, start=0", normalize=_rolled_axis,
           domain=_X, shapes=((2, 3, 4),), view=True),
        Op("transpose_axes", ("x",), "x.transpose(axes)", {"x": "grad.transpose(inverse)"},
           pattern="transpose: the gradient transposed back by the inverse permutation",
           functions=("transpose",), methods=("transpose",), static=("axes", "inverse"),
           signature="x, axes=None", method_signature="x, *axes", normalize=_transposed,
           when=lambda nd, st: "axes" in st, domain=_X, shapes=((2, 3, 4),), view=True),
        Op("flip", ("x",), "np.flip(x, axis)", {"x": "np.flip(grad, axis)"},
           pattern="flip: the gradient flipped back", functions=("flip",), static=("axis", "at"),
           signature="x, axis=None", normalize=_flipped, numba_forward="x[at]", numba_grads={"x": "grad[at]"},
           numba_when=arrays_only, domain=_X, shapes=((3, 4),), view=True),
        *(
            Op(name, ("x",), f"np.{name}(x)", {"x": f"np.{name}(grad)"}, pattern="flip: the gradient flipped back",
               functions=(name,), domain=_X, shapes=((3, 4),), view=True)
            for name in ("fliplr", "flipud")
        ),
        Op("roll", ("x",), "np.roll(x, shift, axis)", {"x": "np.roll(grad, back, axis)"},
           pattern="roll: the gradient rolled back", functions=("roll",), static=("shift", "axis", "back"),
           signature="x, shift, axis=None", normalize=_rolled, numba_forward="np.roll(x, shift)",
           numba_grads={"x": "np.roll(grad, back)"}, numba_when=lambda nd, st: st["axis"] is None,
           domain=_X, shapes=((3, 4),)),
        Op("tile", ("x",), "np.tile(x, reps)", {"x": "grad.reshape(split).sum(axis=axes)"},
           pattern="tile: the gradients of the copies summed", functions=("tile",),
           static=("reps", "spread", "split", "axes"), signature="x, reps", normalize=_tiles,
           numba_forward="tiled(x, spread, split).reshape(out.shape)",
           numba_grads={"x": "np.ascontiguousarray(grad).reshape(split).sum(axis=axes).reshape(x.shape)"},
           numba_when=arrays_only, domain=_X, shapes=((3, 2),)),
        # np.repeat with an axis, then without (of the flattened array), told apart by `when`
        Op("repeat", ("x",), "np.repeat(x, repeats, axis)", {"x": "grad.reshape(split).sum(axis=axis + 1)"},
           pattern="repeat: the gradients of the copies summed", functions=("repeat",), methods=("repeat",),
           static=("repeats", "axis", "spread", "split"), signature="x, repeats, axis=None", normalize=_repeats,
           when=lambda nd, st: st["axis"] is not None, numba_forward="tiled(x, spread, split).reshape(out.shape)",
           numba_grads={"x": "np.ascontiguousarray(grad).reshape(split).sum(axis=axis + 1)"},
           domain=_X, shapes=((3, 2),)),
        Op("repeat_all", ("x",), "np.repeat(x, repeats)", {"x": "grad.reshape(split).sum(axis=1).reshape(x.shape)"},
           pattern="repeat: the gradients of the copies summed", functions=("repeat",), methods=("repeat",),
           static=("repeats", "axis", "spread", "split"), signature="x, repeats, axis=None", normalize=_repeats,
           when=lambda nd, st: st["axis"] is None,
           numba_grads={"x": "np.ascontiguousarray(grad).reshape(split).sum(axis=1).reshape(x.shape)"},
           numba_when=arrays_only, domain=_X, shapes=((3, 2),)),
        # np.diag of a vector makes a matrix; of a matrix it takes a diagonal (the other's gradient)
        Op("diag", ("x",), "np.diag(x, k)", {"x": "np.diag(grad, k)"},
           pattern="diag: the gradient's diagonal", functions=("diag",), static=("k",), signature="x, k=0",
           normalize=lambda shapes, st: {"k": int(st["k"])}, when=_ranks((1,)), domain=_X, shapes=((3,),)),
        Op("diag_of", ("x",), "np.diag(x, k)",
           {"x": "on_diagonal(x.shape, k, grad, x.dtype)"},
           pattern="diagonal: the gradient written back on the diagonal", functions=("diag",), static=("k",),
           signature="x, k=0", normalize=lambda shapes, st: {"k": int(st["k"])}, when=_ranks((2,)),
           domain=_X, shapes=((3, 4),), view=True),
        Op("diagonal", ("x",), "np.diagonal(x, offset)", {"x": "on_diagonal(x.shape, offset, grad, x.dtype)"},
           pattern="diagonal: the gradient written back on the diagonal", functions=("diagonal",),
           methods=("diagonal",), static=("offset", "axis1", "axis2"), signature="x, offset=0, axis1=0, axis2=1",
           normalize=_diagonal, when=lambda nd, st: nd == (2,) and "axis1" not in st,
           numba_forward="np.diag(x, offset)", domain=_X, shapes=((3, 4),), view=True),
        *(
            Op(name, ("x",), f"np.{name}(x, k)", {"x": f"np.{name}(grad, k)"},
               pattern=f"{name}: router (to the kept triangle)", functions=(name,), static=("k",),
               signature="x, k=0", normalize=lambda shapes, st: {"k": int(st["k"])},
               when=lambda nd, st: nd[0] >= 2, numba_when=_ranks((2,)), domain=_X, shapes=((3, 4),))
            for name in ("triu", "tril")
        ),
        Op("pad", ("x",), "np.pad(x, pad_width, constant_values=constant_values)", {"x": "grad[at]"},
           pattern="pad: the gradient of the inner part, sliced out", functions=("pad",),
           static=("pad_width", "mode", "constant_values", "at"),
           signature="x, pad_width, mode='constant', constant_values=0", normalize=_padded,
           numba_forward="updated(np.full(out.shape, constant_values, x.dtype), at, x)",
           numba_when=arrays_only, domain=_X, shapes=((3, 2),)),
        *(
            Op(name, ("x",), "x[index]", {"x": "scatter(x.shape, index, grad, x.dtype)"},
               pattern="split: each part's gradient written back where it came from", functions=(name,),
               static=("indices_or_sections", "axis", "index"), signature="x, indices_or_sections, axis=0",
               normalize=functools.partial(_split_parts, equal=name == "split"), splits=True,
               domain=_X, shapes=((4, 6),), view=True)
            for name in ("split", "array_split")
        ),
    ]
    parts = tuple(f"x{k}" for k in range(32))
    vectors = lambda nd, st: min(nd) > 0  # noqa: E731 -- numba joins arrays, not numbers
    alike = lambda nd, st: min(nd) == max(nd) > 0  # noqa: E731 -- and of one rank, for vstack and hstack
    joins = (
        # name, entry point, forward, signature, when, numba_when, example shapes
        ("concatenate", "concatenate", "np.concatenate(xs, axis=axis)", "xs, axis=0", None, None,
         ((2, 3), (1, 3), (2, 3))),
        ("stack", "stack", "np.stack(xs, axis=axis)", "xs, axis=0", lambda nd, st: max(nd) > 0, None, ((2, 3),) * 3),
        ("stack_scalars", "stack", "np.array(xs)", "xs, axis=0", lambda nd, st: max(nd) == 0, None, ((),) * 3),
        ("vstack", "vstack", "np.vstack(xs)", "xs", None, alike, ((3,), (2, 3), (3,))),
        ("hstack", "hstack", "np.hstack(xs)", "xs", None, alike, ((2, 3), (2, 1), (2, 2))),
        ("column_stack", "column_stack", "np.column_stack(xs)", "xs", None, vectors, ((3,), (3, 2), (3,))),
    )
    for name, entry, forward, signature, when, numba_when, shapes in joins:
        rows.append(
            Op(name, parts, forward, {p: f"grad[parts[{k}]]" for k, p in enumerate(parts)},
               pattern="join: each part's gradient sliced out of the upstream one", functions=(entry,),
               static=("axis", "parts") if "axis" in signature else ("parts",), signature=signature, packs="xs",
               normalize=functools.partial(_joined, entry), when=when, numba_when=numba_when,
               domain=_X * len(parts), shapes=shapes)
        )
    return tuple(rows)


def _squeezed(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`axis` as the one axis or tuple of axes of size 1 to drop (None: all of them)."""
    shape, axis = shapes[0], static["axis"]
    axes = tuple(i for i, n in enumerate(shape) if n == 1) if axis is None else _axis_tuple(axis, len(shape))
    if any(shape[a] != 1 for a in axes):
        raise ValueError(f"cannot squeeze out an axis of a size other than 1 (shape {shape}, axis {axis})")
    return {"axis": _one_or_all(tuple(sorted(axes)))}


def _expanded(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`axis` as the new axes' places in the result, sorted (one as an int)."""
    axis = static["axis"]
    added = len(axis) if isinstance(axis, (tuple, list)) else 1
    return {"axis": _one_or_all(tuple(sorted(_axis_tuple(axis, len(shapes[0]) + added))))}


def _moved(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    ndim = len(shapes[0])
    source, destination = (_axis_tuple(static[k], ndim) for k in ("source", "destination"))
    if len(source) != len(destination):
        raise ValueError("source and destination must name as many axes")
    return {"source": _one_or_all(source), "destination": _one_or_all(destination)}


def _rolled_axis(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    ndim = len(shapes[0])
    axis, start = _axis_index(static["axis"], ndim), static["start"]
    if isinstance(start, (bool, np.bool_)) or not isinstance(start, (int, np.integer)) or not -ndim <= start <= ndim:
        raise ValueError(f"start {start!r} is not an int from {-ndim} to {ndim}")
    start = int(start) % (ndim + 1) if start < 0 else int(start)
    return {"axis": axis, "destination": start - 1 if axis < start else start}


def _flipped(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`axis` as one or several axes (None: all); `at` the same flip as slices, for numba."""
    ndim, axis = len(shapes[0]), static["axis"]
    axes = tuple(sorted(range(ndim) if axis is None else _axis_tuple(axis, ndim)))
    at = tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(max(axes, default=-1) + 1))
    return {"axis": _one_or_all(axes), "at": at}


def _rolled(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`shift` and `axis` as NumPy pairs them (shifts along one axis add up), `back` the shift
    that undoes it."""
    shift, axis = static["shift"], static["axis"]
    shifts = tuple(int(_integer(s, "shift")) for s in (shift if isinstance(shift, (tuple, list)) else (shift,)))
    if axis is None:
        if len(shifts) != 1:
            raise ValueError("without an axis, roll takes one shift")
        return {"shift": shifts[0], "axis": None, "back": -shifts[0]}
    axes = tuple(_axis_index(a, len(shapes[0])) for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))
    if len(shifts) == 1:
        shifts *= len(axes)
    if len(axes) == 1:
        axes *= len(shifts)
    if len(axes) != len(shifts):
        raise ValueError("shift and axis must have the same length")
    total: dict[int, int] = {}
    for a, s in zip(axes, shifts):
        total[a] = total.get(a, 0) + s
    kept = tuple(sorted(total))
    return {"shift": _one_or_all(tuple(total[a] for a in kept)), "axis": _one_or_all(kept),
            "back": _one_or_all(tuple(-total[a] for a in kept))}


def _integer(value: object, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, not {value!r}")
    return int(value)


def _tiles(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`reps` as a tuple; `split` the result's shape with each axis split in (copies, length),
    and `axes` those to sum the gradient over (the copies', and axes tile added in front)."""
    shape, reps = shapes[0], static["reps"]
    reps = tuple(_integer(r, "reps") for r in (reps if isinstance(reps, (tuple, list)) else (reps,)))
    if any(r < 0 for r in reps):
        raise ValueError("reps must not be negative")
    ndim = max(len(shape), len(reps))
    full_reps = (1,) * (ndim - len(reps)) + reps
    full_shape = (1,) * (ndim - len(shape)) + shape
    split = tuple(n for pair in zip(full_reps, full_shape) for n in pair)
    spread = tuple(n for length in full_shape for n in (1, length))
    added = tuple(2 * a + 1 for a in range(ndim - len(shape)))
    axes = tuple(sorted(set(range(0, 2 * ndim, 2)) | set(added)))
    return {"reps": reps, "spread": spread, "split": split, "axes": axes}


def _repeats(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`repeats` as one int; `split` the result's shape with the repeated axis split in (length,
    copies), whose last the gradient is summed over; `spread` the copies' axis as size 1, for numba."""
    shape, axis = shapes[0], static["axis"]
    repeats = _integer(static["repeats"], "repeats (flatgrad takes one count for every element)")
    if repeats < 0:
        raise ValueError("repeats must not be negative")
    if axis is None:
        size = int(np.prod(shape))
        return {"repeats": repeats, "axis": None, "spread": (size, 1), "split": (size, repeats)}
    a = _axis_index(axis, len(shape))
    return {"repeats": repeats, "axis": a, "spread": shape[: a + 1] + (1,) + shape[a + 1:],
            "split": shape[: a + 1] + (repeats,) + shape[a + 1:]}


def _diagonal(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """Of a matrix: `offset` of the diagonal of axes (0, 1); that of axes (1, 0) is the diagonal
    at -offset. Other ranks keep the statics as given, and no row takes them."""
    offset = _integer(static["offset"], "offset")
    if len(shapes[0]) != 2:
        return {"offset": offset, "axis1": static["axis1"], "axis2": static["axis2"]}
    axes = (_axis_index(static["axis1"], 2), _axis_index(static["axis2"], 2))
    if axes[0] == axes[1]:
        raise ValueError("axis1 and axis2 cannot be the same")
    return {"offset": offset if axes == (0, 1) else -offset}


def _padded(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`pad_width` as (before, after) per axis, `constant_values` one number; `at` the slices
    of the result where `x` sits, which the gradient is cut out of."""
    shape = shapes[0]
    if static["mode"] != "constant":
        raise ValueError(f"mode={static['mode']!r} has no gradient rule in flatgrad; mode='constant' has")
    value = static["constant_values"]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"constant_values must be one number, not {value!r}")
    widths = np.broadcast_to(np.asarray(static["pad_width"]), (len(shape), 2))
    if widths.dtype.kind not in "iu" or (widths < 0).any():
        raise ValueError(f"pad_width {static['pad_width']!r} must be non-negative integers")
    width = tuple((int(before), int(after)) for before, after in widths)
    at = tuple(slice(before, before + n) for (before, _), n in zip(width, shape))
    return {"pad_width": width, "constant_values": value.item() if isinstance(value, np.generic) else value,
            "at": at}


def _split_parts(shapes: tuple[tuple[int, ...], ...], static: dict, equal: bool) -> dict:
    """`index` as one index per part: np.split's into equal parts (or at the indices given),
    np.array_split's into parts whose lengths differ by at most one."""
    shape, sections = shapes[0], static["indices_or_sections"]
    axis = _axis_index(static["axis"], len(shape))
    length = shape[axis]
    if isinstance(sections, (tuple, list, np.ndarray)):  # the parts between the indices, sliced as NumPy does
        bounds = [0, *(_integer(c, "a split index") for c in sections), length]
    else:
        count = _integer(sections, "the number of sections")
        if count <= 0:
            raise ValueError("the number of sections must be larger than 0")
        if equal and length % count:
            raise ValueError(f"an axis of length {length} does not split into {count} equal parts")
        size, extra = divmod(length, count)
        bounds = [0]
        for k in range(count):
            bounds.append(bounds[-1] + size + (k < extra))
    lead = (slice(None),) * axis
    return {"index": tuple(lead + (slice(start, stop),) for start, stop in zip(bounds, bounds[1:]))}


def _joined(function: str, shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`axis` as a non-negative int, and `parts`: for each part, the index of its place in the
    joined result, where its gradient is cut out (a slice, or an int for a part that gained an
    axis: a number stacked, a vector stacked as a row)."""
    ndims = [len(s) for s in shapes]
    parts: list[tuple] = []
    offset = 0
    if function in ("concatenate", "stack"):
        if function == "concatenate" and min(ndims) == 0:
            raise ValueError("numbers cannot be concatenated: np.stack or np.hstack them")
        if static["axis"] is None:
            raise ValueError("axis=None joins the flattened arrays: ravel them first")
        axis = _axis_index(static["axis"], ndims[0] + (function == "stack"))
        for k, shape in enumerate(shapes):
            if function == "stack":
                parts.append((slice(None),) * axis + (k,))
            else:
                parts.append((slice(None),) * axis + (slice(offset, offset + shape[axis]),))
                offset += shape[axis]
        return {"axis": axis, "parts": tuple(parts)}
    flat = function == "hstack" and max(ndims) <= 1  # hstack joins vectors and numbers along axis 0
    for shape in shapes:
        if function == "vstack":  # a number is a 1 x 1 matrix, a vector a row
            step = shape[0] if len(shape) > 1 else 1
            parts.append([(offset, 0), (offset,), (slice(offset, offset + step),)][min(len(shape), 2)])
        elif flat:
            step = shape[0] if shape else 1
            parts.append((slice(offset, offset + step),) if shape else (offset,))
        else:  # column_stack, and hstack of matrices: along axis 1
            if function == "hstack" and len(shape) < 2:
                raise ValueError("hstack joins vectors with vectors and matrices with matrices")
            step = shape[1] if len(shape) == 2 else 1
            parts.append([(0, offset), (slice(None), offset), (slice(None), slice(offset, offset + step))][len(shape)])
        offset += step
    return {"parts": tuple(parts)}


def _matrix_axis_or_last_axes(ndims: tuple[int, ...], static: Mapping[str, object]) -> bool:
    """What `extreme_along` reduces under numba: a matrix along either axis, or any array along its
    last axis or axes (`np.max(window, axis=(2, 3))`)."""
    axis = static["axis"]
    axes = (axis,) if isinstance(axis, int) else axis
    return ndims[0] == 2 or isinstance(axes, tuple) and axes == tuple(range(ndims[0] - len(axes), ndims[0]))


def _one_axis(shapes: tuple[tuple[int, ...], ...], static: dict) -> dict:
    """`axis` as one non-negative int."""
    return {"axis": int(static["axis"]) % max(len(shapes[0]), 1)}


def _reductions() -> tuple[Op, ...]:
    """sum, mean, max and min: one row for all axes, one for some axes, one for keepdims."""
    rows = []
    count = "(x.size // out.size)"

    def every_axis(nd: tuple[int, ...], st: Mapping[str, object]) -> bool:
        """The axes are all of x's (`np.sum(x, axis=(0, 1))` of a matrix): the result is one
        number, which numba's reshape and expand_dims do not take as an array."""
        return st["axis"] is not None and len(np.atleast_1d(st["axis"])) == nd[0]

    picks = (  # a reduction over every axis without keepdims is the one over all
        ("_all", lambda nd, st: st["axis"] is None or not st["keepdims"] and every_axis(nd, st)),
        ("", lambda nd, st: st["axis"] is not None and not st["keepdims"] and not every_axis(nd, st)),
        ("_keep", lambda nd, st: st["keepdims"]),
    )
    for kind, pattern in (
        ("sum", "sum gate: distributes the gradient to every element"),
        ("mean", "mean gate: distributes the gradient, divided by the count"),
        ("max", "max gate: router to the maxima (ties share the gradient equally)"),
        ("min", "min gate: router to the minima (ties share the gradient equally)"),
    ):
        divide = f" / {count}" if kind == "mean" else ""
        chooses = kind in ("max", "min")
        for suffix, when in picks:
            if suffix == "_all":
                forward = f"np.{kind}(x)"
                grad = "(x == out) / np.sum(x == out) * grad" if chooses else f"np.full(x.shape, grad{divide})"
                numba_forward, numba_grad, numba_when = None, None, None
            elif suffix == "":
                forward = f"x.{kind}(axis=axis)"  # the method: NumPy's function wrapper costs a call
                spread = "np.expand_dims(grad, axis)"
                mask = "(x == np.expand_dims(out, axis))"
                grad = (
                    f"{mask} / {mask}.sum(axis=axis, keepdims=True) * {spread}"
                    if chooses
                    else f"np.broadcast_to({spread}{divide}, x.shape)"
                )
                # numba has no np.max(x, axis=...); the reshape is dropped where it changes nothing
                along = f"extreme_along(x, axis, {kind == 'max'}).reshape(out.shape)"
                numba_forward = {"sum": None, "mean": f"x.sum(axis=axis){divide}"}.get(kind, along)
                numba_grad = f"{mask} / np.expand_dims({mask}.sum(axis=axis), axis) * {spread}" if chooses else None
                numba_when = _matrix_axis_or_last_axes if chooses else None
            else:
                forward = f"x.{kind}(axis=axis, keepdims=True)"
                grad = (
                    "(x == out) / (x == out).sum(axis=axis, keepdims=True) * grad"
                    if chooses
                    else f"np.broadcast_to(grad{divide}, x.shape)"
                )
                reduced = f"extreme_along(x, axis, {kind == 'max'})" if chooses else "x.sum(axis=axis)"
                numba_forward = f"({reduced}{divide}).reshape(out.shape)" if divide else f"{reduced}.reshape(out.shape)"
                numba_grad = "(x == out) / (x == out).sum(axis=axis).reshape(out.shape) * grad" if chooses else None
                # reshape takes an array, and a sum over every axis is a number
                numba_when = (
                    (lambda nd, st: _matrix_axis_or_last_axes(nd, st) and not every_axis(nd, st))
                    if chooses
                    else (lambda nd, st: not every_axis(nd, st))
                )
            rows.append(
                Op(f"{kind}{suffix}", ("x",), forward, {"x": grad}, pattern=pattern,
                   functions=(kind,), methods=(kind,), static=("axis", "keepdims"),
                   signature="x, axis=None, keepdims=False", when=when, normalize=_axes,
                   numba_forward=numba_forward, numba_grads={"x": numba_grad} if numba_grad else {},
                   numba_when=numba_when, domain=_X, shapes=((3, 4),))
            )
    return tuple(rows)


def _statistics_rows() -> tuple[Op, ...]:
    """Statistics, products and linear algebra, as HIPS autograd differentiates them: var, std,
    prod, cumsum, np.linalg.norm, np.dot with a number, outer, inner, kron, cross, trace,
    tensordot, einsum, np.linalg.det/inv/solve.

    Where a rule needs text worked out from the call (an einsum's gradient is an einsum of the
    other operand and `grad`, with subscripts of its own), `normalize` works it out once and
    keeps it in the static value after the call's own (`subscripts[1]`); codegen writes the
    item in. A call no row takes (a repeated einsum index, an axis NumPy refuses) gets the
    static value `refused`, which no row's `when` accepts, so the tracer's error names the call
    as written.

    Under numba 0.68: var, std and norm are written as sums (numba's take no ddof, axis or
    keepdims); prod along an axis, prod's gradient and kron's call small loop helpers; np.inner
    is written with `@`; einsum and tensordot have no lowering and are refused at build time.
    """
    refused = "refused"  # a static value no row accepts
    count = "(x.size // out.size)"  # the number of elements each output element reduces
    Shapes = tuple[tuple[int, ...], ...]

    def axes_of(axis: object, ndim: int) -> tuple[int, ...] | None:
        """`axis` (an int or a sequence of ints) as sorted non-negative axes; None where NumPy
        refuses it (out of range, repeated, not an int)."""
        given = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
        if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) and -ndim <= a < ndim for a in given):
            return None
        axes = tuple(sorted({int(a) % ndim for a in given}))
        return axes if len(axes) == len(given) else None

    def reduction(shapes: Shapes, static: dict) -> dict:
        """var, std, prod, norm: `axis` as None (every axis without keepdims: the `_all` row),
        one int or a sorted tuple; `keepdims` as a bool; `ddof` as an int where it is one."""
        ndim, out = len(shapes[0]), dict(static)
        keepdims, ddof = static["keepdims"], static.get("ddof", 0)
        if not isinstance(keepdims, (bool, np.bool_, int, np.integer)) or keepdims not in (0, 1):
            return {**out, "keepdims": refused}
        if not isinstance(ddof, (int, float, np.integer, np.floating)) or isinstance(ddof, bool):
            return {**out, "ddof": refused}
        if "ddof" in static:
            out["ddof"] = int(ddof) if float(ddof).is_integer() else float(ddof)
        out["keepdims"] = keepdims = bool(keepdims) and ndim > 0  # a number's keepdims is the number
        axes = tuple(range(ndim)) if static["axis"] is None else axes_of(static["axis"], ndim)
        if axes is None:
            out["axis"] = refused
        elif axes == tuple(range(ndim)) and not keepdims:
            out["axis"] = None
        else:
            out["axis"] = axes[0] if len(axes) == 1 else axes
        return out

    def some_axes(axis: object) -> bool:
        """A normalized axis that reduces some axes (the plain and `_keep` rows)."""
        return isinstance(axis, int) or isinstance(axis, tuple) and len(axis) > 1

    def when(suffix: str) -> Callable[[tuple[int, ...], Mapping[str, object]], bool]:
        """Which of a reduction's rows takes a call: `_all`, plain (some axes), `_keep`."""
        keepdims = suffix == "_keep"
        if suffix == "_all":
            return lambda nd, st: st["axis"] is None and st["keepdims"] is False and st.get("ddof") != refused
        return lambda nd, st: st["keepdims"] is keepdims and some_axes(st["axis"]) and st.get("ddof") != refused

    def int_axis(ndims: tuple[int, ...], static: Mapping[str, object]) -> bool:
        return isinstance(static["axis"], int)  # numba's np.expand_dims takes one axis

    def matrix_axis(ndims: tuple[int, ...], static: Mapping[str, object]) -> bool:
        return ndims == (2,) and isinstance(static["axis"], int)  # what the loop helpers take

    # how each of a reduction's three rows spreads a reduced value back over x
    spread = {"_all": "{}", "": "np.expand_dims({}, axis)", "_keep": "{}"}
    rows: list[Op] = []

    # var and std. Under numba, whose np.var and np.std take no ddof, axis or keepdims: as sums.
    for suffix, call in (
        ("_all", "np.{}(x, ddof=ddof)"),
        ("", "x.{}(axis=axis, ddof=ddof)"),
        ("_keep", "x.{}(axis=axis, ddof=ddof, keepdims=True)"),
    ):
        n = "x.size" if suffix == "_all" else count
        mean = "np.mean(x)" if suffix == "_all" else "x.mean(axis=axis, keepdims=True)"
        numba_mean = {
            "_all": "np.mean(x)",
            "": f"np.expand_dims(x.sum(axis=axis), axis) / {n}",
            "_keep": f"x.sum(axis=axis).reshape(out.shape) / {n}",
        }[suffix]
        total = {"_all": "np.sum({})", "": "{}.sum(axis=axis)", "_keep": "{}.sum(axis=axis).reshape(out.shape)"}
        numba_var = total[suffix].format(f"((x - {numba_mean}) ** 2)") + f" / ({n} - ddof)"
        g, std = spread[suffix].format("grad"), spread[suffix].format("out")
        for kind, rule, numba_forward, pattern in (
            ("var", "2 * (x - {}) / ({} - ddof) * {}", numba_var, "var gate: local gradient 2 (x - mean) / (n - ddof)"),
            ("std", "(x - {}) / (({} - ddof) * " + std + ") * {}", f"np.sqrt({numba_var})",
             "std gate: local gradient (x - mean) / ((n - ddof) std), from its output"),
        ):
            rows.append(
                Op(f"{kind}{suffix}", ("x",), call.format(kind), {"x": rule.format(mean, n, g)}, pattern=pattern,
                   functions=(kind,), methods=(kind,), static=("axis", "ddof", "keepdims"),
                   signature="x, axis=None, *, ddof=0, keepdims=False", when=when(suffix), normalize=reduction,
                   numba_forward=numba_forward, numba_grads={"x": rule.format(numba_mean, n, g)},
                   numba_when=None if suffix == "_all" else int_axis, domain=_X, shapes=((3, 4),))
            )

    # prod: the local gradient is the product of the other elements, made of cumulative products
    # (right where an element is 0, where autograd's out / x is not)
    for suffix, call, numba_call in (
        ("_all", "np.prod(x)", None),
        ("", "x.prod(axis=axis)", "prod_along(x, axis)"),
        ("_keep", "x.prod(axis=axis, keepdims=True)", "prod_along(x, axis).reshape(out.shape)"),
    ):
        g = spread[suffix].format("grad")
        axis = "None" if suffix == "_all" else "axis"
        others = "prod_others_flat(x)" if suffix == "_all" else "prod_others_along(x, axis)"
        rows.append(
            Op(f"prod{suffix}", ("x",), call, {"x": f"prod_others(x, {axis}) * {g}"},
               pattern="prod gate: local gradient the product of the other elements (out / x where x is not 0)",
               functions=("prod",), methods=("prod",), static=("axis", "keepdims"),
               signature="x, axis=None, *, keepdims=False", when=when(suffix), normalize=reduction,
               numba_forward=numba_call, numba_grads={"x": f"{others} * {g}"},
               numba_when=None if suffix == "_all" else matrix_axis, domain=_X, shapes=((3, 4),))
        )

    def cumsum_axis(shapes: Shapes, static: dict) -> dict:
        """One axis, or None: x flattened (as for a vector's only axis)."""
        axis, ndim = static["axis"], len(shapes[0])
        axes = None if isinstance(axis, (tuple, list)) else axes_of(axis, ndim)
        if axis is None or axes is not None and ndim == 1:
            return {"axis": None}
        return {"axis": refused if axes is None else axes[0]}

    cumsum_pattern = "cumsum gate: each element's gradient sums the upstream gradients from its place to the end"
    rows += [
        Op("cumsum_all", ("x",), "np.cumsum(x)", {"x": "np.cumsum(grad[::-1])[::-1].reshape(x.shape)"},
           pattern=cumsum_pattern, functions=("cumsum",), methods=("cumsum",), static=("axis",),
           signature="x, axis=None", when=lambda nd, st: st["axis"] is None, normalize=cumsum_axis,
           numba_grads={"x": "np.cumsum(grad[::-1])[::-1].copy().reshape(x.shape)"},  # numba reshapes no view
           domain=_X, shapes=((3, 4),)),
        Op("cumsum", ("x",), "np.cumsum(x, axis=axis)",
           {"x": "np.flip(np.cumsum(np.flip(grad, axis), axis=axis), axis)"},
           pattern=cumsum_pattern, functions=("cumsum",), methods=("cumsum",), static=("axis",),
           signature="x, axis=None", when=lambda nd, st: isinstance(st["axis"], int), normalize=cumsum_axis,
           numba_grads={"x": "cumsum_from_end(grad, axis)"}, numba_when=matrix_axis,  # numba's np.flip takes no axis
           domain=_X, shapes=((3, 4),)),
    ]

    def euclidean(shapes: Shapes, static: dict) -> dict:
        """np.linalg.norm: `ord` as None where it is the Euclidean norm of what is reduced (a
        vector's 2, a matrix's "fro"); axes as for var, but at most two of them, as NumPy's."""
        ndim, ord, axis = len(shapes[0]), static["ord"], static["axis"]
        out = {"ord": ord, **reduction(shapes, {"axis": axis, "keepdims": static["keepdims"]})}
        reduced = ndim if axis is None else len(axes_of(axis, ndim) or ())
        if isinstance(ord, (int, float, str)) and (reduced, ord) in ((1, 2), (2, "fro")):
            out["ord"] = None
        if isinstance(axis, (tuple, list)) and len(axis) > 2:
            out["axis"] = refused
        elif axis is None and out["keepdims"] is True and ndim > 2:
            out["axis"] = None  # np.linalg.norm(x, keepdims=True) flattens x; it takes no three axes
        return out

    def norm_when(suffix: str) -> Callable[[tuple[int, ...], Mapping[str, object]], bool]:
        reduces = when(suffix)
        if suffix == "_keep":
            flattened = lambda nd, st: st["axis"] is None and st["keepdims"] is True  # noqa: E731
            return lambda nd, st: st["ord"] is None and (flattened(nd, st) or reduces(nd, st))
        return lambda nd, st: st["ord"] is None and reduces(nd, st)

    for suffix, call, rule, numba_call in (
        ("_all", "np.linalg.norm(x)", "x / out * grad", "np.sqrt(np.sum(x * x))"),
        ("", "np.linalg.norm(x, axis=axis)", "x / np.expand_dims(out, axis) * np.expand_dims(grad, axis)",
         "np.sqrt((x * x).sum(axis=axis))"),
        ("_keep", "np.linalg.norm(x, axis=axis, keepdims=True)", "x / out * grad",
         "np.sqrt((x * x).sum(axis=axis)).reshape(out.shape)"),
    ):
        rows.append(
            Op(f"norm{suffix}", ("x",), call, {"x": rule},
               pattern="norm gate: local gradient x / norm, from its output (undefined where the norm is 0)",
               functions=("linalg.norm",), static=("ord", "axis", "keepdims"),
               signature="x, ord=None, axis=None, keepdims=False", when=norm_when(suffix), normalize=euclidean,
               numba_forward=numba_call, numba_when=None if suffix == "_all" else int_axis,
               domain=_X, shapes=((3, 4),))
        )

    # Products. np.dot with a number is a product (the matrix products are the matmul rows);
    # numba's np.dot takes no number.
    dot_pattern = "mul gate: swap multiplier (the number's gradient summed over the array)"
    rows += [
        Op("scalar_dot", ("x", "y"), "np.dot(x, y)", {"x": "np.sum(y * grad)", "y": "x * grad"},
           pattern=dot_pattern, functions=("dot",), when=lambda nd, st: nd[0] == 0, numba_forward="x * y",
           domain=_XY, shapes=((), (3, 4))),
        Op("dot_scalar", ("x", "y"), "np.dot(x, y)", {"x": "y * grad", "y": "np.sum(x * grad)"},
           pattern=dot_pattern, functions=("dot",), when=lambda nd, st: nd[1] == 0 and nd[0] > 0,
           numba_forward="x * y", domain=_XY, shapes=((3, 4), ())),
        Op("outer", ("x", "y"), "np.outer(x, y)", {"x": "grad @ y", "y": "x @ grad"},
           pattern="outer gate: swap multiplier, each vector's gradient the upstream one times the other",
           functions=("outer",), when=_ranks((1, 1)), domain=_XY, shapes=((3,), (4,))),
    ]
    # np.inner contracts the last axes (x @ y.T for matrices); numba has no np.inner: `@`
    for name, kind, ranks, numba_forward, rules, shapes in (
        ("inner_vectors", "vector, vector", (1, 1), "x @ y", {"x": "y * grad", "y": "x * grad"}, ((4,), (4,))),
        ("inner_matrices", "matrix, matrix", (2, 2), "x @ y.T", {"x": "grad @ y", "y": "grad.T @ x"},
         ((3, 4), (2, 4))),
        ("inner_matvec", "matrix, vector", (2, 1), "x @ y", {"x": "np.outer(grad, y)", "y": "grad @ x"},
         ((3, 4), (4,))),
        ("inner_vecmat", "vector, matrix", (1, 2), "y @ x", {"x": "grad @ y", "y": "np.outer(grad, x)"},
         ((4,), (3, 4))),
    ):
        rows.append(
            Op(name, ("x", "y"), "np.inner(x, y)", rules,
               pattern=f"inner gate ({kind}): swap multiplier, contracted over the last axes",
               functions=("inner",), when=_ranks(ranks), numba_forward=numba_forward, domain=_XY, shapes=shapes)
        )
    # kron of matrices: grad cut into x.shape blocks of y.shape; x's gradient weighs each block by
    # y, y's adds the blocks up weighted by x
    blocks = "grad.reshape(x.shape[0], y.shape[0], x.shape[1], y.shape[1])"
    rows.append(
        Op("kron", ("x", "y"), "np.kron(x, y)",
           {"x": f"np.einsum('kl,ikjl->ij', y, {blocks})", "y": f"np.einsum('ij,ikjl->kl', x, {blocks})"},
           pattern="kron gate: swap multiplier, summed over the blocks of the upstream gradient",
           functions=("kron",), when=_ranks((2, 2)),
           # numba's np.kron takes C or F-ordered arrays only (no slice), and numba has no np.einsum
           numba_forward="np.kron(np.ascontiguousarray(x), np.ascontiguousarray(y))",
           numba_grads={"x": "kron_grad_x(y, grad)", "y": "kron_grad_y(x, grad)"},
           domain=_XY, shapes=((2, 3), (3, 2)))
    )

    def vectors_of_three(shapes: Shapes, static: dict) -> dict:
        """np.cross: the axis of the vectors, of length 3 in both operands of one rank."""
        (x, y), axis = shapes, static["axis"]
        axes = axes_of(axis, len(x)) if len(x) == len(y) and not isinstance(axis, (tuple, list)) else None
        return {"axis": axes[0] if axes is not None and x[axes[0]] == y[axes[0]] == 3 else refused}

    # numba's np.cross takes no axis, and compiles for matrices in seconds: a helper writes it out
    for name, ranks, cross, shapes in (
        ("cross", (1, 1), "np.cross", ((3,), (3,))),
        ("cross_rows", (2, 2), "cross_of_rows", ((4, 3), (4, 3))),
    ):
        rows.append(
            Op(name, ("x", "y"), "np.cross(x, y, axis=axis)",
               {"x": "np.cross(y, grad, axis=axis)", "y": "-np.cross(x, grad, axis=axis)"},
               pattern="cross gate: swap multiplier, crossed (y × grad for x, -(x × grad) for y)",
               functions=("cross",), static=("axis",), signature="x, y, *, axis=-1",
               when=lambda nd, st, ranks=ranks: nd == ranks and isinstance(st["axis"], int),
               normalize=vectors_of_three,
               numba_forward=f"{cross}(x, y)", numba_grads={"x": f"{cross}(y, grad)", "y": f"-{cross}(x, grad)"},
               numba_when=lambda nd, st: st["axis"] == nd[0] - 1, domain=_XY, shapes=shapes)
        )
    # numba's np.trace and np.linalg.det of float32 are float64: `x.dtype(...)` casts them back
    rows.append(
        Op("trace", ("x",), "np.trace(x)", {"x": "np.eye(x.shape[0], x.shape[1]) * grad"},
           pattern="trace gate: distributes the gradient to the diagonal", functions=("trace",), methods=("trace",),
           when=_ranks((2,)), numba_forward="x.dtype(np.trace(x))", domain=_X, shapes=((3, 4),))
    )

    # tensordot and einsum of two operands: each operand's gradient is an einsum of the other and
    # grad. The static keeps, after the call's own, the subscripts of the two gradients.
    letters = "ijklmnopqrstuvwxyzabcdefgh"

    def gradient_subscripts(x: str, y: str, out: str) -> tuple[str, str]:
        return f"{y},{out}->{x}", f"{x},{out}->{y}"

    def contraction(shapes: Shapes, static: dict) -> dict:
        """np.tensordot: `axes` as (the axes paired, x's gradient's subscripts, y's)."""
        (x, y), axes = shapes, static["axes"]
        if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool) and 0 <= axes <= min(len(x), len(y)):
            pairs = (tuple(range(len(x) - int(axes), len(x))), tuple(range(int(axes))))
        elif isinstance(axes, (tuple, list)) and len(axes) == 2:
            given = [tuple(a) if isinstance(a, (tuple, list)) else (a,) for a in axes]
            if len(given[0]) != len(given[1]) or any(axes_of(g, len(s)) is None for g, s in zip(given, shapes)):
                return {"axes": refused}
            pairs = tuple(tuple(int(a) % len(s) for a in g) for g, s in zip(given, shapes))
        else:
            return {"axes": refused}
        sx = letters[: len(x)]
        paired = dict(zip(pairs[1], (sx[a] for a in pairs[0])))
        fresh = iter(letters[len(x):])
        sy = "".join(paired[a] if a in paired else next(fresh) for a in range(len(y)))
        out = "".join(c for a, c in enumerate(sx) if a not in pairs[0]) + "".join(
            c for a, c in enumerate(sy) if a not in pairs[1])
        return {"axes": (pairs, *gradient_subscripts(sx, sy, out))}

    def subscripted(shapes: Shapes, static: dict) -> dict:
        """np.einsum of two operands: `subscripts` as (the call's, with its output spelled out,
        x's gradient's, y's); refused with `...`, an index repeated within one operand, or one
        that only one operand has and the output has not (its gradient would need a broadcast)."""
        text = static["subscripts"]
        if not isinstance(text, str):
            return {"subscripts": refused}
        inputs, arrow, out = text.replace(" ", "").partition("->")
        if not arrow:  # NumPy's implicit output: the indices used once, in alphabetical order
            out = "".join(sorted(c for c in set(inputs) if c.isalpha() and inputs.count(c) == 1))
        operands = inputs.split(",")
        if len(operands) != 2 or not all(c.isalpha() for c in inputs.replace(",", "") + out):
            return {"subscripts": refused}
        x, y = operands
        fits = [len(x), len(y)] == [len(s) for s in shapes] and all(len(set(s)) == len(s) for s in (x, y, out))
        if not fits or not set(x) <= set(y) | set(out) or not set(y) <= set(x) | set(out) or not set(out) <= set(x + y):
            return {"subscripts": refused}
        return {"subscripts": (f"{x},{y}->{out}", *gradient_subscripts(x, y, out))}

    def no_numba(ndims: tuple[int, ...], static: Mapping[str, object]) -> bool:
        return False  # numba 0.68 has no np.einsum or np.tensordot

    rows += [
        Op("tensordot", ("x", "y"), "np.tensordot(x, y, axes=axes[0])",
           {"x": "np.einsum(axes[1], y, grad)", "y": "np.einsum(axes[2], x, grad)"},
           pattern="tensordot gate: swap multiplier, each operand's gradient an einsum of the other and grad",
           functions=("tensordot",), static=("axes",), signature="x, y, axes=2",
           when=lambda nd, st: isinstance(st["axes"], tuple), normalize=contraction, numba_when=no_numba,
           domain=_XY, shapes=((2, 3, 3), (3, 3, 4))),
        Op("einsum", ("x", "y"), "np.einsum(subscripts[0], x, y)",
           {"x": "np.einsum(subscripts[1], y, grad)", "y": "np.einsum(subscripts[2], x, grad)"},
           pattern="einsum gate: swap multiplier, each operand's gradient an einsum of the other and grad",
           functions=("einsum",), static=("subscripts",), signature="subscripts, x, y",
           when=lambda nd, st: isinstance(st["subscripts"], tuple), normalize=subscripted, numba_when=no_numba,
           domain=_XY, shapes=((2, 3), (3, 2))),
    ]

    # np.linalg of one square matrix, and solve for a matrix or a vector right-hand side. Nothing
    # is refused for its values: a singular matrix raises NumPy's LinAlgError when the code runs,
    # an ill-conditioned one gives gradients as inexact as its inverse (the tests draw them well
    # conditioned: tests/table_harness.py's DRAW_HOOKS).
    solved = "np.linalg.solve(x.T, grad)"  # what y's gradient is, and x's is made from
    rows += [
        Op("det", ("x",), "np.linalg.det(x)", {"x": "out * np.linalg.inv(x).T * grad"},
           pattern="det gate: local gradient det(x) inv(x)^T, from its output", functions=("linalg.det",),
           when=_ranks((2,)), numba_forward="x.dtype(np.linalg.det(x))", domain=_X, shapes=((3, 3),)),
        Op("inv", ("x",), "np.linalg.inv(x)", {"x": "-out.T @ grad @ out.T"},
           pattern="inv gate: local gradient -inv(x)^T grad inv(x)^T, from its output", functions=("linalg.inv",),
           when=_ranks((2,)), domain=_X, shapes=((3, 3),)),
        Op("solve", ("x", "y"), "np.linalg.solve(x, y)", {"x": f"-{solved} @ out.T", "y": solved},
           pattern="solve gate: y's gradient solves x^T g = grad, x's is -g out^T",
           functions=("linalg.solve",), when=_ranks((2, 2)), domain=_XY, shapes=((3, 3), (3, 2))),
        Op("solve_vec", ("x", "y"), "np.linalg.solve(x, y)", {"x": f"-np.outer({solved}, out)", "y": solved},
           pattern="solve gate: y's gradient solves x^T g = grad, x's is -g out^T",
           functions=("linalg.solve",), when=_ranks((2, 1)), domain=_XY, shapes=((3, 3), (3,))),
    ]
    return tuple(rows)


def _comparison(name: str, symbol: str, dunder: str, ufunc: str) -> Op:
    return Op(
        name,
        ("x", "y"),
        f"x {symbol} y",
        pattern="comparison: piecewise constant, passes no gradient",
        operators=(dunder,),
        ufuncs=(ufunc,),
        domain=_XY,
    )


_ROWS = (
    Op("add", ("x", "y"), "x + y", {"x": "grad", "y": "grad"}, identity={"x": 0, "y": 0},
       pattern="add gate: distributor", operators=("__add__",), reflected=("__radd__",), inplace=("__iadd__",),
       ufuncs=("add",), domain=_XY),
    Op("sub", ("x", "y"), "x - y", {"x": "grad", "y": "-grad"}, identity={"y": 0},
       pattern="sub gate: distributor, negated for the subtrahend",
       operators=("__sub__",), reflected=("__rsub__",), inplace=("__isub__",), ufuncs=("subtract",), domain=_XY),
    Op("mul", ("x", "y"), "x * y", {"x": "y * grad", "y": "x * grad"}, identity={"x": 1, "y": 1},
       pattern="mul gate: swap multiplier", operators=("__mul__",), reflected=("__rmul__",), inplace=("__imul__",),
       ufuncs=("multiply",), domain=_XY),
    Op("div", ("x", "y"), "x / y", {"x": "1 / y * grad", "y": "-x / y ** 2 * grad"}, identity={"y": 1},
       pattern="div gate: 1/y for the numerator, -x/y^2 for the denominator",
       operators=("__truediv__",), reflected=("__rtruediv__",), inplace=("__itruediv__",), ufuncs=("divide",),
       domain=((-3.0, 3.0), (0.5, 3.0))),
    Op("neg", ("x",), "-x", {"x": "-grad"}, pattern="neg gate: flips the sign",
       operators=("__neg__",), ufuncs=("negative",), domain=_X),
    Op("pos", ("x",), "x", {"x": "grad"}, pattern="copy: passes the gradient through",
       operators=("__pos__",), ufuncs=("positive",), domain=_X),
    # `y - (y != 0)` is y - 1, except for y == 0, where x ** 0 == 1 has gradient 0 even at x == 0;
    # `x + (x == 0)` is x, except for x == 0, where 0 ** y is constant (0 for y > 0): its log is
    # log(1) = 0, so the gradient in y is 0 there, not log(0) * 0 = nan (as autograd has it)
    Op("pow", ("x", "y"), "x ** y",
       {"x": "y * x ** (y - (y != 0)) * grad", "y": "np.log(x + (x == 0)) * out * grad"},
       identity={"y": 1},
       pattern="pow gate: y x^(y-1) for the base, log(x) x^y for the exponent",
       operators=("__pow__",), reflected=("__rpow__",), ufuncs=("power",),
       domain=((0.2, 3.0), (-2.0, 2.0))),
    Op("abs", ("x",), "np.abs(x)", {"x": "np.sign(x) * grad"},
       pattern="abs gate: router with the sign of x", operators=("__abs__",),
       ufuncs=("absolute",), domain=_X),
    Op("exp", ("x",), "np.exp(x)", {"x": "out * grad"},
       pattern="exp gate: local gradient is its own output", ufuncs=("exp",), domain=_X),
    Op("log", ("x",), "np.log(x)", {"x": "1 / x * grad"},
       pattern="log gate: local gradient 1/x", ufuncs=("log",), domain=_POSITIVE),
    Op("sqrt", ("x",), "np.sqrt(x)", {"x": "0.5 / out * grad"},
       pattern="sqrt gate: local gradient 1/(2 sqrt(x)) from its output", ufuncs=("sqrt",),
       domain=_POSITIVE),
    Op("sin", ("x",), "np.sin(x)", {"x": "np.cos(x) * grad"},
       pattern="sin gate: local gradient cos(x)", ufuncs=("sin",), domain=_X),
    Op("cos", ("x",), "np.cos(x)", {"x": "-np.sin(x) * grad"},
       pattern="cos gate: local gradient -sin(x)", ufuncs=("cos",), domain=_X),
    Op("tan", ("x",), "np.tan(x)", {"x": "(1 + out ** 2) * grad"},
       pattern="tan gate: local gradient 1 + tan^2 from its output", ufuncs=("tan",),
       domain=((-1.2, 1.2),)),
    Op("tanh", ("x",), "np.tanh(x)", {"x": "(1 - out ** 2) * grad"},
       pattern="tanh gate: local gradient 1 - tanh^2 from its output", ufuncs=("tanh",),
       domain=_X),
    *_elementwise_rows(),
    Op("square", ("x",), "np.square(x)", {"x": "2 * x * grad"},
       pattern="square gate: local gradient 2x", ufuncs=("square",), fuses=("mul(x, x)",), domain=_X),
    Op("sigmoid", ("x",), "1 / (1 + np.exp(-x))", {"x": "(1 - out) * out * grad"},
       pattern="sigmoid gate: local gradient (1 - s) s from its output", gate=True,
       fuses=("div(1, add(1, exp(neg(x))))", "div(1, add(exp(neg(x)), 1))"), fuse_for_stability=True,
       domain=((-4.0, 4.0),)),
    # softmax along an axis; optimize mode fuses it from exp(x - max) / sum(exp(x - max))
    Op("softmax", ("x",), "softmax(x, axis)", {"x": "out * (grad - (out * grad).sum(axis=axis, keepdims=True))"},
       pattern="softmax gate: local gradient out * (grad - sum(out * grad)), from its output", gate=True,
       static=("axis",), signature="x, axis=-1", normalize=_one_axis,
       numba_forward="softmax_along(x, axis)",
       numba_grads={"x": "out * (grad - np.expand_dims((out * grad).sum(axis=axis), axis))"},
       numba_when=lambda ndims, st: ndims == (2,),
       fuses=(
           "div(exp(sub(x, max_keep(x, axis=axis))), sum_keep(exp(sub(x, max_keep(x, axis=axis))), axis=axis))",
           "div(exp(x), sum_keep(exp(x), axis=axis))",
       ),
       domain=_X, shapes=((3, 4),)),
    # log(softmax(x)[rows, labels]): the log-probability of each row's label, whose negative is
    # cross-entropy. Optimize mode fuses it for its local gradient onehot - probs; the softmax
    # stays a line of its own, as that output is what this gate reads. No user code names it.
    # Its forward is the log-softmax, finite where a probability underflows to 0.
    Op("log_softmax_pick", ("x", "probs", "i", "j"), "log_softmax_pick(x, probs, index)",
       {"x": "log_softmax_pick_grad(probs, index, grad)"}, numba_forward="log_softmax_pick_pairs(x, probs, i, j)",
       pattern="softmax cross-entropy gate: local gradient onehot - probs, from the softmax's output",
       static=("index",), numba_grads={"x": "log_softmax_pick_grad_pairs(probs, i, j, grad)"},
       fuses=("log(take2(probs := softmax(x, axis=1), i, j, index=index))",), fuse_when=_one_pick_per_row,
       shapes=((3, 4), (3, 4), (3,), (3,))),
    *_logsumexp_rows(),
    # maximum(0, x) routes a tie to the 0, as relu does; maximum(x, 0) would route it to x
    # the mask reads the output (positive just where x is), so the pre-activation need not be kept
    Op("relu", ("x",), "np.maximum(x, 0.0)", {"x": "(out > 0) * grad"},
       pattern="max gate: router (to x where x > 0)", gate=True, domain=_X, fuses=("maximum(0, x)",)),
    Op("maximum", ("x", "y"), "np.maximum(x, y)", {"x": "(x >= y) * grad", "y": "(x < y) * grad"},
       pattern="max gate: router (a tie goes to the first argument)", ufuncs=("maximum",),
       domain=_XY),
    Op("minimum", ("x", "y"), "np.minimum(x, y)", {"x": "(x <= y) * grad", "y": "(x > y) * grad"},
       pattern="min gate: router (a tie goes to the first argument)", ufuncs=("minimum",),
       domain=_XY),
    _comparison("gt", ">", "__gt__", "greater"),
    _comparison("lt", "<", "__lt__", "less"),
    _comparison("ge", ">=", "__ge__", "greater_equal"),
    _comparison("le", "<=", "__le__", "less_equal"),
    _comparison("eq", "==", "__eq__", "equal"),
    _comparison("ne", "!=", "__ne__", "not_equal"),
    Op("where", ("cond", "x", "y"), "np.where(cond, x, y)",
       {"x": "cond * grad", "y": "np.logical_not(cond) * grad"},
       pattern="where gate: router (to x where cond holds, else to y)",
       functions=("where",), domain=(None, (-3.0, 3.0), (-3.0, 3.0)),
       scalar_forward="x if cond else y", bool_operands=("cond",)),
    # Fills: the seed of the backward pass, the gradient of an input the output does not
    # depend on, and np.ones_like / np.zeros_like in user code.
    Op("ones_like", ("x",), "np.ones_like(x)", pattern="seed: d(out)/d(out) = 1",
       functions=("ones_like",), scalar_forward="1.0", domain=_X),
    Op("zeros_like", ("x",), "np.zeros_like(x)", pattern="no path from this input to the output",
       functions=("zeros_like",), scalar_forward="0.0", domain=_X),
    # A cast in user code (`.astype(np.float32)`, `.astype(int)`: integers get no gradient), and
    # the one autodiff inserts where a rule's result would leave the operand's dtype (float32).
    Op("astype", ("x",), "x.astype(dtype)", {"x": "grad.astype(x.dtype)"}, pattern="cast: the gradient cast back",
       methods=("astype",), static=("dtype",), signature="x, dtype", scalar_forward="dtype(x)",
       normalize=lambda shapes, st: {"dtype": np.dtype(st["dtype"])}, domain=_X, shapes=((3, 2),)),
    # Where the extremes are: integers, read by later ops (an index, a comparison), never differentiated.
    *(
        Op(f"arg{kind}{suffix}", ("x",), forward, pattern=f"arg{kind}: an integer position, passes no gradient",
           functions=(f"arg{kind}",), methods=(f"arg{kind}",), static=("axis",), signature="x, axis=None",
           when=when, normalize=_optional_axis,
           domain=_X, shapes=((3, 3),))
        for kind in ("max", "min")
        for suffix, forward, when in (
            ("_all", f"np.arg{kind}(x)", lambda nd, st: st["axis"] is None),
            ("", f"np.arg{kind}(x, axis=axis)", lambda nd, st: st["axis"] is not None),
        )
    ),
    Op("copy", ("x",), "x.copy()", {"x": "grad"}, pattern="copy: passes the gradient through",
       functions=("copy",), methods=("copy",), domain=_X, shapes=((3, 2),)),
    # numba 0.68's np.clip takes arrays only; minimum(maximum(x, lo), hi) is what np.clip computes
    Op("clip", ("x",), "np.clip(x, lo, hi)", {"x": "((x >= lo) & (x <= hi)) * grad"},
       pattern="clip gate: router (to x where it lies within the bounds)",
       functions=("clip",), methods=("clip",), static=("lo", "hi"), signature="x, lo, hi",
       normalize=lambda shapes, st: {"lo": _bound(st["lo"], -np.inf), "hi": _bound(st["hi"], np.inf)},
       numba_forward="np.minimum(np.maximum(x, lo), hi)",
       domain=_X),
    # Matrix products: one row per operand rank, chosen by `when`.
    *(
        Op(name, ("x", "y"), "x @ y", rules, pattern=f"matmul gate ({kind}): swap multiplier, transposed",
           operators=("__matmul__",), reflected=("__rmatmul__",), ufuncs=("matmul",), functions=("dot",),
           methods=("dot",), when=_ranks(ranks), domain=_XY, shapes=shapes)
        for name, kind, ranks, rules, shapes in (
            ("matmul", "matrix @ matrix", (2, 2), {"x": "grad @ y.T", "y": "x.T @ grad"}, ((3, 4), (4, 2))),
            ("matvec", "matrix @ vector", (2, 1), {"x": "np.outer(grad, y)", "y": "x.T @ grad"}, ((3, 4), (4,))),
            ("vecmat", "vector @ matrix", (1, 2), {"x": "y @ grad", "y": "np.outer(x, grad)"}, ((4,), (4, 2))),
            ("inner", "vector @ vector", (1, 1), {"x": "y * grad", "y": "x * grad"}, ((4,), (4,))),
        )
    ),
    # the full reversal of the axes, as `.T`; other permutations take the transpose_axes row
    Op("transpose", ("x",), "x.T", {"x": "grad.T"}, pattern="transpose: the gradient transposed back",
       attributes=("T",), functions=("transpose",), methods=("transpose",), static=("axes", "inverse"),
       signature="x, axes=None", method_signature="x, *axes", normalize=_transposed,
       when=lambda nd, st: "axes" not in st, domain=_X, shapes=((3, 2),), view=True),
    Op("reshape", ("x",), "x.reshape(shape)", {"x": "grad.reshape(x.shape)"},
       pattern="reshape: the gradient reshaped back", functions=("reshape",), methods=("reshape",),
       static=("shape",), signature="x, shape", method_signature="x, *shape", normalize=_reshape,
       # numba reshapes only contiguous arrays, and a slice or a transposed gradient is none
       numba_forward="np.ascontiguousarray(x).reshape(shape)",
       numba_grads={"x": "np.ascontiguousarray(grad).reshape(x.shape)"},
       domain=_X, shapes=((3, 2),), view=True),
    *_layout_rows(),
    *_reductions(),
    *_statistics_rows(),
    # Indexing, by how many index arrays the index holds (their operands are i and j). An index
    # that only adds axes (`correct[:, None]`) is a reshape, and so is its gradient.
    Op("new_axes", ("x",), "x[index]", {"x": "grad.reshape(x.shape)"},
       pattern="new axes: the gradient reshaped back", operators=("__getitem__",), static=("index",),
       when=lambda ndims, static: len(ndims) == 1 and _adds_axes_only(static),
       numba_grads={"x": "np.ascontiguousarray(grad).reshape(x.shape)"}, domain=_X, shapes=((3, 4),), view=True),
    Op("getitem", ("x",), "x[index]", {"x": "scatter(x.shape, index, grad, x.dtype)"},
       pattern="index gate: the gradient written back where the values came from",
       operators=("__getitem__",), static=("index",),
       when=lambda ndims, static: _arrays(0)(ndims, static) and not _adds_axes_only(static),
       domain=_X, shapes=((3, 4),), view=True),
    Op("take", ("x", "i"), "x[index]", {"x": "add_at(x.shape, index, grad, x.dtype)"},
       pattern="gather gate: the gradient added back where the values came from (repeats add up)",
       operators=("__getitem__",), static=("index",), when=_arrays(1),
       numba_grads={"x": "add_rows(x.shape, i, grad, x.dtype)"},
       numba_when=lambda ndims, st: st["index"] == (IndexOperand("i"),),
       domain=(_X[0], None), shapes=((3, 4), (5,))),
    Op("take2", ("x", "i", "j"), "x[index]", {"x": "add_at(x.shape, index, grad, x.dtype)"},
       pattern="gather gate: the gradient added back where the values came from (repeats add up)",
       operators=("__getitem__",), static=("index",), when=_arrays(2),
       numba_grads={"x": "add_pairs(x.shape, i, j, grad, x.dtype)"},
       numba_when=lambda ndims, st: st["index"] == (IndexOperand("i"), IndexOperand("j")),
       domain=(_X[0], None, None), shapes=((3, 4), (5,), (5,))),
    # `x[index] = v`, traced as a new value: x with v written in (x itself is not changed).
    *(
        Op(name, ("x", "v") + arrays, "updated(x, index, v)",
           # with index arrays a place may be written twice; only the last write reaches it
           {"x": "updated(grad, index, 0)",
            "v": "grad[index] * last_writes(x.shape, index)" if arrays else "grad[index]"},
           pattern="write gate: the gradient of the overwritten places goes to v, the rest to x",
           operators=("__setitem__",), static=("index",), when=_arrays(len(arrays), operands=2),
           domain=(_X[0], _X[0]) + (None,) * len(arrays),
           shapes=((3, 4), ()) + ((5,),) * len(arrays))
        for name, arrays in (("setitem", ()), ("put", ("i",)), ("put2", ("i", "j")))
    ),
)

OPS: Mapping[str, Op] = {row.name: row for row in _ROWS}
