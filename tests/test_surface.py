"""Nothing crashes: every NumPy function, `np.linalg` function, ndarray method and attribute,
called on a traced value the way it works on a plain array, either traces or raises a
FlatgradError. A raw AttributeError, TypeError or IndexError from inside flatgrad is a bug."""

from __future__ import annotations

import builtins
import operator
import warnings
from typing import Callable, Iterator

import numpy as np
import pytest

import compiler
from compiler.errors import FlatgradError

# What must not run at all, even on a plain array: it writes files, changes NumPy's global
# state, or starts NumPy's own test runner.
_NOT_CALLED = ("_", "set", "save", "load", "show", "info", "test", "get", "seterr", "from", "memmap", "genfromtxt",
               "recfrom", "print", "typename", "who", "source", "lookfor", "deprecate", "disp")
_OPERATORS = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "lshift", "rshift", "and_", "or_",
              "xor", "lt", "le", "eq", "ne", "ge", "gt", "neg", "pos", "invert", "abs", "not_")
_BUILTINS = ("abs", "round", "divmod", "len", "sum", "max", "min", "bool", "float", "int", "complex", "list", "iter",
             "hash", "repr", "str", "sorted")


def _calls() -> Iterator[tuple[str, Callable]]:
    """(label, call) for every entry point: called with one operand, and with two."""

    def unary(fn: Callable) -> Callable:
        return lambda x: fn(x)

    def binary(fn: Callable) -> Callable:
        return lambda x: fn(x, x)

    for module, prefix in ((np, "np."), (np.linalg, "np.linalg.")):
        for name in sorted(dir(module)):
            fn = getattr(module, name)
            if name.startswith(_NOT_CALLED) or not callable(fn) or isinstance(fn, type):
                continue
            yield f"{prefix}{name}(x)", unary(fn)
            yield f"{prefix}{name}(x, x)", binary(fn)
    for name in sorted(dir(np.ndarray)):
        if name.startswith("_") or name in ("tofile", "dump", "dumps"):
            continue
        if callable(getattr(np.ndarray, name)):
            yield f"x.{name}()", (lambda name: lambda x: getattr(x, name)())(name)
            yield f"x.{name}(x)", (lambda name: lambda x: getattr(x, name)(x))(name)
        else:
            yield f"x.{name}", (lambda name: lambda x: getattr(x, name))(name)
    for name in _OPERATORS:
        fn = getattr(operator, name)
        yield f"operator.{name}", unary(fn)
        yield f"operator.{name}", binary(fn)
    for name in _BUILTINS:
        fn = getattr(builtins, name)
        yield f"{name}(x)", unary(fn)
        yield f"{name}(x, x)", binary(fn)


def _raw_exceptions(example: np.ndarray | float) -> tuple[list[str], int]:
    """Each call that works on the plain example but raises something other than a FlatgradError
    while traced; and how many calls were traced."""
    offenders, traced = [], 0
    for label, call in _calls():
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                call(np.copy(example))
            except Exception:  # wrong in NumPy too: nothing flatgrad must answer
                continue
            traced += 1
            try:
                compiler.trace(call, example)
            except FlatgradError:
                pass
            except Exception as error:
                offenders.append(f"{label}: {type(error).__name__}: {error}")
    return offenders, traced


@pytest.mark.parametrize(
    "example",
    [0.25, np.linspace(0.1, 0.9, 4), np.linspace(0.1, 0.9, 9).reshape(3, 3), np.arange(4)],
    ids=["scalar", "vector", "matrix", "integers"],
)
def test_every_entry_point_traces_or_raises_a_flatgrad_error(example):
    offenders, traced = _raw_exceptions(example)
    assert traced > 300  # the walk reaches the surface: most calls work on the plain example
    assert not offenders, "\n".join(offenders)
