"""Random scalar programs and random array programs from hypothesis, against HIPS autograd.

A scalar program is a small expression DAG over 2-3 float inputs. Each node applies one
differentiable elementwise row of the op table (a row with no example `shapes` and no static
arguments: the rows written for numbers) through one of its entry points (operator, reflected
or in-place dunder, ufunc, array function or `compiler.<gate>`), reusing earlier values
(fan-out). The rows, their arities and their input domains are read from `compiler.ops.OPS`;
nothing here lists operations, except the few rows that keep an operand inside a row's domain
(`v * v + lo` for a positive domain, `np.tanh(v) * bound` for a narrow one).

An array program (see the second half) does the same over arrays of broadcasting shapes, and
adds sum/mean reductions and matrix products.

flatgrad's program is traced from the nodes' entry points; the oracle is autograd running the
same nodes, each node evaluating its row's `forward` expression with `np` bound to
`autograd.numpy`. Every node reaches the output (loose ends are summed into it), so the
emitted module must also be clean under pyflakes.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from dataclasses import dataclass
from typing import Union

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from autograd.tracer import getval
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support import assert_fresh, pyflakes_messages
from table_harness import AUTOGRAD_SPELLINGS

import compiler
from compiler import passes
from compiler.autodiff import differentiate
from compiler.ops import OPS, Op
from compiler.verify import verify

pytestmark = [
    pytest.mark.filterwarnings("ignore:Output seems independent of input:UserWarning"),
    pytest.mark.slow,  # hundreds of random programs
]

VALUE_BOUND = 1e6  # every value of a kept program stays below this in magnitude
GRAD_BOUND = 1e10
KINK_MARGIN = 1e-6  # relative distance kept from a kink (x == y in max/min, x == 0 in relu)
RTOL, ATOL = 1e-9, 1e-9


# --- the table, read ------------------------------------------------------------------------


KINDS = ("operator", "reflected", "inplace", "ufunc", "function", "gate")  # what `caller` calls


def elementwise(row: Op) -> bool:
    """A row written for numbers: no example shapes, no static arguments, reached by a call."""
    return not row.shapes and not row.static and any(kind in KINDS for kind, _ in row.entry_points())


def entry_points(row: Op) -> tuple[tuple[str, str], ...]:
    return tuple((kind, name) for kind, name in row.entry_points() if kind in KINDS)


def makes_bools(row: Op) -> bool:
    """A comparison of two numbers (not a combination of bools, `&`)."""
    if row.bool_operands:
        return False
    return np.asarray(row.compute(*[0.5] * len(row.operands))).dtype == bool


DIFFERENTIABLE = [row for row in OPS.values() if elementwise(row) and row.grads]
# a Cond compares two values (unary predicates such as np.isnan are tested in test_ops.py)
COMPARISONS = [
    row for row in OPS.values() if elementwise(row) and not row.grads and makes_bools(row) and len(row.operands) == 2
]
WIDE = (-3.0, 3.0)  # a domain at least this wide takes any value that keeps the program finite


def caller(kind: str, name: str):
    if kind in ("operator", "inplace"):
        return getattr(operator, name.strip("_"))  # __iadd__ -> operator.iadd, as `a += b` calls it
    if kind == "reflected":
        return lambda a, b: getattr(b, name)(a)  # b.__radd__(a) computes a + b
    if kind in ("ufunc", "function"):
        return getattr(np, name)
    return getattr(compiler, name)


@functools.lru_cache(maxsize=None)
def oracle_forward(row: Op):
    """The row's forward expression with `np` bound to autograd.numpy."""
    text = AUTOGRAD_SPELLINGS.get(row.forward, row.forward)
    return eval(f"lambda {', '.join(row.operands)}: {text}", {"np": anp})


@functools.lru_cache(maxsize=None)
def kinks(row: Op) -> tuple:
    """Where the row's local gradients jump, as functions of its params and `out` that are 0
    at the jump: `x - y` for each comparison in a rule, `e` for each `np.sign(e)`."""
    found = []
    for rule in row.grads.values():
        for node in ast.walk(ast.parse(rule, mode="eval")):
            if isinstance(node, ast.Compare):
                found.append(ast.BinOp(node.left, ast.Sub(), node.comparators[0]))
            elif isinstance(node, ast.Call) and ast.unparse(node.func) == "np.sign":
                found.append(node.args[0])
    names = ", ".join(row.operands + ("out",))
    return tuple(eval(f"lambda {names}: {ast.unparse(e)}", {"np": np}) for e in found)


# --- programs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    index: int  # an input (index < n_inputs) or an earlier node


@dataclass(frozen=True)
class Cond:
    """A bool operand: `cmp(a, b)` through one of the comparison row's entry points."""

    row: Op
    kind: str
    name: str
    a: Ref
    b: Ref


Operand = Union[Ref, Cond, float]


@dataclass(frozen=True)
class Node:
    row: Op
    kind: str
    name: str
    operands: tuple[Operand, ...]

    def __str__(self) -> str:
        def show(o: Operand) -> str:
            if isinstance(o, Ref):
                return f"v{o.index}"
            if isinstance(o, Cond):
                return f"{o.name}(v{o.a.index}, v{o.b.index})"
            return repr(o)

        return f"{self.name}({', '.join(map(show, self.operands))})"


@dataclass(frozen=True)
class Program:
    names: tuple[str, ...]
    nodes: tuple[Node, ...]

    def __str__(self) -> str:
        n = len(self.names)
        lines = [f"inputs {', '.join(f'v{i}={name}' for i, name in enumerate(self.names))}"]
        lines += [f"v{n + j} = {node}" for j, node in enumerate(self.nodes)]
        return "\n".join(lines)


def run(program: Program, inputs, oracle: bool) -> list:
    """Every value of the program: the inputs, then one per node. With `oracle`, each node
    evaluates its row's forward expression under autograd.numpy; else it calls its entry
    point (on traced values while flatgrad traces, on numbers otherwise). No traced value is
    bound to a local variable here, so the emitted code keeps flatgrad's own names."""
    values = list(inputs)

    def operand(o: Operand):
        if isinstance(o, Ref):
            return values[o.index]
        if isinstance(o, Cond):
            cmp = oracle_forward(o.row) if oracle else caller(o.kind, o.name)
            return cmp(values[o.a.index], values[o.b.index])
        return o

    for node in program.nodes:
        fn = oracle_forward(node.row) if oracle else caller(node.kind, node.name)
        values.append(fn(*[operand(o) for o in node.operands]))
    return values


def as_function(program: Program):
    """A Python function of the program's inputs, with their names as parameters."""
    params = ", ".join(program.names)
    namespace = {"_run": run, "_program": program}
    exec(f"def program({params}):\n    return _run(_program, ({params},), False)[-1]\n", namespace)
    return namespace["program"]


# Names of inputs, some of them taken by the emitted module or by flatgrad's own naming rules.
INPUT_NAMES = ("x", "y", "z", "w0", "x0", "s0", "s1", "L", "grad_x", "grad_s0", "out", "grad", "cond", "cache")


@st.composite
def programs(draw) -> Program:
    n_inputs = draw(st.integers(2, 3))
    names = tuple(draw(st.lists(st.sampled_from(INPUT_NAMES), min_size=n_inputs, max_size=n_inputs, unique=True)))
    nodes: list[Node] = []

    def add(row: Op, kind: str, name: str, *operands: Operand) -> Ref:
        nodes.append(Node(row, kind, name, operands))
        return Ref(n_inputs + len(nodes) - 1)

    def fit(ref: Ref, interval: tuple[float, float]) -> Ref:
        """A value inside `interval` made from `ref`, when the interval is not wide."""
        lo, hi = interval
        if lo > 0:  # v * v + lo
            square = add(OPS["mul"], "operator", "__mul__", ref, ref)
            return add(OPS["add"], "operator", "__add__", square, lo)
        if lo > WIDE[0] or hi < WIDE[1]:  # np.tanh(v) * bound
            squashed = add(OPS["tanh"], "ufunc", "tanh", ref)
            return add(OPS["mul"], "operator", "__mul__", squashed, min(-lo, hi))
        return ref

    def ref() -> Ref:
        return Ref(draw(st.integers(0, n_inputs + len(nodes) - 1)))

    for _ in range(draw(st.integers(3, 8))):
        row = draw(st.sampled_from(DIFFERENTIABLE))
        kind, name = draw(st.sampled_from(entry_points(row)))
        # which float operands are constants: never all of them, never `self` of a reflected dunder
        floats = [i for i, interval in enumerate(row.domain) if interval is not None]
        constant = {i: len(floats) > 1 and draw(st.integers(0, 4)) == 0 for i in floats}
        if kind == "reflected":
            constant[len(row.operands) - 1] = False
        if all(constant[i] for i in floats):
            constant[floats[-1]] = False
        operands: list[Operand] = []
        for i, interval in enumerate(row.domain):
            if interval is None:
                cmp = draw(st.sampled_from(COMPARISONS))
                cmp_kind, cmp_name = draw(st.sampled_from(entry_points(cmp)))
                operands.append(Cond(cmp, cmp_kind, cmp_name, ref(), ref()))
            elif constant[i]:
                operands.append(draw(st.floats(*interval)))
            else:
                operands.append(fit(ref(), interval))
        add(row, kind, name, *operands)

    # loose ends (nodes no later node reads) are summed into the output, so every node reaches it
    used = {o.index for node in nodes for o in node.operands if isinstance(o, Ref)}
    used |= {r.index for node in nodes for o in node.operands if isinstance(o, Cond) for r in (o.a, o.b)}
    out = Ref(n_inputs + len(nodes) - 1)
    for j in range(len(nodes) - 1):
        if n_inputs + j not in used:
            out = add(OPS["add"], "operator", "__add__", out, Ref(n_inputs + j))
    return Program(names, tuple(nodes))


def inputs_for(program: Program):
    return st.lists(
        st.floats(-3.0, 3.0, allow_nan=False, allow_subnormal=False),
        min_size=len(program.names),
        max_size=len(program.names),
    )


# --- filters: finite values, away from kinks --------------------------------------------------


def numbers_are_safe(program: Program, args: list[float]) -> bool:
    """Every value finite and bounded, every kinked gate away from its kink."""
    with np.errstate(all="ignore"):
        values = [float(v) for v in run(program, args, oracle=False)]
        if not all(math.isfinite(v) and abs(v) < VALUE_BOUND for v in values):
            return False
        for j, node in enumerate(program.nodes):
            operands = [
                values[o.index] if isinstance(o, Ref) else o
                for o in node.operands
                if not isinstance(o, Cond)
            ]
            if any(isinstance(o, Cond) for o in node.operands):
                continue  # where: its gradient has no kink (the condition is a bool)
            out = values[len(program.names) + j]
            for kink in kinks(node.row):
                scale = max(1.0, *(abs(v) for v in operands))
                same = len(node.operands) == 2 and node.operands[0] == node.operands[1]
                if not same and abs(kink(*operands, out)) <= KINK_MARGIN * scale:
                    return False
    return True


# --- the test -------------------------------------------------------------------------------


def optimized_program(f, examples) -> compiler.GradientProgram:
    """`f` in optimize mode, with the verifier run after every pass."""
    forward = passes.optimize_forward(verify(compiler.trace(f, *examples)), check=verify)
    floats = [v.name for v in forward.inputs if v.dtype == "float64"]
    graph = passes.optimize(differentiate(forward, floats), check=verify)
    passes.fold_seed(graph, check=verify)
    optimized = compiler.gradient(f, *examples, optimize=True)
    assert pyflakes_messages(optimized.source) == "", optimized.source
    assert len(optimized.graph.eqns) <= len(compiler.gradient(f, *examples).graph.eqns)
    return optimized


@settings(derandomize=True, max_examples=250, deadline=None, database=None)
@given(data=st.data())
def test_random_program_against_autograd(data):
    program = data.draw(programs(), label="program")
    args = data.draw(inputs_for(program), label="inputs")
    assume(numbers_are_safe(program, args))

    def oracle(*xs):
        return run(program, xs, oracle=True)[-1]

    with np.errstate(all="ignore"):
        expected_value = float(oracle(*args))
        expected_grads = [float(autograd.grad(oracle, argnum=i)(*args)) for i in range(len(args))]
    assume(all(math.isfinite(g) and abs(g) < GRAD_BOUND for g in expected_grads))

    f = as_function(program)
    verify(compiler.trace(f, *[1.0] * len(args)))
    prog = compiler.gradient(f, *[1.0] * len(args))
    verify(prog.graph)
    assert len(prog.wrt) == len(args)
    assert pyflakes_messages(prog.source) == ""

    with np.errstate(all="ignore"):
        value, grads = prog.value_and_grad(*args)
        forward_value = prog.forward(*args)
        cached_value, cache = prog.module.forward_with_cache(*args)
        doubled = prog.module.backward(2.0, cache)

    np.testing.assert_allclose(float(value), expected_value, rtol=1e-12, atol=1e-12)
    assert float(forward_value) == float(value) == float(cached_value)
    scale = max([1.0] + [abs(g) for g in expected_grads])
    np.testing.assert_allclose(
        [float(g) for g in grads], expected_grads, rtol=RTOL, atol=ATOL * scale, err_msg=str(program)
    )
    np.testing.assert_allclose(
        [float(g) for g in doubled], [2 * float(g) for g in grads], rtol=1e-15, atol=0, err_msg=str(program)
    )

    optimized = optimized_program(f, [1.0] * len(args))
    with np.errstate(all="ignore"):
        value, grads = optimized.value_and_grad(*args)
        doubled = optimized.module.backward(2.0, optimized.module.forward_with_cache(*args)[1])
    np.testing.assert_allclose([float(g) for g in doubled], [2 * float(g) for g in grads], rtol=1e-15, atol=0)
    np.testing.assert_allclose(float(value), expected_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        [float(g) for g in grads], expected_grads, rtol=RTOL, atol=ATOL * scale, err_msg=f"optimized\n{program}"
    )


# --- random array programs ----------------------------------------------------------------------
#
# Values are arrays of a few shapes that broadcast against each other (scalar, vector, row,
# column, matrix) and that matrix products chain. A node is an elementwise row applied to
# operands whose shapes broadcast (the same rows and entry points as above, except the in-place
# dunders, which would write into a value other nodes read: test_ops tests those), a sum/mean
# reduction (its `axis`/`keepdims` kept where the rows' `when` picks a row), or a matrix product
# of two values whose shapes chain. The output sums every loose end as np.sum(v * W), with fixed
# weights W per shape, so every element of every value sends its own gradient back.

ARRAY_SHAPES = ((4, 3), (3,), (3, 2), (4, 1), (1, 3), (), (2,))  # hypothesis starts from the first
ARRAY_KINDS = tuple(kind for kind in KINDS if kind != "inplace") + ("method",)
ELEMENTWISE_ARRAY = [row for row in DIFFERENTIABLE if any(kind in ARRAY_KINDS for kind, _ in row.entry_points())]
REDUCTIONS = [
    row for row in OPS.values() if set(row.static) == {"axis", "keepdims"} and set(row.functions) & {"sum", "mean"}
]
MATMULS = [row for row in OPS.values() if "__matmul__" in row.operators]
# np.matmul is left out: it is a ufunc that flatgrad does not trace yet (see test_ops' known bugs)
MATMUL_ENTRIES = (("operator", "__matmul__"), ("reflected", "__rmatmul__"), ("function", "dot"))


def array_entry_points(row: Op) -> tuple[tuple[str, str], ...]:
    return tuple((kind, name) for kind, name in row.entry_points() if kind in ARRAY_KINDS)


def array_caller(kind: str, name: str, static: dict):
    """A function of the operands applying the entry point, static arguments as keywords."""
    if kind == "method":
        return lambda x: getattr(x, name)(**static)
    if kind in ("ufunc", "function") and static:
        return lambda x: getattr(np, name)(x, **static)
    return caller(kind, name)


@functools.lru_cache(maxsize=None)
def array_forward(row: Op):
    """The row's forward expression over its params and statics, with np bound to autograd.numpy."""
    text = AUTOGRAD_SPELLINGS.get(row.forward, row.forward)
    return eval(f"lambda {', '.join(row.operands + row.static)}: {text}", {"np": anp})


@dataclass(frozen=True)
class ArrayNode:
    row: Op
    kind: str
    name: str
    operands: tuple  # Ref, Cond, a float, or a NumPy array (the weights)
    static: tuple[tuple[str, object], ...]
    shape: tuple[int, ...]

    def __str__(self) -> str:
        def show(o) -> str:
            if isinstance(o, Ref):
                return f"v{o.index}"
            if isinstance(o, Cond):
                return f"{o.name}(v{o.a.index}, v{o.b.index})"
            return f"W{list(o.shape)}" if isinstance(o, np.ndarray) else repr(o)

        static = "".join(f", {k}={v!r}" for k, v in self.static)
        return f"{self.name}({', '.join(map(show, self.operands))}{static}) -> {list(self.shape)}"


@dataclass(frozen=True)
class ArrayProgram:
    shapes: tuple[tuple[int, ...], ...]  # of the inputs
    nodes: tuple[ArrayNode, ...]

    def __str__(self) -> str:
        n = len(self.shapes)
        lines = [f"inputs {', '.join(f'v{i}: {list(s)}' for i, s in enumerate(self.shapes))}"]
        return "\n".join(lines + [f"v{n + j} = {node}" for j, node in enumerate(self.nodes)])


def run_array(program: ArrayProgram, inputs, oracle: bool) -> list:
    """Every value of the program, as `run` above; the oracle broadcasts an elementwise row's
    operands to the output shape first (autograd's np.where does not sum a broadcast gradient back)."""
    values = list(inputs)

    def operand(o):
        if isinstance(o, Ref):
            return values[o.index]
        if isinstance(o, Cond):
            a, b = values[o.a.index], values[o.b.index]
            return oracle_forward(o.row)(getval(a), getval(b)) if oracle else caller(o.kind, o.name)(a, b)
        return o

    for node in program.nodes:
        args = [operand(o) for o in node.operands]
        static = dict(node.static)
        if not oracle:
            values.append(array_caller(node.kind, node.name, static)(*args))
            continue
        if node.row in DIFFERENTIABLE and node.shape:
            args = [a * np.ones(node.shape) if not isinstance(o, Cond) else a for a, o in zip(args, node.operands)]
        normalized = node.row.normalize([np.shape(getval(args[0]))], static) if node.row.normalize else static
        values.append(array_forward(node.row)(*args, **normalized))
    return values


def array_function(program: ArrayProgram):
    params = ", ".join(f"a{i}" for i in range(len(program.shapes)))
    namespace = {"_run": run_array, "_program": program}
    exec(f"def program({params}):\n    return _run(_program, ({params},), False)[-1]\n", namespace)
    return namespace["program"]


def broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        return None


def reduction_statics(row: Op, shape: tuple[int, ...]) -> list[dict]:
    ndim = len(shape)
    axes = [None, *range(-ndim, ndim)] + ([tuple(range(ndim))] if ndim > 1 else [])
    statics = [{"axis": a, "keepdims": k} for a in axes for k in (False, True)]
    return [s for s in statics if row.accepts((ndim,), row.normalize((shape,), dict(s)))]


def weights_for(shape: tuple[int, ...]) -> np.ndarray | float:
    values = np.random.default_rng(len(shape) * 10 + sum(shape)).uniform(0.5, 1.5, shape)
    return float(values) if not shape else values


@st.composite
def array_programs(draw) -> ArrayProgram:
    n_inputs = draw(st.integers(2, 3))
    shapes = list(draw(st.lists(st.sampled_from(ARRAY_SHAPES), min_size=n_inputs, max_size=n_inputs)))
    nodes: list[ArrayNode] = []

    def add(row: Op, kind: str, name: str, operands: tuple, static: dict | None = None) -> Ref:
        static = static or {}
        samples = [
            np.ones(shapes[o.index]) if isinstance(o, Ref)
            else np.ones(np.broadcast_shapes(shapes[o.a.index], shapes[o.b.index]), bool) if isinstance(o, Cond)
            else o
            for o in operands
        ]
        normalized = row.normalize([np.shape(samples[0])], dict(static)) if row.normalize else static
        shape = np.shape(row.compute(*samples, **normalized))
        nodes.append(ArrayNode(row, kind, name, tuple(operands), tuple(static.items()), shape))
        shapes.append(shape)
        return Ref(len(shapes) - 1)

    def fit(ref: Ref, interval: tuple[float, float]) -> Ref:
        lo, hi = interval
        if lo > 0:  # v * v + lo
            square = add(OPS["mul"], "operator", "__mul__", (ref, ref))
            return add(OPS["add"], "operator", "__add__", (square, lo))
        if lo > WIDE[0] or hi < WIDE[1]:  # np.tanh(v) * bound
            squashed = add(OPS["tanh"], "ufunc", "tanh", (ref,))
            return add(OPS["mul"], "operator", "__mul__", (squashed, min(-lo, hi)))
        return ref

    def ref_fitting(shape: tuple[int, ...]) -> Ref:
        """A value whose shape broadcasts with `shape`."""
        fitting = [i for i, s in enumerate(shapes) if broadcast(shape, s) is not None]
        return Ref(draw(st.sampled_from(fitting)))

    for _ in range(draw(st.integers(3, 7))):
        what = draw(st.sampled_from(("matmul", "elementwise", "reduction", "elementwise")))
        if what == "matmul":
            pairs = [
                (a, b, row)
                for a, sa in enumerate(shapes)
                for b, sb in enumerate(shapes)
                for row in MATMULS
                if sa and sb and row.accepts((len(sa), len(sb)), {}) and sa[-1] == sb[0]
            ]
            if pairs:
                a, b, row = draw(st.sampled_from(pairs))
                kind, name = draw(st.sampled_from(MATMUL_ENTRIES))
                add(row, kind, name, (Ref(a), Ref(b)))
                continue
            what = "reduction"
        if what == "reduction":
            source = Ref(draw(st.integers(0, len(shapes) - 1)))
            choices = [(row, s) for row in REDUCTIONS for s in reduction_statics(row, shapes[source.index])]
            row, static = draw(st.sampled_from(choices))
            kind, name = draw(st.sampled_from(array_entry_points(row)))
            add(row, kind, name, (source,), static)
            continue
        row = draw(st.sampled_from(ELEMENTWISE_ARRAY))
        kind, name = draw(st.sampled_from(array_entry_points(row)))
        floats = [i for i, interval in enumerate(row.domain) if interval is not None]
        constant = {i: len(floats) > 1 and draw(st.integers(0, 4)) == 4 for i in floats}
        if kind == "reflected":
            constant[len(row.operands) - 1] = False
        if all(constant[i] for i in floats):
            constant[floats[-1]] = False
        operands: list = []
        out: tuple[int, ...] = ()
        for i, interval in enumerate(row.domain):
            if interval is None:
                cmp = draw(st.sampled_from(COMPARISONS))
                cmp_kind, cmp_name = draw(st.sampled_from(entry_points(cmp)))
                a = ref_fitting(out)
                b = ref_fitting(np.broadcast_shapes(out, shapes[a.index]))
                operands.append(Cond(cmp, cmp_kind, cmp_name, a, b))
                out = np.broadcast_shapes(out, shapes[a.index], shapes[b.index])
            elif constant[i]:
                operands.append(draw(st.floats(*interval)))
            else:
                ref = fit(ref_fitting(out), interval)
                operands.append(ref)
                out = np.broadcast_shapes(out, shapes[ref.index])
        add(row, kind, name, tuple(operands))

    # every loose end (and the last value) reaches the output as np.sum(v * W)
    n_inputs = len(shapes) - len(nodes)
    used = {o.index for node in nodes for o in node.operands if isinstance(o, Ref)}
    used |= {r.index for node in nodes for o in node.operands if isinstance(o, Cond) for r in (o.a, o.b)}
    ends = [i for i in range(n_inputs, len(shapes)) if i not in used or i == len(shapes) - 1]
    total = None
    for i in ends:
        weighted = add(OPS["mul"], "operator", "__mul__", (Ref(i), weights_for(shapes[i])))
        reduced = add(OPS["sum_all"], "function", "sum", (weighted,), {"axis": None, "keepdims": False})
        total = reduced if total is None else add(OPS["add"], "operator", "__add__", (total, reduced))
    return ArrayProgram(tuple(shapes[:n_inputs]), tuple(nodes))


def array_values_are_safe(program: ArrayProgram, args: list) -> bool:
    """Every value finite and bounded, every kinked gate away from its kink at every element."""
    with np.errstate(all="ignore"):
        values = run_array(program, args, oracle=False)
        if not all(np.all(np.isfinite(v)) and np.all(np.abs(v) < VALUE_BOUND) for v in values):
            return False
        n = len(program.shapes)
        for j, node in enumerate(program.nodes):
            if node.row not in DIFFERENTIABLE or any(isinstance(o, Cond) for o in node.operands):
                continue
            operands = [values[o.index] if isinstance(o, Ref) else o for o in node.operands]
            scale = max(1.0, *(float(np.max(np.abs(v))) for v in operands))
            same = len(node.operands) == 2 and node.operands[0] == node.operands[1]
            for kink in kinks(node.row):
                if not same and np.min(np.abs(kink(*operands, values[n + j]))) <= KINK_MARGIN * scale:
                    return False
    return True


def draw_array_case(data, program: ArrayProgram) -> tuple[list, float, list]:
    """Arguments drawn for `program` where its values are safe, and its value and gradients
    there by the oracle (autograd)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    args = [np.float64(rng.uniform(-2.0, 2.0)) if not s else rng.uniform(-2.0, 2.0, s) for s in program.shapes]
    assume(array_values_are_safe(program, args))

    def oracle(*xs):
        return run_array(program, xs, oracle=True)[-1]

    with np.errstate(all="ignore"):
        expected_value = float(oracle(*args))
        expected_grads = [autograd.grad(oracle, argnum=i)(*args) for i in range(len(args))]
    assume(all(np.all(np.isfinite(g)) and np.all(np.abs(g) < GRAD_BOUND) for g in expected_grads))
    return args, expected_value, expected_grads


@settings(derandomize=True, max_examples=100, deadline=None, database=None)
@given(data=st.data())
def test_random_array_program_against_autograd(data):
    program = data.draw(array_programs(), label="program")
    args, expected_value, expected_grads = draw_array_case(data, program)

    f = array_function(program)
    examples = [np.ones(s) if s else 1.0 for s in program.shapes]
    verify(compiler.trace(f, *examples))
    prog = compiler.gradient(f, *examples)
    verify(prog.graph)
    assert pyflakes_messages(prog.source) == ""

    with np.errstate(all="ignore"):
        value, grads = prog.value_and_grad(*args)
        cached_value, cache = prog.module.forward_with_cache(*args)
        doubled = prog.module.backward(2.0, cache)

    np.testing.assert_allclose(float(value), expected_value, rtol=1e-12, atol=1e-12, err_msg=str(program))
    assert float(prog.forward(*args)) == float(value) == float(cached_value)
    assert_fresh(grads, args, str(program))
    assert_fresh(doubled, args, str(program))
    for i, (grad, expected, twice) in enumerate(zip(grads, expected_grads, doubled)):
        assert np.shape(grad) == np.shape(args[i]), str(program)
        scale = max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=ATOL * scale, err_msg=f"a{i}\n{program}")
        np.testing.assert_allclose(twice, 2 * np.asarray(grad), rtol=1e-15, atol=0, err_msg=str(program))

    optimized = optimized_program(f, examples)
    with np.errstate(all="ignore"):
        value, grads = optimized.value_and_grad(*args)
    assert_fresh(grads, args, f"optimized {program}")
    np.testing.assert_allclose(float(value), expected_value, rtol=1e-12, atol=1e-12, err_msg=str(program))
    for i, (grad, expected) in enumerate(zip(grads, expected_grads)):
        scale = max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=ATOL * scale, err_msg=f"optimized a{i}\n{program}")
