"""Named sizes: the axes of the inputs a module reads from its arguments instead of baking in.

`dims={"X": "N,4", "y": "N"}` says that X's first axis and y's only axis are one size, N,
that the module reads from its arguments (`N = X.shape[0]`), while X's second axis is 4.

How a size stays symbolic: the pipeline runs as it always does, with plain integers, at the
example's sizes and at two probes (every named size multiplied by a different factor), and
the three modules are compared token by token. They must read the same but for numbers; a
number that differs between them is written as the expression of the named sizes that gives
it in all three (`8, 16, 24` is `N`; `32, 64, 96` is `4 * N`). Nothing in the tracer,
autodiff or codegen needs to know about names, and any size they derive, however they derive
it, is caught. A function whose code depends on a size's value (a loop over the rows, a branch
on N, broadcasting against a size-1 axis) gives modules that differ in more than numbers, and
a clear error.
"""

from __future__ import annotations

import ast
import io
import itertools
import keyword
import math
import tokenize
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from compiler.errors import FlatgradError, SignatureError

Axis = str | int  # a named size or a fixed one


@dataclass(frozen=True)
class Sizes:
    """Each input's axes, named or fixed, in parameter order; an input not listed is fixed at
    its example's shape."""

    axes: tuple[tuple[str, tuple[Axis, ...]], ...]

    @property
    def symbols(self) -> tuple[str, ...]:
        """The named sizes, in the order the inputs first give them."""
        return tuple(dict.fromkeys(a for _, axes in self.axes for a in axes if isinstance(a, str)))

    def of(self, name: str) -> tuple[Axis, ...] | None:
        """The axes of input `name`, or None when it has no named size."""
        return dict(self.axes).get(name)

    def defining(self) -> dict[str, tuple[str, int]]:
        """Where each named size is read from: the first input and axis that has it."""
        found: dict[str, tuple[str, int]] = {}
        for name, axes in self.axes:
            for index, axis in enumerate(axes):
                if isinstance(axis, str):
                    found.setdefault(axis, (name, index))
        return found

    def shape_text(self, name: str, shape: tuple[int, ...]) -> str:
        """`N, 4` for an input with a named size, else the shape's numbers."""
        axes = self.of(name)
        return ", ".join(map(str, shape if axes is None else axes))

    def values(self, examples: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
        """Each named size's value at these input shapes."""
        return {symbol: examples[name][axis] for symbol, (name, axis) in self.defining().items()}

    def probe(self, examples: Mapping[str, tuple[int, ...]], factors: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        """The input shapes with every named size multiplied by its factor."""
        values = self.values(examples)
        return {
            name: tuple(values[a] * factors[a] if isinstance(a, str) else a for a in axes) for name, axes in self.axes
        }


NO_SIZES = Sizes(())


def parse_axes(text: str | Sequence[Axis], where: str) -> tuple[Axis, ...]:
    """`"N,4"`, `("N", 4)` or `"N"` as axes: a name for a named size, a number for a fixed one."""
    if isinstance(text, str) and not text.strip():
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    axes: list[Axis] = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if item.lstrip("-").isdigit():
                item = int(item)
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise SignatureError(f"{where}: an axis is a name or a number, not {item!r}")
        if isinstance(item, str) and (not item.isidentifier() or keyword.iskeyword(item) or item == "np"):
            raise SignatureError(f"{where}: {item!r} cannot name a size; use a Python name such as N")
        if isinstance(item, int) and item < 0:
            raise SignatureError(f"{where}: an axis of {item} is no size")
        axes.append(item)
    return tuple(axes)


def sizes_for(dims: Mapping[str, Any] | None, shapes: Mapping[str, tuple[int, ...]]) -> Sizes:
    """`dims` checked against the example shapes (`shapes`, by parameter name, in order)."""
    if not dims:
        return NO_SIZES
    unknown = sorted(set(dims) - set(shapes))
    if unknown:
        raise SignatureError(f"dims names {unknown}, which are not parameters: {list(shapes)}")
    values: dict[str, tuple[int, str]] = {}
    listed = []
    for name, shape in shapes.items():
        if name not in dims:
            continue
        where = f"dims[{name!r}]"
        axes = parse_axes(dims[name], where)
        if len(axes) != len(shape):
            raise SignatureError(
                f"{where} = {dims[name]!r} has {len(axes)} axes, but the example {name} has shape {shape}"
            )
        for axis, size in zip(axes, shape):
            if isinstance(axis, int) and axis != size:
                raise SignatureError(f"{where} fixes an axis at {axis}, but the example {name} has shape {shape}")
            if isinstance(axis, str):
                if axis in shapes:
                    raise SignatureError(f"{where}: {axis!r} is a parameter's name; name the size otherwise")
                seen = values.setdefault(axis, (size, name))
                if seen[0] != size:
                    raise SignatureError(
                        f"{where}: {axis} is {size} in the example {name} but {seen[0]} in {seen[1]}; "
                        "one named size has one value"
                    )
        listed.append((name, axes))
    for symbol, (size, name) in values.items():
        if size == 0:
            raise SignatureError(f"the example {name} has {symbol} = 0; give an example with some rows")
    return Sizes(tuple(listed))


# The factors the probes multiply each named size by: distinct for every size and every probe,
# so that no two expressions of the sizes agree on all three modules by chance.
_FACTORS = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def probe_factors(symbols: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
    """The two probes' factors for each named size."""
    if 2 * len(symbols) > len(_FACTORS):
        raise SignatureError(f"at most {len(_FACTORS) // 2} named sizes, not {len(symbols)}")
    first = {s: _FACTORS[2 * i] for i, s in enumerate(symbols)}
    second = {s: _FACTORS[2 * i + 1] for i, s in enumerate(symbols)}
    return first, second


def _candidates(symbols: Sequence[str]) -> list[tuple[str, ...]]:
    """The products of named sizes an expression may be made of: N, D, N * D, N * N."""
    return [(s,) for s in symbols] + list(itertools.combinations_with_replacement(symbols, 2))


def fit(numbers: Sequence[int], points: Sequence[Mapping[str, int]]) -> str | None:
    """The expression `k * P + c` (P a named size or a product of two) that gives `numbers[i]`
    when the sizes are `points[i]`, for every i; None when there is none."""
    for product in _candidates(list(points[0])):
        terms = [_product(product, point) for point in points]
        if terms[0] == terms[1]:
            continue
        k, remainder = divmod(numbers[1] - numbers[0], terms[1] - terms[0])
        if remainder or k == 0:
            continue
        c = numbers[0] - k * terms[0]
        if all(k * t + c == n for t, n in zip(terms, numbers)):
            return _expression(product, k, c)
    return None


def fit_float(numbers: Sequence[float], points: Sequence[Mapping[str, int]]) -> str | None:
    """The expression `c / P` or `c * P` (P a named size or a product of two, c a number) that
    gives `numbers[i]` at `points[i]`: what folding `1 / N * 1.0` makes of a mean."""
    for product in _candidates(list(points[0])):
        terms = [_product(product, point) for point in points]
        for c, form in ((numbers[0] * terms[0], "{c} / {p}"), (numbers[0] / terms[0], "{c} * {p}")):
            guess = [c / t if "/" in form else c * t for t in terms]
            if all(math.isclose(g, n, rel_tol=1e-12) for g, n in zip(guess, numbers)):
                text = " * ".join(product)
                rounded = round(c)
                shown = str(rounded) if math.isclose(c, rounded, rel_tol=1e-12) else repr(c)
                return form.format(c=shown, p=f"({text})" if len(product) > 1 else text)
    return None


def _product(names: Sequence[str], point: Mapping[str, int]) -> int:
    value = 1
    for name in names:
        value *= point[name]
    return value


def _expression(product: Sequence[str], k: int, c: int) -> str:
    text = " * ".join(product)
    if k == -1:
        text = f"-{text}"
    elif k != 1:
        text = f"{k} * {text}"
    if c:
        text += f" {'+' if c > 0 else '-'} {abs(c)}"
    return text


def _tokens(source: str) -> list[tokenize.TokenInfo]:
    return [
        t
        for t in tokenize.generate_tokens(io.StringIO(source).readline)
        if t.type not in (tokenize.NL, tokenize.COMMENT)
    ]


def symbolic_source(sources: Sequence[str], points: Sequence[Mapping[str, int]], function: str) -> str:
    """The first source with every number that differs between `sources` (the module emitted
    at the sizes `points[i]`) written as an expression of the named sizes.

    The module's docstring may differ (it states the example's sizes); anything else that
    differs but for numbers, or a number no expression gives, is an error that shows the line.
    """
    streams = [_tokens(s) for s in sources]
    lines = sources[0].splitlines(keepends=True)
    if len({len(s) for s in streams}) != 1:
        raise _depends(function, streams, points)
    edits: list[tuple[int, int, int, str]] = []
    for index, tokens in enumerate(zip(*streams)):
        first = tokens[0]
        if all(t.string == first.string for t in tokens):
            continue
        if first.type == tokenize.STRING and index == 0:
            continue  # the module's docstring, which states the example's sizes
        numbers = [_number(t) for t in tokens]
        if any(t.type != first.type for t in tokens) or None in numbers:
            raise _depends(function, streams, points, index)
        if all(isinstance(n, int) for n in numbers):
            expression = fit(numbers, points)  # type: ignore[arg-type]
        else:
            expression = fit_float(numbers, points)  # type: ignore[arg-type]
        if expression is None:
            raise _depends(function, streams, points, index)
        if not expression.isidentifier():
            expression = f"({expression})"
        (row, start), (_, end) = first.start, first.end
        edits.append((row, start, end, expression))
    for row, start, end, expression in reversed(edits):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + expression + line[end:]
    return _without_unused_sizes("".join(lines), set(points[0]))


def _without_unused_sizes(source: str, symbols: set[str]) -> str:
    """`source` without the named sizes a function reads from its arguments and never uses:
    `N = check_arguments(...)` becomes `check_arguments(...)`, `N = X.shape[0]` goes."""
    lines = source.splitlines(keepends=True)
    dropped: set[int] = set()
    for function in ast.parse(source).body:
        if not isinstance(function, ast.FunctionDef):
            continue
        used = {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for statement in function.body:
            if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
                continue
            target = statement.targets[0]
            names = [
                t.id for t in (target.elts if isinstance(target, ast.Tuple) else [target]) if isinstance(t, ast.Name)
            ]
            if not names or not set(names) <= symbols or set(names) & used:
                continue
            row = statement.lineno - 1
            if isinstance(statement.value, ast.Call):
                lines[row] = lines[row][: target.col_offset] + lines[row][statement.value.col_offset :]
            else:
                dropped.add(row)
    return "".join(line for row, line in enumerate(lines) if row not in dropped)


def _number(token: tokenize.TokenInfo) -> int | float | None:
    if token.type != tokenize.NUMBER:
        return None
    try:
        return int(token.string)
    except ValueError:
        return float(token.string)


def _depends(
    function: str,
    streams: Sequence[list[tokenize.TokenInfo]],
    points: Sequence[Mapping[str, int]],
    index: int | None = None,
) -> FlatgradError:
    """The error for code that depends on a named size's value."""
    sizes = " and ".join(", ".join(f"{k} = {v}" for k, v in point.items()) for point in points[:2])
    if index is None:  # different lengths: find the first token that differs
        index = next(
            (i for i, tokens in enumerate(zip(*streams)) if i and len({t.string for t in tokens}) > 1),
            min(len(s) for s in streams) - 1,
        )
    line = streams[0][index].line.strip()
    return FlatgradError(
        f"{function}() cannot keep its named sizes symbolic: its emitted code differs at {sizes} "
        f"in more than the sizes, from the line `{line}` on (a loop over the rows, a branch on a size, "
        "or broadcasting against a size-1 axis depends on the value); fix that size (an integer in dims) "
        "or write the code without it"
    )
