"""Pictures of backprop: the computational graph with every edge's value and gradient.

As in the lecture's figures, each gate is a node labelled with its operation, each value an
edge labelled with its name in the flat code, its forward value above (green) and its gradient
below (red). A loop the module writes as a `for` loop (see "Loops that stay loops" in the
README) is drawn as one iteration's gates in a box labelled with the loop's header.
`dot_source` writes Graphviz DOT; `render` turns it into SVG or PNG with the `graphviz` package
and Graphviz's `dot` program.
"""

from __future__ import annotations

import ast
import html
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from compiler.codegen import statement, unparse
from compiler.codegen.lines import Lines
from compiler.codegen.loops import Loop, stored_place
from compiler.codegen.module import Code, written_loops
from compiler.errors import FlatgradError
from compiler.files import FORCE_IN_PYTHON, GENERATED_MARKER, write_output
from compiler.helpers import HELPERS
from compiler.ir import Atom, Backprop, Const, Eqn, Graph, Var
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


def _edge_label(name: str, values: dict[str, Any], grad: str | None, shown: str | None = None) -> str:
    """A value's edge: its name (`shown`, where the code names it otherwise: `s3[2]`), forward
    value and gradient."""
    parts = [f"<b>{html.escape(shown or name)}</b>"]
    if name in values:
        parts.append(f'<font color="{FORWARD_COLOUR}">{describe_value(values[name])}</font>')
    if grad is not None and grad in values:
        parts.append(f'<font color="{GRADIENT_COLOUR}">{describe_value(values[grad])}</font>')
    return "<" + "<br/>".join(parts) + ">"


def dot_source(
    pair: Backprop, args: Sequence[Any], title: str = "", jit: str | None = None, unroll: bool | None = True
) -> str:
    """Graphviz DOT of the forward graph at `args`: gates as nodes, values as edges carrying the
    forward value (green, above) and the gradient (red, below).

    With `unroll` other than True, a loop that the module's `forward` (with `jit` and `unroll`)
    writes as a `for` loop is drawn once: one iteration's gates in a box labelled like the
    loop's header (`for i in range(5)`). Edges inside the box carry the names the loop body
    gives its values (`s1[i]`, `total`) and no numbers, as each iteration has its own; a value
    carried to the next iteration is a dashed edge back into the box, labelled with the name it
    is carried under. Edges into the box from before the loop, and out of it to what follows
    (named as the code after the loop reads them: `s1[4]`, `total_4`), carry their values and
    gradients as a flat picture's do. `unroll=True` (the default) draws every iteration."""
    values = evaluate(pair, args)
    grads = gradient_names(pair)
    eqns = pair.forward.eqns
    boxes = _loop_boxes(pair, jit, unroll)
    starts = {box.loop.start: box for box in boxes}
    lines = [
        f"// {GENERATED_MARKER}",
        "digraph flatgrad {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica"]; edge [fontname="Helvetica", fontsize=11];',
    ]
    if title:
        lines.append(f'  label="{title}"; labelloc=t;')
    producer: dict[int, str] = {}
    shown: dict[int, str] = {}  # a loop's value, by id: as the code after the loop names it
    for i, v in enumerate(pair.forward.inputs):
        producer[id(v)] = f"in{i}"
        lines.append(f'  in{i} [shape=plaintext, label="{v.name}"];')

    def edge(a: Atom, node: str) -> str:
        label = _edge_label(a.name, values, grads.get(id(a)), shown.get(id(a)))  # type: ignore[union-attr]
        return f"  {producer[id(a)]} -> {node} [label={label}];"

    k = 0
    while k < len(eqns):
        box = starts.get(k)
        if box is not None:
            lines += box.drawn(boxes, eqns, producer, edge)
            box.name_after(eqns, shown)
            k = box.loop.stop
            continue
        eqn, node = eqns[k], f"g{k}"
        lines.append(_gate(node, eqn))
        lines += [edge(a, node) for a in eqn.inputs if not isinstance(a, Const)]  # constants are part of the gate
        producer[id(eqn.out)] = node
        k += 1
    several = len(pair.forward.outputs) > 1
    for i, output in enumerate(pair.forward.outputs):
        label = _edge_label(output.name, values, grads.get(id(output)))
        node = f"out{i}" if several else "out"
        lines.append(f'  {node} [shape=plaintext, label="{output.name}"];')
        lines.append(f"  {producer[id(output)]} -> {node} [label={label}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _gate(node: str, eqn: Eqn) -> str:
    symbol = _SYMBOLS.get(eqn.op, eqn.op)
    shape = "circle" if len(symbol) <= 2 else 'box, style="rounded"'
    return f'  {node} [shape={shape}, label="{symbol}", tooltip="{eqn.op}"];'


@dataclass(frozen=True)
class _LoopBox:
    """A loop of the forward pass as the picture draws it: its first iteration's gates."""

    loop: Loop
    header: str  # `for i in range(5)`
    names: tuple[str, ...]  # each body position's value as the body names it: `s1[i]`, `total`

    def node(self, position: int) -> str:
        return f"g{self.loop.start + position}"

    def drawn(self, boxes: Sequence[_LoopBox], eqns: Sequence[Eqn], producer: dict[int, str],
              edge: Callable[[Atom, str], str]) -> list[str]:
        """The box with its gates, and the edges into them and between them; `boxes` are all the
        picture's, in order (an earlier loop's array read here is an edge from its box); `edge`
        draws a value's edge to a node as a flat picture does."""
        loop = self.loop
        tip = f"one iteration of {self.header}: each iteration has its own values"
        lines = [f"  subgraph cluster_loop{boxes.index(self)} {{",
                 f'    label="{self.header}"; labelloc=t; style="rounded,dashed"; color=gray40; tooltip="{tip}";']
        for position in range(loop.period):
            lines.append("  " + _gate(self.node(position), loop.eqn(eqns, 0, position)))
        lines.append("  }")
        for position in range(loop.period):
            eqn, node = loop.eqn(eqns, 0, position), self.node(position)
            for a, role in zip(eqn.inputs, loop.roles[position]):
                if role.kind == "local":
                    source, name = self.node(role.position), self.names[role.position]
                    lines.append(f"  {source} -> {node} [label=<<b>{html.escape(name)}</b>>];")
                elif role.kind == "outer":  # an earlier loop's array: drawn whole, from its box
                    other, made = boxes[role.outer[0]], role.outer[1]  # type: ignore[index]
                    array = other.loop.eqn(eqns, 0, made).out.name
                    lines.append(f"  {other.node(made)} -> {node} [label=<<b>{html.escape(array)}</b>>];")
                elif role.kind == "carried":
                    carried = loop.eqn(eqns, 0, role.position).out.name
                    lines.append(f'  {self.node(role.position)} -> {node} '
                                 f'[label=<<b>{html.escape(carried)}</b>>, style=dashed, constraint=false];')
                    if isinstance(a, Var):  # where the first iteration's comes from
                        lines.append(edge(a, node))
                elif role.kind == "gathered":
                    lines += [edge(v, node) for v in role.values]
                elif isinstance(a, Var):  # a value from before the loop
                    lines.append(edge(a, node))
        for t in range(loop.count):
            for position in range(loop.period):
                producer[id(loop.eqn(eqns, t, position).out)] = self.node(position)
        return lines

    def name_after(self, eqns: Sequence[Eqn], shown: dict[int, str]) -> None:
        """How the code after the loop names the values it stores: `s1[4]`, `window[1, 2]`."""
        loop = self.loop
        for t in range(loop.count):
            for position in sorted(loop.stored):
                shown[id(loop.eqn(eqns, t, position).out)] = stored_place(eqns, loop, t, position)


def _loop_boxes(pair: Backprop, jit: str | None, unroll: bool | None) -> list[_LoopBox]:
    """The loops the module's `forward` is written with (see `codegen.module.written_loops`),
    with the header and names its lines give each; none where it is flat."""
    eqns = pair.forward.eqns
    code = Code(tuple(eqns), Lines((), jit).of(eqns))
    taken = [v.name for v in pair.forward.inputs]
    found = written_loops((("", code),), pair.forward.outputs, jit, unroll, taken)
    if found is None:
        return []
    loops, (lines,) = found
    headers = [k for k, line in enumerate(lines) if line.startswith("for ")]
    boxes = []
    for loop, k in zip(loops, headers):
        header = [lines[k].rstrip(":")]  # over a grid: the column's `for`, or the divmod line, too
        if loop.width:
            header.append(lines[k + 1].strip().rstrip(":"))
        indent = "    " * (1 + (loop.width and loop.aligned()))
        body = lines[k + len(header): k + len(header) + loop.period]
        names = [_target(line) for line in body
                 if line.startswith(indent) and not line[len(indent):].startswith((" ", "#"))]
        if len(names) != loop.period or None in names:  # a body of another shape: the first iteration's names
            names = [loop.eqn(eqns, 0, position).out.name for position in range(loop.period)]
        boxes.append(_LoopBox(loop, ": ".join(header), tuple(names)))  # type: ignore[arg-type]
    return boxes


def _target(line: str) -> str | None:
    """What a body line binds, as written: `s1[i]`, `total`."""
    tree = ast.parse(line.strip()).body[0]
    if isinstance(tree, ast.Assign) and len(tree.targets) == 1:
        return unparse(ast.Expr(tree.targets[0]))
    return None


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
