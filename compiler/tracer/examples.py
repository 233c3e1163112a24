"""The example arguments a function is traced on: their types, how they bind to its
parameters, and the global numbers its code reads."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

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
