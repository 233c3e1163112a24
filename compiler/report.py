"""`flatgrad report`: one self-contained HTML page with the graph, the flat forward and backward
code side by side, and the gradient check."""

from __future__ import annotations

import shutil
from typing import Any, Callable

import graphviz
from markupsafe import Markup

from compiler import display, visualize
from compiler.codegen import explanation, statement, template
from compiler.program import build, check_rows


def html_report(f: Callable, examples: dict[str, Any], source: str, tolerance: float = 1e-6) -> str:
    """The report page for `f` at the example values."""
    graph = build(f, (), examples, source=source).graph
    args = tuple(examples.values())
    dot = visualize.dot_source(graph, args, source)
    svg = graphviz.Source(dot).pipe(format="svg").decode() if shutil.which("dot") else ""
    svg = svg[svg.find("<svg"):] if svg else ""  # drop the XML prolog: the SVG sits inside HTML
    forward_lines = [statement(e) for e in graph.forward_eqns]
    gates = {e.out.name: line for e, line in zip(graph.forward_eqns, forward_lines)}
    forward = "\n".join(forward_lines)
    backward = "\n".join(f"{statement(e)}  # {explanation(e, gates)}" for e in graph.backward_eqns)
    rows = check_rows(f, **examples)
    worst = max(row.error for row in rows)
    return template("report.html.j2").render(
        title=source,
        source=source,
        point=", ".join(f"{v.name}={visualize.describe_value(a)}" for v, a in zip(graph.inputs, args)),
        svg=Markup(svg),
        dot=dot,
        forward=Markup(display.as_html(forward)),
        backward=Markup(display.as_html(backward)),
        rows=rows,
        worst=worst,
        tolerance=tolerance,
        ok=worst <= tolerance,
    )
