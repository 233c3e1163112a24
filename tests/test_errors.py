"""Bad input gets a clear FlatgradError naming the operation, the user's file:line, and the fix."""

from __future__ import annotations

import gc
import math
import weakref
from typing import Any, Callable

import numpy as np
import pytest

import compiler
from compiler.errors import (
    BranchOnTracedValueError,
    ConcreteValueError,
    LoopOnTracedValueError,
    SignatureError,
    UnsupportedOperationError,
)


def line_of(fn, marker: str) -> str:
    """`test_errors.py:N` for the line of `fn`'s source containing `marker`."""
    import inspect

    lines, start = inspect.getsourcelines(fn)
    offset = next(i for i, line in enumerate(lines) if marker in line)
    return f"test_errors.py:{start + offset}"


def branch(x):
    while x > 0:  # BRANCH: a trip count that depends on the value
        x = x - 1.0
    return x


def builtin_max(x, y):
    return np.sum(max(x, y))  # MAX: of two arrays, Python's max asks for one bool


def to_float(x):
    return float(x) * 2.0  # FLOAT


def to_int(x):
    return x * int(x)  # INT


def uses_math(x):
    return math.exp(x)  # MATH


def uses_sum(x):
    return np.fft.fft(x)  # SUM


def uses_spacing(x):
    return np.spacing(x)  # SPACING


def ufunc_out(x):
    return np.exp(x, dtype=np.float64)  # OUT


@pytest.mark.parametrize(
    "fn, marker, error, fix",
    [
        (branch, "BRANCH", LoopOnTracedValueError, "for _ in range(50):"),
        (builtin_max, "MAX", BranchOnTracedValueError, "np.maximum"),
        (to_float, "FLOAT", ConcreteValueError, "float()"),
        (to_int, "INT", ConcreteValueError, "int()"),
        (uses_math, "MATH", ConcreteValueError, "np.exp"),
        (uses_sum, "SUM", UnsupportedOperationError, "np.fft"),
        (uses_spacing, "SPACING", UnsupportedOperationError, "np.spacing"),
        (ufunc_out, "OUT", UnsupportedOperationError, "dtype="),
    ],
    ids=lambda p: getattr(p, "__name__", None) if callable(p) else None,
)
def test_tracing_errors_name_the_line_and_the_fix(fn, marker, error, fix):
    with pytest.raises(error) as raised:
        compiler.gradient(fn, *([np.ones(3), np.ones(3)] if fn is builtin_max else [1.0]))
    message = str(raised.value)
    assert isinstance(raised.value, compiler.FlatgradError)
    assert line_of(fn, marker) in message
    assert fix in message


def test_unsupported_lists_what_is_supported():
    with pytest.raises(UnsupportedOperationError, match="np.exp"):
        compiler.gradient(uses_spacing, 1.0)


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (lambda x: {"x": x}, (1.0,), "returns a dict; return one value or a tuple of values"),
        (lambda x: (x * 2, (x, x)), (1.0,), r"returns a tuple as its output 1 \(a cache\?\); return the outputs"),
        (lambda x: 3.0, (1.0,), "does not depend on its inputs"),
        (lambda x: x > 1.0, (1.0,), "must return a float scalar"),
        (lambda x: x * 2.0, ("a",), "flatgrad traces numbers"),
        (lambda x: x * 2.0, (True,), "is a bool"),
        (lambda x: (x, 1.0), (1.0,), "returns 1.0 as its output 1, which does not depend on its inputs"),
        (lambda x: x * 2.0, (1.0, 2.0), "do not fit"),
        (lambda *xs: xs[0], (1.0,), "give each input its own parameter"),
        (lambda n: n * 0.5, (3,), "no float input"),
        (lambda n: n * 2, (3,), "dtype int64"),
    ],
)
def test_signature_errors(fn, args, match):
    with pytest.raises(SignatureError, match=match):
        compiler.gradient(fn, *args)


def test_bad_jit_backend():
    with pytest.raises(compiler.FlatgradError, match="not a backend"):
        compiler.gradient(lambda x: x * x, 1.0, jit="cuda")


TABLE = np.linspace(0.0, 1.0, 5)  # an array made outside the traced function


def test_an_array_from_outside_indexed_by_a_traced_index_is_refused_with_the_fix():
    with pytest.raises(UnsupportedOperationError, match=r"index np\.asarray\(A\) inside the function"):
        compiler.gradient(lambda x, i: x * TABLE[i].sum(), 1.0, np.array([0, 3]))
    prog = compiler.gradient(lambda x, i: x * np.asarray(TABLE)[i].sum(), 1.0, np.array([0, 3]))  # the fix
    assert prog.grad(1.0, np.array([1, 4])) == (TABLE[1] + TABLE[4],)


def _recorded_then(error: Callable[[Any], Any], seen: list) -> Callable[[Any], Any]:
    """A function that notes (a weak reference to) the tracer's recorder, then fails as `error`."""

    def f(x):
        seen.append(weakref.ref(x._recorder))
        return error(x)

    return f


@pytest.mark.parametrize("error", [branch, lambda x: {"x": x}], ids=["while-running", "after-returning"])
def test_errors_leave_no_trace_behind(error):
    """The recorder holds the tracing frame and the user's frames, which hold it: on an error
    too, the tracer lets go of them, so what it recorded is freed at once, by reference counting
    (flatgrad pauses the cycle collector while it builds), not at the collector's next run."""
    seen: list = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(compiler.FlatgradError) as raised:
            compiler.gradient(_recorded_then(error, seen), 1.0)
        del raised  # its traceback holds the frames
        assert seen and seen[0]() is None, "a reference cycle keeps the recorder alive"
    finally:
        if was_enabled:
            gc.enable()


def test_wrt_written_as_the_command_lines_list_says_to_pass_a_tuple():
    with pytest.raises(compiler.FlatgradError, match=r"wrt=\('w0', 'x0'\)"):
        compiler.gradient(lambda w0, x0: w0 * x0, 1.0, 2.0, wrt="w0,x0")
    with pytest.raises(compiler.FlatgradError, match="is not a backend"):
        compiler.grad(lambda x: x * x, jit="cuda")  # checked when the callable is made, before any call


def padded(x, pad):
    return np.sum(np.pad(x, ((pad, pad),)))


def test_an_error_inside_an_op_rows_own_code_names_the_users_line():
    """np.pad's row works out its widths while tracing; a traced width fails there, and the
    error names the user's line, not the op table's."""
    with pytest.raises(compiler.FlatgradError, match=r"^tests/test_errors.py:\d+: converting a traced value"):
        compiler.gradient(padded, np.ones(3), 1.0)
