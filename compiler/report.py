"""`flatgrad report`: one self-contained HTML page with the graph, the flat forward and backward
code side by side, and the gradient check."""

from __future__ import annotations

import shutil
from typing import Any, Callable, Sequence

import graphviz
from markupsafe import Markup

from compiler import display, visualize
from compiler.check import check_passes, compare
from compiler.codegen import explained, statement, template
from compiler.program import GradientProgram


def html_report(
    program: GradientProgram,
    f: Callable,
    values: dict[str, Any],
    source: str,
    drawn: str,
    tolerance: float | None = None,
) -> str:
    """The report page for `program` (built from `f`) at `values`; `drawn` says where the values
    came from, `tolerance` overrides each checked input's own."""
    args = tuple(values.values())
    graph = program.path_at(*args).pair  # with branches on values, the path these values take
    dot = visualize.dot_source(graph, args, source)
    svg = graphviz.Source(dot).pipe(format="svg").decode() if shutil.which("dot") else ""
    svg = svg[svg.find("<svg"):] if svg else ""  # drop the XML prolog: the SVG sits inside HTML
    forward_lines = [statement(e) for e in graph.forward.eqns]
    gates = {e.out.name: (line, e) for e, line in zip(graph.forward.eqns, forward_lines)}
    forward = "\n".join(forward_lines)
    backward_eqns = graph.backward_eqns
    backward = "\n".join(explained(backward_eqns, [statement(e) for e in backward_eqns], gates, set()))
    rows = compare(program, f, values)
    return template("report.html.j2").render(
        title=source,
        source=source,
        point=_point(graph.inputs, args),
        drawn=drawn,
        svg=Markup(svg),
        dot=dot,
        forward=Markup(display.as_html(forward)),
        backward=Markup(display.as_html(backward)),
        rows=rows,
        worst=max(row.error for row in rows),
        tolerance=tolerance,
        ok=check_passes(rows, tolerance),
    )


def _point(inputs: Sequence[Any], args: Sequence[Any]) -> str:
    return ", ".join(f"{v.name}={visualize.describe_value(a)}" for v, a in zip(inputs, args))
