"""The lines an emitted function starts with: its arguments checked against the shapes and dtypes
the module was written for, and the named sizes read from them (`N = X.shape[0]`).

A saved module is imported where flatgrad is not, so it checks its own arguments and raises a
plain `ValueError` naming the argument, what it must be and what it is. Under numba the checks
are a few integer comparisons. numba compiles a function anew for each new combination of
argument types, and code written for a float64 matrix fails to compile (a TypingError) for an
int64 vector before any check runs; so a numba module also runs `check_arguments` in Python
before each such compile (`compile_check`), which costs the calls that need no compile nothing.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from compiler.ir import Var
from compiler.sizes import NO_SIZES, Sizes


def _kind(v: Var, sizes: Sizes) -> str:
    """`float64[N, 4]`, `a float64 number`."""
    if not v.shape:
        return f"{'an' if v.dtype[0] in 'aeiou' else 'a'} {v.dtype} number"
    return f"{v.dtype}[{sizes.shape_text(v.name, v.shape)}]"


def shape_literal(axes: Sequence[object]) -> str:
    """A shape as Python writes the tuple: `(N, 4)`, `(3,)`, `()`."""
    return "(" + ", ".join(map(str, axes)) + ("," if len(axes) == 1 else "") + ")"


def _dtype_differs(v: Var, jit: str | None) -> str:
    # numba compares dtypes with ==, and not with != (which it does not implement); np.asarray
    # of an array is the array, and lets the Python check (compile_check) meet a number
    if jit == "numba":
        return f'not np.asarray({v.name}).dtype == np.dtype("{v.dtype}")'
    return f"{v.name}.dtype != np.{v.dtype}"


def _not_a_number(v: Var, jit: str | None) -> str:
    # numba decides isinstance when it compiles, so the check costs nothing at run time
    if jit == "numba":  # where numba's float is float64 alone
        kinds = "int, float" + ("" if v.dtype in ("float64", "int64") else f", np.{v.dtype}")
        return f"not isinstance({v.name}, ({kinds}))"
    return f"not isinstance({v.name}, float) and np.ndim({v.name}) != 0"  # np.ndim costs far more than isinstance


def _ndim(v: Var, jit: str | None) -> str:
    # a list or a number has no ndim; numba, which has no getattr, types np.asarray of an array
    # as the array itself (and its Python check, see compile_check, meets lists and numbers)
    if jit == "numba":
        return f"np.asarray({v.name}).ndim"
    return f'getattr({v.name}, "ndim", None)'


def _shape_of(name: str, jit: str | None) -> str:
    # under numba, np.shape lets the Python check (compile_check) meet a list
    return f"np.shape({name})" if jit == "numba" else f"{name}.shape"


def _raise(function: str, v: Var, sizes: Sizes, jit: str | None, where: str) -> str:
    expected = f"{function}: {v.name} must be {_kind(v, sizes)}{where}"
    if jit == "numba":  # numba formats no strings at run time; the shape goes as a second argument
        return f'raise ValueError("{expected}; it has shape", np.shape({v.name}))'
    if not v.shape:
        return f'raise ValueError(f"{expected}, not an array of shape {{np.shape({v.name})}}")'
    # the type too: a list or a number of the right shape is no array
    actual = f"{{type({v.name}).__name__}} {{np.asarray({v.name}).dtype}}{{list(np.shape({v.name}))}}"
    return f'raise ValueError(f"{expected}, not {actual}")'


def _axes_check(function: str, v: Var, sizes: Sizes, jit: str | None) -> list[str]:
    """The check that comes first: an array's number of axes, or that a number is one."""
    test = f"{_ndim(v, jit)} != {len(v.shape)}" if v.shape else _not_a_number(v, jit)
    return [f"if {test}:", "    " + _raise(function, v, sizes, jit, "")]


def definitions(sizes: Sizes, available: Sequence[str], jit: str | None = None) -> tuple[list[str], list[str]]:
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
            lines.append(f"{symbol} = {_shape_of(source[0], jit)}[{source[1]}]")
    return lines, missing


CHECK = "check_arguments"  # the emitted function that checks the inputs


def static_literal(value: object) -> str:
    """A static value as the module writes it: Python's repr, infinities as float("inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    return repr(value)


def _quoted(text: str) -> str:
    """A string literal in double quotes, as the module's other messages are, where it can be."""
    return f'"{text}"' if '"' not in text and "\\" not in text else repr(text)


def _static_check(function: str, name: str, value: object, jit: str | None) -> list[str]:
    """A static parameter's check: the value the code was written for, and no other."""
    differs = f"{name} is not None" if value is None else f"{name} != {static_literal(value)}"
    expected = f"{function}: {name} is static, and this code is written for {name} = {static_literal(value)}"
    instead = "; emit it again for another value"
    if jit == "numba":  # numba formats no strings at run time; the value goes as a second argument
        message = f"{_quoted(expected + instead + '; it is')}, {name}"
    else:  # the literal may hold braces (a dict), which the f-string doubles
        escaped = expected.replace("{", "{{").replace("}", "}}")
        message = "f" + _quoted(f"{escaped}, not {{{name}!r}}{instead}")
    return [f"if {differs}:", f"    raise ValueError({message})"]


def check_body(
    function: str, inputs: Sequence[Var], sizes: Sizes, jit: str | None, static: Mapping[str, object] = {}
) -> tuple[str, ...]:
    """The body of `check_arguments`: every input checked (a static one against its value), the
    named sizes returned."""
    lines = [line for name, value in static.items() for line in _static_check(function, name, value, jit)]
    inputs = [v for v in inputs if v.name not in static]
    lines += [line for v in inputs for line in _axes_check(function, v, sizes, jit)]
    defined, _ = definitions(sizes, [v.name for v in inputs], jit)
    lines += defined
    origin = sizes.defining()
    for v in inputs:
        if not v.shape:
            continue
        named = sorted({a for a in sizes.of(v.name) or () if isinstance(a, str) and origin[a][0] != v.name})
        where = "".join(f" with {a} = {origin[a][0]}.shape[{origin[a][1]}]" for a in named)
        lines += [
            f"if {_shape_of(v.name, jit)} != {shape_literal(sizes.of(v.name) or v.shape)} or {_dtype_differs(v, jit)}:",
            "    " + _raise(function, v, sizes, jit, where),
        ]
    if sizes.symbols:
        lines.append("return " + ", ".join(sizes.symbols))
    return tuple(lines)


def upstream_check(function: str, upstream: Var, output: str, jit: str | None) -> tuple[str, ...]:
    """The check of `backward`'s upstream gradient: a number for a scalar output, else an array
    of the output's shape (the message names no size, which may be named: see compiler.sizes)."""
    if not upstream.shape:
        return tuple(_axes_check(function, upstream, NO_SIZES, jit))
    expected = f"{function}: {upstream.name} must be {upstream.dtype} of {output}'s shape"
    if jit == "numba":
        message = f'"{expected}; it has shape", np.shape({upstream.name})'
    else:
        message = f'f"{expected}, not {{type({upstream.name}).__name__}} {{np.shape({upstream.name})}}"'
    test = f"{_shape_of(upstream.name, jit)} != {shape_literal(upstream.shape)} or {_dtype_differs(upstream, jit)}"
    return (f"if {test}:", f"    raise ValueError({message})")


def check_doc(function: str, sizes: Sizes) -> str:
    """The docstring of `check_arguments`."""
    named = f"; return {' and '.join(sizes.symbols)}" if sizes.symbols else ""
    return f"Raise ValueError unless the arguments have the shapes and dtypes {function}'s code is written for{named}."


def guard_lines(inputs: Sequence[Var], sizes: Sizes) -> tuple[str, ...]:
    """The line a function taking `inputs` starts with: the call of `check_arguments`."""
    call = f"{CHECK}({', '.join(v.name for v in inputs)})"
    return (f"{', '.join(sizes.symbols)} = {call}" if sizes.symbols else call,)


def compile_check(function: str, at_o2: bool) -> str:
    """Under numba, the emitted module's last functions: `checked_before_compiling` makes numba
    run `check_arguments` in Python before it compiles a function for new argument types, and
    (`at_o2`, for a module with arrays of three axes and more) `compiled_at_o2` makes it compile
    at -O2 (numba's dispatcher calls its `_compile_for_args` method on a call whose types it has
    not compiled for). numba offers no option per function for its optimisation level; its
    config holds the one it reads as it compiles."""
    return _CHECKED.format(function=function, check=CHECK) + (_AT_O2 if at_o2 else "")


_CHECKED = '''def checked_before_compiling(function):
    """`function`, which first checks its arguments in Python whenever numba is to compile it for
    argument types it has not seen: code that cannot compile for them raises ValueError."""
    compile_for_args = function._compile_for_args
    params = function.py_func.__code__.co_varnames[: function.py_func.__code__.co_argcount]

    def compile_checked(*args, **kwargs):
        for name, value in (*zip(params, args), *kwargs.items()):
            if isinstance(value, (list, tuple)):
                raise ValueError(f"{function}: {{name}} must be a NumPy array, not a {{type(value).__name__}}")
        {check}.py_func(*args, **kwargs)
        return compile_for_args(*args, **kwargs)

    function._compile_for_args = compile_checked
    return function'''

_AT_O2 = '''


def compiled_at_o2(function):
    """`function`, which numba compiles with LLVM's -O2 rather than its default -O3 (unless
    NUMBA_OPT is set): on arrays of three axes and more, -O3 spends seconds on each line of
    this code, and -O2 compiles it in a fraction of that to code as fast."""
    compile_for_args = function._compile_for_args
    config = numba.core.config

    def compile_at_o2(*args, **kwargs):
        if "NUMBA_OPT" in os.environ or config.OPT != 3:
            return compile_for_args(*args, **kwargs)
        config.OPT = type(config.OPT)(2)
        try:
            return compile_for_args(*args, **kwargs)
        finally:
            config.OPT = type(config.OPT)(3)

    function._compile_for_args = compile_at_o2
    return function'''
