"""The op table, tested from the table.

Every row user code can reach is tested through every entry point it declares (operator
dunders, reflected dunders, ufuncs, array functions, `compiler.<gate>`), on inputs drawn from
the row's own `domain`, against two independent oracles:

- central finite differences of the user's function run by plain NumPy, and
- HIPS autograd differentiating the row's own `forward` expression with `np` bound to
  `autograd.numpy`.

Comparison rows pass no gradient, so they are tested as the condition of `np.where`. The
rows autodiff makes itself (`ones_like`, `zeros_like`) have no entry point and are skipped.
`ir.verify` runs on every graph built here.
"""

from __future__ import annotations

import operator
import zlib

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import compiler
from compiler import ir
from compiler.errors import TracingError
from compiler.ops import OPS, Op

# autograd warns when asked for the gradient of an input the function ignores (x * x wrt y)
pytestmark = pytest.mark.filterwarnings("ignore:Output seems independent of input:UserWarning")

FD_RTOL, FD_ATOL = 1e-6, 1e-6
AG_RTOL, AG_ATOL = 1e-10, 1e-12
DRAWS = 4
KINK_MARGIN = 1e-3  # drawn inputs keep this far from each other and from 0 (ties and kinks)
COND_DOMAIN = (-3.0, 3.0)  # the two floats compared to make a bool input (a None domain entry)


# --- the table, read ------------------------------------------------------------------------


ROWS = [row for row in OPS.values() if row.entry_points()]
DIFFERENTIABLE = [row for row in ROWS if row.grads]
COMPARISONS = [row for row in ROWS if not row.grads]


def label(kind: str, name: str) -> str:
    return {"ufunc": f"np.{name}", "function": f"np.{name}", "gate": f"compiler.{name}"}.get(kind, name)


def caller(kind: str, name: str):
    """A function applying the entry point to the row's arguments, in the row's param order."""
    if kind == "operator":
        return getattr(operator, name.strip("_"))  # __add__ -> operator.add, __neg__ -> operator.neg
    if kind == "reflected":
        return lambda a, b: getattr(b, name)(a)  # b.__radd__(a) computes a + b
    if kind in ("ufunc", "function"):
        return getattr(np, name)
    assert kind == "gate"
    return getattr(compiler, name)


def cases(rows: list[Op]) -> list:
    return [
        pytest.param(row, kind, name, id=f"{row.name}-{label(kind, name)}")
        for row in rows
        for kind, name in row.entry_points()
    ]


def oracle_forward(row: Op):
    """The row's forward expression as a function, with `np` bound to autograd.numpy."""
    return eval(f"lambda {', '.join(row.params)}: {row.forward}", {"np": anp})


def rng_for(*key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(key).encode()))


def away_from_kinks(values: list[float]) -> bool:
    return all(abs(v) > KINK_MARGIN for v in values) and all(
        abs(a - b) > KINK_MARGIN for i, a in enumerate(values) for b in values[i + 1 :]
    )


def draw(rng: np.random.Generator, intervals: list[tuple[float, float]]) -> list[float]:
    """One point of the box `intervals`, away from ties and from 0."""
    while True:
        values = [float(rng.uniform(lo, hi)) for lo, hi in intervals]
        if away_from_kinks(values):
            return values


# --- oracles and checks -----------------------------------------------------------------------


def build(f, *examples, **kwargs) -> compiler.GradientProgram:
    """compiler.gradient, with the IR verified (forward graph and differentiated graph)."""
    ir.verify(compiler.trace(f, *examples))
    prog = compiler.gradient(f, *examples, **kwargs)
    ir.verify(prog.graph)
    return prog


def central_differences(f, args: list[float]) -> list[float]:
    """Central differences of `f` run by NumPy on float64 scalars."""
    grads = []
    with np.errstate(all="raise"):
        for i, a in enumerate(args):
            step = 1e-6 * max(1.0, abs(a))
            up = [np.float64(v) for v in args]
            down = list(up)
            up[i], down[i] = np.float64(a + step), np.float64(a - step)
            grads.append(float((f(*up) - f(*down)) / (2 * step)))
    return grads


def check_against_fd(prog: compiler.GradientProgram, f, args: list[float]) -> None:
    """Value against NumPy running `f`, gradients against central differences; also checks
    that Python floats and NumPy float64 inputs give the same results."""
    value, grads = prog.value_and_grad(*args)
    assert len(grads) == len(args)
    with np.errstate(all="raise"):
        expected = f(*[np.float64(a) for a in args])
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(
        [float(g) for g in grads], central_differences(f, args), rtol=FD_RTOL, atol=FD_ATOL
    )
    value64, grads64 = prog.value_and_grad(*[np.float64(a) for a in args])
    assert float(value64) == float(value)
    assert [float(g) for g in grads64] == [float(g) for g in grads]


def assert_close_to_autograd(actual, expected) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=AG_RTOL, atol=AG_ATOL
    )


def autograd_grads(fn, args: list[float], argnums) -> list[float]:
    return [float(autograd.grad(fn, argnum=i)(*args)) for i in argnums]


# --- the table is well formed ---------------------------------------------------------------


@pytest.mark.parametrize("row", list(OPS.values()), ids=lambda row: row.name)
def test_row_is_well_formed(row):
    assert set(row.grads) <= set(row.params)
    for param in row.grads:
        assert set(row.rule_names(param)) <= set(row.params) | {"out", "grad"}
        assert "grad" in row.rule_names(param), "a local gradient multiplies the upstream one"
    if row.entry_points():
        assert len(row.domain) == len(row.params)
        for interval in row.domain:
            assert interval is None or interval[0] < interval[1]
    else:
        assert row.name in ("ones_like", "zeros_like") and not row.grads


def test_every_reachable_row_is_tested():
    tested = {p.values[0].name for p in cases(ROWS)}
    assert tested == {row.name for row in ROWS}
    assert {row.name for row in OPS.values()} - tested == {"ones_like", "zeros_like"}


# --- every differentiable row, through every entry point -------------------------------------


def user_function(row: Op, kind: str, name: str):
    """f(...) applying the entry point to fresh inputs; a None-domain (bool) param `p` becomes
    `p_a > p_b` of two float inputs. Returns f and its parameter names."""
    names = []
    for param, interval in zip(row.params, row.domain):
        names += [f"{param}_a", f"{param}_b"] if interval is None else [param]
    arguments = ", ".join(
        f"{param}_a > {param}_b" if interval is None else param
        for param, interval in zip(row.params, row.domain)
    )
    namespace = {"_call": caller(kind, name)}
    exec(f"def f({', '.join(names)}):\n    return _call({arguments})\n", namespace)
    return namespace["f"], names


def input_intervals(row: Op) -> list[tuple[float, float]]:
    intervals = []
    for interval in row.domain:
        intervals += [COND_DOMAIN, COND_DOMAIN] if interval is None else [interval]
    return intervals


def oracle_arguments(row: Op, args: list[float]) -> list:
    """The row's arguments from the user function's inputs (bools from their comparison)."""
    values, i = [], 0
    for interval in row.domain:
        if interval is None:
            values.append(args[i] > args[i + 1])
            i += 2
        else:
            values.append(args[i])
            i += 1
    return values


@pytest.mark.parametrize("row, kind, name", cases(DIFFERENTIABLE))
def test_gradient_of_every_entry_point(row, kind, name):
    f, names = user_function(row, kind, name)
    prog = build(f, *[1.0] * len(names))
    assert prog.wrt == tuple(names)
    oracle = oracle_forward(row)
    rng = rng_for(row.name, kind, name)
    for _ in range(DRAWS):
        args = draw(rng, input_intervals(row))
        check_against_fd(prog, f, args)

        value, grads = prog.value_and_grad(*args)
        row_args = oracle_arguments(row, args)
        assert_close_to_autograd(value, oracle(*row_args))
        expected = dict.fromkeys(names, 0.0)  # the inputs of a bool get no gradient
        for i, param in enumerate(row.params):
            if param in row.grads:
                expected[param] = autograd_grads(oracle, row_args, [i])[0]
        assert_close_to_autograd(grads, [expected[n] for n in names])


@pytest.mark.parametrize("row, kind, name", cases(COMPARISONS))
def test_comparison_routes_where(row, kind, name):
    cmp = caller(kind, name)

    def f(x, y):
        return np.where(cmp(x, y), x * 2.0, y * 3.0)

    prog = build(f, 1.0, 1.0)
    (comparison,) = [e for e in prog.graph.forward_eqns if e.op == row.name]
    assert comparison.out.dtype == "bool"
    assert isinstance(row.compute(1.0, 2.0), (bool, np.bool_))

    oracle_cmp = oracle_forward(row)

    def oracle(x, y):
        return anp.where(oracle_cmp(x, y), x * 2.0, y * 3.0)

    rng = rng_for(row.name, kind, name)
    for _ in range(DRAWS):
        x, y = draw(rng, list(row.domain))
        for args in ([x, y], [y, x]):  # both branches
            check_against_fd(prog, f, args)
            value, grads = prog.value_and_grad(*args)
            assert_close_to_autograd(value, oracle(*args))
            assert_close_to_autograd(grads, autograd_grads(oracle, args, [0, 1]))
    # a tie: eq/ge/le take the first branch, ne/gt/lt the second
    value, grads = prog.value_and_grad(1.5, 1.5)
    taken = bool(row.compute(1.5, 1.5))
    assert value == (3.0 if taken else 4.5)
    assert [float(g) for g in grads] == ([2.0, 0.0] if taken else [0.0, 3.0])


@pytest.mark.parametrize("row, kind, name", cases(COMPARISONS))
def test_comparison_of_a_value_with_itself(row, kind, name):
    cmp = caller(kind, name)

    def f(x):
        return np.where(cmp(x, x), x * 2.0, x * 3.0)

    prog = build(f, 1.0)
    taken = bool(row.compute(0.7, 0.7))
    value, (grad,) = prog.value_and_grad(0.7)
    assert float(value) == pytest.approx(1.4 if taken else 2.1, rel=1e-15)
    assert float(grad) == (2.0 if taken else 3.0)


# --- a constant on either side ---------------------------------------------------------------

BINARY = [row for row in ROWS if len(row.params) == 2]


def constant_cases() -> list:
    params = []
    for row in BINARY:
        entries = [("operator", d) for d in row.operators] + [("ufunc", u) for u in row.ufuncs]
        for kind, name in entries:
            for side in ("left", "right"):
                reached = name
                if kind == "operator" and side == "left" and f"__r{name[2:]}" in row.reflected:
                    reached = f"__r{name[2:]}"  # 2.0 + x calls x.__radd__(2.0)
                tag = f"{row.name}-{label(kind, reached)}-const-{side}"
                params.append(pytest.param(row, kind, name, side, id=tag))
    return params


@pytest.mark.parametrize("row, kind, name, side", constant_cases())
def test_constant_operand(row, kind, name, side):
    """`2.0 * x`, `x * 2.0`, `np.add(2.0, x)`, ...; with a constant on the left an operator
    reaches the row's reflected dunder (or, for a comparison, its mirror image)."""
    call = caller(kind, name)
    const_index = 0 if side == "left" else 1
    traced_index = 1 - const_index
    rng = rng_for(row.name, kind, name, side)
    constant = draw(rng, [row.domain[const_index]])[0]
    interval = row.domain[traced_index]

    def apply(x, c):
        return call(c, x) if side == "left" else call(x, c)

    if row.grads:

        def f(x):
            return apply(x, constant)

        oracle_op = oracle_forward(row)

        def oracle(x):
            return oracle_op(constant, x) if side == "left" else oracle_op(x, constant)

    else:  # a comparison: route np.where with it

        def f(x):
            return np.where(apply(x, constant), x * 2.0, x * 3.0)

        oracle_cmp = oracle_forward(row)

        def oracle(x):
            cond = oracle_cmp(constant, x) if side == "left" else oracle_cmp(x, constant)
            return anp.where(cond, x * 2.0, x * 3.0)

    prog = build(f, 1.0)
    if row.grads:  # one gate, with the constant where it was written
        (eqn,) = prog.graph.forward_eqns
        assert eqn.op == row.name
        assert eqn.inputs[const_index] == ir.Const(constant)
        assert eqn.inputs[traced_index] is prog.graph.inputs[0]
    for _ in range(DRAWS):
        while True:
            (x,) = draw(rng, [interval])
            if away_from_kinks([x, constant]):
                break
        check_against_fd(prog, f, [x])
        value, grads = prog.value_and_grad(x)
        assert_close_to_autograd(value, oracle(x))
        assert_close_to_autograd(grads, autograd_grads(oracle, [x], [0]))


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
    }


@pytest.mark.parametrize("key", list(special_constants(np)))
def test_special_constant(key):
    f, oracle = special_constants(np)[key], special_constants(anp)[key]
    prog = build(f, 1.0)
    for x in (-2.3, -0.7, 0.4, 1.9):
        if key == "x**0.5" and x < 0:
            continue
        check_against_fd(prog, f, [x])
        value, grads = prog.value_and_grad(x)
        assert_close_to_autograd(value, oracle(x))
        assert_close_to_autograd(grads, autograd_grads(oracle, [x], [0]))


# --- fan-out: one value used several times --------------------------------------------------


def shared_interval(row: Op) -> tuple[float, float]:
    lo = max(interval[0] for interval in row.domain)
    hi = min(interval[1] for interval in row.domain)
    assert lo < hi
    return lo, hi


@pytest.mark.parametrize("row, kind, name", cases([row for row in DIFFERENTIABLE if len(row.params) == 2]))
def test_same_value_on_both_sides(row, kind, name):
    """op(x, x): both local gradients accumulate into grad_x."""
    call = caller(kind, name)

    def f(x):
        return call(x, x)

    oracle_op = oracle_forward(row)

    def oracle(x):
        return oracle_op(x, x)

    prog = build(f, 1.0)
    rng = rng_for(row.name, kind, name, "fan-out")
    for _ in range(DRAWS):
        args = draw(rng, [shared_interval(row)])
        check_against_fd(prog, f, args)
        value, grads = prog.value_and_grad(*args)
        assert_close_to_autograd(value, oracle(*args))
        assert_close_to_autograd(grads, autograd_grads(oracle, args, [0]))


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
    for _ in range(DRAWS):
        args = draw(rng, [(-1.5, 1.5), (-1.5, 1.5)])
        check_against_fd(prog, f, args)
        value, grads = prog.value_and_grad(*args)
        assert_close_to_autograd(value, oracle(*args))
        assert_close_to_autograd(grads, autograd_grads(oracle, args, [0, 1]))


def test_accumulation_rebinds_the_gradient():
    """x * x accumulates by rebinding `grad_x = grad_x + ...`, never in place."""
    prog = build(lambda x: x * x, 1.0)
    backward = prog.graph.backward_eqns
    assert [e.out.name for e in backward[1:]] == ["grad_x", "grad_x"]
    assert backward[2].accumulate is backward[1].out
    assert "grad_x += " not in prog.source


# --- documented kinks: ties and zeros --------------------------------------------------------


@pytest.mark.parametrize("ufunc", ["maximum", "minimum"])
def test_tie_goes_to_the_first_argument(ufunc):
    assert "a tie goes to the first argument" in OPS[ufunc].pattern
    fn = getattr(np, ufunc)
    prog = build(lambda x, y: fn(x, y), 1.0, 1.0)
    for v in (-1.25, 0.0, 2.5):
        value, grads = prog.value_and_grad(v, v)
        assert float(value) == v
        assert [float(g) for g in grads] == [1.0, 0.0]
    # a constant on either side: the traced value gets the tie only when it comes first
    first = build(lambda x: fn(x, 0.5), 1.0)
    second = build(lambda x: fn(0.5, x), 1.0)
    assert float(first.grad(0.5)[0]) == 1.0
    assert float(second.grad(0.5)[0]) == 0.0
    # with the same value on both sides the whole gradient passes
    assert float(build(lambda x: fn(x, x), 1.0).grad(0.5)[0]) == 1.0


def test_relu_gradient_is_zero_at_zero():
    prog = build(lambda x: compiler.relu(x), 1.0)
    assert [float(v) for v in prog.value_and_grad(0.0)[1]] == [0.0]
    assert float(prog.forward(0.0)) == 0.0
    assert float(prog.grad(-0.0)[0]) == 0.0
    assert float(prog.grad(1e-300)[0]) == 1.0
    assert float(prog.grad(-1e-300)[0]) == 0.0
    # np.maximum(x, 0.0) is the max gate: the tie at 0 goes to x, unlike relu
    assert float(build(lambda x: np.maximum(x, 0.0), 1.0).grad(0.0)[0]) == 1.0


def test_abs_gradient_is_zero_at_zero():
    for entry in (abs, np.abs, np.absolute):
        assert float(build(lambda x: entry(x), 1.0).grad(0.0)[0]) == 0.0


def test_gates_compute_on_plain_numbers():
    """compiler.<gate> outside a trace evaluates the row's forward expression."""
    rng = rng_for("gates")
    for row in ROWS:
        if row.gate:
            for x in draw(rng, [row.domain[0]] * 3):
                expected = oracle_forward(row)(x)
                assert_close_to_autograd(getattr(compiler, row.name)(x), expected)


# --- found by these tests, now fixed ---------------------------------------------------------


@pytest.mark.parametrize("cond", [0.5, 2], ids=["float-cond", "int-cond"])
def test_where_refuses_a_non_bool_condition(cond):
    """where's rules route by a bool; NumPy's truthiness of other numbers is a clear error."""

    def f(c, x, y):
        return np.where(c, x, y)  # WHERE

    with pytest.raises(TracingError, match=r"test_ops.py:\d+: where's cond must be a bool"):
        compiler.gradient(f, cond, 1.0, 2.0, wrt=("x", "y"))
    fixed = compiler.gradient(lambda c, x, y: np.where(c != 0, x, y), cond, 1.0, 2.0, wrt=("x", "y"))
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


def test_float32_scalars_keep_float32_gradients():
    prog = build(lambda x: x * 2.0, np.float32(1.0))
    assert "grad_L = np.float32(1.0)" in prog.source
    (grad,) = prog.grad(np.float32(1.5))
    assert type(grad) is np.float32 and grad == 2.0


def test_numpy_type_errors_become_tracing_errors():
    with pytest.raises(TracingError, match=r"test_ops.py:\d+: sub of these operands fails in NumPy"):
        compiler.gradient(lambda x, y: x * ((x > y) - (y > x)), 1.0, 2.0)
