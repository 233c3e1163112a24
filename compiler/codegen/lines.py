"""An equation as one line of Python: `grad_w1 = x1 * grad_s1`.

Rendering goes through astor once per kind of line. Unrolled loops repeat the same equations
under other names, so a line is rendered with placeholder names (`naming.placeholder`) and kept
as a format string, `{0} = {1} * {2}`, that the real names fill. Both are identifiers, so the
swap cannot change how the line parses.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterator, Sequence

from compiler.codegen.expressions import expression, unparse
from compiler.ir import MEMO_LIMIT, Eqn, KindKeys, Var
from compiler.naming import PLACEHOLDERS, placeholder


@dataclass(frozen=True, eq=False)
class LineForm:
    """A rendered line with holes for its names: `template.format(*names)` is the line, with
    names[0] the output, then the operand variables in order, then the gradient it accumulates
    onto."""

    template: str


def format_string(text: str) -> str:
    """`text` as a format string: braces doubled, each placeholder `{k}`."""
    return PLACEHOLDERS.sub(r"{\1}", text.replace("{", "{{").replace("}", "}}"))


def _render_form(eqn: Eqn, jit: str | None) -> LineForm:
    """Render `eqn` with placeholder names through astor."""
    counter = iter(range(len(eqn.inputs) + 2))

    def hole(v: Var) -> Var:
        return Var(placeholder(next(counter)), v.shape, v.dtype)

    out = hole(eqn.out)
    inputs = tuple(hole(a) if isinstance(a, Var) else a for a in eqn.inputs)
    accumulate = hole(eqn.accumulate) if eqn.accumulate is not None else None
    tree = expression(Eqn(eqn.op, inputs, out, eqn.rule, accumulate, eqn.loc, eqn.params, eqn.gate, eqn.types), jit)
    text = unparse(ast.Assign([ast.Name(out.name, ast.Store())], tree, lineno=0))
    return LineForm(format_string(text))


_FORMS: dict[tuple, LineForm] = {}  # process-wide, by `ir.KindKeys.by_types`


def _line(eqn: Eqn, jit: str | None, keys: KindKeys) -> str:
    names = [eqn.out.name, *(a.name for a in eqn.inputs if type(a) is Var)]
    if eqn.accumulate is not None:
        names.append(eqn.accumulate.name)
    key = keys.by_types(eqn, jit, eqn.out.shape, eqn.out.dtype, eqn.accumulate is None)
    form = _FORMS.get(key)
    if form is None:
        if len(_FORMS) > MEMO_LIMIT:
            _FORMS.clear()
        form = _FORMS[key] = _render_form(eqn, jit)
    return form.template.format(*names)


def render_lines(eqns: Sequence[Eqn], jit: str | None) -> list[str]:
    """Each equation's line, in order."""
    keys = KindKeys()
    return [_line(eqn, jit, keys) for eqn in eqns]


class Lines(Sequence[str]):
    """Each equation's line, rendered when first read: a loop's iterations are written from
    three of them (`codegen.loops`), and the others' lines are never made. Slices and `of` are
    lines of other equations that share what has been rendered. Adding gives a tuple."""

    def __init__(self, eqns: Sequence[Eqn], jit: str | None, rendered: dict[int, str] | None = None,
                 keys: KindKeys | None = None) -> None:
        self._eqns, self._jit = tuple(eqns), jit
        self._rendered = {} if rendered is None else rendered  # by id of the equation
        self._keys = KindKeys() if keys is None else keys

    def of(self, eqns: Sequence[Eqn]) -> Lines:
        return Lines(eqns, self._jit, self._rendered, self._keys)

    def __len__(self) -> int:
        return len(self._eqns)

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return self.of(self._eqns[k])
        eqn = self._eqns[k]
        line = self._rendered.get(id(eqn))
        if line is None:
            line = self._rendered[id(eqn)] = _line(eqn, self._jit, self._keys)
        return line

    def __iter__(self) -> Iterator[str]:
        return (self[k] for k in range(len(self._eqns)))

    def __add__(self, other: Sequence[str]) -> tuple[str, ...]:
        return (*self, *other)

    def __radd__(self, other: Sequence[str]) -> tuple[str, ...]:
        return (*other, *self)


def statement(eqn: Eqn, jit: str | None = None) -> str:
    """`eqn` as one line of Python: `grad_w1 = x1 * grad_s1`."""
    return render_lines((eqn,), jit)[0]
