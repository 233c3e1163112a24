"""The op table, tested from the table.

Every row user code can reach is tested through every entry point it declares (operators,
reflected and in-place dunders, ufuncs, array functions, methods, attributes, `compiler.<gate>`),
on inputs drawn from the row's own `domain`, against two independent oracles:

- central finite differences of the user's function run by plain NumPy, and
- HIPS autograd differentiating the row's own `forward` expression with `np` bound to
  `autograd.numpy` (autograd cannot write in place, so `updated(x, index, v)` -- the rows for
  `x[index] = v` -- is given to it as a functional update, and `x.copy()` as `np.array(x)`).

The rows written for scalars (those without example `shapes`) are also run across broadcasting
shapes: scalar, vector (3,), row (1, 3), column (4, 1) and matrix (4, 3), paired for binary
rows. Array rows run on their own example `shapes`; their static arguments (axis, keepdims,
shape, clip bounds, the index of an indexing row) are drawn from a few candidates per static
*name* and kept where the row's `when` accepts them, so `when` decides which row each call
reaches, and the test checks that the traced equation is that row. An array output is reduced
to a scalar as `np.sum(out * W)` with fixed random weights `W`, so each output element sends a
different gradient back.

Comparison rows pass no gradient, so they are tested as the condition of `np.where`; the fills
(`np.ones_like`, `np.zeros_like`) are tested as a term added to a differentiable one.
`verify` runs on every graph built here.

Bugs these tests found keep their smallest reproduction at the end of the file. The cases, the
user's functions and the oracles are in tests/table_harness.py.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import operator
from pathlib import Path
from typing import Callable

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from autograd.tracer import getval
from table_harness import (
    COMPARISON_CASES,
    COMPARISONS,
    DIFFERENTIABLE,
    FILL_CASES,
    FILLS,
    GRADIENT_CASES,
    INDEX_TEXTS,
    MASK_CASES,
    MASK_LOGIC,
    ROWS,
    Case,
    assert_close_to_autograd,
    autograd_grads,
    away_from_kinks,
    build,
    call_lines,
    cases_of,
    check_against_autograd,
    check_against_fd,
    copies,
    draw_args,
    inplace_fits,
    is_elementwise,
    normalized,
    oracle_forward,
    params,
    parse_index,
    rng_for,
    run,
    sample_output_shape,
    sample_result,
    signature_of,
    static_candidates,
    unbroadcast,
    user_function,
    weights,
)

import compiler
from compiler import ir
from compiler.errors import TracingError
from compiler.ops import INDEX_PARAMS, OPS, IndexOperand, Op

# autograd warns when asked for the gradient of an input the function ignores (x * x wrt y)
pytestmark = pytest.mark.filterwarnings("ignore:Output seems independent of input:UserWarning")

DRAWS = 3
HERE = Path(__file__).name


# --- the table is well formed ---------------------------------------------------------------


@pytest.mark.parametrize("row", list(OPS.values()), ids=lambda row: row.name)
def test_row_is_well_formed(row):
    assert set(row.grads) <= set(row.operands)
    for param in row.grads:
        assert set(row.rule_names(param)) <= set(row.operands) | {"out", "grad"}
        assert "grad" in row.rule_names(param), "a local gradient multiplies the upstream one"
    assert row.entry_points() or row.fuses or not row.grads, "a differentiable row user code cannot reach"
    if row.entry_points():
        assert len(row.domain) == len(row.operands)
        for param, interval in zip(row.operands, row.domain):
            # a None domain is a bool or an index array, the only inputs not drawn from an interval
            assert (interval is None) == (param in row.bool_operands or param in INDEX_PARAMS), param
            assert interval is None or interval[0] < interval[1]
    if row.shapes:  # a join's example takes some of the operands it may take
        assert len(row.shapes) == len(row.operands) or row.packs and len(row.shapes) < len(row.operands)
    assert set(row.bool_operands) <= set(row.operands)
    assert row.when is None or row.shapes, "a row chosen by `when` gives example shapes it accepts"


def test_every_row_and_entry_point_is_tested():
    tested = {case.entry for case in GRADIENT_CASES + COMPARISON_CASES + MASK_CASES + FILL_CASES}
    declared = {(row.name, kind, name) for row in ROWS for kind, name in row.entry_points()}
    assert tested == declared
    internal = {row.name for row in OPS.values() if not row.entry_points()}  # steps autodiff inserts, fused gates
    assert {row.name for row in ROWS} | internal == set(OPS)
    assert all(not OPS[name].grads or OPS[name].fuses for name in internal), "an internal step is never differentiated"
    assert set(DIFFERENTIABLE) | set(COMPARISONS) | set(MASK_LOGIC) | set(FILLS) == set(ROWS)


def test_each_static_candidate_reaches_exactly_one_row():
    """For every call the tests make, exactly one row sharing the entry point accepts it."""
    for case in GRADIENT_CASES:
        values = tuple(s for p, s in zip(case.row.operands, case.shapes) if p not in INDEX_PARAMS)
        arrays = tuple(1 for p in case.row.operands if p in INDEX_PARAMS)
        ndims = tuple(len(s) for s in values) + arrays
        static = case.static_dict()
        sharing = [row for row in ROWS if (case.kind, case.name) in row.entry_points()]
        accepting = [row.name for row in sharing if row.accepts(ndims, static)]
        assert accepting == [case.row.name], str(case)


# --- every differentiable row, through every entry point -------------------------------------


def traced_eqn(prog: compiler.GradientProgram, row: Op) -> ir.Eqn:
    """The first forward equation of `row` (the case's call comes before the weighting)."""
    return next(e for e in prog.graph.forward_eqns if e.op == row.name)


@pytest.mark.parametrize("case", params(GRADIENT_CASES, "gradient"))
def test_gradient_of_every_entry_point(case):
    user = user_function(case)
    prog = build(user.f, *user.examples())
    assert prog.wrt == user.floats, user.source
    assert traced_eqn(prog, case.row).static == case.static_dict()
    rng = rng_for(case)
    for _ in range(DRAWS):
        args = draw_args(user, rng)
        check_against_fd(prog, user.f, user.names, args)
        check_against_autograd(prog, user.oracle, user.names, args)


PREDICATES = [row for row in COMPARISONS if len(row.operands) == 1]  # np.isnan(x), np.logical_not(x)
BINARY_COMPARISONS = [row for row in COMPARISONS if len(row.operands) == 2]


@pytest.mark.parametrize("case", params([c for c in COMPARISON_CASES if c.row in BINARY_COMPARISONS], "comparison"))
def test_comparison_routes_where(case):
    """where(cmp(x, y), 2x, 3y): the comparison decides which branch gets the gradient."""
    row = case.row
    out_shape = np.broadcast_shapes(*case.shapes)
    W = weights(out_shape)
    call, result = call_lines(case, ["x", "y"])
    namespace = {"np": np, "_op": getattr(operator, case.name.strip("_"), None), "_W": W}
    exec(f"def f(x, y):\n    {call[0]}\n    return np.sum(np.where({result}, x * 2.0, y * 3.0) * _W)\n", namespace)
    f = namespace["f"]
    cmp = oracle_forward(row)

    def oracle(x, y):
        return anp.sum(anp.where(cmp(getval(x), getval(y)), x * 2.0, y * 3.0) * W)

    prog = build(f, *[np.ones(s) if s else 1.0 for s in case.shapes])
    comparison = traced_eqn(prog, row)
    assert comparison.out.dtype == "bool" and comparison.out.shape == out_shape
    rng = rng_for(case)
    for _ in range(2):  # each draw checks both branches
        while True:
            x, y = (rng.uniform(*interval, shape) for interval, shape in zip(row.domain, case.shapes))
            if away_from_kinks(np.concatenate([np.ravel(x), np.ravel(y)])):
                break
        x, y = (np.float64(v) if np.ndim(v) == 0 else v for v in (x, y))
        for args in ([x, y], [y, x]) if case.shapes[0] == case.shapes[1] else ([x, y],):  # both branches
            check_against_fd(prog, f, ["x", "y"], args)
            check_against_autograd(prog, oracle, ["x", "y"], args)
    # ties, where eq/ge/le take the first branch and ne/gt/lt the second
    x = np.full(case.shapes[0], 1.5) if case.shapes[0] else 1.5
    y = np.full(case.shapes[1], 1.5) if case.shapes[1] else 1.5
    taken = np.broadcast_to(row.compute(1.5, 1.5), out_shape)
    value, (grad_x, grad_y) = prog.value_and_grad(x, y)
    assert float(value) == pytest.approx(float(np.sum(np.where(taken, 3.0, 4.5) * W)), rel=1e-14)
    np.testing.assert_array_equal(grad_x, unbroadcast(np.where(taken, 2.0, 0.0) * W, np.shape(x)))
    np.testing.assert_array_equal(grad_y, unbroadcast(np.where(taken, 0.0, 3.0) * W, np.shape(y)))


@pytest.mark.parametrize("row", BINARY_COMPARISONS, ids=lambda row: row.name)
@pytest.mark.parametrize("shape", [(), (4, 3)], ids=str)
def test_comparison_of_a_value_with_itself(row, shape):
    for kind, name in row.entry_points():
        call, result = call_lines(Case(row, kind, name, (shape, shape)), ["x", "x"])
        namespace = {"np": np, "_op": getattr(operator, name.strip("_"), None)}
        exec(f"def f(x):\n    {call[0]}\n    return np.sum(np.where({result}, x * 2.0, x * 3.0))\n", namespace)
        prog = build(namespace["f"], np.ones(shape) if shape else 1.0)
        taken = bool(row.compute(0.7, 0.7))
        x = np.full(shape, 0.7) if shape else 0.7
        value, (grad,) = prog.value_and_grad(x)
        assert float(value) == pytest.approx((1.4 if taken else 2.1) * max(1, np.size(x)), rel=1e-15)
        np.testing.assert_array_equal(grad, np.full(shape, 2.0 if taken else 3.0))


# Values the predicates tell apart: zeros of both signs, numbers, nan and the infinities.
SPECIAL_VALUES = (0.0, -0.0, 1.5, -2.0, np.nan, np.inf, -np.inf)


@pytest.mark.parametrize("case", params(MASK_CASES, "mask"))
def test_mask_logic_routes_where(case):
    """where(m0 & m1, ...) with each mask a comparison of its own value: against central
    differences and autograd, with the bools NumPy computes."""
    names = [f"x{k}" for k in range(len(case.shapes))]
    masks = [f"m{k}" for k in range(len(case.shapes))]
    out_shape = np.broadcast_shapes(*case.shapes)
    W = weights(out_shape)
    call, result = call_lines(case, masks)
    total = f"({' + '.join(names)})"
    lines = [f"{m} = {x} > 0.0" for m, x in zip(masks, names)] + call
    body = "".join(f"    {line}\n" for line in lines)
    stem = case.name.strip("_")
    op = getattr(operator, stem, None) or getattr(operator, f"{stem}_", None)  # `and_`
    namespace = {"np": np, "_W": W, "_op": op}
    returned = f"np.sum(np.where({result}, {total} * 2.0, {total} * 3.0) * _W)"
    exec(f"def f({', '.join(names)}):\n{body}    return {returned}\n", namespace)
    f = namespace["f"]
    logic = oracle_forward(case.row)

    def oracle(*xs):
        chosen = logic(*(getval(x) > 0.0 for x in xs))
        total = sum(xs)
        return anp.sum(anp.where(chosen, total * 2.0, total * 3.0) * W)

    prog = build(f, *(np.ones(s) if s else 1.0 for s in case.shapes))
    assert traced_eqn(prog, case.row).out.dtype == "bool"
    rng = rng_for(case)
    for _ in range(DRAWS):
        xs = [rng.uniform(-3.0, 3.0, s) for s in case.shapes]
        xs = [np.where(np.abs(x) < 0.1, 0.5, x) if np.ndim(x) else np.float64(x if abs(x) >= 0.1 else 0.5) for x in xs]
        check_against_fd(prog, f, names, xs)
        check_against_autograd(prog, oracle, names, xs)


@pytest.mark.parametrize("case", params([c for c in COMPARISON_CASES if c.row in PREDICATES], "predicate"))
def test_predicate_routes_where(case):
    """where(p(x), 2x, 3x) for a bool of one value (np.isnan(x), np.logical_not(x)): on drawn
    numbers against central differences and autograd, and on the special values where the
    predicates differ, against the bool NumPy computes (the gradient has no x in it, so it
    stays finite where x is not)."""
    (shape,) = case.shapes
    W = weights(shape)
    call, result = call_lines(case, ["x"])
    namespace = {"np": np, "_W": W}
    exec(f"def f(x):\n    {call[0]}\n    return np.sum(np.where({result}, x * 2.0, x * 3.0) * _W)\n", namespace)
    f = namespace["f"]
    predicate = oracle_forward(case.row)

    def oracle(x):
        return anp.sum(anp.where(predicate(getval(x)), x * 2.0, x * 3.0) * W)

    prog = build(f, np.ones(shape) if shape else 1.0)
    assert traced_eqn(prog, case.row).out.dtype == "bool"
    rng = rng_for(case)
    for _ in range(DRAWS):
        while True:
            x = rng.uniform(*case.row.domain[0], shape)
            if away_from_kinks(x):
                break
        x = np.float64(x) if not shape else x
        check_against_fd(prog, f, ["x"], [x])
        check_against_autograd(prog, oracle, ["x"], [x])
    specials = [np.resize(np.array(SPECIAL_VALUES), shape)] if shape else [np.float64(v) for v in SPECIAL_VALUES]
    for x in specials:
        (grad,) = prog.grad(x)
        np.testing.assert_array_equal(grad, np.where(case.row.compute(x), 2.0, 3.0) * W, err_msg=str(x))


@pytest.mark.parametrize("case", params(FILL_CASES, "fill"))
def test_fill_has_its_value_and_no_gradient(case):
    """np.ones_like(x), np.floor(x), x // y: a value through which no gradient flows, added to
    2x (x's gradient stays 2, summed over the axes x is broadcast along; the others' is 0)."""
    names = ["x", "y"][: len(case.row.operands)]
    out_shape = np.broadcast_shapes(*case.shapes)
    W = weights(out_shape)
    call, result = call_lines(case, names)
    stem = case.name.strip("_")
    namespace = {"np": np, "_W": W, "_op": getattr(operator, stem, None) or getattr(operator, f"{stem}_", None)}
    # 2x before the call: an in-place `x //= y` rebinds x
    body = ["_twice = x * 2.0", *call, f"return np.sum((_twice + {result}) * _W)"]
    exec(f"def f({', '.join(names)}):\n" + "".join(f"    {line}\n" for line in body), namespace)
    f = namespace["f"]
    fill = oracle_forward(case.row)

    def oracle(*args):
        return anp.sum((args[0] * 2.0 + fill(*args, **case.static_dict())) * W)

    prog = build(f, *[np.ones(shape) if shape else 1.0 for shape in case.shapes])
    rng = rng_for(case)
    for _ in range(DRAWS):
        while True:
            args = [rng.uniform(*interval, shape) for interval, shape in zip(case.row.domain, case.shapes)]
            if away_from_kinks(np.concatenate([np.ravel(a) for a in args])):
                break
        args = [np.float64(a) if not shape else a for a, shape in zip(args, case.shapes)]
        check_against_fd(prog, f, names, args)
        check_against_autograd(prog, oracle, names, args)
        grads = prog.grad(*args)
        np.testing.assert_array_equal(grads[0], unbroadcast(2.0 * W, case.shapes[0]))
        for grad, shape in zip(grads[1:], case.shapes[1:]):
            np.testing.assert_array_equal(grad, np.zeros(shape))


# --- a constant on either side ---------------------------------------------------------------


def constant_cases() -> list:
    """Binary rows of two floats: a Python float constant (elementwise rows) or a NumPy array
    constant (broadcasting; matrix products with their example shapes) on either side."""
    out = []
    for row in DIFFERENTIABLE + COMPARISONS:
        if len(row.operands) != 2 or None in row.domain or (row.static and not is_elementwise(row)):
            continue
        shape_sets = [((), ()), ((4, 3), (3,)), ((3,), (4, 3))] if is_elementwise(row) else [row.shapes]
        entries = [(k, n) for k, n in row.entry_points() if k in ("operator", "ufunc", "function", "inplace")]
        for (kind, name), shapes, side in itertools.product(entries, shape_sets, ("left", "right")):
            if kind == "inplace" and (side == "left" or not inplace_fits(shapes)):
                continue
            case = Case(row, kind, name, shapes)
            out.append(pytest.param(case, side, id=f"{case}-const-{side}"))
    return out


@pytest.mark.parametrize("case, side", constant_cases())
def test_constant_operand(case, side):
    """`2.0 * x`, `x * C`, `np.add(C, x)`, `x @ C`, `x += C`...; a Python float on the left
    reaches the reflected dunder, a NumPy array on the left the ufunc."""
    row = case.row
    const_index = 0 if side == "left" else 1
    traced_index = 1 - const_index
    rng = rng_for(case, side)
    const_shape, traced_shape = case.shapes[const_index], case.shapes[traced_index]
    while True:
        constant = rng.uniform(*row.domain[const_index], const_shape)
        if away_from_kinks(constant):
            break
    constant = float(constant) if not const_shape else constant
    operands = ["_C", "x"] if side == "left" else ["x", "_C"]
    call, result = call_lines(case, operands)
    out_shape = np.broadcast_shapes(*case.shapes) if is_elementwise(row) else sample_output_shape(case)
    W = weights(out_shape)
    reduce = f"np.where({result}, x * 2.0, x * 3.0)" if not row.grads else result
    namespace = {"np": np, "_op": getattr(operator, case.name.strip("_"), None), "_W": W, "_C": constant}
    exec(f"def f(x):\n    {call[0]}\n    return np.sum({reduce} * _W)\n", namespace)
    f = namespace["f"]
    forward = oracle_forward(row)

    def oracle(x):
        value = forward(constant, x) if side == "left" else forward(x, constant)
        if not row.grads:
            value = anp.where(getval(value), x * 2.0, x * 3.0)
        return anp.sum(value * W)

    prog = build(f, np.ones(traced_shape) if traced_shape else 1.0)
    if row.grads:  # one gate, with the constant where it was written (a comparison may mirror)
        eqn = traced_eqn(prog, row)
        assert isinstance(eqn.inputs[const_index], ir.Const)
        np.testing.assert_array_equal(eqn.inputs[const_index].value, constant)
        assert eqn.inputs[traced_index] is prog.graph.inputs[0]
    for _ in range(DRAWS):
        while True:
            x = rng.uniform(*row.domain[traced_index], traced_shape)
            if away_from_kinks(np.concatenate([np.ravel(x), np.ravel(constant)])):
                break
        x = np.float64(x) if not traced_shape else x
        check_against_fd(prog, f, ["x"], [x])
        check_against_autograd(prog, oracle, ["x"], [x])


def special_constants(np):
    """Constants of every kind where they are easy to get wrong (keyed by a test id)."""
    return {
        "x**3.0": lambda x: x**3.0,
        "x**2": lambda x: x**2,
        "x**-1.0": lambda x: x**-1.0,
        "x**-2": lambda x: x**-2,
        "x**0.5": lambda x: x**0.5,
        "2.0**x": lambda x: 2.0**x,
        "0.5**x": lambda x: 0.5**x,
        "np.power(x,3)": lambda x: np.power(x, 3),
        "2*x": lambda x: 2 * x,
        "x/2": lambda x: x / 2,
        "2/x": lambda x: 2 / x,
        "-2.0/x": lambda x: -2.0 / x,
        "x/-0.5": lambda x: x / -0.5,
        "-2.0-x": lambda x: -2.0 - x,
        "x--2.0": lambda x: x - -2.0,
        "-2.0*x": lambda x: -2.0 * x,
        "float64(2.0)*x": lambda x: np.float64(2.0) * x,
        "x*float64(2.0)": lambda x: x * np.float64(2.0),
        "float64(2.0)**x": lambda x: np.float64(2.0) ** x,
        "x-float64(3.0)": lambda x: x - np.float64(3.0),
        "float64(3.0)-x": lambda x: np.float64(3.0) - x,
        "np.maximum(x,-1.0)": lambda x: np.maximum(x, -1.0),
        "np.minimum(-1.0,x)": lambda x: np.minimum(-1.0, x),
        "where(x>0.25,2.0,x)": lambda x: np.where(x > 0.25, 2.0, x),
        "where(x>0.25,x,-2.0)": lambda x: np.where(x > 0.25, x, -2.0),
        "where(True,x,2.0)": lambda x: np.where(True, x, 2.0),
        "where(False,x,x*x)": lambda x: np.where(False, x, x * x),
        "x*eye": lambda x: np.sum(x * np.eye(3)),
        "arange@x": lambda x: np.sum(np.arange(3.0) * x),
        "x[1]*2": lambda x: x[1] * 2.0,
        "mean(x)*3": lambda x: np.mean(x) * 3,
    }


@pytest.mark.parametrize("key", list(special_constants(np)))
@pytest.mark.parametrize("shape", [(), (3, 3)], ids=str)
def test_special_constant(key, shape):
    f, oracle = special_constants(np)[key], special_constants(anp)[key]
    if key in ("x[1]*2",) and not shape:
        pytest.skip("indexes an array")
    if np.ndim(f(np.ones(shape))):  # an array: summed to a scalar
        f, oracle = (lambda fn, sum: lambda x: sum(fn(x)))(f, np.sum), (lambda fn: lambda x: anp.sum(fn(x)))(oracle)
    prog = build(f, np.ones(shape) if shape else 1.0)
    rng = rng_for(key, shape)
    for _ in range(4):
        x = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.3, shape)  # away from 0 (x**-2, 2/x)
        if key == "x**0.5":
            x = np.abs(x)
        x = np.float64(x) if not shape else x
        check_against_fd(prog, f, ["x"], [x])
        check_against_autograd(prog, oracle, ["x"], [x])


# --- fan-out: one value used several times --------------------------------------------------


def shared_interval(row: Op) -> tuple[float, float]:
    lo = max(interval[0] for interval in row.domain)
    hi = min(interval[1] for interval in row.domain)
    assert lo < hi
    return lo, hi


def same_value_cases() -> list:
    out = []
    for row in DIFFERENTIABLE:
        if len(row.operands) != 2 or None in row.domain or (row.static and not is_elementwise(row)):
            continue  # (an array row's statics, np.cross's axis, are the gradient cases')
        if is_elementwise(row):
            shapes = [(), (4, 3)]
        elif row.shapes[0] == row.shapes[1]:
            shapes = [row.shapes[0]]
        else:
            continue
        for (kind, name), shape in itertools.product(row.entry_points(), shapes):
            case = Case(row, kind, name, (shape, shape))
            out.append(pytest.param(case, id=str(case)))
    return out


@pytest.mark.parametrize("case", same_value_cases())
def test_same_value_on_both_sides(case):
    """op(x, x), `x += x`: both local gradients accumulate into grad_x."""
    row, shape = case.row, case.shapes[0]
    out_shape = sample_output_shape(case)
    W = weights(out_shape)
    call, result = call_lines(case, ["x", "x"])
    namespace = {"np": np, "compiler": compiler, "_op": getattr(operator, case.name.strip("_"), None), "_W": W}
    ret = f"np.sum({result} * _W)" if out_shape else result
    exec(f"def f(x):\n    {call[0]}\n    return {ret}\n", namespace)
    f = namespace["f"]
    forward = oracle_forward(row)

    def oracle(x):
        out = forward(x, x)
        return anp.sum(out * W) if out_shape else out

    prog = build(f, np.ones(shape) if shape else 1.0)
    rng = rng_for(case, "fan-out")
    for _ in range(DRAWS):
        while True:
            x = rng.uniform(*shared_interval(row), shape)
            if away_from_kinks(x):
                break
        x = np.float64(x) if not shape else x
        check_against_fd(prog, f, ["x"], [x])
        check_against_autograd(prog, oracle, ["x"], [x])


def fan_out_programs(np, sigmoid):
    def chain(x, y):
        s = np.sin(x)
        t = s * s + s * y
        return t * s - np.exp(t) / (1.0 + x * x)

    def reused_input(x, y):
        return x * y + x * x - x / (y * y + 1.0) + np.tanh(x) * x

    def diamond(x, y):
        h = x * y
        a = np.maximum(h, 0.1 * h)
        b = sigmoid(h)
        return a * b + h

    def loop(x, y):
        acc = x
        for _ in range(4):
            acc = acc * y + x
        return acc

    def where_twice(x, y):
        c = x > y
        return np.where(c, x * y, y) + np.where(c, y, x * x)

    return {
        "x*x": lambda x, y: x * x,
        "x*x*x": lambda x, y: x * x * x,
        "(x+x)*x": lambda x, y: (x + x) * x,
        "x-x+y": lambda x, y: x - x + y,
        "chain": chain,
        "reused_input": reused_input,
        "diamond": diamond,
        "loop": loop,
        "where_twice": where_twice,
    }


def autograd_sigmoid(x):
    return 1 / (1 + anp.exp(-x))


@pytest.mark.parametrize("key", list(fan_out_programs(np, compiler.sigmoid)))
def test_fan_out_against_autograd(key):
    f = fan_out_programs(np, compiler.sigmoid)[key]
    oracle = fan_out_programs(anp, autograd_sigmoid)[key]
    prog = build(f, 1.0, 1.0)
    rng = rng_for("fan-out", key)
    for _ in range(4):
        args = [np.float64(v) for v in rng.uniform(-1.5, 1.5, 2)]
        check_against_fd(prog, f, ["x", "y"], args)
        check_against_autograd(prog, oracle, ["x", "y"], args)


def array_programs(np, sigmoid):
    """Array code as a course writes it: broadcasting, reductions, matrix products, fan-out."""

    def two_layer(X, W1, b1, W2):
        h = np.maximum(0.0, X @ W1 + b1)
        scores = h @ W2
        return np.sum(scores * scores) / X.shape[0]

    def softmax_loss(X, W1, b1, W2):
        scores = sigmoid(X @ W1 + b1) @ W2
        shifted = scores - np.max(scores, axis=1, keepdims=True)
        exp = np.exp(shifted)
        probs = exp / np.sum(exp, axis=1, keepdims=True)
        return -np.mean(np.log(probs[np.arange(4), np.array([0, 1, 1, 0])]))

    def standardize(X, W1, b1, W2):
        centered = X - X.mean(axis=0)
        scale = np.sqrt(np.mean(centered * centered, axis=0, keepdims=True) + 1e-5)
        return np.sum((centered / scale) @ W1 * b1)

    def gram(X, W1, b1, W2):
        G = X.T @ X
        return np.sum(G * G) + np.sum(W1.T @ G @ W1) + np.dot(b1, b1)

    def reuse(X, W1, b1, W2):
        h = np.tanh(X @ W1)
        return np.sum(h * h.sum(axis=1, keepdims=True)) + np.sum(h @ W2 * h.mean(axis=1).reshape(4, 1))

    return {
        "two_layer": two_layer, "softmax_loss": softmax_loss, "standardize": standardize, "gram": gram, "reuse": reuse
    }


ARRAY_PROGRAM_SHAPES = ((4, 3), (3, 5), (5,), (5, 2))


@pytest.mark.parametrize("key", list(array_programs(np, compiler.sigmoid)))
def test_array_program_against_autograd(key):
    f = array_programs(np, compiler.sigmoid)[key]
    oracle = array_programs(anp, autograd_sigmoid)[key]
    prog = build(f, *[np.ones(s) for s in ARRAY_PROGRAM_SHAPES])
    names = [v.name for v in prog.graph.inputs]
    rng = rng_for("array-program", key)
    for _ in range(DRAWS):
        args = [rng.uniform(-1.5, 1.5, s) for s in ARRAY_PROGRAM_SHAPES]
        check_against_fd(prog, f, names, args)
        check_against_autograd(prog, oracle, names, args)


def test_accumulation_rebinds_the_gradient():
    """x * x accumulates by rebinding `grad_x = grad_x + ...`, never in place."""
    prog = build(lambda x: x * x, 1.0)
    backward = prog.graph.backward_eqns
    assert [e.out.name for e in backward[1:]] == ["grad_x", "grad_x"]
    assert backward[2].accumulate is backward[1].out
    assert "grad_x += " not in prog.source


def test_broadcast_gradients_are_summed_back_to_each_shape():
    """(4,1) + (1,3): each operand's gradient is the upstream one summed over its broadcast axes."""
    W = weights((4, 3))
    prog = build(lambda a, b: np.sum((a + b) * W), np.ones((4, 1)), np.ones((1, 3)))
    grad_a, grad_b = prog.grad(np.zeros((4, 1)), np.zeros((1, 3)))
    np.testing.assert_allclose(grad_a, W.sum(axis=1, keepdims=True), rtol=1e-15)
    np.testing.assert_allclose(grad_b, W.sum(axis=0, keepdims=True), rtol=1e-15)
    reductions = [e.op for e in prog.graph.backward_eqns if e.rule is None and e.op.startswith("sum")]
    assert reductions == ["sum_keep", "sum_keep"]
    prog = build(lambda v, s: np.sum((v * s) * W), np.ones(3), 1.0)  # (3,) and () against W's (4, 3)
    grad_v, grad_s = prog.grad(np.ones(3), 2.0)
    np.testing.assert_allclose(grad_v, 2.0 * W.sum(axis=0), rtol=1e-15)
    assert np.shape(grad_s) == () and float(grad_s) == pytest.approx(W.sum(), rel=1e-14)


# --- documented kinks: ties and zeros --------------------------------------------------------

TIES_TO_FIRST = [row for row in DIFFERENTIABLE if "a tie goes to the first argument" in row.pattern]
TIES_SHARED = [row for row in DIFFERENTIABLE if "ties share the gradient equally" in row.pattern]


def test_tie_rules_are_documented():
    assert {row.name for row in TIES_TO_FIRST} == {"maximum", "minimum", "fmax", "fmin"}
    assert {row.name for row in TIES_SHARED} == {f"{k}{s}" for k in ("max", "min") for s in ("_all", "", "_keep")}


@pytest.mark.parametrize("case", params([c for row in TIES_TO_FIRST for c in cases_of(row)], "tie"))
def test_tie_goes_to_the_first_argument(case):
    """np.maximum / np.minimum: where x == y, x gets the whole gradient (also when broadcast)."""
    user = user_function(case)
    prog = build(user.f, *user.examples())
    rng = rng_for(case, "ties")
    W = weights(user.out_shape)
    for _ in range(DRAWS):
        x, y = (rng.integers(0, 3, s).astype(float) for s in case.shapes)  # ties everywhere
        x, y = (np.float64(v) if np.ndim(v) == 0 else v for v in (x, y))
        value, (grad_x, grad_y) = run(prog, [x, y])
        out = case.row.compute(x, y)
        first = out == np.broadcast_to(x, np.shape(out))  # x wins where the output is x
        g = W if user.out_shape else 1.0
        np.testing.assert_array_equal(grad_x, unbroadcast(np.where(first, g, 0.0), np.shape(x)))
        np.testing.assert_array_equal(grad_y, unbroadcast(np.where(first, 0.0, g), np.shape(y)))
    # with the same value on both sides the whole gradient passes
    call, result = call_lines(case, ["x", "x"])
    namespace = {"np": np, "_op": getattr(operator, case.name.strip("_"), None)}
    exec(f"def same(x):\n    {call[0]}\n    return np.sum({result})\n", namespace)
    same = build(namespace["same"], np.ones(case.shapes[0]) if case.shapes[0] else 1.0)
    np.testing.assert_array_equal(same.grad(np.full(case.shapes[0], 0.5))[0], np.ones(case.shapes[0]))


@pytest.mark.parametrize("case", params([c for row in TIES_SHARED for c in cases_of(row)], "tie"))
def test_ties_share_the_gradient_of_a_max_or_min(case):
    """np.max / np.min and their methods: each tied extreme gets grad / count."""
    user = user_function(case)
    prog = build(user.f, *user.examples())
    row, (shape,) = case.row, case.shapes
    static = case.static_dict()
    axes = tuple(range(len(shape))) if static["axis"] is None else np.atleast_1d(static["axis"]).tolist()
    extreme = getattr(np, row.functions[0])
    rng = rng_for(case, "ties")
    for x in [rng.integers(0, 3, shape).astype(float) for _ in range(DRAWS)] + [np.ones(shape), np.eye(*shape)]:
        value, (grad,) = run(prog, [x])
        chosen = x == extreme(x, axis=tuple(axes), keepdims=True)
        count = chosen.sum(axis=tuple(axes), keepdims=True)
        upstream = np.reshape(weights(user.out_shape) if user.out_shape else 1.0, count.shape)
        np.testing.assert_allclose(grad, chosen * upstream / count, rtol=1e-15, atol=0)
        np.testing.assert_allclose(grad, autograd.grad(user.oracle)(x), rtol=1e-15, atol=0)  # autograd shares too


def test_relu_gradient_is_zero_at_zero():
    prog = build(lambda x: compiler.relu(x), 1.0)
    assert [float(v) for v in prog.value_and_grad(0.0)[1]] == [0.0]
    assert float(prog.forward(0.0)) == 0.0
    assert float(prog.grad(-0.0)[0]) == 0.0
    assert float(prog.grad(1e-300)[0]) == 1.0
    assert float(prog.grad(-1e-300)[0]) == 0.0
    # np.maximum(x, 0.0) is the max gate: the tie at 0 goes to x, unlike relu
    assert float(build(lambda x: np.maximum(x, 0.0), 1.0).grad(0.0)[0]) == 1.0
    x = np.array([-1.0, 0.0, -0.0, 2.0])
    np.testing.assert_array_equal(build(lambda x: np.sum(compiler.relu(x)), x).grad(x)[0], [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(build(lambda x: np.sum(np.maximum(x, 0.0)), x).grad(x)[0], [0.0, 1.0, 1.0, 1.0])


def test_abs_gradient_is_zero_at_zero():
    for entry in (abs, np.abs, np.absolute):
        assert float(build(lambda x: entry(x), 1.0).grad(0.0)[0]) == 0.0
        x = np.array([-1.0, 0.0, 2.0])
        np.testing.assert_array_equal(build(lambda x: np.sum(entry(x)), x).grad(x)[0], [-1.0, 0.0, 1.0])


def test_clip_passes_the_gradient_at_its_bounds():
    """clip's rule routes to x where lo <= x <= hi: at a bound the gradient passes."""
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    prog = build(lambda x: np.sum(np.clip(x, -1.0, 1.0)), x)
    np.testing.assert_array_equal(prog.grad(x)[0], [0.0, 1.0, 1.0, 1.0, 0.0])


@pytest.mark.parametrize("shape", [(), (4, 3)], ids=str)
def test_gates_compute_on_plain_numbers(shape):
    """compiler.<gate> outside a trace evaluates the row's forward expression."""
    rng = rng_for("gates", shape)
    for row in ROWS:
        if row.gate and (shape or not row.static):  # a gate with an axis takes arrays
            x = rng.uniform(*row.domain[0], shape)
            static = {}
            if row.static:  # the defaults of the gate's signature, as the tracer normalizes them
                bound = signature_of(row.signature).bind(x)
                bound.apply_defaults()
                static = normalized(row, (shape,), {k: bound.arguments[k] for k in row.static})
            assert_close_to_autograd(getattr(compiler, row.name)(x), oracle_forward(row)(x, **static))


# --- gathers: repeated indices add up ----------------------------------------------------------


def test_repeated_rows_of_a_gather_add_up():
    """W[y] with y = [0, 2, 0] (an embedding lookup): row 0 gets both rows' gradients."""
    G = weights((3, 4))

    def f(W, y):
        return np.sum(W[y] * G)

    y = np.array([0, 2, 0])
    prog = build(f, np.ones((3, 4)), y)
    W = rng_for("embedding").uniform(-1, 1, (3, 4))
    (grad,) = prog.grad(W, y)
    np.testing.assert_allclose(grad, [G[0] + G[2], np.zeros(4), G[1]], rtol=1e-15)
    (grad,) = prog.grad(W, np.array([1, 1, 1]))
    np.testing.assert_allclose(grad, [np.zeros(4), G.sum(axis=0), np.zeros(4)], rtol=1e-15)


def test_repeated_pairs_of_a_gather_add_up():
    """x[i, j] with the pair (1, 2) three times."""
    prog = build(
        lambda x, i, j: np.sum(x[i, j] * np.array([1.0, 2.0, 3.0, 4.0])),
        np.ones((3, 4)),
        np.zeros(4, int),
        np.zeros(4, int),
    )
    (grad,) = prog.grad(np.zeros((3, 4)), np.array([1, 0, 1, -2]), np.array([2, 0, -2, 2]))
    expected = np.zeros((3, 4))
    expected[1, 2], expected[0, 0] = 1.0 + 3.0 + 4.0, 2.0
    np.testing.assert_array_equal(grad, expected)


# --- in-place updates ----------------------------------------------------------------------------


def line_of(fn, marker: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(k for k, line in enumerate(lines) if line.rstrip().endswith(f"# {marker}"))


W43 = weights((4, 3))


def aliased_update(np, a, b):
    c = a
    a += b  # NumPy updates the array both names refer to
    return np.sum(c * W43) + np.sum(a * a)


def rebinding_is_not_an_update(np, a, b):
    c = a
    a = a + b  # a new array: c keeps the old values
    return np.sum(c * W43) + np.sum(a * a)


def update_through_a_helper(np, a, b):
    def scale(m):
        m *= b  # writes into the caller's array
        m -= 1.0

    scale(a)
    return np.sum(a * W43)


def copy_is_not_updated(np, a, b):
    c = a.copy()
    a += b
    return np.sum(c * W43) + np.sum(a * a)


def gather_is_not_updated(np, a, b):
    rows = a[np.array([0, 2, 2])]  # a copy, not a view
    a[0] = b
    return np.sum(rows * W43[:3]) + np.sum(a * W43)


def view_used_before_the_update(np, a, b):
    first = a[0]
    total = np.sum(first * b)
    a += 1.0
    return total + np.sum(a * W43)


def view_taken_after_the_update(np, a, b):
    a *= b
    return np.sum(a.T @ a)


INPLACE_PROGRAMS = {
    f.__name__: f
    for f in (
        aliased_update, rebinding_is_not_an_update, update_through_a_helper, copy_is_not_updated,
        gather_is_not_updated, view_used_before_the_update, view_taken_after_the_update,
    )
}


def functional(name: str) -> Callable:
    """The same program written without in-place updates, for autograd."""

    def aliased(a, b):
        a = a + b
        return anp.sum(a * W43) + anp.sum(a * a)

    def helper(a, b):
        return anp.sum((a * b - 1.0) * W43)

    def copied(a, b):
        return anp.sum(a * W43) + anp.sum((a + b) * (a + b))

    def gathered(a, b):
        rows = a[np.array([0, 2, 2])]
        updated = anp.concatenate([b[None, :] * np.ones((1, 3)), a[1:]])
        return anp.sum(rows * W43[:3]) + anp.sum(updated * W43)

    def before(a, b):
        return anp.sum(a[0] * b) + anp.sum((a + 1.0) * W43)

    def after(a, b):
        a = a * b
        return anp.sum(anp.dot(a.T, a))

    return {
        "aliased_update": aliased, "rebinding_is_not_an_update": lambda a, b: rebinding_is_not_an_update(anp, a, b),
        "update_through_a_helper": helper, "copy_is_not_updated": copied, "gather_is_not_updated": gathered,
        "view_used_before_the_update": before, "view_taken_after_the_update": after,
    }[name]


@pytest.mark.parametrize("name", list(INPLACE_PROGRAMS))
def test_inplace_update_follows_numpy(name):
    f = functools.partial(INPLACE_PROGRAMS[name], np)
    prog = build(lambda a, b: f(a, b), np.ones((4, 3)), np.ones(3))
    oracle = functional(name)
    rng = rng_for("inplace", name)
    for _ in range(DRAWS):
        args = [rng.uniform(-1.5, 1.5, (4, 3)), rng.uniform(0.5, 1.5, 3)]
        check_against_fd(prog, f, ["a", "b"], args)
        check_against_autograd(prog, oracle, ["a", "b"], args)


def test_scalar_inplace_update_rebinds():
    def f(x, y):
        total = x
        total += y  # a number: rebound, x keeps its value
        total *= x
        return total - x

    prog = build(f, 1.0, 1.0)
    value, grads = prog.value_and_grad(2.0, 3.0)
    assert float(value) == (2.0 + 3.0) * 2.0 - 2.0
    assert [float(g) for g in grads] == [2.0 * 2.0 + 3.0 - 1.0, 2.0]


N_CLASSES = 4


def svm_loss(X, W, y):
    """The multiclass SVM loss as the course writes it."""
    N = X.shape[0]
    scores = X @ W
    correct = scores[np.arange(N), y]
    margins = np.maximum(0, scores - correct[:, None] + 1.0)
    margins[np.arange(N), y] = 0  # the course idiom
    return np.sum(margins) / N


def svm_loss_functional(X, W, y):
    N = X.shape[0]
    scores = anp.dot(X, W)
    correct = scores[np.arange(N), y]
    margins = anp.maximum(0, scores - correct[:, None] + 1.0)
    one_hot = y[:, None] == np.arange(N_CLASSES)
    return anp.sum(anp.where(one_hot, 0.0, margins)) / N


def softmax_gradient_idiom(S, y):
    """`dscores[np.arange(N), y] -= 1` on a copy, then the copy used."""
    N = S.shape[0]
    d = np.exp(S)
    d /= np.sum(d, axis=1, keepdims=True)
    d[np.arange(N), y] -= 1
    d /= N
    return np.sum(d * d) + np.sum(d * S)


def softmax_gradient_functional(S, y):
    N = S.shape[0]
    d = anp.exp(S)
    d = d / anp.sum(d, axis=1, keepdims=True)
    d = (d - (y[:, None] == np.arange(N_CLASSES))) / N
    return anp.sum(d * d) + anp.sum(d * S)


def test_course_idiom_margins_set_to_zero():
    y = np.array([0, 3, 1, 3, 2])
    prog = build(svm_loss, np.ones((5, 3)), np.ones((3, N_CLASSES)), y)
    assert prog.wrt == ("X", "W")
    assert [e.op for e in prog.graph.forward_eqns].count("put2") == 1
    rng = rng_for("svm")
    for _ in range(DRAWS):
        labels = rng.permutation(np.arange(5) % N_CLASSES)
        args = [rng.uniform(-1, 1, (5, 3)), rng.uniform(-1, 1, (3, N_CLASSES)), labels]
        check_against_fd(prog, svm_loss, ["X", "W", "y"], args)
        check_against_autograd(prog, svm_loss_functional, ["X", "W", "y"], args)


def test_course_idiom_subtract_one_at_the_labels():
    prog = build(softmax_gradient_idiom, np.ones((5, N_CLASSES)), np.zeros(5, int))
    rng = rng_for("softmax-idiom")
    for _ in range(DRAWS):
        args = [rng.uniform(-2, 2, (5, N_CLASSES)), rng.integers(0, N_CLASSES, 5)]
        check_against_fd(prog, softmax_gradient_idiom, ["S", "y"], args)
        check_against_autograd(prog, softmax_gradient_functional, ["S", "y"], args)


VIEW_ROWS = [row for row in ROWS if row.view]


def view_makers() -> list:
    """Every entry point of every view row, as a function taking a view of a (3, 4) array."""
    shape = (3, 4)
    out = []
    for row in VIEW_ROWS:
        for kind, name in row.entry_points():
            if row.splits:  # a part of the split
                make_view = eval(f"lambda a: np.{name}(a, 2, axis=1)[1]", {"np": np})
                out.append(pytest.param(make_view, id=f"{row.name}-{name}-part"))
                continue
            if "index" in row.static:  # an indexing row
                variants = [
                    Case(row, kind, name, (shape,), (), text)
                    for text in INDEX_TEXTS
                    if row.accepts((len(shape),) + (1,) * sum(isinstance(p, IndexOperand) for p in parse_index(text)),
                                   {"index": parse_index(text)})
                ]
            else:
                variants = [Case(row, kind, name, (shape,), tuple(s.items())) for s in static_candidates(row, (shape,))]
            for case in variants:
                if not sample_output_shape(case):
                    continue  # x[0, 1] is a number, not a view
                call, result = call_lines(case, ["a"])
                namespace = {"np": np}
                exec(f"def make_view(a):\n    {call[0]}\n    return {result}\n", namespace)
                out.append(pytest.param(namespace["make_view"], id=str(case)))
    return out


@pytest.mark.parametrize("make_view", view_makers())
def test_writing_through_a_view_is_an_error(make_view):
    def write(a):
        v = make_view(a)
        v[0] = 1.0  # WRITE
        return np.sum(a)

    def update(a):
        v = make_view(a)
        v += 1.0  # UPDATE
        return np.sum(a)

    for f, marker in ((write, "WRITE"), (update, "UPDATE")):
        with pytest.raises(TracingError, match=rf"{HERE}:{line_of(f, marker)}: writing into a view"):
            compiler.gradient(f, np.ones((3, 4)))


@pytest.mark.parametrize("make_view", view_makers())
def test_a_stale_view_is_an_error(make_view):
    def updated_base(a):
        v = make_view(a)
        a += 1.0  # BASE-UPDATED
        return np.sum(v * v)  # STALE

    def written_base(a):
        v = make_view(a)
        a[1, 2] = 5.0  # BASE-UPDATED
        return np.sum(v * v)  # STALE

    def view_of_view(a):
        v = make_view(a)
        w = v[1:]
        a -= 1.0  # BASE-UPDATED
        return np.sum(w)  # STALE

    for f in (updated_base, written_base, view_of_view):
        stale, updated = line_of(f, "STALE"), line_of(f, "BASE-UPDATED")
        pattern = rf"{HERE}:{stale}: this value is a view .* \(at [^)]*{HERE}:{updated}\)"
        with pytest.raises(TracingError, match=pattern):
            compiler.gradient(f, np.ones((3, 4)))


# --- dtypes ----------------------------------------------------------------------------------


def float32_cases() -> list[Case]:
    """One case per row and entry point (rows differ by static arguments too): its largest shapes.
    A cast (`dtype` given) makes the dtype it is told to, whatever its input's."""
    chosen: dict[tuple, Case] = {}
    for case in GRADIENT_CASES + FILL_CASES:
        if "dtype" in case.row.static or case.row in FILLS and sample_result(case.row).dtype.kind != "f":
            continue
        size = sum(int(np.prod(s)) for s in case.shapes)
        if case.entry not in chosen or size > sum(int(np.prod(s)) for s in chosen[case.entry].shapes):
            chosen[case.entry] = case
    return list(chosen.values())


@pytest.mark.parametrize("case", params(float32_cases(), "float32"))
def test_float32_inputs_keep_float32(case):
    """float32 inputs: the value and every gradient are float32, as NumPy computes them."""
    user = user_function(case, np.float32)
    prog = build(user.f, *user.examples(np.float32))
    args64 = draw_args(user, rng_for(case, "float32"))
    args = [a.astype(np.float32) if n in user.floats and np.ndim(a) else np.float32(a) if n in user.floats else a
            for n, a in zip(user.names, args64)]
    value, grads = run(prog, args)
    expected = user.f(*copies(args))
    assert np.asarray(value).dtype == np.asarray(expected).dtype == np.float32
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    for name, grad in zip(prog.wrt, grads):
        arg = args[user.names.index(name)]
        assert np.asarray(grad).dtype == np.float32, name
        assert np.shape(grad) == np.shape(arg)
        if np.ndim(arg) == 0:
            assert isinstance(grad, np.float32) or (isinstance(grad, np.ndarray) and grad.ndim == 0)
    oracle_args = [np.asarray(a, np.float64)[()] if n in user.floats else a for n, a in zip(user.names, args)]
    positions = [user.names.index(n) for n in prog.wrt]
    for grad, expected in zip(grads, autograd_grads(user.oracle, oracle_args, positions)):
        np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-3)


# --- found by these tests, now fixed ---------------------------------------------------------


@pytest.mark.parametrize("cond", [0.5, 2], ids=["float-cond", "int-cond"])
def test_where_refuses_a_non_bool_condition(cond):
    """where's rules route by a bool; NumPy's truthiness of other numbers is a clear error."""

    def f(c, x, y):
        return np.where(c, x, y)  # WHERE

    with pytest.raises(TracingError, match=rf"{HERE}:{line_of(f, 'WHERE')}: where's cond must be a bool"):
        compiler.gradient(f, cond, 1.0, 2.0, wrt=("x", "y"))
    fixed = build(lambda c, x, y: np.where(c != 0, x, y), cond, 1.0, 2.0, wrt=("x", "y"))
    assert [float(g) for g in fixed.grad(cond, 1.0, 2.0)] == [1.0, 0.0]


def _polynomial(x):
    total = 0.0
    for n, c in enumerate((3.0, 2.0, 0.5)):  # 3 + 2 x + 0.5 x^2, written as course code writes it
        total = total + c * x**n
    return total


@pytest.mark.parametrize("zero", [0.0, np.float64(0.0)], ids=["float", "float64"])
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_pow_with_exponent_zero_at_zero(zero):
    assert float(build(lambda x: x**0, 1.0).grad(zero)[0]) == 0.0
    assert float(build(_polynomial, 1.0).grad(zero)[0]) == 2.0


@pytest.mark.parametrize("zero", [0.0, np.float64(0.0)], ids=["float", "float64"])
def test_pow_of_a_zero_base_has_no_gradient_in_the_exponent(zero):
    """0 ** y is 0 for every y > 0, so its gradient in y is 0 there (autograd's too), not
    log(0) * 0 = nan; with the base a constant 0 as well as a traced one."""
    with np.errstate(all="raise"):
        for y in (2.0, 3.5, 1.0):
            for f in (lambda x, y: np.power(x, y), lambda x, y: x**y):
                assert [float(g) for g in build(f, 1.0, 1.0).grad(zero, y)] == [float(y == 1), 0.0]
            assert float(build(lambda y: 0.0**y, 1.0).grad(y)[0]) == 0.0
        x, y = np.array([0.0, 0.0, 2.0]), np.array([2.0, 0.5, 0.5])
        (grad,) = build(lambda x, y: np.sum(x**y), x, y, wrt="y").grad(x, y)
        np.testing.assert_array_equal(grad, autograd.grad(lambda y: anp.sum(x**y))(y))
        np.testing.assert_allclose(grad, [0.0, 0.0, np.log(2.0) * np.sqrt(2.0)], rtol=1e-15)


def test_float32_scalars_keep_float32_gradients():
    prog = build(lambda x: x * 2.0, np.float32(1.0))
    assert "grad_L = np.float32(1.0)" in prog.source
    (grad,) = prog.grad(np.float32(1.5))
    assert type(grad) is np.float32 and grad == 2.0


def test_numpy_type_errors_become_tracing_errors():
    with pytest.raises(TracingError, match=rf"{HERE}:\d+: sub of these operands fails in NumPy"):
        compiler.gradient(lambda x, y: x * ((x > y) - (y > x)), 1.0, 2.0)


# --- bugs these tests found, now fixed: their smallest reproductions ---------------------------


def test_fixed_np_matmul_traces():
    prog = compiler.gradient(lambda x, y: np.sum(np.matmul(x, y)), np.ones((2, 3)), np.ones((3, 2)))
    np.testing.assert_array_equal(prog.grad(np.ones((2, 3)), np.ones((3, 2)))[0], np.full((2, 3), 2.0))


def test_fixed_array_constant_at_the_left_of_matmul():
    A = np.ones((2, 3))
    prog = compiler.gradient(lambda x: np.sum(A @ x), np.ones((3, 2)))
    np.testing.assert_array_equal(prog.grad(np.ones((3, 2)))[0], np.full((3, 2), 2.0))


def test_fixed_open_slice_gradient_goes_to_the_wrong_rows():
    prog = compiler.gradient(lambda x: np.sum(x[1:] * np.array([[1.0, 2.0]])), np.ones((2, 2)))
    np.testing.assert_array_equal(prog.grad(np.ones((2, 2)))[0], [[0.0, 0.0], [1.0, 2.0]])


def test_fixed_open_slice_write_changes_the_wrong_rows():
    def f(x):
        x[1:] = 0.0
        return np.sum(x * np.array([[1.0], [2.0]]))

    assert float(compiler.gradient(f, np.ones((2, 2))).forward(np.ones((2, 2)))) == f(np.ones((2, 2))) == 2.0


def test_fixed_float32_max_gradient_is_float64():
    (grad,) = compiler.gradient(lambda x: np.max(x), np.ones(3, np.float32)).grad(np.ones(3, np.float32))
    assert grad.dtype == np.float32


def test_fixed_float32_where_gradient_is_float64():
    prog = compiler.gradient(lambda x, y: np.where(x > y, x, y), np.float32(1.0), np.float32(2.0))
    assert [np.asarray(g).dtype for g in prog.grad(np.float32(1.0), np.float32(2.0))] == [np.float32] * 2


def test_fixed_float32_constant_base_gradient_is_float64():
    (grad,) = compiler.gradient(lambda x: 2.0**x, np.float32(1.0)).grad(np.float32(1.5))
    assert np.asarray(grad).dtype == np.float32


def test_fixed_float32_constant_array_becomes_float64():
    W = np.full(3, 0.5, np.float32)
    x = np.ones(3, np.float32)
    value, (grad,) = compiler.gradient(lambda x: np.sum(x * W), x).value_and_grad(x)
    assert np.asarray(value).dtype == grad.dtype == (x * W).dtype == np.float32


def test_fixed_repeated_write_index_multiplies_the_gradient_of_v():
    def f(x, v):
        x[np.array([0, 0])] = v  # NumPy writes v into row 0 (twice, the same value)
        return np.sum(x)

    _, grad_v = compiler.gradient(f, np.ones((2, 3)), 1.0).grad(np.ones((2, 3)), 5.0)
    assert float(grad_v) == 3.0  # d/dv of 3 v + 3 (flatgrad: 6.0)


def test_fixed_repeated_index_update_multiplies_the_gradient():
    def f(d):
        d[np.array([0, 0])] -= 1.0  # NumPy subtracts 1 from row 0 once
        return np.sum(d)

    (grad,) = compiler.gradient(f, np.ones((2, 3))).grad(np.ones((2, 3)))
    np.testing.assert_array_equal(grad, np.ones((2, 3)))  # flatgrad: row 0 gets 2


def test_fixed_a_number_read_from_an_array_is_not_a_view():
    def f(x):
        old = x[0, 1]  # a copy in NumPy
        x[0, 1] = old + 1.0
        return np.sum(x) * old

    x = np.full((2, 2), 2.0)
    assert float(compiler.gradient(f, x).forward(x.copy())) == f(x.copy()) == 18.0
