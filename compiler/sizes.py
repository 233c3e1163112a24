"""Named sizes: the axes of the inputs a module reads from its arguments instead of baking in.

`dims={"X": "N,4", "y": "N"}` says that X's first axis and y's only axis are one size, N,
that the module reads from its arguments (`N = X.shape[0]`), while X's second axis is 4.

How a size stays symbolic: the pipeline runs as it always does, with plain integers, at the
example's sizes and at four probes (every named size multiplied by small factors that differ
from size to size and from probe to probe), and the five modules are compared token by token.
They must read the same but for numbers; a number that differs between them is written as the
expression of the named sizes that gives it in all five (`8, 16, 24, 32, 40` is `N`; `N * D - N`,
`1 / N`), solved for on some probes and checked on the others. Nothing in the tracer, autodiff
or codegen needs to know about names, and any size they derive, however they derive it, is
caught. A function whose code depends on a size's value (a loop over the rows, a branch on N,
broadcasting against a size-1 axis) gives modules that differ in more than numbers, and a
clear error.
"""

from __future__ import annotations

import ast
import io
import itertools
import keyword
import math
import re
import tokenize
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping, Sequence

from compiler.errors import SignatureError, SizeDependenceError

Axis = str | int  # a named size or a fixed one


@dataclass(frozen=True)
class Sizes:
    """Each input's axes, named or fixed, in parameter order; an input not listed is fixed at
    its example's shape."""

    axes: tuple[tuple[str, tuple[Axis, ...]], ...]
    fixed: tuple[tuple[str, int, str], ...] = ()  # (name, value, the line that depends on it)

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

    def fixing(self, symbol: str, value: int, line: str) -> Sizes:
        """These sizes with `symbol` fixed at `value` (the emitted `line` depends on it)."""
        axes = [(name, tuple(value if a == symbol else a for a in named)) for name, named in self.axes]
        named = tuple((name, a) for name, a in axes if any(isinstance(x, str) for x in a))
        return Sizes(named, (*self.fixed, (symbol, value, line)))

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


# What the probes multiply each named size by: row j is probe j, column i the i-th named size.
# No column is a multiple of another, so no two expressions of the sizes agree on the example
# and every probe by chance; the factors are small, so a probe costs little more than the example.
_PROBES = ((2, 3, 4, 5), (3, 5, 2, 4), (4, 2, 5, 3), (5, 4, 3, 2))


def probe_factors(symbols: Sequence[str]) -> list[dict[str, int]]:
    """Each probe's factor for each named size."""
    if len(symbols) > len(_PROBES[0]):
        raise SignatureError(f"at most {len(_PROBES[0])} named sizes, not {len(symbols)}: {', '.join(symbols)}")
    return [dict(zip(symbols, row)) for row in _PROBES]


def _candidates(symbols: Sequence[str]) -> list[tuple[str, ...]]:
    """The products of named sizes an expression may be made of: N, D, N * D, N * N."""
    return [(s,) for s in symbols] + list(itertools.combinations_with_replacement(symbols, 2))


def fit(numbers: Sequence[int], points: Sequence[Mapping[str, int]]) -> str | None:
    """The expression of the named sizes (a sum of at most two products of at most two of them,
    with integer coefficients, and a constant) that gives `numbers[i]` when the sizes are
    `points[i]`, for every i; None when there is none. The coefficients are solved for on some
    points and checked on the others: there are at least two left over for the check."""
    candidates = _candidates(list(points[0]))
    for count in (1, 2):
        for products in itertools.combinations(candidates, count):
            if len(points) < count + 3:
                break
            coefficients = _solve(numbers, points, products)
            if coefficients is not None:
                return _expression(products, coefficients)
    return None


def _solve(numbers: Sequence[int], points: Sequence[Mapping[str, int]], products: Sequence[tuple[str, ...]]
           ) -> list[int] | None:
    """Integer coefficients (the products' and a constant's) that give `numbers` at `points`, or None."""
    size = len(products) + 1
    rows = [[Fraction(_product(p, point)) for p in products] + [Fraction(1)] for point in points]
    for chosen in itertools.combinations(range(len(points)), size):
        solution = _exact_solution([rows[i] + [Fraction(numbers[i])] for i in chosen])
        if solution is None:
            continue  # these points do not tell the terms apart; others may
        if any(x.denominator != 1 for x in solution) or 0 in solution[:-1]:
            return None
        coefficients = [int(x) for x in solution]
        if any(sum(c * v for c, v in zip(coefficients, row)) != n for row, n in zip(rows, numbers)):
            return None
        return coefficients
    return None


def _exact_solution(matrix: list[list[Fraction]]) -> list[Fraction] | None:
    """The solution of a square linear system given as its augmented matrix, by Gauss-Jordan
    elimination in fractions; None when it is singular."""
    size = len(matrix)
    for column in range(size):
        pivot = next((r for r in range(column, size) if matrix[r][column] != 0), None)
        if pivot is None:
            return None
        matrix[column], matrix[pivot] = matrix[pivot], matrix[column]
        for r in range(size):
            if r != column and matrix[r][column] != 0:
                ratio = matrix[r][column] / matrix[column][column]
                matrix[r] = [a - ratio * b for a, b in zip(matrix[r], matrix[column])]
    return [matrix[r][size] / matrix[r][r] for r in range(size)]


def fit_float(numbers: Sequence[float], points: Sequence[Mapping[str, int]]) -> str | None:
    """The expression `1 / E`, `c / P` or `c * P` (E one that `fit` finds, P a product of named
    sizes, c a number) that gives `numbers[i]` at `points[i]`: what folding `1 / N * 1.0`
    makes of a mean."""
    if all(numbers):
        reciprocals = [1 / n for n in numbers]
        if all(math.isclose(r, round(r), rel_tol=1e-12) for r in reciprocals):
            denominator = fit([round(r) for r in reciprocals], points)
            if denominator is not None:
                return "1 / " + (denominator if denominator.isidentifier() else f"({denominator})")
    for product in _candidates(list(points[0])):
        text = " * ".join(product)
        terms = [_product(product, point) for point in points]
        for c, form in ((numbers[0] * terms[0], "{c} / {p}"), (numbers[0] / terms[0], "{c} * {p}")):
            guesses = [c / t if "/" in form else c * t for t in terms]
            if all(math.isclose(g, n, rel_tol=1e-12) for g, n in zip(guesses, numbers)):
                return form.format(c=_number_text(c), p=f"({text})" if "/" in form and len(product) > 1 else text)
    return None


def _number_text(c: float) -> str:
    return str(round(c)) if math.isclose(c, round(c), rel_tol=1e-12) else repr(c)


def _product(names: Sequence[str], point: Mapping[str, int]) -> int:
    value = 1
    for name in names:
        value *= point[name]
    return value


def _expression(products: Sequence[tuple[str, ...]], coefficients: Sequence[int]) -> str:
    """`N * D - N`, `4 * N`, `N + 1`: the products with their coefficients, then the constant."""
    text = ""
    terms = sorted(zip(products, coefficients), key=lambda term: -len(term[0]))  # N * D before N
    for product, k in terms:
        term = " * ".join(product)
        magnitude = term if abs(k) == 1 else f"{abs(k)} * {term}"
        text += (f"-{magnitude}" if k < 0 else magnitude) if not text else f" {'-' if k < 0 else '+'} {magnitude}"
    constant = coefficients[-1]
    if constant:
        text += f" {'+' if constant > 0 else '-'} {abs(constant)}"
    return text


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _comment_edits(sources: Sequence[str], points: Sequence[Mapping[str, int]]) -> list[tuple[int, int, int, str]]:
    """The comments (explain mode's) with each number that differs between `sources` written as
    an expression of the named sizes where one gives it (`(8, 3)` is `(N, 3)`); a comment whose
    words differ, or a number no expression gives, stays as the first source has it."""
    streams = [
        [t for t in tokenize.generate_tokens(io.StringIO(s).readline) if t.type == tokenize.COMMENT] for s in sources
    ]
    if len({len(s) for s in streams}) != 1:
        return []
    edits = []
    for tokens in zip(*streams):
        texts = [t.string for t in tokens]
        if len(set(texts)) == 1 or len({tuple(_NUMBER.split(text)) for text in texts}) != 1:
            continue
        found = [[m.group() for m in _NUMBER.finditer(text)] for text in texts]
        pieces = _NUMBER.split(texts[0])
        written = []
        for numbers in zip(*found):
            expression = None
            if len(set(numbers)) > 1:
                values = [float(n) if "." in n else int(n) for n in numbers]
                if all(isinstance(v, int) for v in values):
                    expression = fit(values, points)  # type: ignore[arg-type]
                else:
                    expression = fit_float(values, points)  # type: ignore[arg-type]
            if expression is not None and not expression.isidentifier():
                expression = f"({expression})"  # as in the code: `/ (3 * N)`, not `/ 3 * N`
            written.append(numbers[0] if expression is None else expression)
        text = pieces[0] + "".join(number + piece for number, piece in zip(written, pieces[1:]))
        (row, start), (_, end) = tokens[0].start, tokens[0].end
        edits.append((row, start, end, text))
    return edits


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
    edits += _comment_edits(sources, points)
    for row, start, end, expression in sorted(edits, reverse=True):
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
) -> SizeDependenceError:
    """The error for code that depends on a named size's value."""
    sizes = " and ".join(", ".join(f"{k} = {v}" for k, v in point.items()) for point in points[:2])
    if index is None:  # different lengths: find the first token that differs
        index = next(
            (i for i, tokens in enumerate(zip(*streams)) if i and len({t.string for t in tokens}) > 1),
            min(len(s) for s in streams) - 1,
        )
    line = streams[0][index].line.strip()
    return SizeDependenceError(
        f"{function}() cannot keep its named sizes symbolic: its emitted code differs at {sizes} "
        f"in more than the sizes, from the line `{line}` on (a loop over the rows, a branch on a size, "
        "or broadcasting against a size-1 axis depends on the value); fix that size (an integer in dims) "
        "or write the code without it",
        line,
    )
