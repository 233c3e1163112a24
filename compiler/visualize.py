"""Pictures of backprop: the computational graph with every edge's value and gradient.

As in the lecture's figures, each gate is a node labelled with its operation, each value an
edge labelled with its name in the flat code, its forward value above (green) and its gradient
below (red). `dot_source` writes Graphviz DOT; `render` turns it into SVG or PNG with the
`graphviz` package and Graphviz's `dot` program.
"""

from __future__ import annotations

import html
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from compiler.codegen import statement
from compiler.errors import FlatgradError
from compiler.files import FORCE_IN_PYTHON, GENERATED_MARKER, write_output
from compiler.helpers import HELPERS
from compiler.ir import Backprop, Const, Graph, Var
from compiler.ops import OPS

FORWARD_COLOUR = "darkgreen"
GRADIENT_COLOUR = "red3"
# How a gate is drawn: its operator where it has one, else the row's name.
_SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "÷", "neg": "−x", "pow": "**", "matmul": "@",
            "matvec": "@", "vecmat": "@", "inner": "@"}


def evaluate(graph: Graph | Backprop, args: Sequence[Any]) -> dict[str, Any]:
    """Every name of the flat code, bound as running the emitted lines at `args` binds it
    (a gradient that is accumulated ends with its total). Upstream gradients no seed binds (an
    array's, several outputs') are ones: the gradients drawn are those of the outputs' sum."""
    if len(args) != len(graph.inputs):
        raise FlatgradError(f"the graph takes {len(graph.inputs)} arguments, got {len(args)}")
    namespace: dict[str, Any] = {"np": np, **HELPERS}
    namespace.update({v.name: a for v, a in zip(graph.inputs, args)})
    if isinstance(graph, Backprop) and graph.seed is None:
        namespace.update({u.name: np.ones(u.shape, u.dtype)[()] for u in graph.upstream})
    code = "\n".join(statement(eqn) for eqn in graph.eqns)
    exec(compile(code, "<flatgrad graph>", "exec"), namespace)  # flatgrad's own emitted lines
    return namespace


def gradient_names(pair: Backprop) -> dict[int, str]:
    """The name of each value's (final) gradient, by the value's id."""
    forward = {e.out.name: e for e in pair.forward.eqns}
    names = {id(output): grad.name for output, grad in zip(pair.forward.outputs, pair.upstream)}
    target: Var | None = None
    for eqn in pair.backward.eqns:
        if eqn.rule is not None and eqn.gate in forward:
            gate = forward[eqn.gate]
            operand = dict(zip(OPS[gate.op].operands, gate.inputs))[eqn.rule]
            target = operand if isinstance(operand, Var) else None
        if target is not None:
            names[id(target)] = eqn.out.name  # the last step binds the gradient's final name
    return names


def describe_value(value: Any) -> str:
    """A number to two decimals, an array as its dtype and shape."""
    array = np.asarray(value)
    if array.shape == ():
        return f"{float(array):.2f}"
    return f"{array.dtype.name}[{','.join(map(str, array.shape))}]"


def _edge_label(name: str, values: dict[str, Any], grad: str | None) -> str:
    parts = [f"<b>{html.escape(name)}</b>"]
    if name in values:
        parts.append(f'<font color="{FORWARD_COLOUR}">{describe_value(values[name])}</font>')
    if grad is not None and grad in values:
        parts.append(f'<font color="{GRADIENT_COLOUR}">{describe_value(values[grad])}</font>')
    return "<" + "<br/>".join(parts) + ">"


def dot_source(pair: Backprop, args: Sequence[Any], title: str = "") -> str:
    """Graphviz DOT of the forward graph at `args`: gates as nodes, values as edges carrying the
    forward value (green, above) and the gradient (red, below)."""
    values = evaluate(pair, args)
    grads = gradient_names(pair)
    lines = [
        f"// {GENERATED_MARKER}",
        "digraph flatgrad {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica"]; edge [fontname="Helvetica", fontsize=11];',
    ]
    if title:
        lines.append(f'  label="{title}"; labelloc=t;')
    producer: dict[int, str] = {}
    for i, v in enumerate(pair.forward.inputs):
        producer[id(v)] = f"in{i}"
        lines.append(f'  in{i} [shape=plaintext, label="{v.name}"];')
    for i, eqn in enumerate(pair.forward.eqns):
        node = f"g{i}"
        symbol = _SYMBOLS.get(eqn.op, eqn.op)
        shape = "circle" if len(symbol) <= 2 else 'box, style="rounded"'
        lines.append(f'  {node} [shape={shape}, label="{symbol}", tooltip="{eqn.op}"];')
        for a in eqn.inputs:
            if isinstance(a, Const):
                continue  # constants are part of the gate
            lines.append(f"  {producer[id(a)]} -> {node} [label={_edge_label(a.name, values, grads.get(id(a)))}];")
        producer[id(eqn.out)] = node
    several = len(pair.forward.outputs) > 1
    for i, output in enumerate(pair.forward.outputs):
        label = _edge_label(output.name, values, grads.get(id(output)))
        node = f"out{i}" if several else "out"
        lines.append(f'  {node} [shape=plaintext, label="{output.name}"];')
        lines.append(f"  {producer[id(output)]} -> {node} [label={label}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


FORMATS = ("dot", "svg", "png")


def render(
    dot: str, path: str | Path, overwrite: bool = False, protect: Iterable[str] = (), force_hint: str = FORCE_IN_PYTHON
) -> Path:
    """Write `dot` to `path`: as DOT for `.dot`, drawn by Graphviz for `.svg` and `.png`.

    The file is written under flatgrad's write policy (`compiler.files.write_output`); a picture
    carries the marker that lets flatgrad write over it again (an SVG comment, a PNG text chunk).
    """
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise FlatgradError(f"{target}: write the graph as .dot, .svg or .png")
    if fmt == "dot":
        content: str | bytes = dot
    elif shutil.which("dot") is None:
        raise FlatgradError(
            f"drawing {target.name} needs Graphviz's `dot` program (Debian: apt-get install graphviz; "
            "macOS: brew install graphviz; conda: conda install graphviz); write a .dot file instead"
        )
    else:
        import graphviz

        drawn = graphviz.Source(dot).pipe(format=fmt)
        content = _marked_svg(drawn) if fmt == "svg" else _marked_png(drawn)
    return write_output(target, content, overwrite=overwrite, protect=protect, force_hint=force_hint)


def _marked_svg(svg: bytes) -> bytes:
    """The SVG with flatgrad's marker as a comment after its XML prolog."""
    prolog_end = svg.find(b"?>") + 2 if svg.startswith(b"<?xml") else 0
    return svg[:prolog_end] + f"\n<!-- {GENERATED_MARKER} -->".encode() + svg[prolog_end:]


def _marked_png(png: bytes) -> bytes:
    """The PNG with flatgrad's marker in a text chunk right after its header chunk (IHDR)."""
    signature_and_header = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, data, CRC
    data = b"Software\0" + GENERATED_MARKER.encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:signature_and_header] + chunk + png[signature_and_header:]
