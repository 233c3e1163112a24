"""The lines an emitted function starts with: its arguments checked against the shapes and dtypes
the module was written for, and the named sizes read from them (`N = X.shape[0]`).

A saved module is imported where flatgrad is not, so it checks its own arguments and raises a
plain `ValueError` naming the argument, what it must be and what it is. Under numba the checks
are a few integer comparisons; each array's number of axes is checked on a line of its own
first, because numba prunes a branch on `X.ndim` before it types the function, so code written
for a 2-d X is never typed for a 1-d one (which would fail to compile instead of raising).
"""

from __future__ import annotations

from typing import Sequence

from compiler.ir import Var
from compiler.sizes import Sizes


def _kind(v: Var, sizes: Sizes) -> str:
    """`float64[N, 4]`, `a float64 number`."""
    if not v.shape:
        return f"a {v.dtype} number"
    return f"{v.dtype}[{sizes.shape_text(v.name, v.shape)}]"


def _shape_tuple(v: Var, sizes: Sizes) -> str:
    axes = sizes.of(v.name) or v.shape
    return "(" + ", ".join(map(str, axes)) + ("," if len(axes) == 1 else "") + ")"


def _dtype_differs(v: Var, jit: str | None) -> str:
    # numba compares dtypes with ==, and not with != (which it does not implement)
    if jit == "numba":
        return f'not {v.name}.dtype == np.dtype("{v.dtype}")'
    return f"{v.name}.dtype != np.{v.dtype}"


def _not_a_number(v: Var, jit: str | None) -> str:
    # numba decides isinstance when it compiles, so the check costs nothing at run time
    if jit == "numba":  # where numba's float is float64 alone
        kinds = "int, float" + ("" if v.dtype in ("float64", "int64") else f", np.{v.dtype}")
        return f"not isinstance({v.name}, ({kinds}))"
    return f"not isinstance({v.name}, float) and np.ndim({v.name}) != 0"  # np.ndim costs far more than isinstance


def _raise(function: str, v: Var, sizes: Sizes, jit: str | None, where: str) -> str:
    expected = f"{function}: {v.name} must be {_kind(v, sizes)}{where}"
    if jit == "numba":  # numba formats no strings at run time; the shape goes as a second argument
        return f'raise ValueError("{expected}; it has shape", np.shape({v.name}))'
    if not v.shape:
        return f'raise ValueError(f"{expected}, not an array of shape {{np.shape({v.name})}}")'
    return f'raise ValueError(f"{expected}, not {{{v.name}.dtype}}{{list({v.name}.shape)}}")'


def _axes_check(function: str, v: Var, sizes: Sizes, jit: str | None) -> list[str]:
    """The check that comes first: an array's number of axes, or that a number is one."""
    test = f"{v.name}.ndim != {len(v.shape)}" if v.shape else _not_a_number(v, jit)
    return [f"if {test}:", "    " + _raise(function, v, sizes, jit, "")]


def definitions(sizes: Sizes, available: Sequence[str]) -> tuple[list[str], list[str]]:
    """The lines reading each named size from the first of `available` that has it
    (`N = X.shape[0]`), and the named sizes none of them has."""
    lines, missing = [], []
    for symbol in sizes.symbols:
        source = next(
            ((name, axes.index(symbol)) for name in available if symbol in (axes := sizes.of(name) or ())),
            None,
        )
        if source is None:
            missing.append(symbol)
        else:
            lines.append(f"{symbol} = {source[0]}.shape[{source[1]}]")
    return lines, missing


CHECK = "check_arguments"  # the emitted function that checks the inputs


def check_body(function: str, inputs: Sequence[Var], sizes: Sizes, jit: str | None) -> tuple[str, ...]:
    """The body of `check_arguments`: every input checked, the named sizes returned."""
    lines = [line for v in inputs for line in _axes_check(function, v, sizes, jit)]
    defined, _ = definitions(sizes, [v.name for v in inputs])
    lines += defined
    origin = sizes.defining()
    for v in inputs:
        if not v.shape:
            continue
        named = sorted({a for a in sizes.of(v.name) or () if isinstance(a, str) and origin[a][0] != v.name})
        where = "".join(f" with {a} = {origin[a][0]}.shape[{origin[a][1]}]" for a in named)
        lines += [
            f"if {v.name}.shape != {_shape_tuple(v, sizes)} or {_dtype_differs(v, jit)}:",
            "    " + _raise(function, v, sizes, jit, where),
        ]
    if sizes.symbols:
        lines.append("return " + ", ".join(sizes.symbols))
    return tuple(lines)


def check_doc(function: str, sizes: Sizes) -> str:
    """The docstring of `check_arguments`."""
    named = f"; return {' and '.join(sizes.symbols)}" if sizes.symbols else ""
    return f"Raise ValueError unless the arguments have the shapes and dtypes {function}'s code is written for{named}."


def guard_lines(function: str, inputs: Sequence[Var], sizes: Sizes, jit: str | None) -> tuple[str, ...]:
    """The lines a function taking `inputs` starts with: the call of `check_arguments`, after,
    under numba, each array's number of axes (see the module's docstring)."""
    arrays = [v for v in inputs if v.shape] if jit == "numba" else []
    lines = [line for v in arrays for line in _axes_check(function, v, sizes, jit)]
    call = f"{CHECK}({', '.join(v.name for v in inputs)})"
    lines.append(f"{', '.join(sizes.symbols)} = {call}" if sizes.symbols else call)
    return tuple(lines)
