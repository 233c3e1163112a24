"""The example arguments a function is traced on: their types, how they bind to its
parameters, and the global numbers its code reads."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from compiler.errors import (
    SignatureError,
)


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
        raise SignatureError(f"argument {name!r} is a bool; flatgrad traces numbers and arrays")
    if isinstance(value, int):
        return ExampleSpec((), "int64")
    if isinstance(value, float):
        return ExampleSpec((), "float64")
    if isinstance(value, (np.ndarray, np.number)) and np.asarray(value).dtype.kind in "fiu":
        return ExampleSpec(tuple(np.shape(value)), np.asarray(value).dtype.name)
    if _comparable(value):  # a setting the code reads (a course's conv_param, a mode string)
        raise SignatureError(
            f"argument {name!r} is a {type(value).__name__}; flatgrad traces numbers and numeric arrays: "
            f'for a setting the code reads, declare it static=("{name}",) (--static {name}), which bakes it in'
        )
    raise SignatureError(
        f"argument {name!r} is a {type(value).__name__}; flatgrad traces numbers and numeric arrays "
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


def static_values(fn: Callable, arguments: dict[str, Any], static: Sequence[str]) -> dict[str, Any]:
    """The example values of the parameters named in `static`, checked: each names a parameter
    and holds a value the emitted code can compare with (a number, a string, None, or a tuple
    or dict of them), not an array."""
    if isinstance(static, str):
        static = tuple(n.strip() for n in static.split(","))
    fixed: dict[str, Any] = {}
    for name in static:
        if name not in arguments:
            raise SignatureError(
                f"static names {name!r}, which is not a parameter of {_function_label(fn)}: {list(arguments)}"
            )
        value = arguments[name]
        if not _comparable(value):
            raise SignatureError(
                f"static parameter {name!r} is a {type(value).__name__}; a static value is a number, a string, "
                "None or a tuple or dict of them, which the module compares each call's with (pass an array as "
                "an input instead)"
            )
        fixed[name] = _plain(value)
    return fixed


def _comparable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, np.bool_, np.integer, np.floating)):
        return True
    if isinstance(value, tuple):
        return all(_comparable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _comparable(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    """A static value as Python writes it: NumPy scalars as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def static_dtype(value: Any) -> str:
    """The dtype a static value's input is listed with: a number's, else `object`."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "object"


def integer_examples_hint(arguments: dict[str, Any]) -> str:
    """For an error about a function with no float: a hint naming its integer scalar examples
    (the lecture's `-2, 5, -4` typed as ints) and how to write them as floats; else ''."""
    integers = [
        (name, value)
        for name, value in arguments.items()
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    ]
    if not integers:
        return ""
    given = ", ".join(f"{name}={value}" for name, value in integers)
    floats = ", ".join(f"{name}={float(value)!r}" for name, value in integers)
    return (
        f"; the examples {given} are integers, which flatgrad takes as labels and never "
        f"differentiates: for float inputs write {floats}"
    )


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
