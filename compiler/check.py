"""Gradient checks: flatgrad's gradient beside central differences of the function itself.

A check is honest about precision (float32 inputs are differenced in float64 where the function
allows it, with a step and a tolerance for the type) and about where it looks: `check_inputs`
draws values from both signs, within the domain of every op that reads them, so that ReLUs switch
off and tanh does not saturate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from compiler.ir import Backprop, Var
from compiler.ops import OPS
from compiler.program import GradientProgram, Options, build
from compiler.tracer import bind_arguments


@dataclass(frozen=True)
class CheckRow:
    """One element of one input's gradient, by flatgrad and by central differences (for an
    array input, `check_rows` keeps the element where they differ most, among those checked).

    `tolerance` is the error this row's precision allows: float32 gradients are right to about
    1e-7 of their size, not to float64's 1e-16.
    """

    name: str
    analytic: float
    numeric: float
    index: tuple[int, ...] = ()
    tolerance: float = 1e-6

    @property
    def label(self) -> str:
        """The element checked, as it is indexed: `x`, `W1[2, 3]`."""
        return f"{self.name}[{', '.join(map(str, self.index))}]" if self.index else self.name

    @property
    def error(self) -> float:
        """|a - n| / max(|a|, |n|, 1): relative for gradients of size 1 and more, absolute below."""
        return abs(self.analytic - self.numeric) / max(abs(self.analytic), abs(self.numeric), 1.0)


# At most this many elements of an array input are checked (chosen at random, seeded).
CHECKED_ELEMENTS = 24

# The default tolerance of a check, by the itemsize of the float type involved: float64's
# gradients and differences are good to about 1e-10 here, float32's to 1e-7 and float16's to
# 1e-3, and a central difference taken in float32 (where f insists on it) to about 1e-5.
_GRADIENT_TOLERANCE = {8: 1e-6, 4: 1e-4, 2: 1e-2}
_DIFFERENCE_TOLERANCE = {8: 1e-6, 4: 1e-3, 2: 1e-1}


def _float_itemsize(value: Any) -> int:
    dtype = np.asarray(value).dtype
    return dtype.itemsize if dtype.kind == "f" else 8


def difference_point(f: Callable, arguments: dict[str, Any]) -> tuple[dict[str, Any], np.dtype]:
    """The arguments to take central differences of `f` at, and the float type `f` computes in
    there: narrower float inputs (float32) widened to float64 wherever `f` then computes in
    float64, so the differences are as exact as float64's; else the arguments as they are."""
    widened = {
        name: np.asarray(value, dtype=np.float64)[()] if _float_itemsize(value) < 8 else value
        for name, value in arguments.items()
    }
    if any(widened[name] is not value for name, value in arguments.items()):
        try:
            if _float_dtype(f(**widened)) == np.float64:
                return widened, np.dtype(np.float64)
        except Exception:  # f refuses float64 inputs: difference it as it is
            pass
    return arguments, _float_dtype(f(**arguments))


def _float_dtype(returned: Any) -> np.dtype:
    """The float type of what `f` returned (of its float outputs, for a tuple); float64 if none."""
    values = returned if isinstance(returned, tuple) else (returned,)
    floats = [np.asarray(v).dtype for v in values if np.asarray(v).dtype.kind == "f"]
    return np.result_type(*floats) if floats else np.dtype(np.float64)


def central_difference(
    f: Callable, arguments: dict[str, Any], name: str, element: tuple[int, ...] = (), dtype: Any = np.float64
) -> float:
    """d f / d name[element] at `arguments`, by a central difference in the float type `dtype`.

    The step is eps ** (1/3) of that type, scaled by the value's magnitude, which balances the
    difference's truncation error against its rounding error: about 6e-6 in float64 and 5e-3
    in float32 (float64's step would vanish in float32's rounding and give a difference of 0).
    """
    argument_dtype = np.asarray(arguments[name]).dtype
    base = np.asarray(arguments[name], dtype=np.float64)
    x = float(base[element])
    step = float(np.finfo(dtype).eps) ** (1 / 3) * max(1.0, abs(x))

    def moved(value: float) -> Any:
        array = base.copy()
        array[element] = value
        return array.astype(argument_dtype)[()]

    up, down = moved(x + step), moved(x - step)
    # The step actually taken: x +- step rounded to the argument's type.
    taken = float(np.asarray(up, dtype=np.float64)[element]) - float(np.asarray(down, dtype=np.float64)[element])
    return (float(f(**{**arguments, name: up})) - float(f(**{**arguments, name: down}))) / taken


def check_rows(
    f: Callable, *args: Any, wrt: str | Sequence[str] | None = None, optimize: bool = False, has_aux: bool = False,
    **kwargs: Any,
) -> list[CheckRow]:
    """flatgrad's gradient of `f` beside central differences of `f` itself, one row per input."""
    program = build(f, args, kwargs, Options(wrt, optimize=optimize, has_aux=has_aux))
    return compare(program, f, bind_arguments(f, args, kwargs))


def compare(program: GradientProgram, f: Callable, arguments: dict[str, Any]) -> list[CheckRow]:
    """`program`'s gradient (built from `f`) at `arguments`, by parameter name, beside central
    differences of `f`: for each input, the element where they differ most among those checked.

    For `f` returning an array, the gradient checked is `backward`'s at a random upstream
    gradient `dout` (seeded): the vector-Jacobian product, the gradient of `sum(f * dout)`."""
    rng = np.random.default_rng(0)
    pair = program.graph
    several = len(pair.forward.outputs) > 1
    if pair.seed is not None:  # one number is differentiated: its gradient
        grads = program.grad(*arguments.values())
        f = _projected(f, {0: None} if several else {})
    else:
        out, cache = program.forward_with_cache(*arguments.values())
        outs = out if several else (out,)
        douts = {i: rng.normal(size=np.shape(outs[i])).astype(np.asarray(outs[i]).dtype) for i in pair.differentiated}
        grads = program.backward(*douts.values(), cache)
        f = _projected(f, douts if several else {None: douts[0]})
    point, dtype = difference_point(f, arguments)
    rows = []
    for name, g in zip(program.wrt, grads):
        tolerance = max(
            _GRADIENT_TOLERANCE.get(_float_itemsize(g), 1e-6), _DIFFERENCE_TOLERANCE.get(dtype.itemsize, 1e-6)
        )
        g = np.asarray(g, dtype=np.float64)
        elements = list(np.ndindex(g.shape))
        if len(elements) > CHECKED_ELEMENTS:
            elements = [elements[i] for i in sorted(rng.choice(len(elements), CHECKED_ELEMENTS, replace=False))]
        checked = [
            CheckRow(name, float(g[e]), central_difference(f, point, name, e, dtype), e, tolerance) for e in elements
        ]
        rows.append(max(checked, key=lambda row: row.error))
    return rows


def _projected(f: Callable, douts: dict) -> Callable:
    """The number whose gradient is the one checked: `sum(out_i * dout_i)` over the outputs
    differentiated (by position in the returned tuple; None for f's one output), whose gradient
    is f's vector-Jacobian product at the douts; a dout of None takes the output as it is."""
    if not douts:
        return f

    def projected(**arguments: Any) -> Any:
        returned = f(**arguments)
        total = 0.0
        for index, dout in douts.items():
            out = np.asarray(returned if index is None else returned[index])
            total = total + (out if dout is None else np.sum(out * dout.astype(out.dtype)))
        return total

    return projected


def check_passes(rows: Sequence[CheckRow], tolerance: float | None = None) -> bool:
    """Whether every row's error is within `tolerance` (default: each row's own)."""
    return all(row.error <= (row.tolerance if tolerance is None else tolerance) for row in rows)


def check_grad(
    f: Callable, *args: Any, wrt: str | Sequence[str] | None = None, has_aux: bool = False, **kwargs: Any
) -> float:
    """The largest error between flatgrad's gradient and central finite differences (see CheckRow).

    Float32 inputs are differenced in float64 where `f` allows it; a float32 gradient is then
    right when the error is below about 1e-4 (`CheckRow.tolerance`), a float64 one below 1e-6.
    """
    return max(row.error for row in check_rows(f, *args, wrt=wrt, has_aux=has_aux, **kwargs))


# Check inputs are drawn with magnitudes in this range and either sign: away from 0, where
# relu and abs have their kinks and a central difference would straddle two slopes.
DRAWN_MAGNITUDE = (0.5, 1.5)
# Integer inputs (labels) are drawn from 0 up to, not including, this.
DRAWN_LABELS = 3


def check_inputs(program: GradientProgram, given: Mapping[str, Any], seed: int) -> tuple[dict[str, Any], str]:
    """Values to check `program`'s gradient at, by parameter name, and a sentence saying how the
    ones not `given` were drawn.

    Floats are drawn with `seed` from both signs, each within the domain (the op table's) of
    every op that reads it directly, so that a log's operand is positive and a ReLU sees both
    sides. Where the function is not finite at such a point (a log of a difference, say), every
    float is drawn positive instead, and the sentence says so.
    """
    graph = program.graph
    drawn = [v for v in graph.inputs if v.name not in given]
    values = {**given, **_draw(graph, drawn, seed, signed=True)}
    values = {v.name: values[v.name] for v in graph.inputs}
    if not drawn:
        return values, "checked at the given values"
    names = ", ".join(v.name for v in drawn)
    labels = f", integers in 0..{DRAWN_LABELS - 1}" if any(np.dtype(v.dtype).kind != "f" for v in drawn) else ""
    with np.errstate(all="ignore"):
        returned = program.forward(*values.values())
        outputs = returned if len(graph.forward.outputs) > 1 else (returned,)
        finite = all(bool(np.all(np.isfinite(out))) for out in outputs)
    if finite:
        return values, f"{names} drawn with --seed {seed}: floats from both signs within each op's domain{labels}"
    values = {**values, **_draw(graph, drawn, seed, signed=False)}
    return values, (
        f"{names} drawn with --seed {seed}: floats positive, as the function is not finite at values of "
        f"both signs there{labels}"
    )


def _draw(graph: Backprop, inputs: Sequence[Var], seed: int, signed: bool) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    low_magnitude, high_magnitude = DRAWN_MAGNITUDE
    values: dict[str, Any] = {}
    for var in inputs:
        dtype = np.dtype(var.dtype)
        if dtype.kind != "f":
            values[var.name] = np.asarray(rng.integers(0, DRAWN_LABELS, var.shape), dtype=dtype)[()]
            continue
        drawn = rng.uniform(low_magnitude, high_magnitude, var.shape)
        if signed:
            drawn = drawn * rng.choice((-1.0, 1.0), var.shape)
        low, high = _domain(graph, var)
        outside = (drawn < low) | (drawn > high)
        if np.any(outside) and low < high:
            # Within the domain, and within the drawn magnitudes where the two overlap.
            near_low, near_high = max(low, -high_magnitude), min(high, high_magnitude)
            if near_low >= near_high:
                near_low, near_high = low, high
            drawn = np.where(outside, rng.uniform(near_low, near_high, var.shape), drawn)
        values[var.name] = np.asarray(drawn, dtype=dtype)[()]
    return values


def _domain(graph: Backprop, var: Var) -> tuple[float, float]:
    """The interval in which every op that reads `var` directly is tested (its row's domain)."""
    low, high = -np.inf, np.inf
    for eqn in graph.forward.eqns:
        domain = OPS[eqn.op].domain
        for position, operand in enumerate(eqn.inputs):
            if operand is var and position < len(domain) and domain[position] is not None:
                low, high = max(low, domain[position][0]), min(high, domain[position][1])
    return low, high


def format_check(rows: Sequence[CheckRow], tolerance: float | None = None) -> tuple[str, bool]:
    """The gradient-check table, one row per input at its worst element checked, and whether
    every error is within `tolerance` (default: each row's own, by its precision)."""
    tolerances = sorted({row.tolerance for row in rows}) if tolerance is None else [tolerance]
    mixed = len(tolerances) > 1
    width = max(len("input"), *(len(r.label) for r in rows))
    header = f"{'input':<{width}}  {'flatgrad':>14}  {'central diff':>14}  {'error':>8}"
    lines = [header + ("  tolerance" if mixed else "")]
    for r in rows:
        line = f"{r.label:<{width}}  {r.analytic:>14.6e}  {r.numeric:>14.6e}  {r.error:>8.1e}"
        lines.append(line + (f"  {r.tolerance:>9.0e}" if mixed else ""))
    ok = check_passes(rows, tolerance)
    worst = max(r.error for r in rows)
    limit = "each input's tolerance" if mixed else f"tolerance {tolerances[0]:.0e}"
    lines.append(f"largest error {worst:.1e}, {limit}: {'ok' if ok else 'FAILED'}")
    return "\n".join(lines), ok
