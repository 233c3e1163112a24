"""Every row of the op table under numba: compiled with `jit="numba"`, with number and array
operands, its value and gradients compared with the NumPy program's (`jit=None`).

The rows are read from the table as tests/table_harness.py reads them, and each call is the
harness's user function for a case: a row reached through its first entry point, on operands
of some shapes and with some static arguments (an axis, clip bounds, an index), reduced to a
number as `np.sum(out * W)`. A comparison or a predicate (a bool) is the condition of an
`np.where`. Each elementwise row is compiled on numbers, and on arrays of one broadcast
pattern (the patterns taken in turn along the table); an array row with each of its static
arguments; a row whose text has a number in it also on float32 arrays, where numba, unlike
NumPy, computes a Python number with float32 in float64.

numba takes about a second to compile a small function, and array code a quarter of a second
per case on top (without LLVM's optimizations, see `_fast_numba_compiles`), growing faster
than a function's length: so the cases are not compiled one by one, nor all at once. Each
chunk of them is one traced function, the sum of its cases' functions, each on its own inputs;
numbers all in one. A chunk that fails is bisected down to the case at fault, which the failure
names, with numba's message.

A call numba cannot compile as NumPy writes it has a lowering in its row (`numba_forward`,
`numba_grads`, helpers), or its row's `numba_when` refuses it: then `gradient(...,
jit="numba")` raises a FlatgradError naming the op when it emits the module, never a numba
TypingError at the first call. Both are checked here: the refused cases are built one by one
(emitting is fast).
"""

from __future__ import annotations

import ast
import itertools
import operator
from typing import Callable

import numpy as np
import pytest
from table_harness import (
    BROADCAST_SHAPES,
    COMPARISON_CASES,
    FILL_CASES,
    GRADIENT_CASES,
    Case,
    UserFunction,
    call_lines,
    draw_args,
    is_elementwise,
    rng_for,
    user_function,
    weights,
)

import compiler
from compiler import FlatgradError
from compiler.ops import OPS, Op

pytestmark = [
    pytest.mark.numba,
    pytest.mark.filterwarnings("ignore:Output seems independent of input:UserWarning"),
    # numba keeps no cache of a function with a constant array (an index baked in): it compiles it again
    pytest.mark.filterwarnings("ignore:Cannot cache compiled function:numba.core.errors.NumbaWarning"),
]

# numba's transcendental functions may differ from NumPy's in the last bits
RTOL, ATOL = 1e-11, 1e-13

# The operand shapes of the rows written for numbers: all numbers, or arrays. Each array
# pattern (broadcast, a number meeting an array) is given to the rows in turn, one per row.
SCALAR_SHAPES = {arity: shapes[0] for arity, shapes in BROADCAST_SHAPES.items()}
ARRAY_SHAPES = {
    1: [((4, 3),), ((3,),)],
    2: [((4, 3), (3,)), ((4, 1), (1, 3)), ((), (4, 3)), ((4, 3), ())],
    3: [((4, 3), (3,), (4, 1)), ((), (4, 1), (4, 3))],
}


def one_entry_point(cases: list[Case]) -> list[Case]:
    """One case per row, shapes and static arguments (as the row takes them, so `axis=-1` and
    `axis=1` are one): the entry point a call came through does not change the emitted line
    (the first one is kept)."""
    chosen: dict[tuple, Case] = {}
    for case in cases:
        key = (case.row.name, case.shapes, repr(case.static_dict()), case.const_index)
        chosen.setdefault(key, case)
    return list(chosen.values())


def picked(cases: list[Case], scalar: bool) -> list[Case]:
    """The elementwise cases with number operands (`scalar`), or one with array operands per row,
    its shapes the next of ARRAY_SHAPES in turn. Array rows' cases (their own example shapes,
    every static argument and index) go with the arrays, a write's value (a number, the shape
    written, or its last axis) the next in turn for each index."""
    out = []
    turn = dict.fromkeys(ARRAY_SHAPES, 0)
    for row_cases in _by_row(one_entry_point(cases)):
        row = row_cases[0].row
        if not is_elementwise(row):
            if not scalar:
                calls: dict[tuple, list[Case]] = {}
                for case in row_cases:
                    calls.setdefault((repr(case.static_dict()), case.const_index), []).append(case)
                out += [variants[k % len(variants)] for k, variants in enumerate(calls.values())]
            continue
        arity = len(row.operands)
        if scalar:
            wanted = SCALAR_SHAPES[arity]
        else:
            wanted = ARRAY_SHAPES[arity][turn[arity] % len(ARRAY_SHAPES[arity])]
            turn[arity] += 1
        out += [case for case in row_cases if case.shapes == wanted]
    return out


def _by_row(cases: list[Case]) -> list[list[Case]]:
    rows: dict[str, list[Case]] = {}
    for case in cases:
        rows.setdefault(case.row.name, []).append(case)
    return list(rows.values())


def condition_function(case: Case) -> UserFunction:
    """A comparison or a predicate as the condition of np.where: where(c(x, y), 2x, 3y), where(p(x), 2x, 3x)."""
    names = ["x", "y"][: len(case.row.operands)]
    W = weights(np.broadcast_shapes(*case.shapes))
    call, result = call_lines(case, names)
    namespace = {"np": np, "_W": W, "_op": getattr(operator, case.name.strip("_"), None)}
    source = (
        f"def f({', '.join(names)}):\n    {call[0]}\n"
        f"    return np.sum(np.where({result}, x * 2.0, {names[-1]} * 3.0) * _W)\n"
    )
    exec(compile(source, f"<{case}>", "exec"), namespace)
    floats = tuple(names)
    return UserFunction(case, namespace["f"], None, floats, floats, {}, (), source)


def user_functions(scalar: bool) -> list[UserFunction]:
    """The user's functions of every reachable row's cases, for numbers or for arrays."""
    return [user_function(c) for c in picked(GRADIENT_CASES + FILL_CASES, scalar)] + [
        condition_function(c) for c in picked(COMPARISON_CASES, scalar)
    ]


def numba_refuses(case: Case) -> bool:
    """Whether the row's `numba_when` refuses this call: codegen then raises at build time."""
    row: Op = case.row
    if row.numba_when is None:
        return False
    ndims = tuple(len(shape) for shape in case.shapes)
    return not row.numba_when(ndims, case.static_dict())


def combined(users: list[UserFunction], dtype: type) -> tuple[Callable, list]:
    """One function summing every user function, each on its own inputs (named after it), and
    its example arguments."""
    params: list[str] = []
    calls = []
    namespace: dict = {}
    for k, user in enumerate(users):
        names = [f"{n}_{k}" for n in user.names]
        namespace[f"_f{k}"] = user.f
        params += names
        calls.append(f"_f{k}({', '.join(names)})")
    source = f"def combined({', '.join(params)}):\n    return " + " + ".join(calls) + "\n"
    exec(compile(source, "<combined>", "exec"), namespace)
    return namespace["combined"], [example for user in users for example in user.examples(dtype)]


def arguments(users: list[UserFunction], seed: str, dtype: type) -> list:
    """Each user function's arguments, drawn from its row's domain, its floats as `dtype`."""
    args = []
    for user in users:
        for name, arg in zip(user.names, draw_args(user, rng_for("numba", seed, user.case))):
            args.append(np.asarray(arg, dtype)[()] if name in user.floats else arg)
    return args


def compare(users: list[UserFunction], seed: str, dtype: type = np.float64) -> None:
    """The numba program's value and gradients against the NumPy program's: close, and of the
    same dtype where they are arrays (numba gives a number as a Python float)."""
    f, examples = combined(users, dtype)
    plain = compiler.gradient(f, *examples)
    jitted = compiler.gradient(f, *examples, jit="numba")
    args = arguments(users, seed, dtype)
    value, grads = plain.value_and_grad(*args)
    jitted_value, jitted_grads = jitted.value_and_grad(*args)
    rtol, atol = TOLERANCES[dtype]
    np.testing.assert_allclose(jitted_value, value, rtol=rtol, atol=atol)
    assert jitted.wrt == plain.wrt
    for name, ours, theirs in zip(plain.wrt, jitted_grads, grads):
        assert np.shape(ours) == np.shape(theirs), name
        assert np.ndim(ours) == 0 or ours.dtype == theirs.dtype == dtype, name
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=name)


def compiles(users: list[UserFunction], seed: str, dtype: type) -> bool:
    try:
        compare(users, seed, dtype)
    except Exception:
        return False
    return True


def first_failing(users: list[UserFunction], seed: str, dtype: type) -> UserFunction:
    """The case that makes a group fail, by bisection (each half compiled on its own)."""
    while len(users) > 1:
        half = users[: len(users) // 2]
        users = users[len(users) // 2 :] if compiles(half, seed, dtype) else half
    return users[0]


def check_group(users: list[UserFunction], seed: str, dtype: type) -> None:
    try:
        compare(users, seed, dtype)
    except Exception:
        culprit = first_failing(users, seed, dtype)
        try:
            compare([culprit], seed, dtype)
        except Exception as error:  # the culprit's own error, short, in place of the group's
            lines = str(error).splitlines()
            message = "\n".join(lines[:12] + (["..."] if len(lines) > 12 else []))
            raise AssertionError(
                f"under numba, {culprit.case} ({np.dtype(dtype)}) fails:\n{culprit.source}\n"
                f"{type(error).__name__}: {message}"
            ) from None
        raise AssertionError("under numba, the group fails, but its case at fault alone passes") from None


def meets_numbers(row: Op) -> bool:
    """Whether the row's emitted text has a number in it (`1 - out ** 2`, `np.pi / 180`, clip's
    bounds): in float32 arithmetic NumPy keeps float32 there, numba computes in float64 unless
    codegen writes the number as np.float32."""
    texts = (row.forward, row.numba_forward or "", *row.grads.values(), *row.numba_grads.values())
    for node in itertools.chain.from_iterable(ast.walk(ast.parse(t, mode="eval")) for t in texts if t):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return True
        if isinstance(node, ast.Attribute) and ast.unparse(node) in ("np.pi", "np.e", "np.inf", "np.nan"):
            return True
    return bool(row.static)


USERS = user_functions(scalar=True) + user_functions(scalar=False)
REFUSED = [u for u in USERS if numba_refuses(u.case)]
COMPILED = [u for u in USERS if not numba_refuses(u.case)]

# numba's compile time grows faster than a function's length: array cases go in functions of
# at most CHUNK cases (each takes about 3 s to compile); numbers compile fast, all in one.
CHUNK = 12
GROUPS = {
    "numbers": [u for u in COMPILED if is_elementwise(u.case.row) and not any(u.case.shapes)],
    "elementwise-arrays": [u for u in COMPILED if is_elementwise(u.case.row) and any(u.case.shapes)],
    "array-rows": [u for u in COMPILED if not is_elementwise(u.case.row) and u.case.index is None],
    "indexing": [u for u in COMPILED if u.case.index is not None],
}
# float32 arrays, for the elementwise rows whose text has a number in it (the user functions:
# a where of a comparison has none)
GROUPS["float32"] = [
    user_function(u.case, np.float32)
    for u in GROUPS["elementwise-arrays"]
    if u.oracle is not None and meets_numbers(u.case.row)
]
DTYPES = {"float32": np.float32}
TOLERANCES = {np.float64: (RTOL, ATOL), np.float32: (1e-5, 1e-6)}


def chunks(group: str, users: list[UserFunction]) -> dict[str, list[UserFunction]]:
    """The group's cases in functions of at most CHUNK cases (numbers: in one), of even sizes."""
    if group == "numbers" or len(users) <= CHUNK:
        return {group: users}
    count = -(-len(users) // CHUNK)
    size = -(-len(users) // count)
    return {f"{group}-{k // size}": users[k : k + size] for k in range(0, len(users), size)}


CHUNKS = {
    name: (users, DTYPES.get(group, np.float64))
    for group, all_users in GROUPS.items()
    for name, users in chunks(group, all_users).items()
}


@pytest.fixture(scope="module", autouse=True)
def _fast_numba_compiles():
    """numba without LLVM's optimizations: what these tests check (that numba takes the code, and
    computes the numbers NumPy does) does not depend on them, and compiling takes a third of the
    time. (The opt level is read at each compile; it is put back after this module.)"""
    import numba.core.config

    level = numba.core.config.OPT
    numba.core.config.OPT = numba.core.config._OptLevel(0)
    yield
    numba.core.config.OPT = level


def test_every_reachable_row_is_compiled_or_refused():
    """Each elementwise row on numbers and on arrays; every other row on its own example shapes."""
    reachable = {c.row.name for c in GRADIENT_CASES + FILL_CASES + COMPARISON_CASES}
    assert {u.case.row.name for u in USERS} == reachable
    elementwise = {name for name in reachable if is_elementwise(OPS[name])}
    assert {u.case.row.name for u in GROUPS["numbers"]} == elementwise
    assert {u.case.row.name for u in GROUPS["elementwise-arrays"]} == elementwise
    assert sum(len(users) for name, (users, dtype) in CHUNKS.items() if dtype is np.float64) == len(COMPILED)


@pytest.mark.parametrize("chunk", list(CHUNKS))
def test_rows_under_numba_agree_with_numpy(chunk):
    users, dtype = CHUNKS[chunk]
    check_group(users, chunk, dtype)


@pytest.mark.parametrize("user", REFUSED, ids=lambda u: str(u.case))
def test_a_call_numba_cannot_compile_is_refused_when_the_module_is_emitted(user):
    with pytest.raises(FlatgradError, match=rf"{user.case.row.name} with .* has no numba lowering yet"):
        compiler.gradient(user.f, *user.examples(), jit="numba")
