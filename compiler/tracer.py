"""The tracer: run the user's function on stand-in values and record a forward `Graph`.

`Traced` stands in for each input. Its operators, NumPy's `__array_ufunc__` and
`__array_function__` protocols, and the `compiler.<gate>` functions record one equation per
operation, found through the op table's `operators`/`ufuncs`/`functions`/`gate` fields. Each
equation keeps the user's file:line (frame inspection), and each value the name of the local
variable it was first bound to (see `naming`).

Anything that would need the number behind a traced value (a branch, `float()`, `math.exp`)
or that has no row in the table raises a `TracingError` naming the operation, the user's
file:line and what to write instead.
"""

from __future__ import annotations

import inspect
import linecache
import os
import re
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from compiler import naming
from compiler.errors import (
    BranchOnTracedValueError,
    ConcreteValueError,
    SignatureError,
    TracingError,
    UnsupportedOperationError,
)
from compiler.ir import Const, Eqn, Graph, Loc, Var
from compiler.ops import OPS, Op

# Frames in these files are flatgrad's or NumPy's, not the user's: they neither name values
# nor locate errors. (The rest of the `compiler` package is never on the stack while the
# user's function runs, except the demo's functions, which are user code here.)
_LIBRARY_FILE = os.path.abspath(__file__)
_LIBRARY_DIRS = (os.path.dirname(os.path.abspath(np.__file__)) + os.sep, "<__array")
_NOT_A_DEPTH = 1 << 30


def _is_library(filename: str, cache: dict[str, bool] = {}) -> bool:  # noqa: B006 - a memo
    hit = cache.get(filename)
    if hit is None:
        hit = cache[filename] = filename == _LIBRARY_FILE or filename.startswith(_LIBRARY_DIRS)
    return hit


def _location(frame: types.FrameType) -> Loc:
    return Loc(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)


@dataclass
class _Value:
    shape: tuple[int, ...]
    dtype: str
    hint: str | None = None
    hint_depth: int = _NOT_A_DEPTH


class Traced:
    """A stand-in for a number during tracing. Operations on it are recorded, not computed."""

    __slots__ = ("_recorder", "_index")
    __array_priority__ = 1000.0
    __hash__ = object.__hash__  # __eq__ records a comparison, so keep identity hashing

    def __init__(self, recorder: _Recorder, index: int) -> None:
        self._recorder = recorder
        self._index = index

    @property
    def shape(self) -> tuple[int, ...]:
        return self._recorder.values[self._index].shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._recorder.values[self._index].dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"<traced {self.dtype}{list(self.shape)}>"

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Traced:
        label = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        row = _UFUNC_ROWS.get(ufunc.__name__)
        if row is None or method != "__call__":
            raise _unsupported(label)
        if kwargs:
            raise _unsupported(f"{label}(..., {', '.join(kwargs)}=...)", "pass only the operands")
        return _apply(row, inputs)

    def __array_function__(self, func: Callable, types: Any, args: tuple, kwargs: dict) -> Traced:
        label = f"np.{func.__name__}"
        row = _FUNCTION_ROWS.get(func.__name__)
        if row is None:
            raise _unsupported(label)
        if kwargs or len(args) != len(row.params):
            raise _unsupported(
                f"{label} with {len(args)} positional and {len(kwargs)} keyword arguments",
                f"call it as {label}({', '.join(row.params)})",
            )
        return _apply(row, args)

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise _unsupported(
            "converting a traced value to a NumPy array (np.array, np.asarray)",
            "keep traced values as they are and combine them with operators and NumPy functions",
        )

    def __bool__(self) -> bool:
        source = _user_source_line()
        hint = "np.where(cond, a, b) to choose between two values"
        if re.search(r"\b(max|min)\(", source):
            hint = "np.maximum(a, b) / np.minimum(a, b) instead of max() / min()"
        raise BranchOnTracedValueError(
            _at_user_line(
                f"`{source}` asks a traced value for True or False, and traced code cannot "
                f"branch on the numbers it does not have yet; write {hint}"
            )
        )

    def __float__(self) -> float:
        raise _concrete("float")

    def __int__(self) -> int:
        raise _concrete("int")

    def __index__(self) -> int:
        raise _concrete("int")

    def __complex__(self) -> complex:
        raise _concrete("complex")

    def __round__(self, *args: Any) -> Any:
        raise _unsupported("round()")

    def __len__(self) -> int:
        raise _unsupported("len() of a traced scalar")


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
    return [
        spelled[kind].format(name) for row in OPS.values() for kind, name in row.entry_points() if kind in spelled
    ]


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
    return message if frame is None else f"{display_path(frame.f_code.co_filename)}:{frame.f_lineno}: {message}"


def display_path(path: str) -> str:
    """`path` relative to the working directory when it lies below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


_UFUNC_ROWS = {u: row for row in OPS.values() for u in row.ufuncs}
_FUNCTION_ROWS = {f: row for row in OPS.values() for f in row.functions}


class _Recorder:
    """Collects values and equations while the user's function runs."""

    def __init__(self, stop_frame: types.FrameType) -> None:
        self.values: list[_Value] = []
        self.eqns: list[tuple[Op, tuple[int | Const, ...], int, Loc | None]] = []
        self._stop_frame = stop_frame

    def new_value(self, shape: tuple[int, ...], dtype: str) -> Traced:
        self.values.append(_Value(shape, dtype))
        return Traced(self, len(self.values) - 1)

    def user_frames(self) -> list[types.FrameType]:
        """The user's frames from the innermost out to the traced function's own."""
        frames = []
        frame = sys._getframe(1)
        while frame is not None and frame is not self._stop_frame:
            if not _is_library(frame.f_code.co_filename):
                frames.append(frame)
            frame = frame.f_back
        return frames

    def record(self, row: Op, operands: tuple[int | Const, ...], out: Traced) -> None:
        frames = self.user_frames()
        self.name_locals(frames)
        loc = _location(frames[0]) if frames else None
        self.eqns.append((row, operands, out._index, loc))

    def name_locals(self, frames: list[types.FrameType]) -> None:
        """Give each traced value the name of a local variable that holds it.

        An outer frame's name beats an inner one's (`h = layer(x)` names the result `h`, not the
        helper's `out`); a helper's parameters name nothing, since they only alias.
        """
        for depth, frame in enumerate(reversed(frames)):
            code = frame.f_code
            params = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount] if depth else ()
            for name, value in frame.f_locals.items():
                if type(value) is not Traced or value._recorder is not self or name in params:
                    continue
                record = self.values[value._index]
                if depth < record.hint_depth and name.isidentifier():
                    record.hint, record.hint_depth = name, depth

    def profile(self, frame: types.FrameType, event: str, arg: Any) -> None:
        """sys.setprofile hook: a returning user frame's last bindings name values too."""
        if event == "return" and not _is_library(frame.f_code.co_filename):
            frames = []
            walk: types.FrameType | None = frame
            while walk is not None and walk is not self._stop_frame:
                if not _is_library(walk.f_code.co_filename):
                    frames.append(walk)
                walk = walk.f_back
            if walk is self._stop_frame:
                self.name_locals(frames)


def _operand(recorder: _Recorder | None, value: Any) -> tuple[_Recorder | None, int | Const]:
    if isinstance(value, Traced):
        if recorder is not None and value._recorder is not recorder:
            raise TracingError(_at_user_line("values from two different traces meet in one operation"))
        return value._recorder, value._index
    if isinstance(value, (bool, np.bool_)):
        return recorder, Const(bool(value))
    if isinstance(value, (int, np.integer)):
        return recorder, Const(int(value))
    if isinstance(value, (float, np.floating)):
        return recorder, Const(float(value))
    if isinstance(value, np.ndarray) and value.shape == ():
        return _operand(recorder, value[()])
    raise _unsupported(
        f"an operand of type {type(value).__name__}",
        "only numbers and traced values can be combined (arrays arrive with array support)",
    )


def _apply(row: Op, args: tuple[Any, ...]) -> Traced:
    recorder = None
    operands = []
    for arg in args:
        recorder, operand = _operand(recorder, arg)
        operands.append(operand)
    assert recorder is not None, "an op is applied only when a traced value takes part"
    samples = [
        o.value if isinstance(o, Const) else np.ones(recorder.values[o].shape, recorder.values[o].dtype)
        for o in operands
    ]
    for param, sample in zip(row.params, samples):
        if param in row.bool_params and np.asarray(sample).dtype != bool:
            raise TracingError(
                _at_user_line(
                    f"{row.name}'s {param} must be a bool (a comparison), not {np.asarray(sample).dtype}; "
                    f"write a comparison such as `{param} != 0`"
                )
            )
    with np.errstate(all="ignore"):
        try:
            result = np.asarray(row.compute(*samples))
        except (TypeError, ValueError) as error:
            raise TracingError(_at_user_line(f"{row.name} of these operands fails in NumPy: {error}")) from None
    out = recorder.new_value(result.shape, result.dtype.name)
    recorder.record(row, tuple(operands), out)
    return out


def _operator(row: Op, reflected: bool) -> Callable[..., Traced]:
    if reflected:
        return lambda self, other: _apply(row, (other, self))
    return lambda self, *others: _apply(row, (self, *others))


for _row in OPS.values():
    for _dunder in _row.operators:
        setattr(Traced, _dunder, _operator(_row, reflected=False))
    for _dunder in _row.reflected:
        setattr(Traced, _dunder, _operator(_row, reflected=True))


def _gate(row: Op) -> Callable[..., Any]:
    def gate(*args: Any) -> Any:
        if any(isinstance(a, Traced) for a in args):
            return _apply(row, args)
        return row.compute(*args)

    gate.__name__ = gate.__qualname__ = row.name
    gate.__doc__ = (
        f"The {row.name} gate, `{row.forward}` ({row.pattern}).\n\n"
        "Works on numbers and arrays, and is recorded as one gate when traced."
    )
    return gate


GATES: dict[str, Callable[..., Any]] = {row.name: _gate(row) for row in OPS.values() if row.gate}


@dataclass(frozen=True)
class ExampleSpec:
    """What tracing needs to know of an example argument: its shape and dtype."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def differentiable(self) -> bool:
        return np.dtype(self.dtype).kind == "f"


def example_spec(name: str, value: Any) -> ExampleSpec:
    """The shape and dtype of an example argument; a clear error for anything else."""
    if isinstance(value, (bool, np.bool_)):
        raise SignatureError(f"argument {name!r} is a bool; flatgrad traces numbers")
    if isinstance(value, (int, np.integer)):
        return ExampleSpec((), "int64" if isinstance(value, int) else np.dtype(type(value)).name)
    if isinstance(value, float):
        return ExampleSpec((), "float64")
    if isinstance(value, np.floating):
        return ExampleSpec((), np.dtype(type(value)).name)
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        if value.shape != ():
            raise SignatureError(
                f"argument {name!r} is an array of shape {value.shape}; this version of flatgrad "
                "traces scalar functions only (pass a number)"
            )
        return ExampleSpec((), value.dtype.name)
    raise SignatureError(
        f"argument {name!r} is a {type(value).__name__}; flatgrad traces numbers "
        "(bind other arguments with functools.partial or a default)"
    )


def bind_arguments(fn: Callable, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The traced arguments by parameter name, in signature order."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as error:
        raise SignatureError(f"cannot read the signature of {fn!r}: {error}") from None
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise SignatureError(
                f"{_function_label(fn)} takes *{param.name}; give each input its own parameter"
            )
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise SignatureError(f"the example arguments do not fit {_function_label(fn)}: {error}") from None
    return dict(bound.arguments)


def _function_label(fn: Callable) -> str:
    return f"{getattr(fn, '__qualname__', repr(fn))}()"


def baked_constants(fn: Callable) -> tuple[tuple[str, object], ...]:
    """Numbers the function reads from its globals or closure: they are baked into the code."""
    try:
        refs = inspect.getclosurevars(fn)
    except (TypeError, ValueError):
        return ()
    found = {**refs.globals, **refs.nonlocals}
    return tuple(
        (name, value)
        for name, value in sorted(found.items())
        if isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
    )


def trace(fn: Callable, *args: Any, **kwargs: Any) -> Graph:
    """Run `fn` on stand-ins for the example arguments and return its forward graph.

    Only the examples' shapes and dtypes matter, not their values. The graph's inputs are the
    parameters in signature order, its one output the returned scalar.
    """
    arguments = bind_arguments(fn, args, kwargs)
    specs = {name: example_spec(name, value) for name, value in arguments.items()}
    recorder = _Recorder(stop_frame=sys._getframe(0))
    stand_ins = {name: recorder.new_value(spec.shape, spec.dtype) for name, spec in specs.items()}
    previous_profile = sys.getprofile()
    sys.setprofile(recorder.profile)
    try:
        result = fn(**stand_ins) if _all_keyword_safe(fn) else fn(*stand_ins.values())
    finally:
        sys.setprofile(previous_profile)
    output = _check_output(fn, recorder, result, stand_ins)
    return _build_graph(recorder, list(stand_ins), output, baked_constants(fn))


def _all_keyword_safe(fn: Callable) -> bool:
    params = inspect.signature(fn).parameters.values()
    return not any(p.kind is p.POSITIONAL_ONLY for p in params)


def _check_output(fn: Callable, recorder: _Recorder, result: Any, inputs: dict[str, Traced]) -> int:
    label = _function_label(fn)
    if not isinstance(result, Traced) or result._recorder is not recorder:
        if isinstance(result, (tuple, list, dict)):
            raise SignatureError(f"{label} returns a {type(result).__name__}; it must return one scalar")
        raise SignatureError(
            f"{label} returns {result!r}, which does not depend on its inputs; "
            "there is no gradient to compute"
        )
    value = recorder.values[result._index]
    if value.shape != ():
        raise SignatureError(f"{label} returns an array of shape {value.shape}; it must return a scalar")
    if np.dtype(value.dtype).kind != "f":
        raise SignatureError(f"{label} returns a value of dtype {value.dtype}; it must return a float scalar")
    if result._index < len(inputs):  # the output is an input itself: copy it into a gate
        result = _apply(OPS["pos"], (result,))
    return result._index


def _build_graph(
    recorder: _Recorder, params: list[str], output: int, constants: tuple[tuple[str, object], ...]
) -> Graph:
    n_inputs = len(params)
    produced = [out for _, _, out, _ in recorder.eqns]
    hints = [recorder.values[i].hint for i in produced]
    input_names, value_names = naming.forward_names(params, hints, produced.index(output))
    names = dict(zip(range(n_inputs), input_names)) | dict(zip(produced, value_names))
    variables = {
        index: Var(names[index], recorder.values[index].shape, recorder.values[index].dtype)
        for index in names
    }

    def atom(operand: int | Const) -> Var | Const:
        return operand if isinstance(operand, Const) else variables[operand]

    eqns = tuple(
        Eqn(row.name, tuple(atom(o) for o in operands), variables[out], loc=loc)
        for row, operands, out, loc in recorder.eqns
    )
    return Graph(tuple(variables[i] for i in range(n_inputs)), eqns, (variables[output],), constants=constants)
