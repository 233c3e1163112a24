"""Random scalar programs from hypothesis, against HIPS autograd.

A program is a small expression DAG over 2-3 float inputs. Each node applies one
differentiable row of the op table through one of its entry points (operator, reflected
dunder, ufunc, array function or `compiler.<gate>`), reusing earlier values (fan-out). The
rows, their arities and their input domains are read from `compiler.ops.OPS`; nothing here
lists operations, except the few rows that keep an operand inside a row's domain
(`v * v + lo` for a positive domain, `np.tanh(v) * bound` for a narrow one).

flatgrad's program is traced from the nodes' entry points; the oracle is autograd running the
same nodes, each node evaluating its row's `forward` expression with `np` bound to
`autograd.numpy`. Every node reaches the output (loose ends are summed into it), so the
emitted module must also be clean under pyflakes.
"""

from __future__ import annotations

import ast
import functools
import io
import math
import operator
from dataclasses import dataclass
from typing import Union

import autograd
import autograd.numpy as anp
import numpy as np
import pyflakes.api
import pyflakes.reporter
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import compiler
from compiler import ir
from compiler.ops import OPS, Op

pytestmark = pytest.mark.filterwarnings("ignore:Output seems independent of input:UserWarning")

VALUE_BOUND = 1e6  # every value of a kept program stays below this in magnitude
GRAD_BOUND = 1e10
KINK_MARGIN = 1e-6  # relative distance kept from a kink (x == y in max/min, x == 0 in relu)
RTOL, ATOL = 1e-9, 1e-9


# --- the table, read ------------------------------------------------------------------------


DIFFERENTIABLE = [row for row in OPS.values() if row.entry_points() and row.grads]
COMPARISONS = [row for row in OPS.values() if row.entry_points() and not row.grads]
WIDE = (-3.0, 3.0)  # a domain at least this wide takes any value that keeps the program finite


def caller(kind: str, name: str):
    if kind == "operator":
        return getattr(operator, name.strip("_"))
    if kind == "reflected":
        return lambda a, b: getattr(b, name)(a)  # b.__radd__(a) computes a + b
    if kind in ("ufunc", "function"):
        return getattr(np, name)
    return getattr(compiler, name)


@functools.lru_cache(maxsize=None)
def oracle_forward(row: Op):
    """The row's forward expression with `np` bound to autograd.numpy."""
    return eval(f"lambda {', '.join(row.params)}: {row.forward}", {"np": anp})


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
    names = ", ".join(row.params + ("out",))
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
        kind, name = draw(st.sampled_from(row.entry_points()))
        # which float operands are constants: never all of them, never `self` of a reflected dunder
        floats = [i for i, interval in enumerate(row.domain) if interval is not None]
        constant = {i: len(floats) > 1 and draw(st.integers(0, 4)) == 0 for i in floats}
        if kind == "reflected":
            constant[len(row.params) - 1] = False
        if all(constant[i] for i in floats):
            constant[floats[-1]] = False
        operands: list[Operand] = []
        for i, interval in enumerate(row.domain):
            if interval is None:
                cmp = draw(st.sampled_from(COMPARISONS))
                cmp_kind, cmp_name = draw(st.sampled_from(cmp.entry_points()))
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


def pyflakes_messages(source: str) -> str:
    stream = io.StringIO()
    pyflakes.api.check(source, "emitted.py", pyflakes.reporter.Reporter(stream, stream))
    return stream.getvalue()


# --- the test -------------------------------------------------------------------------------


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
    ir.verify(compiler.trace(f, *[1.0] * len(args)))
    prog = compiler.gradient(f, *[1.0] * len(args))
    ir.verify(prog.graph)
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
