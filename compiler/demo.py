"""`flatgrad demo`: the lecture's two examples, traced, differentiated and checked."""

from __future__ import annotations

import inspect
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Callable

from compiler import visualize
from compiler.check import compare, format_check
from compiler.errors import WriteError
from compiler.files import FORCE_IN_PYTHON
from compiler.program import gradient
from compiler.tracer import GATES, bind_arguments

sigmoid = GATES["sigmoid"]


def simple(x, y, z):
    q = x + y
    return q * z


def neuron(w0, x0, w1, x1, w2):
    return sigmoid(w0 * x0 + w1 * x1 + w2)


EXAMPLES: tuple[tuple[str, Callable, tuple[float, ...]], ...] = (
    ("f(x, y, z) = (x + y) z", simple, (-2.0, 5.0, -4.0)),
    ("the sigmoid neuron f(w, x) = 1 / (1 + exp(-(w0 x0 + w1 x1 + w2)))", neuron, (2.0, -1.0, -3.0, -2.0, -3.0)),
)


def _number(value: float) -> str:
    return f"{float(value):.4g}"


def walk_through(title: str, f: Callable, args: tuple[float, ...]) -> str:
    """One example: the function, its flat code, its value and gradients, and a gradient check."""
    program = gradient(f, *args, explain=True)
    value, grads = program.value_and_grad(*args)
    names = [v.name for v in program.graph.inputs]
    point = ", ".join(f"{n}={_number(a)}" for n, a in zip(names, args))
    table, _ = format_check(compare(program, f, bind_arguments(f, args, {})))
    return "\n".join(
        [
            f"== {title}, at {point}",
            "",
            textwrap.indent(inspect.getsource(f), "    ").rstrip(),
            "",
            "flatgrad traces it into one gate per line, then walks back from the output, each backward",
            "line a gate's local gradient times the gradient flowing into the gate from above:",
            "",
            textwrap.indent(inspect.getsource(program.module.value_and_grad), "    ").rstrip(),
            "",
            f"value:     {program.graph.outputs[0].name} = {_number(value)}",
            "gradients: " + ", ".join(f"grad_{n} = {_number(g)}" for n, g in zip(program.wrt, grads)),
            "",
            "gradient check against central differences:",
            textwrap.indent(table, "    "),
            "",
        ]
    )


def draw_neuron(folder: Path, overwrite: bool = False, force_hint: str = FORCE_IN_PYTHON) -> Path:
    """The neuron's graph at the lecture's point, drawn into `folder` (as DOT text without Graphviz)."""
    _, f, args = EXAMPLES[1]
    dot = visualize.dot_source(gradient(f, *args).graph, args, "the sigmoid neuron")
    name = "neuron.svg" if shutil.which("dot") else "neuron.dot"
    return visualize.render(dot, folder / name, overwrite=overwrite, force_hint=force_hint)


def run(folder: str | Path | None = None, overwrite: bool = False, force_hint: str = FORCE_IN_PYTHON) -> str:
    """The whole demo as text; its picture goes into `folder` (default: a new temporary folder)."""
    if folder is None:
        try:
            folder = tempfile.mkdtemp(prefix="flatgrad-demo-")
        except OSError as error:
            raise WriteError(
                f"cannot make a temporary folder for the demo ({error.strerror}); name one with --out"
            ) from None
    target = Path(folder)
    path = draw_neuron(target, overwrite, force_hint)
    return "\n".join(walk_through(*example) for example in EXAMPLES) + (
        f"\nThe neuron's graph, every edge with its value (green) and gradient (red): {path}\n"
    )
