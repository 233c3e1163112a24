"""A differentiated graph as a module: the emitted functions' bodies made of finished lines,
the cache between forward and backward, the header's facts, numba's part functions, all laid
out by the Jinja template `templates/module.py.j2`, which receives finished lines and decides
nothing.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jinja2
import numpy as np

from compiler.codegen.explain import explanation
from compiler.codegen.expressions import assign, load, returns, tuple_of, unparse
from compiler.codegen.lines import render_lines
from compiler.helpers import HELPERS, helper_source
from compiler.ir import Atom, Eqn, Graph, Var
from compiler.naming import part_name

JIT_BACKENDS = ("numba",)
TEMPLATE = "module.py.j2"  # the emitted module; templates/ holds the report's too


def cached_values(graph: Graph) -> tuple[Var, ...]:
    """What the backward equations read from the forward pass, in forward order."""
    read: set[Atom] = set()  # Var and Const hash by identity
    for eqn in graph.backward_eqns[1:]:
        read.update(eqn.inputs)
        if eqn.accumulate is not None:
            read.add(eqn.accumulate)
    candidates = list(graph.inputs) + [eqn.out for eqn in graph.forward_eqns]
    return tuple([v for v in candidates if v in read])


# The header names at most this many cached values; a long program's cache is summed up.
HEADER_NAMES = 24


def _listing(names: Sequence[str]) -> str:
    """`a, b, c`, or for many names the first ones and how many more: a header stays readable."""
    if len(names) <= HEADER_NAMES:
        return ", ".join(names)
    return f"{', '.join(names[:HEADER_NAMES])} and {len(names) - HEADER_NAMES} more"


def _names(names: Sequence[str]) -> str:
    """A tuple of names as an assignment writes it (`a, b` or `a,`), as `unparse` would, without
    walking a tree of tens of thousands of names."""
    return ", ".join(names) + ("," if len(names) == 1 else "")


@functools.cache
def _itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def describe(v: Var) -> str:
    """`float64 scalar` or `float32[4, 3]`."""
    return f"{v.dtype} scalar" if v.shape == () else f"{v.dtype}[{', '.join(map(str, v.shape))}]"


@dataclass(frozen=True)
class Provenance:
    """Where an emitted module came from, for its header."""

    function: str  # the traced function's name, e.g. `neuron`
    source: str  # `examples/neuron.py:neuron`
    command: str  # the command that regenerates the module


@dataclass(frozen=True)
class Function:
    """One emitted function: what the template lays out."""

    name: str
    params: tuple[str, ...]
    doc: str
    sections: tuple[tuple[str, tuple[str, ...]], ...]  # (comment, lines); an empty comment prints none


def _signature(name: str, params: Sequence[str]) -> str:
    return f"{name}({', '.join(params)})"



# numba's compile time grows faster than linearly with a function's length: under numba a long
# body is split into part functions of at most this many lines, called in turn.
NUMBA_PART_LINES = 250


def _reads(eqn: Eqn) -> list[str]:
    return [a.name for a in eqn.reads if isinstance(a, Var)]


def split_into_parts(
    name: str, eqns: Sequence[Eqn], texts: Sequence[str], bound_before: Sequence[str], read_after: Sequence[str]
) -> tuple[list[Function], list[str]]:
    """Straight-line code as part functions of at most NUMBA_PART_LINES lines, and the lines that
    call them in turn. Each part takes the names it reads that were bound before it and returns
    the names it binds that are read after it (`read_after` counts as read after the end)."""
    if len(eqns) <= NUMBA_PART_LINES:
        return [], list(texts)
    parts: list[Function] = []
    calls: list[str] = []
    available = set(bound_before)
    for index, start in enumerate(range(0, len(eqns), NUMBA_PART_LINES)):
        chunk = eqns[start : start + NUMBA_PART_LINES]
        later = set(read_after).union(*(_reads(e) for e in eqns[start + NUMBA_PART_LINES :]))
        takes = list(dict.fromkeys(n for e in chunk for n in _reads(e) if n in available))
        gives = list(dict.fromkeys(e.out.name for e in chunk if e.out.name in later))
        available.update(e.out.name for e in chunk)
        part = part_name(name, index)
        body = [*texts[start : start + NUMBA_PART_LINES], returns(tuple_of(gives))]
        doc = f"Lines {start + 1}-{start + len(chunk)} of `{name}`."
        parts.append(Function(part, tuple(takes), doc, (("", tuple(body)),)))
        call = ast.Call(load(part), [load(n) for n in takes], [])
        if gives:
            calls.append(assign(ast.Tuple([ast.Name(n, ast.Store()) for n in gives], ast.Store()), call))
        else:
            calls.append(unparse(ast.Expr(call)))
    return parts, calls


def functions(
    graph: Graph,
    provenance: Provenance,
    jit: str | None = None,
    explain: bool = False,
    folded: Graph | None = None,
    texts: Sequence[str] | None = None,
    cache: Sequence[Var] | None = None,
) -> tuple[Function, ...]:
    """The module's functions, their bodies finished lines (with `explain`, each backward line
    carries a comment saying which gate it differentiates and how). `value_and_grad` runs
    `folded`, the graph with its seed folded in (`passes.fold_seed`), where given; `backward`
    always takes the seed as its argument. `texts` are the lines of `graph`'s equations followed
    by `folded`'s, as `_render_lines` gives them, and `cache` is `cached_values(graph)` (each
    worked out here when not given)."""
    if texts is None:
        texts, _ = render_lines(graph.eqns + (folded.eqns if folded is not None else ()), jit)
    n_forward = len(graph.forward_eqns)
    params = tuple(v.name for v in graph.inputs)
    output = graph.outputs[0].name
    grads = tuple_of([g.name for g in graph.outputs[1:]])
    grads_text = "(" + ", ".join(g.name for g in graph.outputs[1:]) + ("," if len(grads.elts) == 1 else "") + ")"
    seed, *backward = graph.backward_eqns
    forward_lines = tuple(texts[:n_forward])
    gates = {e.out.name: text for e, text in zip(graph.forward_eqns, forward_lines)} if explain else {}

    def backward_lines(eqns: Sequence[Eqn], lines: Sequence[str]) -> tuple[str, ...]:
        if not explain:
            return tuple(lines)
        return tuple(f"{text}  # {explanation(eqn, gates)}" for eqn, text in zip(eqns, lines))

    own_backward = backward_lines(graph.backward_eqns, texts[n_forward : len(graph.eqns)])
    cached = [v.name for v in (cached_values(graph) if cache is None else cache)]
    unpack = (f"{_names(cached)} = cache",) if cached else ()
    call = _signature(provenance.function, params)
    recompute = ast.Subscript(ast.Call(load("value_and_grad"), list(map(load, params)), []), ast.Constant(1))
    grad_names = [g.name for g in graph.outputs[1:]]
    parts: list[Function] = []

    def body(
        name: str, eqns: Sequence[Eqn], texts: Sequence[str], before: Sequence[str], after: Sequence[str]
    ) -> tuple[str, ...]:
        if jit != "numba":
            return tuple(texts)
        more, calls = split_into_parts(name, eqns, texts, before, after)
        parts.extend(more)
        return tuple(calls)

    forward_eqns = list(graph.forward_eqns)
    inline = folded or graph
    if folded is None:
        inline_forward, inline_backward = forward_lines, own_backward
    else:
        folded_texts = texts[len(graph.eqns) :]
        n_inline = len(folded.forward_eqns)
        inline_forward = tuple(folded_texts[:n_inline])
        inline_backward = backward_lines(folded.backward_eqns, folded_texts[n_inline:])
    everything = body("value_and_grad", inline.eqns, (*inline_forward, *inline_backward), params, [output, *grad_names])
    split = jit == "numba" and len(everything) < len(inline.eqns)
    return (
        Function(
            "forward",
            params,
            f"Return {call}.",
            (("", (*body("forward", forward_eqns, forward_lines, params, [output]), returns(load(output)))),),
        ),
        Function(
            "value_and_grad",
            params,
            f"Return ({output}, {grads_text}): the value of {call} and its gradients.",
            (("", (*everything, returns(load(output), grads))),)
            if split
            else (
                ("forward pass", inline_forward),
                ("backward pass", (*inline_backward, returns(load(output), grads))),
            ),
        ),
        Function("grad", params, f"Return {grads_text}, the gradients of {call}.", (("", (returns(recompute),)),)),
        Function(
            "forward_with_cache",
            params,
            f"Return ({output}, cache): the value of {call} and what `backward` reads.",
            (("", (
                *body("forward_with_cache", forward_eqns, forward_lines, params, [output, *cached]),
                f"cache = {_names(cached)}" if cached else "cache = ()", returns(load(output), load("cache")),
            )),),
        ),
        Function(
            "backward",
            (seed.out.name, "cache"),
            f"Return {grads_text} from the upstream gradient {seed.out.name} and `forward_with_cache`'s cache.",
            (
                (
                    "",
                    (
                        *unpack,
                        *body("backward", backward, own_backward[1:], [seed.out.name, *cached], grad_names),
                        returns(grads),
                    ),
                ),
            ),
        ),
        *parts,
    )


def _environment() -> jinja2.Environment:
    package = Path(__file__).resolve().parent.parent  # compiler/
    # In a wheel the templates ship inside the package; in a source checkout they sit beside it.
    search = [str(package / "templates"), str(package.parent / "templates")]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # the report is HTML and escapes what it shows; the emitted module is Python
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
    )


@functools.lru_cache(maxsize=None)
def template(name: str) -> jinja2.Template:
    """A template of `templates/` (the emitted module's, the report's)."""
    return _environment().get_template(name)


def emit_module(
    graph: Graph, provenance: Provenance, jit: str | None = None, explain: bool = False, folded: Graph | None = None
) -> str:
    """The whole module for a differentiated graph (see `autodiff.differentiate`); `folded` is
    the graph `value_and_grad` runs instead, with the seed folded in (`passes.fold_seed`)."""
    texts, forms = render_lines(graph.eqns + (folded.eqns if folded is not None else ()), jit)
    called = set().union(*(form.calls for form in forms))
    helpers = [helper_source(name) for name in HELPERS if name in called]
    uses_numpy = bool(helpers) or any(form.uses_numpy for form in forms)
    cache = cached_values(graph)
    return template(TEMPLATE).render(
        provenance=provenance,
        jit=jit,
        uses_numpy=uses_numpy,
        helpers=helpers,
        inputs=[(v.name, describe(v)) for v in graph.inputs],
        output=graph.outputs[0].name,
        grads=[g.name for g in graph.outputs[1:]],
        seed=graph.backward_eqns[0].out.name,
        constants=[(name, repr(value)) for name, value in graph.constants],
        cache=_listing([v.name for v in cache]),
        cache_bytes=sum(math.prod(v.shape) * _itemsize(v.dtype) for v in cache),
        signature=_signature(provenance.function, [v.name for v in graph.inputs]),
        functions=functions(graph, provenance, jit, explain, folded, texts, cache),
    )
