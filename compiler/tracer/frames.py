"""Where the user's code is: which frames are the user's, the line an error names, and the
errors that say what to write instead."""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import linecache
import os
import re
import sys
import types

import numpy as np

from compiler import ops
from compiler.errors import (
    ConcreteValueError,
    UnsupportedOperationError,
)
from compiler.files import display_path
from compiler.ops import OPS

# Frames in these files are flatgrad's, NumPy's or the standard library's, not the user's: they neither name values
# nor locate errors. (Of the rest of the `compiler` package only the op table is on the stack
# while the user's function runs; the demo's functions are user code here.)
_TRACER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep  # the tracer's own files
_OP_TABLE = os.path.abspath(ops.__file__)  # its rows' `normalize` and `compute` run while tracing
# SciPy's functions are library code too, found without importing SciPy (slow to import).
_SCIPY_SPEC = importlib.util.find_spec("scipy")
_SCIPY_DIR = None if _SCIPY_SPEC is None or not _SCIPY_SPEC.origin else os.path.dirname(_SCIPY_SPEC.origin) + os.sep
_LIBRARY_DIRS = (
    os.path.dirname(os.path.abspath(np.__file__)) + os.sep,
    os.path.dirname(os.path.abspath(inspect.__file__)) + os.sep,  # the standard library
    "<__array",
    _OP_TABLE,
) + ((_SCIPY_DIR,) if _SCIPY_DIR else ())


_library_files: dict[str, bool] = {}  # a memo of _is_library, which the tracer asks at every op


def _is_library(filename: str) -> bool:
    hit = _library_files.get(filename)
    if hit is None:
        hit = _library_files[filename] = filename.startswith(_TRACER_DIR) or filename.startswith(_LIBRARY_DIRS)
    return hit


def _concrete(kind: str) -> ConcreteValueError:
    source = _user_source_line()
    called = re.search(r"\bmath\.(\w+)", source)
    if called:
        fn = called.group(1)
        replacement = {"fabs": "abs", "pow": "power"}.get(fn, fn)
        message = (
            f"math.{fn}() needs a plain number, but gets a traced value in `{source}`; "
            f"write np.{replacement}(...), which flatgrad traces"
        )
    else:
        message = (
            f"{kind}() of a traced value in `{source}` would freeze it into a constant and cut "
            "its gradient; use the value as it is (it already behaves as a number)"
        )
    return ConcreteValueError(_at_user_line(message))


def _unsupported(what: str, instead: str | None = None) -> UnsupportedOperationError:
    if instead is None:
        instead = "write it with the arithmetic and comparison operators or " + ", ".join(supported_operations())
    return UnsupportedOperationError(
        _at_user_line(f"{what} has no rule in flatgrad's op table; {instead}")
    )


def supported_operations() -> list[str]:
    """The NumPy functions and gates user code may call on traced values, as it spells them."""
    spelled = {"ufunc": "np.{}", "function": "np.{}", "gate": "compiler.{}"}
    names = (spelled[kind].format(name) for row in OPS.values() for kind, name in row.entry_points() if kind in spelled)
    return list(dict.fromkeys(names))  # rows that share an entry point list it once


def _innermost_user_frame() -> types.FrameType | None:
    frame = sys._getframe(1)
    while frame is not None and _is_library(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def _user_source_line() -> str:
    frame = _innermost_user_frame()
    if frame is None:
        return "?"
    return linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip() or "?"


def _at_user_line(message: str) -> str:
    frame = _innermost_user_frame()
    if message and _SCIPY_DIR:
        message = _in_scipy(frame, message)
    return message if frame is None else f"{display_path(frame.f_code.co_filename)}:{frame.f_lineno}: {message}"


# What to write instead of a SciPy function, by its public name.
_SCIPY_INSTEAD = {
    "scipy.special.logsumexp": "for log-sum-exp write `m = np.max(x)` and `m + np.log(np.sum(np.exp(x - m)))` "
    "(optimize=True fuses it into one stable gate)",
    "scipy.special.softmax": "write compiler.softmax(x, axis)",
}


def _in_scipy(user: types.FrameType | None, message: str) -> str:
    """`message`, or, where the user's code called a SciPy function that met the traced value,
    a message that names it: SciPy's functions do not dispatch to traced values as NumPy's do,
    they convert them, so their failures say little about the user's code."""
    outermost = None
    frame = sys._getframe(2)
    while frame is not None and frame is not user:
        if frame.f_code.co_filename.startswith(_SCIPY_DIR):  # type: ignore[arg-type]
            outermost = frame
        frame = frame.f_back
    if outermost is None:
        return message
    module = str(outermost.f_globals.get("__name__", "scipy")).split(".")
    public = [part for part in itertools.takewhile(lambda p: not p.startswith("_"), module)]
    name = ".".join(public + [outermost.f_code.co_name])
    instead = _SCIPY_INSTEAD.get(name, "write it with NumPy functions, which flatgrad traces")
    return (
        f"{name}() is SciPy code, which flatgrad cannot trace: SciPy functions convert their arguments "
        f"to NumPy arrays rather than call flatgrad back (here: {message.split(';')[0]}); {instead}"
    )


_FLATGRAD_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _called_by_user(frame: types.FrameType) -> bool:
    """Whether the code running in `frame` is the user's: not NumPy's, the standard library's,
    nor flatgrad's own (the op table's expressions and helpers make arrays while tracing too)."""
    filename = frame.f_code.co_filename
    return not (_is_library(filename) or filename.startswith((_FLATGRAD_DIR, "<flatgrad")))
