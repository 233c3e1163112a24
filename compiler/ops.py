"""The operation table: everything flatgrad knows about each operation, in one row.

A row is data. Its forward expression and its local gradients are Python expressions over the
row's parameter names, plus `out` (the gate's output) and `grad` (the upstream gradient) in
the gradient rules. Each gradient is written local factor first, upstream last, so the emitted
line reads as the lecture writes it: `grad_w1 = x1 * grad_s1`. What a backward gate reads from
the forward pass (the cache) is derived from the names its rule uses.

The tracer maps operators, ufuncs, array functions and `compiler.<gate>` calls to rows through
the `operators`/`reflected`/`ufuncs`/`functions`/`gate` fields and checks that `bool_params`
get bools; autodiff applies `grads`;
codegen renders `forward` and `grads`; the tests draw inputs from `domain`. No other module
lists operations.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

# A closed interval the tests draw an input from; None for inputs that are not drawn (bools).
Interval = tuple[float, float] | None


@dataclass(frozen=True, eq=False)
class Op:
    """One operation. See the module docstring for what each field is read by."""

    name: str
    params: tuple[str, ...]
    forward: str
    grads: Mapping[str, str] = field(default_factory=dict)
    pattern: str = ""
    operators: tuple[str, ...] = ()
    reflected: tuple[str, ...] = ()
    ufuncs: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    gate: bool = False
    domain: tuple[Interval, ...] = ()
    scalar_forward: str | None = None
    bool_params: tuple[str, ...] = ()

    def rule_names(self, wrt: str) -> tuple[str, ...]:
        """The names the local gradient with respect to `wrt` reads, in canonical order."""
        return _names_used(self.grads[wrt], self.params + ("out", "grad"))

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
            + ((("gate", self.name),) if self.gate else ())
        )

    def compute(self, *args: object) -> object:
        """Evaluate the forward expression on concrete numbers or arrays."""
        return _compiled(self.forward, self.params)(*args)


@functools.lru_cache(maxsize=None)
def _names_used(expr: str, candidates: tuple[str, ...]) -> tuple[str, ...]:
    used = {node.id for node in ast.walk(ast.parse(expr, mode="eval")) if isinstance(node, ast.Name)}
    return tuple(name for name in candidates if name in used)


@functools.lru_cache(maxsize=None)
def _compiled(expr: str, params: tuple[str, ...]) -> Callable[..., object]:
    code = compile(f"lambda {', '.join(params)}: {expr}", f"<flatgrad op: {expr}>", "eval")
    return eval(code, {"np": np})  # the table's own expressions, never user input


_X = ((-3.0, 3.0),)
_XY = ((-3.0, 3.0), (-3.0, 3.0))
_POSITIVE = ((0.1, 5.0),)


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
    Op("add", ("x", "y"), "x + y", {"x": "grad", "y": "grad"},
       pattern="add gate: distributor", operators=("__add__",), reflected=("__radd__",),
       ufuncs=("add",), domain=_XY),
    Op("sub", ("x", "y"), "x - y", {"x": "grad", "y": "-grad"},
       pattern="sub gate: distributor, negated for the subtrahend",
       operators=("__sub__",), reflected=("__rsub__",), ufuncs=("subtract",), domain=_XY),
    Op("mul", ("x", "y"), "x * y", {"x": "y * grad", "y": "x * grad"},
       pattern="mul gate: swap multiplier", operators=("__mul__",), reflected=("__rmul__",),
       ufuncs=("multiply",), domain=_XY),
    Op("div", ("x", "y"), "x / y", {"x": "1 / y * grad", "y": "-x / y ** 2 * grad"},
       pattern="div gate: 1/y for the numerator, -x/y^2 for the denominator",
       operators=("__truediv__",), reflected=("__rtruediv__",), ufuncs=("divide",),
       domain=((-3.0, 3.0), (0.5, 3.0))),
    Op("neg", ("x",), "-x", {"x": "-grad"}, pattern="neg gate: flips the sign",
       operators=("__neg__",), ufuncs=("negative",), domain=_X),
    Op("pos", ("x",), "x", {"x": "grad"}, pattern="copy: passes the gradient through",
       operators=("__pos__",), ufuncs=("positive",), domain=_X),
    # `y - (y != 0)` is y - 1, except for y == 0, where x ** 0 == 1 has gradient 0 even at x == 0
    Op("pow", ("x", "y"), "x ** y", {"x": "y * x ** (y - (y != 0)) * grad", "y": "np.log(x) * out * grad"},
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
    Op("square", ("x",), "np.square(x)", {"x": "2 * x * grad"},
       pattern="square gate: local gradient 2x", ufuncs=("square",), domain=_X),
    Op("sigmoid", ("x",), "1 / (1 + np.exp(-x))", {"x": "(1 - out) * out * grad"},
       pattern="sigmoid gate: local gradient (1 - s) s from its output", gate=True,
       domain=((-4.0, 4.0),)),
    Op("relu", ("x",), "np.maximum(x, 0.0)", {"x": "(x > 0) * grad"},
       pattern="max gate: router (to x where x > 0)", gate=True, domain=_X),
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
       {"x": "cond * grad", "y": "(1 - cond) * grad"},
       pattern="where gate: router (to x where cond holds, else to y)",
       functions=("where",), domain=(None, (-3.0, 3.0), (-3.0, 3.0)),
       scalar_forward="x if cond else y", bool_params=("cond",)),
    # Fills made by autodiff, not by user code: the seed of the backward pass, and the
    # gradient of an input the output does not depend on.
    Op("ones_like", ("x",), "np.ones_like(x)", pattern="seed: d(out)/d(out) = 1",
       scalar_forward="1.0"),
    Op("zeros_like", ("x",), "np.zeros_like(x)", pattern="no path from this input to the output",
       scalar_forward="0.0"),
)

OPS: Mapping[str, Op] = {row.name: row for row in _ROWS}
