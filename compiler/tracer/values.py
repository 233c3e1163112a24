"""Traced values and what user code does with them: the operators, ufuncs, array functions,
methods and indexing that record equations; boolean masks; arrays the function makes itself;
and the calls replaced while a trace runs (creation functions, max, min)."""

from __future__ import annotations

import builtins
import contextlib
import functools
import inspect
import re
import sys
import threading
import types
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from compiler.errors import (
    BranchOnTracedValueError,
    LoopOnTracedValueError,
    TracingError,
    UndeclaredStaticError,
    UnsupportedAttributeError,
    UnsupportedOperationError,
)
from compiler.ir import MEMO_LIMIT, Const, Loc, dtype_name, stand_in
from compiler.ops import INDEX_PARAMS, OPERATOR_SYMBOLS, OPS, UNARY_OPERATORS, IndexOperand, Op
from compiler.tracer.frames import (
    _at_user_line,
    _called_by_user,
    _concrete,
    _innermost_user_frame,
    _is_library,
    _unsupported,
    _user_source_line,
    supported_operations,
)


class Traced:
    """A stand-in for a number during tracing. Operations on it are recorded, not computed."""

    __slots__ = ("_recorder", "_index", "_base", "_base_version", "_version", "_updated_at")
    __array_priority__ = 1000.0
    __hash__ = object.__hash__  # __eq__ records a comparison, so keep identity hashing

    def __init__(self, recorder: _Recorder, index: int, base: Traced | None = None) -> None:
        self._recorder = recorder
        self._index = index
        # A view (slice, .T, reshape) remembers its base and the base's version when taken:
        # an in-place update of the base makes the view stale, and using it is an error.
        self._base = base
        self._base_version = base._version if base is not None else 0
        self._version = 0
        self._updated_at = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return self._recorder.types[self._index][0]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._recorder.types[self._index][1])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"<traced {self.dtype}{list(self.shape)}>"

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Traced:
        if method != "__call__":
            raise _unsupported(f"np.{ufunc.__name__}.{method}")
        if kwargs:
            raise _unsupported(f"np.{ufunc.__name__}(..., {', '.join(kwargs)}=...)", "pass only the operands")
        row = _PLAIN_ROWS.get(("ufunc", ufunc.__name__))
        if row is not None and len(inputs) == len(row.operands):
            return _apply(row, inputs, {}, sys._getframe(1))
        return _call("ufunc", ufunc.__name__, inputs, {})

    def __array_function__(self, func: Callable, types: Any, args: tuple, kwargs: dict) -> Any:
        facts = _TYPE_FACTS.get(func)
        if facts is not None:  # np.shape(x): known while tracing, a constant in the emitted code
            return facts(*args, **kwargs)
        # the op table names np.linalg's functions as user code spells them: `linalg.det`
        name = f"linalg.{func.__name__}" if func.__module__ == "numpy.linalg" else func.__name__
        return _call("function", name, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if ("method", name) in _ENTRY_ROWS:
            return lambda *args, **kwargs: _call("method", name, (self, *args), kwargs)
        if ("attribute", name) in _ENTRY_ROWS:
            return _call("attribute", name, (self,), {})
        if name.startswith("__"):  # a protocol NumPy or Python probes for: absent
            raise AttributeError(f"traced values have no attribute {name!r}")
        if hasattr(np.ndarray, name):
            raise UnsupportedAttributeError(_unsupported(f"the ndarray attribute .{name}").args[0])
        raise UnsupportedAttributeError(
            _at_user_line(f"traced values are NumPy arrays and numbers, which have no attribute .{name}")
        )

    def __getitem__(self, index: Any) -> Traced:
        return _read_index(self, index)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._update(_write_index(self, index, value))

    def _update(self, result: Traced) -> Traced:
        """Rebind this array to `result`: an in-place update traced as a new value."""
        if self._base is not None:
            raise TracingError(
                _at_user_line(
                    "writing into a view (a slice, .T or reshape of another array) cannot be traced: "
                    "the write would have to reach the array it views; copy it first (`v = a[...].copy()`) "
                    "or write into the array itself"
                )
            )
        if result.shape != self.shape:
            raise TracingError(
                _at_user_line(f"an in-place update would change shape {self.shape} to {result.shape}")
            )
        self._index = result._index
        self._version += 1
        self._updated_at = _at_user_line("").rstrip(": ")
        return self

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise _unsupported(
            "converting a traced value to a NumPy array (indexing or writing into an array made outside "
            "the function with a traced index or value, or a NumPy call that needs the numbers)",
            "arrays made inside the function take traced indices and values (np.eye(C)[y], out[i] = a): "
            "for an array from outside, index np.asarray(A) inside the function, or pass A as an input",
        )

    def __bool__(self) -> bool:
        """A branch on this value (`if`, `and`, `x if c else y`): the way this run of the trace
        takes (see `_Recorder.decide`)."""
        return self._recorder.decide(self)

    def __float__(self) -> float:
        raise _concrete("float")

    def __int__(self) -> int:  # int(x) of a float is arithmetic: only an integer's is a count
        raise _undeclared_static(self, integers_only=True) or _concrete("int")

    def __index__(self) -> int:  # range(n), a slice bound: only a count will do
        raise _undeclared_static(self) or _concrete("int")

    def __iter__(self) -> Any:
        """`for row in x`, as NumPy iterates: x[0], x[1], ... (the length is known)."""
        if not self.shape:
            raise _unsupported("iterating over a traced number", "iterate over an array")
        return (self[i] for i in range(self.shape[0]))

    def __complex__(self) -> complex:
        raise _concrete("complex")

    def __round__(self, *args: Any) -> Any:
        raise _unsupported("round()")

    def __len__(self) -> int:
        if not self.shape:
            raise _unsupported("len() of a traced scalar")
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def _undeclared_static(value: Traced, integers_only: bool = False) -> UndeclaredStaticError | None:
    """Where user code needs a Python int (`range(n)`, `int(n)`, a slice bound) of a value
    computed from scalar arguments (`integers_only`: integer ones): the error that says to
    declare them static."""
    recorder = value._recorder
    names = recorder.scalar_arguments_of(value._index, integers_only)
    if not names:
        return None
    listed = ", ".join(f'"{name}"' for name in names)
    which = "argument " + " and ".join(names) if len(names) == 1 else "arguments " + ", ".join(names)
    return UndeclaredStaticError(
        _at_user_line(
            f"`{_user_source_line()}` needs the {which} as a Python int (a count, an index, a "
            f"slice bound), but arguments are traced; declare {'it' if len(names) == 1 else 'them'} static: "
            f"compiler.gradient(f, ..., static=({listed},)) (on the command line --static {','.join(names)}) "
            "bakes the value in and checks it at each call"
        )
    )


def _size(x: Any, axis: int | None = None) -> int:
    shape = _shape(x)
    return int(np.prod(shape)) if axis is None else shape[axis]


# NumPy functions that ask only for a traced value's type, which the trace knows.
_TYPE_FACTS: dict[Callable, Callable] = {
    np.shape: lambda x: _shape(x),  # (defined below)
    np.ndim: lambda x: len(_shape(x)),
    np.size: _size,
    np.result_type: lambda *values: np.result_type(*(v.dtype if isinstance(v, Traced) else v for v in values)),
}


# Every (kind, name) user code reaches, with its rows: several rows share an entry point when
# `Op.when` tells them apart (np.sum with and without an axis, `@` by operand rank, indexing).
_ENTRY_ROWS: dict[tuple[str, str], list[Op]] = {}
for _row in OPS.values():
    for _entry in _row.entry_points():
        _ENTRY_ROWS.setdefault(_entry, []).append(_row)

_LABELS = {"ufunc": "np.{}", "function": "np.{}", "method": ".{}()", "attribute": ".{}", "gate": "compiler.{}"}


def _label(kind: str, name: str) -> str:
    """An entry point as user code spells it, for error messages: `np.exp`, `.sum()`."""
    return _LABELS.get(kind, "{}").format(name)


def _shape(value: Any) -> tuple[int, ...]:
    """np.shape(value), without NumPy's dispatch for the common operands (numbers, traced values)."""
    if isinstance(value, (Traced, Made)):
        return value.shape
    if isinstance(value, (int, float)):
        return ()
    return np.shape(value)


def _any_traced(values: tuple) -> bool:
    for value in values:
        if isinstance(value, Traced) or type(value) is Made and type(value._value) is Traced:
            return True
    return False


@functools.lru_cache(maxsize=None)
def _signature(text: str) -> inspect.Signature:
    namespace: dict[str, Any] = {}
    exec(f"def _({text}): pass", namespace)  # the table's own signatures, never user input
    return inspect.signature(namespace["_"])


def _call(kind: str, name: str, args: tuple, kwargs: dict, static: dict | None = None) -> Traced:
    """Record the row behind entry point (kind, name) applied to these arguments.

    Every entry point (an operator, `__array_ufunc__`, a gate, ...) calls this directly.
    """
    rows = _ENTRY_ROWS.get((kind, name))
    if rows is None:
        raise _unsupported(_label(kind, name))
    first = rows[0]
    if static is None and not kwargs and not first.static and len(args) == len(first.operands):
        static = {}  # operands only, in order: nothing to bind (the common case, kept fast)
    if static is None:
        label = _label(kind, name)
        text = (first.method_signature if kind == "method" else None) or first.signature or ", ".join(first.operands)
        try:
            bound = _signature(text).bind(*args, **kwargs)
        except TypeError as error:
            raise _unsupported(
                f"{label} called with these arguments ({error})", f"call it as {label}({text})"
            ) from None
        bound.apply_defaults()
        operands, static = _bound_operands(first, label, bound.arguments)
    else:
        operands = args
    if len(rows) == 1 and first.when is None and first.normalize is None:
        row = first  # the one row, for any operands: choosing it needs no shapes (the common case)
    else:
        row, static = _choose_row(kind, name, rows, operands, static)
    if not _any_traced(operands):  # a gate on plain numbers
        return row.compute(*_unmade(operands), **static)
    if row.splits:  # np.split: a list of parts, each an equation of its own
        return [_apply(row, operands, {**static, "index": part}, sys._getframe(2)) for part in static["index"]]
    # two frames up is the code that used the entry point: the search for the user's frames
    # starts there, past the tracer's own (which would each need a frame object made)
    return _apply(row, operands, static, sys._getframe(2))


def _bound_operands(row: Op, label: str, arguments: dict) -> tuple[tuple, dict]:
    """The operands and the static values of a call, out of its bound arguments.

    A static the signature does not name is derived by `normalize` (None until then). A row that
    `packs` takes its operands from one sequence argument (`np.concatenate([X, ones], axis=1)`).
    """
    static = {k: arguments.get(k) for k in row.static}
    if row.packs is None:
        return tuple(arguments[p] for p in row.operands), static
    parts = arguments[row.packs]
    if not isinstance(parts, (list, tuple)):
        raise _unsupported(f"{label} of one array", f"pass a list or tuple of arrays: {label}([a, b])")
    if not 0 < len(parts) <= len(row.operands):
        raise _unsupported(
            f"{label} of {len(parts)} arrays",
            f"pass 1 to {len(row.operands)} arrays, and join more in groups ({label} of the groups' results)",
        )
    return tuple(parts), static


def _choose_row(kind: str, name: str, rows: list[Op], operands: tuple, static: dict) -> tuple[Op, dict]:
    """The row that takes these operands (by their ranks and the static values), and the static
    values as it takes them."""
    first = rows[0]
    shapes = tuple([_shape(a) for a in operands])
    written = static
    if first.normalize is not None:
        try:  # an axis out of range, a split into unequal parts: what NumPy would refuse too
            static = first.normalize(shapes, dict(static))
        except (TypeError, ValueError, IndexError) as error:
            raise TracingError(_at_user_line(f"{_label(kind, name)} cannot take these arguments: {error}")) from None
    ndims = tuple([len(shape) for shape in shapes])
    for row in rows:
        if row.accepts(ndims, static):
            return row, static
    called = ", ".join([*map(str, shapes), *(f"{key}={value!r}" for key, value in written.items())])
    raise _unsupported(  # the statics as the call wrote them: a row may have marked them refused
        f"{_label(kind, name)} on operands of {', '.join(f'{n}-d' for n in ndims)} shape",
        f"this call had {called}; write it with the arithmetic and comparison operators or "
        + ", ".join(supported_operations()),
    )


def _read_index(x: Any, index: Any) -> Any:
    """`x[index]` traced: `x` a traced value, or a constant array indexed by traced arrays."""
    mask = _bool_mask(x, index)
    if isinstance(mask, Traced):
        return MaskedRead(x, mask)
    if mask is not None:  # a constant mask selects known places: their indices
        index = np.nonzero(mask)
    static, arrays = _parse_index(index)
    return _call("operator", "__getitem__", (x, *arrays), {}, {"index": static})


def _write_index(x: Any, index: Any, value: Any) -> Traced:
    """`x[index] = value` traced as a new value: `x` with `value` written in. Under a boolean
    mask of x's shape that is `np.where(mask, value, x)`, as the mask's shape is x's."""
    mask = _bool_mask(x, index)
    if mask is not None:
        if isinstance(value, MaskedRead):
            value = value.under(mask)
        elif _shape(value) != ():
            raise _unsupported(
                "writing an array under a boolean mask", "write a number, or np.where(mask, values, x) for x"
            )
        return _call("function", "where", (mask, value, x), {})
    static, arrays = _parse_index(index)
    return _call("operator", "__setitem__", (x, value, *arrays), {}, {"index": static})


def _bool_mask(x: Any, index: Any) -> Any:
    """The index as a boolean mask of x's shape (traced or constant), or None for other indices."""
    index = _unmade(index)
    if isinstance(index, (list, tuple)) or _shape(index) == ():
        return None
    if _dtype(index).kind != "b":
        return None
    if _shape(index) != _shape(x):
        raise _unsupported(
            f"a boolean mask of shape {_shape(index)} on an array of shape {_shape(x)}",
            "index with a mask of the array's own shape, or with integer arrays",
        )
    return index


def _dtype(value: Any) -> np.dtype:
    return value.dtype if isinstance(value, Traced) else np.asarray(value).dtype


class MaskedRead(np.lib.mixins.NDArrayOperatorsMixin):
    """`x[mask]` under a traced boolean mask. NumPy makes an array of the selected elements,
    whose length depends on the data, so straight-line code cannot hold it. What does not need
    that length is traced on x's own shape with the mask beside it: arithmetic with numbers
    (`x[x < 0] *= 0.01`), a write back under the same mask, and a full sum (`np.sum(x[mask])`,
    which is `np.sum(np.where(mask, x, 0))`). Anything else is refused."""

    __slots__ = ("_values", "_mask")

    def __init__(self, values: Any, mask: Traced) -> None:
        self._values, self._mask = values, mask

    def under(self, mask: Any) -> Any:
        """The values, for a write under `mask`, which must be the mask they were read under."""
        if mask is not self._mask:
            raise _masked_refusal("writing values read under one mask under another mask")
        return self._values

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        if kwargs.get("out") == (self,):  # `x[mask] *= c`: Python writes the result back under the mask
            del kwargs["out"]
        masks = {id(a._mask) for a in inputs if isinstance(a, MaskedRead)}
        elementwise = all(isinstance(a, MaskedRead) or _shape(a) == () for a in inputs)
        if method != "__call__" or kwargs or len(masks) != 1 or not elementwise:
            raise _masked_refusal(f"np.{ufunc.__name__} of it")
        return MaskedRead(ufunc(*(a._values if isinstance(a, MaskedRead) else a for a in inputs)), self._mask)

    def __array_function__(self, func: Callable, types: Any, args: tuple, kwargs: dict) -> Any:
        if func is np.sum and args == (self,) and not kwargs:
            return self.sum()
        raise _masked_refusal(f"np.{func.__name__} of it")

    def sum(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            raise _masked_refusal("a sum along an axis of it")
        return np.sum(_call("function", "where", (self._mask, self._values, 0.0), {}))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise UnsupportedAttributeError(_masked_refusal(f".{name} of it").args[0])

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise _masked_refusal("converting it to an array")

    def __len__(self) -> int:
        raise _masked_refusal("len() of it")

    def __iter__(self) -> Any:
        raise _masked_refusal("iterating over it")

    def __getitem__(self, index: Any) -> Any:
        raise _masked_refusal("indexing it")


def _masked_refusal(what: str) -> UnsupportedOperationError:
    return UnsupportedOperationError(
        _at_user_line(
            f"{what}: x[mask] under a traced boolean mask has a data-dependent length, which straight-line "
            "code cannot hold; write np.where(mask, x, 0) (its sum is np.sum(x[mask])), or x[mask] = v / "
            "x[mask] *= c to update in place"
        )
    )


def _parse_index(index: Any) -> tuple[tuple, list]:
    """A static index (slices, ints, None, ...) and the index arrays it holds, in order.

    Each array's place in the static index holds an `IndexOperand` naming the operand (i, j).
    """
    parts = index if isinstance(index, tuple) else (index,)
    static: list[Any] = []
    arrays: list[Any] = []
    for part in _unmade(parts):
        if isinstance(part, range):  # `probs[range(N), y]`, as course notes write it: np.arange(N)
            part = np.arange(part.start, part.stop, part.step)
        if isinstance(part, Traced) or isinstance(part, (list, np.ndarray)) and np.ndim(part) > 0:
            dtype = part.dtype if isinstance(part, Traced) else np.asarray(part).dtype
            if dtype.kind not in "iu":
                raise _unsupported(
                    f"indexing with a {dtype} array",
                    "index with integer arrays, slices, integers and None (a boolean mask has a "
                    "data-dependent shape: use np.where(mask, a, 0) instead)",
                )
            if len(arrays) == len(INDEX_PARAMS):
                raise _unsupported("an index with more than two index arrays")
            static.append(IndexOperand(INDEX_PARAMS[len(arrays)]))
            arrays.append(part if isinstance(part, Traced) else np.asarray(part))
        elif isinstance(part, slice):
            bounds = (part.start, part.stop, part.step)
            traced = [b for b in bounds if isinstance(b, Traced)]
            if traced:
                raise _undeclared_static(traced[0]) or _unsupported(
                    "a slice with traced bounds", "slice with Python integers"
                )
            static.append(slice(*(None if b is None else int(b) for b in bounds)))
        elif part is None or part is Ellipsis:
            static.append(part)
        elif isinstance(part, (int, np.integer)) and not isinstance(part, (bool, np.bool_)):
            static.append(int(part))
        else:
            raise _unsupported(f"an index of type {type(part).__name__}")
    return tuple(static), arrays


# A frame whose code can be suspended and resumed (a generator, a coroutine) may be called from
# elsewhere after each resumption: the user's stack above it is not fixed while it lives.
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


# One run may branch this often on traced values (an `if` in an unrolled loop, each iteration).
MAX_BRANCHES_PER_RUN = 1000


class _Recorder:
    """Collects values and equations while the user's function runs.

    Value i has the shape and dtype `types[i]` (a tuple shared by the values of one type) and,
    once bound to a local variable, `hints[i]`: that variable's name and its frame's depth.
    """

    def __init__(self, stop_frame: types.FrameType) -> None:
        self.types: list[tuple[tuple[int, ...], str]] = []
        self.hints: dict[int, tuple[str, int]] = {}
        self.eqns: list[tuple[Op, tuple[int | Const, ...], int, Loc | None, dict]] = []
        self._stop_frame: types.FrameType | None = stop_frame
        self._stack: list[tuple[types.FrameType, int]] = []  # the user's frames at the last op
        self._caller: types.FrameType | None = None  # the frame the last op's search started at
        self._locations: dict[tuple[str, int, str], Loc] = {}  # one Loc per source line
        self.inputs: list[str] = []  # the parameters' names: values 0, 1, ... are the inputs
        # Branches on traced values: the ways this run must take at its first branches (the
        # later ones take True), and each branch met: (value, way taken, where, source line).
        self.forced: tuple[bool, ...] = ()
        self.decisions: list[tuple[int, bool, Loc | None, str]] = []

    def decide(self, value: Traced) -> bool:
        """The way a branch on `value` goes in this run: the forced one, else True. Every path
        through the function is one run (see `tracer.trace_paths`)."""
        source = _user_source_line()
        if value.shape != ():
            hint = "reduce it to one number first (np.all, np.any, a sum), or write np.where(cond, a, b)"
            if re.search(r"\b(max|min)\(", source):
                hint = "write np.maximum(a, b) / np.minimum(a, b) instead of max() / min()"
            raise BranchOnTracedValueError(
                _at_user_line(
                    f"`{source}` asks an array of shape {value.shape} for True or False, which NumPy refuses "
                    f"as ambiguous; {hint} to choose element by element"
                )
            )
        if re.match(r"while\b", source):
            raise LoopOnTracedValueError(
                _at_user_line(
                    f"`{source}` repeats as long as a traced value says so, and that count depends on numbers "
                    "the trace does not have; loop a fixed number of times instead (`for _ in range(50):`, with "
                    "np.where to keep a value once it is done), or pass the count as a static argument"
                )
            )
        if len(self.decisions) >= MAX_BRANCHES_PER_RUN:
            raise LoopOnTracedValueError(
                _at_user_line(
                    f"`{source}`: one run through the function meets more than {MAX_BRANCHES_PER_RUN} branches on "
                    "traced values (a loop that stops on a value?); loop a fixed number of times, and choose "
                    "with np.where inside the loop"
                )
            )
        taken = self.forced[len(self.decisions)] if len(self.decisions) < len(self.forced) else True
        frame = _innermost_user_frame()
        self.decisions.append((value._index, taken, self._location(frame) if frame else None, source))
        return taken

    def ancestors(self, roots: Iterable[int], keep: Callable[[int], bool] = lambda value: True) -> set[int]:
        """The values `roots` are computed from, themselves included, through the values `keep`
        accepts (the others, and what only they are computed from, are left out)."""
        made = {eqn[2]: eqn[1] for eqn in self.eqns}
        seen: set[int] = set()
        todo = list(roots)
        while todo:
            value = todo.pop()
            if value in seen or not keep(value):
                continue
            seen.add(value)
            todo.extend(o for o in made.get(value, ()) if type(o) is int)
        return seen

    def scalar_arguments_of(self, index: int, integers_only: bool = False) -> list[str]:
        """The scalar inputs value `index` is computed from (or is), in parameter order."""
        seen = self.ancestors([index])
        kinds = "iu" if integers_only else "iufb"
        return [
            name for i, name in enumerate(self.inputs)
            if i in seen and self.types[i][0] == () and np.dtype(self.types[i][1]).kind in kinds
        ]

    def new_value(self, shape: tuple[int, ...], dtype: str, base: Traced | None = None) -> Traced:
        return self.new_value_of_type((shape, dtype), base)

    def new_value_of_type(self, type_: tuple[tuple[int, ...], str], base: Traced | None = None) -> Traced:
        self.types.append(type_)
        return Traced(self, len(self.types) - 1, base)

    def user_frames(self, frame: types.FrameType | None) -> list[types.FrameType]:
        """The user's frames from the innermost out to the traced function's own, searched from
        `frame` outwards."""
        frames = []
        while frame is not None and frame is not self._stop_frame:
            if not _is_library(frame.f_code.co_filename):
                frames.append(frame)
            frame = frame.f_back
        return frames

    def record(
        self, row: Op, operands: tuple[int | Const, ...], out: Traced, static: dict, caller: types.FrameType | None
    ) -> None:
        """Record an op; `caller` is a frame at or inside the innermost user frame."""
        # A frame that is still running has the same callers as at the last op, so when the
        # search starts at the same frame the user's stack stands (the common case: the same
        # code runs on), unless that frame is resumable.
        if caller is not self._caller or caller.f_code.co_flags & _RESUMABLE:
            frames = self.user_frames(caller)
            if not self._is_last_stack(frames):
                self._enter(frames)
            self._caller = caller
        stack = self._stack
        self.name_locals(stack)
        loc = self._location(stack[0][0]) if stack else None
        self.eqns.append((row, operands, out._index, loc, static))

    def _is_last_stack(self, frames: list[types.FrameType]) -> bool:
        """Whether the user's frames are the last op's (the common case: the same code runs on),
        so that no frame has returned and every depth stands."""
        if len(frames) != len(self._stack):
            return False
        for frame, (last, _) in zip(frames, self._stack):
            if frame is not last:
                return False
        return True

    def _enter(self, frames: list[types.FrameType]) -> None:
        """The user's stack changed since the last op: the frames that have returned since (or
        moved) name values by their final bindings; then remember each frame's depth."""
        depths = {id(frame): len(frames) - 1 - i for i, frame in enumerate(frames)}
        self.name_locals([(f, d) for f, d in self._stack if depths.get(id(f)) != d])
        self._stack = [(frame, depths[id(frame)]) for frame in frames]

    def _location(self, frame: types.FrameType) -> Loc:
        """Where `frame` is, as a Loc shared by every op traced at that line."""
        code = frame.f_code
        key = (code.co_filename, frame.f_lineno, code.co_name)
        loc = self._locations.get(key)
        if loc is None:
            loc = self._locations[key] = Loc(*key)
        return loc

    def release(self) -> None:
        """Drop the reference to the tracing frame (and so the cycle through it)."""
        self._stop_frame = None

    def finish(self) -> None:
        """After the function returned: the bindings its frames (and helpers') ended with."""
        self.name_locals(self._stack)
        self._stack = []
        self._caller = None

    def name_locals(self, frames: list[tuple[types.FrameType, int]]) -> None:
        """Give each traced value the name of a local variable that holds it.

        `frames` pairs each user frame with its depth (0 for the traced function). An outer
        frame's name beats an inner one's (`h = layer(x)` names the result `h`, not the helper's
        `out`); a helper's parameters name nothing, since they only alias.
        """
        hints = self.hints
        for frame, depth in frames:
            code = frame.f_code
            params = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount] if depth else ()
            for name, value in frame.f_locals.items():
                if type(value) is Made:
                    value = value._value
                if type(value) is not Traced or value._recorder is not self or name in params:
                    continue
                known = hints.get(value._index)
                if (known is None or depth < known[1]) and name.isidentifier():
                    hints[value._index] = (name, depth)


def _operand(recorder: _Recorder | None, value: Any) -> tuple[_Recorder | None, int | Const]:
    if type(value) is Made:
        value = value._value
    if isinstance(value, Traced):
        if recorder is not None and value._recorder is not recorder:
            raise TracingError(_at_user_line("values from two different traces meet in one operation"))
        base = value._base
        if base is not None and base._version != value._base_version:
            raise TracingError(
                _at_user_line(
                    f"this value is a view (a slice, .T or reshape) of an array that was updated in place "
                    f"after the view was taken (at {base._updated_at}), so in NumPy it would have changed too; "
                    "take the view after the update, or copy it first (`v = a[...].copy()`)"
                )
            )
        return value._recorder, value._index
    if isinstance(value, (bool, np.bool_)):
        return recorder, Const(bool(value))
    if isinstance(value, (int, np.integer)):
        return recorder, Const(int(value))
    if isinstance(value, (float, np.floating)):
        return recorder, Const(float(value))
    if isinstance(value, (np.ndarray, list)):
        array = np.asarray(value)
        if array.shape == ():
            return _operand(recorder, array[()])
        if array.dtype.kind in "biuf":
            return recorder, Const(array)
    raise _unsupported(
        f"an operand of type {type(value).__name__}", "combine traced values with numbers and NumPy arrays"
    )


def _sample(recorder: _Recorder, operand: int | Const) -> Any:
    """A stand-in value of the operand's shape and dtype, to work out an op's result type."""
    if isinstance(operand, Const):
        return operand.value
    return stand_in(*recorder.types[operand])


_RESULT_TYPES: dict[tuple, tuple[tuple[int, ...], str]] = {}


def _result_type(
    row: Op, recorder: _Recorder, operands: list[int | Const], static: dict
) -> tuple[tuple[int, ...], str]:
    """The shape and dtype of the op's result, worked out on stand-ins of its operands.

    Memoized by the operands' types, so an unrolled loop asks NumPy once per kind of step (and
    the values of one type share the tuple this returns)."""
    types = recorder.types
    key = [row.name, repr(static) if static else ""]
    for o in operands:
        key.append(o.key() if type(o) is Const else types[o])
    key = tuple(key)
    known = _RESULT_TYPES.get(key)
    if known is not None:
        return known
    samples = [_sample(recorder, o) for o in operands]
    for param, sample in zip(row.operands, samples):
        if param in row.bool_operands and np.asarray(sample).dtype != bool:
            raise TracingError(
                _at_user_line(
                    f"{row.name}'s {param} must be a bool (a comparison), not {np.asarray(sample).dtype}; "
                    f"write a comparison such as `{param} != 0`"
                )
            )
    with np.errstate(all="ignore"):
        try:
            result = np.asarray(row.compute(*samples, **static))
        except (TypeError, ValueError, IndexError) as error:
            raise TracingError(_at_user_line(f"{row.name} of these operands fails in NumPy: {error}")) from None
    if len(_RESULT_TYPES) > MEMO_LIMIT:
        _RESULT_TYPES.clear()
    known = _RESULT_TYPES[key] = (result.shape, dtype_name(result.dtype))
    return known


def _apply(row: Op, args: tuple[Any, ...], static: dict | None = None, caller: types.FrameType | None = None) -> Traced:
    """Record `row` applied to `args`; `caller` is where to start looking for the user's frames
    (by default, the frame that called this)."""
    static = static or {}
    recorder = None
    operands = []
    for arg in args:
        if type(arg) is Traced and arg._base is None and (recorder is None or arg._recorder is recorder):
            recorder = arg._recorder  # a traced value that is no view: the common case, kept fast
            operands.append(arg._index)
        else:
            recorder, operand = _operand(recorder, arg)
            operands.append(operand)
    assert recorder is not None, "_call computes ops without a traced operand itself"
    result_type = _result_type(row, recorder, operands, static)
    # a view shares its base's memory; a number read out of an array (x[0, 1]) is a copy
    base = args[0] if row.view and isinstance(args[0], Traced) and result_type[0] else None
    if base is not None and base._base is not None:
        base = base._base  # a view of a view views the same base
    out = recorder.new_value_of_type(result_type, base)
    recorder.record(row, tuple(operands), out, static, caller if caller is not None else sys._getframe(1))
    return out


# The entry points that take operands only and have one row whatever the operands (`*`,
# np.tanh): a call to one binds and chooses nothing, so it goes straight to `_apply`.
_PLAIN_ROWS: dict[tuple[str, str], Op] = {
    entry: rows[0]
    for entry, rows in _ENTRY_ROWS.items()
    if len(rows) == 1 and rows[0].when is None and rows[0].normalize is None and not rows[0].static
}


def _operator(kind: str, dunder: str) -> Callable[..., Traced]:
    plain = _PLAIN_ROWS.get((kind, dunder))
    if plain is not None and kind == "reflected" and len(plain.operands) == 2:
        return lambda self, other: _apply(plain, (other, self), {}, sys._getframe(1))
    if plain is not None and kind == "operator" and len(plain.operands) == 2:
        return lambda self, other: _apply(plain, (self, other), {}, sys._getframe(1))
    if plain is not None and kind == "operator" and len(plain.operands) == 1:
        return lambda self: _apply(plain, (self,), {}, sys._getframe(1))
    if kind == "reflected":
        return lambda self, other: _call(kind, dunder, (other, self), {})
    if kind == "inplace":
        # arrays are updated in place (every name for the array sees it); scalars are rebound
        def inplace(self: Traced, other: Any) -> Traced:
            result = _call(kind, dunder, (self, other), {})
            return self._update(result) if self.shape else result

        return inplace
    return lambda self, *others: _call(kind, dunder, (self, *others), {})


for (_kind, _name), _rows in _ENTRY_ROWS.items():
    if _kind in ("operator", "reflected", "inplace") and _name not in ("__getitem__", "__setitem__"):
        setattr(Traced, _name, _operator(_kind, _name))


# divmod(a, b) is the pair (a // b, a % b): two rows, not one of its own
Traced.__divmod__ = lambda self, other: (self // other, self % other)  # type: ignore[attr-defined]
Traced.__rdivmod__ = lambda self, other: (other // self, other % self)  # type: ignore[attr-defined]


def _refused_operator(symbol: str) -> Callable[..., Any]:
    def refuse(self: Traced, *other: Any) -> Any:
        raise _unsupported(f"the operator {symbol}")

    return refuse


# Python's operators that no row takes: a FlatgradError at the user's line, not Python's
# TypeError. (An augmented assignment without its own dunder falls back to the plain one.)
for _stem, _symbol in OPERATOR_SYMBOLS.items():
    for _dunder in (f"__{_stem}__",) if _stem in UNARY_OPERATORS else (f"__{_stem}__", f"__r{_stem}__"):
        if _dunder not in vars(Traced):  # (hasattr would find `type.__or__`, which makes unions)
            setattr(Traced, _dunder, _refused_operator(_symbol))


def _gate(row: Op) -> Callable[..., Any]:
    def gate(*args: Any, **kwargs: Any) -> Any:
        return _call("gate", row.name, args, kwargs)

    gate.__name__ = gate.__qualname__ = row.name
    gate.__doc__ = (
        f"The {row.name} gate, `{row.forward}` ({row.pattern}).\n\n"
        "Works on numbers and arrays, and is recorded as one gate when traced."
    )
    return gate


GATES: dict[str, Callable[..., Any]] = {row.name: _gate(row) for row in OPS.values() if row.gate}


# --- arrays the traced function makes itself ----------------------------------------------------


class Made(np.lib.mixins.NDArrayOperatorsMixin):
    """An array the traced function made itself (`np.zeros(n)`, `np.eye(C)`, `np.array([...])`):
    a constant, until a traced value is written into it or indexes it.

    NumPy's indexing never calls back into a traced index or value, so while a trace runs the
    array-creation functions hand these to the user's code instead of plain arrays (see
    `_creating`). A Made behaves as its array; `out[i] = a` with `a` traced turns it into a
    traced value, `updated(np.zeros(5), i, a)`, and `np.eye(C)[y]` with `y` traced is a gather
    from the constant, `np.eye(3)[y]`. What it computes with plain values stays plain.
    """

    __slots__ = ("_value",)
    __array_priority__ = 2000.0  # above Traced's: `made + traced` asks the Made first

    def __init__(self, value: np.ndarray) -> None:
        self._value: np.ndarray | Traced = value

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.pop("out", None)
        result = getattr(ufunc, method)(*_unmade(inputs), **kwargs)
        if out is None:
            return result
        if out != (self,):
            raise _unsupported(f"np.{ufunc.__name__}(..., out=...) into another array", "assign the result")
        self._assign(result)  # `a += b`
        return self

    def __array_function__(self, func: Callable, types: Any, args: tuple, kwargs: dict) -> Any:
        return func(*_unmade(args), **_unmade(kwargs))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if isinstance(self._value, Traced):
            return self._value.__array__()  # refused, with the reason
        return np.asarray(self._value, dtype)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._value, name)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(self._value, Traced) or _holds_traced(index):
            return _read_index(self._value, _unmade(index))
        return self._value[_unmade(index)]

    def __setitem__(self, index: Any, value: Any) -> None:
        index, value = _unmade(index), _unmade(value)
        if isinstance(self._value, Traced):
            self._value[index] = value  # the traced value's own in-place update
        elif _holds_traced(index) or _holds_traced(value):
            self._value = _write_index(self._value.copy(), index, value)
        else:
            self._value[index] = value

    def _assign(self, result: Any) -> None:
        """Take `result` as the array's new contents, as an in-place operator does."""
        if _shape(result) != self.shape:
            raise TracingError(_at_user_line(f"an in-place update would change shape {self.shape} to {_shape(result)}"))
        if isinstance(result, Traced) or isinstance(self._value, Traced):
            self._value = result
        else:
            self._value[...] = result

    def __len__(self) -> int:
        return len(self._value)

    def __iter__(self) -> Any:
        return iter(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __float__(self) -> float:
        return float(self._value)  # type: ignore[arg-type]

    def __int__(self) -> int:
        return int(self._value)  # type: ignore[arg-type]

    def __index__(self) -> int:
        return self._value.__index__()

    def __repr__(self) -> str:
        return repr(self._value)


def _unmade(value: Any) -> Any:
    """`value` with every Made in it (inside tuples, lists and dicts too) as what it holds."""
    kind = type(value)
    if kind is Made:
        return value._value
    if kind is tuple or kind is list:
        return kind(_unmade(v) for v in value)
    if kind is dict:
        return {k: _unmade(v) for k, v in value.items()}
    return value


def _holds_traced(value: Any) -> bool:
    """Whether `value` is or holds (in tuples and lists) a traced value."""
    kind = type(value)
    if kind is Traced:
        return True
    if kind is Made:
        return type(value._value) is Traced
    if kind is tuple or kind is list:
        return any(_holds_traced(v) for v in value)
    return False


def _creating(name: str) -> Callable[..., Any]:
    """What the user's `np.<name>(...)` gives while tracing: a Made, or for `np.array` of traced
    values, those values as one traced array."""

    def create(original: Callable, args: tuple, kwargs: dict) -> Any:
        if name in ("array", "asarray") and args and _holds_traced(args[0]):
            return _array_of_traced(name, args[0], kwargs)
        result = original(*_unmade(args), **_unmade(kwargs))
        return Made(result) if type(result) is np.ndarray else result

    return create


def _array_of_traced(name: str, value: Any, kwargs: dict) -> Any:
    """`np.array(value)` where value is or holds traced values: the value itself (a copy for
    np.array), or the stack of its items (`np.array([a, b, c])` of traced numbers)."""
    if kwargs:
        raise _unsupported(f"np.{name}(..., {', '.join(kwargs)}=...) of traced values", f"call np.{name}(values)")
    value = _unmade(value)
    if isinstance(value, Traced):
        return value if name == "asarray" else _call("function", "copy", (value,), {})
    items = [_array_of_traced("asarray", v, {}) if isinstance(v, (list, tuple)) else v for v in value]
    return _call("function", "stack", (items,), {})


def _extreme(pairwise: np.ufunc) -> Callable[..., Any]:
    """What the user's `max(a, b)` / `min(a, b)` (or of a list) gives while tracing, where a
    traced number is among the numbers: `np.maximum` / `np.minimum` of them in turn, which
    pick the first of tied values as Python does."""

    def extreme(original: Callable, args: tuple, kwargs: dict) -> Any:
        values = list(args[0]) if len(args) == 1 and not kwargs and hasattr(args[0], "__iter__") else args
        if kwargs or len(values) < 2 or not _holds_traced(list(values)) or any(_shape(v) != () for v in values):
            return original(values) if values is not args else original(*args, **kwargs)
        result = values[0]
        for value in values[1:]:
            result = pairwise(result, value)
        return result

    return extreme


# While a trace runs, what the user's code calls of these (module, name) goes to a handler.
_CREATION_FUNCTIONS = (
    "array", "asarray", "zeros", "ones", "empty", "full", "eye", "identity", "arange", "linspace",
    "zeros_like", "ones_like", "empty_like", "full_like",
)
_HANDLERS: dict[tuple[Any, str], Callable[..., Any]] = {
    **{(np, name): _creating(name) for name in _CREATION_FUNCTIONS},
    (builtins, "max"): _extreme(np.maximum),
    (builtins, "min"): _extreme(np.minimum),
}


class _Substitutes:
    """While any trace runs, the functions of `_HANDLERS` are replaced by wrappers that send the
    user's code running in a traced thread to their handler; every other caller (another
    thread, NumPy itself, flatgrad) gets the original function."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traces = 0
        self._local = threading.local()
        self._originals = {(module, name): getattr(module, name) for module, name in _HANDLERS}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Send the user's calls in this thread to the handlers while the block runs."""
        with self._lock:
            if self._traces == 0:
                for (module, name), original in self._originals.items():
                    setattr(module, name, self._wrapper(original, _HANDLERS[module, name]))
            self._traces += 1
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            with self._lock:
                self._traces -= 1
                if self._traces == 0:
                    for (module, name), original in self._originals.items():
                        setattr(module, name, original)

    def _wrapper(self, original: Callable, handler: Callable[..., Any]) -> Callable:
        local = self._local

        @functools.wraps(original)
        def substitute(*args: Any, **kwargs: Any) -> Any:
            if not getattr(local, "depth", 0) or not _called_by_user(sys._getframe(1)):
                return original(*args, **kwargs)
            return handler(original, args, kwargs)

        return substitute


_SUBSTITUTES = _Substitutes()
