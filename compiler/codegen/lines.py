"""An equation as one line of Python: `grad_w1 = x1 * grad_s1`.

Rendering goes through astor once per kind of line. Unrolled loops repeat the same equations
under other names, so a line is rendered with placeholder names (`naming.placeholder`) and kept
as a format string, `{0} = {1} * {2}`, that the real names fill. Both are identifiers, so the
swap cannot change how the line parses.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Sequence

from compiler.codegen.expressions import expression, unparse
from compiler.ir import MEMO_LIMIT, Eqn, KindKeys, Var
from compiler.naming import PLACEHOLDERS, placeholder


@dataclass(frozen=True, eq=False)
class LineForm:
    """A rendered line with holes for its names: `template.format(*names)` is the line, with
    names[0] the output, then the operand variables in order, then the gradient it accumulates
    onto."""

    template: str
    calls: frozenset[str]  # the functions the line calls by name (helpers)


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
    calls = frozenset(n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name))
    text = unparse(ast.Assign([ast.Name(out.name, ast.Store())], tree, lineno=0))
    return LineForm(format_string(text), calls)


_FORMS: dict[tuple, LineForm] = {}  # process-wide, by `ir.KindKeys.by_types`


def render_lines(eqns: Sequence[Eqn], jit: str | None) -> tuple[list[str], list[LineForm]]:
    """Each equation's line, in order, and the distinct forms the lines took."""
    keys = KindKeys()
    lines: list[str] = []
    forms: dict[int, LineForm] = {}
    for eqn in eqns:
        names = [eqn.out.name, *(a.name for a in eqn.inputs if type(a) is Var)]
        if eqn.accumulate is not None:
            names.append(eqn.accumulate.name)
        key = keys.by_types(eqn, jit, eqn.out.shape, eqn.out.dtype, eqn.accumulate is None)
        form = _FORMS.get(key)
        if form is None:
            if len(_FORMS) > MEMO_LIMIT:
                _FORMS.clear()
            form = _FORMS[key] = _render_form(eqn, jit)
        forms[id(form)] = form
        lines.append(form.template.format(*names))
    return lines, list(forms.values())


def statement(eqn: Eqn, jit: str | None = None) -> str:
    """`eqn` as one line of Python: `grad_w1 = x1 * grad_s1`."""
    return render_lines((eqn,), jit)[0][0]
