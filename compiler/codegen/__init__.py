"""Codegen: a differentiated graph to the source of a Python module, in layers:

- `expressions`: an equation's right-hand side as a syntax tree, and `unparse`, the one place
  a tree becomes text;
- `lines`: an equation as one line of Python, rendered once per kind of line;
- `explain`: explain mode's comment on a backward line;
- `guards`: the checks of the arguments every emitted function starts with;
- `module`: the lines laid out as the module's functions, through the Jinja template.
"""

from compiler.codegen.explain import explained, gate_header, line_comment
from compiler.codegen.expressions import expression, unparse
from compiler.codegen.lines import render_lines, statement
from compiler.codegen.module import JIT_BACKENDS, VECTORIZE_TARGETS, LayerNames, Provenance, emit_module, template

__all__ = [
    "JIT_BACKENDS",
    "VECTORIZE_TARGETS",
    "LayerNames",
    "Provenance",
    "emit_module",
    "explained",
    "gate_header",
    "line_comment",
    "expression",
    "render_lines",
    "statement",
    "template",
    "unparse",
]
