"""A differentiated function (`ir.Backprop`) as a module: the emitted functions' bodies made of finished lines,
the cache between forward and backward, the header's facts, numba's part functions, all laid
out by the Jinja template `templates/module.py.j2`, which receives finished lines and decides
nothing.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import jinja2
import numpy as np

from compiler.codegen.branches import CacheSlots, PathLines, bound_names, condition_text, merged, where
from compiler.codegen.explain import explained
from compiler.codegen.expressions import assign, expression, load, returns, tuple_of, unparse
from compiler.codegen.guards import (
    CHECK,
    check_body,
    check_doc,
    compile_check,
    definitions,
    guard_lines,
    shape_literal,
    static_literal,
    upstream_check,
)
from compiler.codegen.in_place import WRITABLE_VIEWS, allocates, reuse_arrays
from compiler.codegen.inlining import inline_single_uses
from compiler.codegen.lines import Lines, render_lines
from compiler.codegen.loops import Loop, find_loops, held_names, rolled
from compiler.helpers import helper_source, helpers_needed
from compiler.ir import Atom, Backprop, Branch, Const, Eqn, Var
from compiler.naming import RESERVED, part_name
from compiler.passes import copy_source, gradients_only, recompute_views
from compiler.sizes import NO_SIZES, Sizes

JIT_BACKENDS = ("numba",)
_CALLED = re.compile(r"\b(\w+)\(")  # a function a line calls by name
TEMPLATE = "module.py.j2"  # the emitted module; templates/ holds the report's too


# The header names at most this many cached values; a long program's cache is summed up.
HEADER_NAMES = 24
TRIPLE = '"' * 3  # what would end the module's docstring, in a line the header quotes
SINGLE_TRIPLE = "'" * 3


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


def describe(v: Var, sizes: Sizes = NO_SIZES) -> str:
    """`float64 scalar`, `float32[4, 3]` or, with a named size, `float64[N, 4]`."""
    return f"{v.dtype} scalar" if v.shape == () else f"{v.dtype}[{sizes.shape_text(v.name, v.shape)}]"


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
    summary: str = ""  # the header's line for a public function: `grad(...) -> (grad_x,)`
    decorator: str | None = "@numba.njit(cache=True)"  # under numba; None: plain Python


def _signature(name: str, params: Sequence[str]) -> str:
    return f"{name}({', '.join(params)})"



# numba's compile time grows faster than linearly with a function's length: under numba a long
# body is split into part functions of at most this many lines, called in turn.
NUMBA_PART_LINES = 250
# A line on arrays of 3 or more axes counts as this many: LLVM unswitches and vectorizes each
# broadcasting loop nest numba writes inline, for seconds a line and more the longer the
# function (an unrolled convolution's backward: 8 positions in 194 s in 12-line parts, over
# 900 s in 250-line ones).
NUMBA_HEAVY_LINE = 20


def _weight(eqn: Eqn) -> int:
    ranks = [np.ndim(a.value) if isinstance(a, Const) else len(a.shape) for a in (*eqn.reads, eqn.out)]
    return NUMBA_HEAVY_LINE if max(ranks) >= 3 else 1


def _chunks(eqns: Sequence[Eqn]) -> list[range]:
    """Consecutive runs of equations whose weights add up to at most NUMBA_PART_LINES."""
    chunks, start, total = [], 0, 0
    for index, eqn in enumerate(eqns):
        weight = _weight(eqn)
        if total + weight > NUMBA_PART_LINES and index > start:
            chunks.append(range(start, index))
            start, total = index, 0
        total += weight
    return [*chunks, range(start, len(eqns))]


def _reads(eqn: Eqn) -> list[str]:
    return [a.name for a in eqn.reads if isinstance(a, Var)]


def split_into_parts(
    name: str, eqns: Sequence[Eqn], texts: Sequence[str], bound_before: Sequence[str], read_after: Sequence[str],
    sizes: Sequence[str] = (),
) -> tuple[list[Function], list[str]]:
    """Straight-line code as part functions of at most NUMBA_PART_LINES lines (a line on arrays of
    3 or more axes weighing NUMBA_HEAVY_LINE), and the lines that call them in turn. Each part
    takes the named sizes and the names it reads that were bound before it, and returns the
    names it binds that are read after it (`read_after` counts as read after the end)."""
    chunks = _chunks(eqns)
    if len(chunks) == 1:
        return [], list(texts)
    parts: list[Function] = []
    calls: list[str] = []
    available = set(bound_before)
    last_read = {name: index for index, e in enumerate(eqns) for name in _reads(e)}
    last_read.update((name, len(eqns)) for name in read_after)
    for index, lines in enumerate(chunks):
        start, end = lines.start, lines.stop
        chunk = eqns[start:end]
        takes = [*sizes, *dict.fromkeys(n for e in chunk for n in _reads(e) if n in available)]
        gives = list(dict.fromkeys(e.out.name for e in chunk if last_read.get(e.out.name, -1) >= end))
        available.update(e.out.name for e in chunk)
        part = part_name(name, index)
        body = [*texts[start:end], returns(tuple_of(gives))]
        doc = f"Lines {start + 1}-{start + len(chunk)} of `{name}`."
        parts.append(Function(part, tuple(takes), doc, (("", tuple(body)),)))
        call = ast.Call(load(part), [load(n) for n in takes], [])
        if gives:
            calls.append(assign(ast.Tuple([ast.Name(n, ast.Store()) for n in gives], ast.Store()), call))
        else:
            calls.append(unparse(ast.Expr(call)))
    return parts, calls


@dataclass(frozen=True)
class Code:
    """Straight-line code: equations and their finished lines, one each, in order."""

    eqns: tuple[Eqn, ...]
    lines: Sequence[str]  # a tuple, or `Lines` rendered as they are read


@dataclass(frozen=True)
class Bodies:
    """What the emitted functions are made of, rendered."""

    forward: Code  # the forward pass
    backward: Code  # the backward pass from the upstream gradient, `backward`'s parameter
    inline: tuple[Code, Code]  # `value_and_grad`'s forward and backward passes (with the seed)
    # optimize mode's `grad`: what the gradients need of both passes, and the gradients returned
    gradients: tuple[Code, ast.Tuple] | None
    grads: ast.Tuple  # the gradients as `backward` returns them (see `fresh_gradients`)
    inline_grads: ast.Tuple  # and as `value_and_grad` returns them
    inline_outputs: tuple[Var, ...] = ()  # what `value_and_grad` returns: values, then gradients
    signatures: dict[int, tuple] = dataclasses.field(default_factory=dict)  # codegen.loops' memo

    @classmethod
    def of(cls, pair: Backprop, inline: Backprop, jit: str | None, explain: bool, optimize: bool = False) -> Bodies:
        """The bodies of `pair`'s module; `value_and_grad` runs `inline` (the pair with its
        seed folded in, or without its views taken again: see `passes.recompute_views`)."""
        forward_values = {id(e.out) for e in pair.forward.eqns}
        forward_names = {e.out.name for e in pair.forward.eqns}
        lazy = Lines((), jit)

        def code(eqns: Sequence[Eqn], gates: dict[str, tuple[str, Eqn]] | None = None) -> Code:
            if gates is None:
                return Code(tuple(eqns), lazy.of(eqns))
            lines = render_lines(eqns, jit)  # explain mode: each backward gate a block, each line what it does
            # a view the backward takes again binds the forward's name (`passes.recompute_views`)
            retaken = forward_values | {id(e.out) for e in eqns if e.rule is None and e.out.name in forward_names}
            return Code(tuple(eqns), tuple(explained(eqns, lines, gates, retaken, jit)))

        def passes(pair: Backprop) -> tuple[Code, Code]:
            forward = code(pair.forward.eqns)
            gates = {e.out.name: (line, e) for e, line in zip(forward.eqns, forward.lines)} if explain else None
            return forward, code(pair.backward_eqns, gates)

        def reusable(*codes: Code) -> bool:
            """Whether backward lines may read forward values by name: in optimize mode, where
            the lines stay one body (numba's part functions pass the names the IR reads)."""
            return optimize and (jit != "numba" or len(_chunks([e for c in codes for e in c.eqns])) == 1)

        forward, backward = passes(pair)
        inline_code = passes(inline) if inline is not pair else (forward, backward)
        if reusable(*inline_code):
            inline_code = (inline_code[0], reusing_forward_values(inline_code[0], inline_code[1]))
        seeds = len(backward.eqns) - len(pair.backward.eqns)
        seedless = Code(backward.eqns[seeds:], backward.lines[seeds:])
        grads = fresh_gradients(pair.backward.outputs, pair.backward.eqns, jit)
        inline_grads = fresh_gradients(inline.backward.outputs, inline_code[1].eqns, jit)
        gradients = None
        if optimize and inline.seed is None:  # its seed folded in
            needed = code(gradients_only(inline))
            if reusable(needed):
                made = {id(e.out) for e in inline.forward.eqns}
                split = sum(1 for e in needed.eqns if id(e.out) in made)
                before = Code(needed.eqns[:split], needed.lines[:split])
                after = reusing_forward_values(before, Code(needed.eqns[split:], needed.lines[split:]))
                needed = Code(needed.eqns, before.lines + after.lines)
            gradients = (needed, fresh_gradients(inline.backward.outputs, needed.eqns, jit))
        return cls(forward, seedless, inline_code, gradients, grads, inline_grads,
                   (*inline.forward.outputs, *inline.backward.outputs))


def reusing_forward_values(forward: Code, backward: Code) -> Code:
    """The backward lines reading the forward pass's values where they compute one again: a
    local gradient `-np.sin(s0) * grad_s3` reads `s1` where the forward line is `s1 =
    np.sin(s0)`. The forward names are bound once and never rebound, and every forward line runs
    before the backward ones, so the value read is the one computed. Only parts of a line's
    right-hand side are replaced: a whole one would make the gradient the forward value itself."""
    computed: dict[str, str] = {}
    for line in forward.lines:
        target, equals, value = line.partition(" = ")
        tree = ast.parse(value, mode="eval").body if equals and target.isidentifier() else None
        if isinstance(tree, (ast.Call, ast.BinOp, ast.UnaryOp)):
            computed.setdefault(ast.dump(tree), target)
    if not computed:
        return backward

    class Reuse(ast.NodeTransformer):
        replaced = False

        def visit(self, node: ast.AST) -> ast.AST:
            name = computed.get(ast.dump(node)) if isinstance(node, ast.expr) else None
            if name is None:
                return self.generic_visit(node)
            self.replaced = True
            return ast.Name(name, ast.Load())

    lines = []
    for line in backward.lines:
        header, newline, statement = line.rpartition("\n")  # explain mode's block comment stays
        code, comment, note = statement.partition("  # ")
        target, equals, value = code.partition(" = ")
        tree = ast.parse(value, mode="eval").body if equals and target.isidentifier() else None
        reuse = Reuse()
        if tree is not None and ast.dump(tree) not in computed:
            tree = reuse.generic_visit(tree)
        if reuse.replaced:
            statement = assign(ast.Name(target, ast.Store()), tree) + comment + note
        lines.append(header + newline + statement)
    return Code(backward.eqns, tuple(lines))


def _writable_view_of(eqn: Eqn, tree: ast.expr) -> Var | None:
    """The operand `eqn`'s value is a writable view of (`ds0.reshape(...)`,
    `np.expand_dims(g, 0)`), if it is one."""
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Attribute) and tree.func.attr in WRITABLE_VIEWS):
        return None
    base = tree.func.value
    if isinstance(base, ast.Name) and base.id == "np" and tree.args:
        base = tree.args[0]  # np.reshape(x, ...)
    if isinstance(base, ast.Call) and ast.unparse(base.func) == "np.ascontiguousarray" and len(base.args) == 1:
        base = base.args[0]  # numba's reshape: the array itself where contiguous, else a new one
    if not isinstance(base, ast.Name):
        return None
    return next((a for a in eqn.inputs if isinstance(a, Var) and a.name == base.id), None)


def fresh_gradients(grads: Sequence[Var], body: Sequence[Eqn], jit: str | None) -> ast.Tuple:
    """The gradients as a function returns them, each array one the caller owns: a gradient that
    may be an input, a cached value, another gradient, or a (read-only) view of one, is
    returned as `.copy()`, so that an in-place update of one never changes another."""
    made = {id(eqn.out): eqn for eqn in body}

    def origin(value: Atom) -> Atom:
        """The value whose array `value` is: through copies (`grad_x = grad_s0`) and writable
        views (`dx = ds0.reshape(...)`) to the value an equation made, or to an input or cached
        value."""
        eqn = made.get(id(value))
        if eqn is None:
            return value
        source = copy_source(eqn) or _writable_view_of(eqn, expression(eqn, jit))
        return value if source is None else origin(source)

    returned: set[int] = set()
    items: list[ast.expr] = []
    for grad in grads:
        source = origin(grad)
        eqn = made.get(id(source))
        shared = id(source) in returned or eqn is None or not allocates(expression(eqn, jit))
        returned.add(id(source))
        item: ast.expr = load(grad.name)
        if shared and grad.shape != ():  # numbers are immutable: only arrays need their own copy
            item = ast.Call(ast.Attribute(item, "copy", ast.Load()), [], [])
        items.append(item)
    return ast.Tuple(items, ast.Load())


class _Parts:
    """Under numba, bodies longer than NUMBA_PART_LINES lines become calls of part functions,
    which this collects; other backends keep every body whole."""

    def __init__(self, jit: str | None, sizes: Sequence[str], path: str = "") -> None:
        self.jit = jit
        self.sizes = sizes
        self.path = path  # with several paths, each path's parts are named after it
        self.functions: list[Function] = []

    def body(self, name: str, code: Code, bound_before: Sequence[str], read_after: Sequence[str]) -> tuple[str, ...]:
        if self.jit != "numba":
            return code.lines
        named = f"{name}_{self.path}" if self.path else name
        parts, calls = split_into_parts(named, code.eqns, code.lines, bound_before, read_after, self.sizes)
        self.functions.extend(parts)
        return tuple(calls)


# A function body of more equations than this has its repeated iterations written as loops by
# default (under numba, any length: its compile time grows with every line)
ROLL_ABOVE = 200
ROLL_ATTEMPTS = 4  # searches for loops, each past the runs the one before could not write


def rolled_sections(
    sections: Sequence[tuple[str, Code]], outputs: Sequence[Var], jit: str | None, unroll: bool | None,
    taken: Sequence[str] = (), keeps: bool = False, memo: dict[int, tuple] | None = None,
) -> tuple | None:
    """A function's sections with the iterations of its loops written as `for` loops (see
    `codegen.loops`), or None where it stays flat: `unroll=True`, none found, or (by default)
    a short body under NumPy. `unroll=False` writes every loop it finds. With `keeps`, the
    sections are followed by a function from values to the names that hold them after the
    lines (`loops.held_names`)."""
    found = written_loops(sections, outputs, jit, unroll, taken, memo)
    if found is None:
        return None
    loops, written = found
    eqns = [e for _, code in sections for e in code.eqns]
    looped = tuple((title, tuple(section)) for (title, _), section in zip(sections, written))
    return (*looped, functools.partial(held_names, eqns, loops)) if keeps else looped


def written_loops(
    sections: Sequence[tuple[str, Code]], outputs: Sequence[Var], jit: str | None, unroll: bool | None,
    taken: Sequence[str] = (), memo: dict[int, tuple] | None = None,
) -> tuple[list[Loop], list[list[str]]] | None:
    """The loops a function's sections are written with, and each section's lines with them
    (see `rolled_sections`, which decides the same way); None where the function stays flat.
    The pictures (`compiler.visualize`) draw a loop the module writes as a loop box."""
    eqns = [e for _, code in sections for e in code.eqns]
    if unroll or unroll is None and jit != "numba" and len(eqns) <= ROLL_ABOVE:
        return None
    boundaries = list(itertools.accumulate(len(code.eqns) for _, code in sections))[:-1]
    lines = _Joined([code.lines for _, code in sections])
    words = {v.name for e in eqns for v in (e.out, *e.reads) if isinstance(v, Var)} | set(taken) | RESERVED
    avoid: frozenset[int] = frozenset()
    for _ in range(ROLL_ATTEMPTS):  # a run whose lines are not one body: found again past its start
        loops = find_loops(eqns, outputs, boundaries, memo=memo, avoid=avoid)
        if not loops:
            return None
        written = rolled(eqns, lines, loops, outputs, boundaries, set(words), jit)
        if not isinstance(written, range):
            break
        avoid |= set(written)
    else:
        return None
    return loops, written


def rolled_cache_pair(
    pair: Backprop, bodies: Bodies, jit: str | None, unroll: bool | None, params: Sequence[str]
) -> tuple[tuple[str, ...], list[str], tuple[str, ...], set[str]] | None:
    """`forward_with_cache`'s and `backward`'s lines with loops, the names the cache keeps
    between them, and which of those are a forward loop's stored arrays (one value per
    iteration, along a first axis of their own); None where they stay flat. The views
    `backward` would take again (`passes.recompute_views`) are read from the cache."""
    forward = bodies.forward
    made = {id(e.out) for e in forward.eqns} | {id(v) for v in pair.forward.inputs}
    kept = [k for k, e in enumerate(bodies.backward.eqns) if id(e.out) not in made]
    lines = bodies.backward.lines
    picked = lines.of([bodies.backward.eqns[k] for k in kept]) if isinstance(lines, Lines) else [lines[k] for k in kept]
    backward = Code(tuple(bodies.backward.eqns[k] for k in kept), picked)
    sections = (("", forward), ("", backward))
    outputs = (*pair.forward.outputs, *pair.backward.outputs)
    found = written_loops(sections, outputs, jit, unroll, params, memo=bodies.signatures)
    if found is None:
        return None
    loops, (forward_lines, backward_lines) = found
    eqns = [*forward.eqns, *backward.eqns]
    defined = {id(e.out) for e in backward.eqns} | {id(v) for v in pair.upstream}
    read = [a for e in backward.eqns for a in e.reads if isinstance(a, Var) and id(a) not in defined]
    arrays = {loop.eqn(eqns, 0, position).out.name for loop in loops for position in loop.stored}
    return tuple(forward_lines), held_names(eqns, loops, read), tuple(backward_lines), arrays


class _Joined(Sequence[str]):
    """Several sections' lines read as one sequence, each line read only when asked for."""

    def __init__(self, parts: Sequence[Sequence[str]]) -> None:
        self._where = [(part, k) for part in parts for k in range(len(part))]

    def __len__(self) -> int:
        return len(self._where)

    def __getitem__(self, k):  # type: ignore[override]
        part, index = self._where[k]
        return part[index]


def cached_names(pair: Backprop, sizes: Sizes) -> list[str]:
    """What `forward_with_cache` keeps for `backward`: the values it reads, and the named sizes
    no cached input has an axis of."""
    names = [v.name for v in pair.cache]
    return names + definitions(sizes, names)[1]


@dataclass(frozen=True)
class LayerNames:
    """A layer module's two public functions, named after the user's forward: `affine_forward`
    (returning `(out, cache)`) and `affine_backward(dout, cache)`."""

    forward: str
    backward: str

    @classmethod
    def of(cls, function: str) -> LayerNames:
        backward = function.replace("forward", "backward") if "forward" in function else f"{function}_backward"
        return cls(function, backward)


def _value(names: Sequence[str], auxiliary: bool) -> ast.expr:
    """The function's value as the module returns it: `L`; `(loss, scores)`; with `auxiliary`
    and more than one other output, `(loss, (a, b))` (as JAX's has_aux: the loss and its aux)."""
    if len(names) == 1:
        return load(names[0])
    if auxiliary and len(names) > 2:
        return ast.Tuple([load(names[0]), tuple_of(names[1:])], ast.Load())
    return tuple_of(names)


def _upstream_lines(pair: Backprop, function: str, jit: str | None) -> tuple[str, ...]:
    """`backward`'s upstream gradients checked; with several, None stands for zeros."""
    lines: list[str] = []
    for index, upstream in zip(pair.differentiated, pair.upstream):
        output = pair.forward.outputs[index]
        if len(pair.upstream) > 1:
            zeros = f"np.zeros({shape_literal(output.shape)}, np.{output.dtype})" if output.shape else "0.0"
            lines += [f"if {upstream.name} is None:", f"    {upstream.name} = {zeros}"]
        lines += upstream_check(function, upstream, output.name, jit)
    return tuple(lines)


@dataclass(frozen=True)
class OnePath:
    """Which of several paths the functions are written for, and the cache they share."""

    number: int
    cache: CacheSlots


def functions(
    pair: Backprop, provenance: Provenance, bodies: Bodies, jit: str | None, sizes: Sizes = NO_SIZES,
    layer: LayerNames | None = None, path: OnePath | None = None, unroll: bool | None = True,
) -> tuple[Function, ...]:
    """The module's functions, made of `bodies`: forward, value_and_grad and grad (when the
    backward pass starts from one number), forward_with_cache and backward, or for a layer the
    last two named after it; then check_arguments and any part functions numba needs. Each
    function that takes the inputs checks them first (`guards`). With `path`, they are one
    path's, whose cache is laid out in the paths' shared slots."""
    params = tuple(v.name for v in pair.forward.inputs)
    outputs = [v.name for v in pair.forward.outputs]
    returned = unparse(_value(outputs, auxiliary=False))
    grad_names = [g.name for g in pair.backward.outputs]
    listed = f"({_names(grad_names)})"
    upstream = [v.name for v in pair.upstream]
    cached = cached_names(pair, sizes)
    call = _signature(provenance.function, params)
    parts = _Parts(jit, sizes.symbols, f"path{path.number}" if path else "")
    guard = (("", guard_lines(pair.forward.inputs, sizes)),)  # `grad`'s is the `value_and_grad` it calls
    checks = check_body(provenance.function, pair.forward.inputs, sizes, jit, dict(pair.static))
    with_cache_name, backward_name = (layer.forward, layer.backward) if layer else ("forward_with_cache", "backward")

    looped = None if path else rolled_cache_pair(pair, bodies, jit, unroll, params)
    sized = [v.name for v in pair.cache]  # the cached values the named sizes are read from
    if looped:  # loops: the cache keeps the arrays the forward loops store
        with_cache, cached, backward_lines, arrays = looped
        sized = [name for name in cached if name not in arrays]  # an array's first axis is its loop's
        cached += definitions(sizes, sized)[1]
    else:
        with_cache = parts.body(with_cache_name, bodies.forward, params, [*outputs, *cached])
    keep = f"cache = {_names(cached)}" if cached else "cache = ()"
    unpack = (f"{_names(cached)} = cache",) if cached else ()
    if path:  # what every path's backward starts with first: the shared lines come first
        keep = path.cache.keep(path.number, jit)
        unpack = ("path = cache[0]", *_upstream_lines(pair, provenance.function, jit))
        unpack += tuple(line for line in (path.cache.unpack(path.number),) if line)
        unpack += tuple(definitions(sizes, [v.name for v in pair.cache])[0])
    else:
        unpack += tuple(definitions(sizes, sized)[0])
        unpack += _upstream_lines(pair, provenance.function, jit)
    if looped:
        backward = backward_lines
    else:
        backward = parts.body(backward_name, bodies.backward, [*upstream, *cached], grad_names)
    from_upstream = f"the upstream gradient {upstream[0]}" if len(upstream) == 1 else "the upstream gradients"
    pair_functions = (
        Function(
            with_cache_name, params,
            f"Return ({returned}, cache): the value of {call} and what `{backward_name}` reads.",
            (*guard, ("", (*with_cache, keep, returns(_value(outputs, False), load("cache"))))),
            f"{with_cache_name}(...) -> ({returned}, cache)",
        ),
        Function(
            backward_name, (*upstream, "cache"),
            f"Return {listed} from {from_upstream} and `{with_cache_name}`'s cache"
            + (" (None for an output's: zeros)." if len(upstream) > 1 else "."),
            (("", (*unpack, *backward, returns(bodies.grads))),),
            f"{backward_name}({', '.join(upstream)}, cache) -> {listed}",
        ),
    )
    check = Function(CHECK, params, check_doc(provenance.function, sizes), (("", checks),))
    if layer:
        return (*pair_functions, check, *parts.functions)

    looped = rolled_sections((("", bodies.forward),), pair.forward.outputs, jit, unroll, params, memo=bodies.signatures)
    forward = looped[0][1] if looped else parts.body("forward", bodies.forward, params, outputs)
    functions: list[Function] = [
        Function("forward", params, f"Return {call}.", (*guard, ("", (*forward, returns(*map(load, outputs))))),
                 f"forward(...) -> {returned}")
    ]
    if pair.seed is not None:  # the backward pass starts from one number: the gradients of it
        value = _value(outputs, auxiliary=True)
        shown = unparse(value)
        inline_forward, inline_backward = bodies.inline
        passes = (("forward pass", inline_forward), ("backward pass", inline_backward))
        looped = rolled_sections(passes, bodies.inline_outputs, jit, unroll, params, memo=bodies.signatures)
        flat = tuple((title, code.lines) for title, code in passes)
        whole = Code(inline_forward.eqns + inline_backward.eqns, () if looped else flat[0][1] + flat[1][1])
        split = () if looped else parts.body("value_and_grad", whole, params, [*outputs, *grad_names])
        if len(split) < len(whole.lines):  # split into parts: the passes are no longer apart
            value_and_grad = (*guard, ("", (*split, returns(value, bodies.inline_grads))))
        else:  # the passes apart, with loops or without
            (_, forward_lines), (_, backward_lines) = looped or flat
            backward_pass = (*backward_lines, returns(value, bodies.inline_grads))
            value_and_grad = (*guard, ("forward pass", forward_lines), ("backward pass", backward_pass))
        recompute = ast.Subscript(ast.Call(load("value_and_grad"), list(map(load, params)), []), ast.Constant(1))
        of = f"the gradients of {outputs[0]}" if len(outputs) > 1 else "its gradients"
        functions += [
            Function(
                "value_and_grad", params, f"Return ({shown}, {listed}): the value of {call} and {of}.",
                value_and_grad, f"value_and_grad(...) -> ({shown}, {listed})",
            ),
            Function(
                "grad", params, f"Return {listed}, the gradients of {call if len(outputs) == 1 else outputs[0]}.",
                _grad_body(bodies, parts, params, grad_names, guard, recompute, unroll), f"grad(...) -> {listed}",
            ),
        ]
    return (*functions, *pair_functions, check, *parts.functions)


VECTORIZE_TARGETS = ("cpu", "parallel")
# numba compiles a function so decorated into each caller: a loop over a million points pays no call
INLINED = '@numba.njit(cache=True, inline="always")'


def vectorized(pair: Backprop, target: str, static: Sequence[str]) -> tuple[Function, ...]:
    """The functions that run a scalar function's value and gradients at every point of arrays:
    `value_and_grad_many(...)` broadcasts its arguments (the static ones excepted), and a numba
    loop calls the module's own `value_and_grad` at each point, writing into arrays it made.
    `target="parallel"` spreads the points over every core (`numba.prange`)."""
    params = [v.name for v in pair.forward.inputs]
    varying = [v for v in pair.forward.inputs if v.name not in static]
    names = [v.name for v in varying]
    value = pair.forward.outputs[0].name
    grads = [g.name for g in pair.backward.outputs]
    parallel = target == "parallel"
    loop = f"_value_and_grad_{'parallel' if parallel else 'loop'}"
    # the loop's own names start with _, which no parameter of the user's function is likely to
    each = ", ".join(f"{n}[_i]" if n in names else n for n in params)
    body = (
        f"for _i in {'numba.prange' if parallel else 'range'}({value}.shape[0]):",
        f"    _value, _grads = value_and_grad({each})",
        f"    {value}[_i] = _value",
        *(f"    {g}[_i] = _grads[{k}]" for k, g in enumerate(grads)),
    )
    doc = f"`value_and_grad` at each point of the flat arrays, into `{value}` and the gradients."
    decorator = "@numba.njit(cache=True, parallel=True)" if parallel else "@numba.njit(cache=True)"
    listed = _names(names)
    wrapper = (
        f"{listed} = np.broadcast_arrays({', '.join(f'np.asarray({v.name}, np.{v.dtype})' for v in varying)})",
        f"_shape = {names[0]}.shape",
        *(f"{n} = np.ascontiguousarray({n}).ravel()" for n in names),
        *(f"{out} = np.empty({names[0]}.size)" for out in (value, *grads)),
        f"{loop}({', '.join((*params, value, *grads))})",
        returns(ast.parse(f"{value}.reshape(_shape)", mode="eval").body,
                ast.Tuple([ast.parse(f"{g}.reshape(_shape)", mode="eval").body for g in grads], ast.Load())),
    )
    shown = f"({_names(grads)})"
    call = ", ".join(params)
    return (
        Function(
            "value_and_grad_many", tuple(params),
            f"Return ({value}, {shown}) at every point of the broadcast arguments, arrays of their shape.",
            (("", wrapper),), f"value_and_grad_many(...) -> ({value}, {shown}), arrays", decorator=None,
        ),
        Function(
            "grad_many", tuple(params), f"Return {shown} at every point of the broadcast arguments.",
            (("", (f"return value_and_grad_many({call})[1]",)),), f"grad_many(...) -> {shown}, arrays",
            decorator=None,
        ),
        Function(loop, (*params, value, *grads), doc, (("", body),), decorator=decorator),
    )


def _grad_body(
    bodies: Bodies, parts: _Parts, params: Sequence[str], grad_names: Sequence[str],
    guard: tuple[tuple[str, tuple[str, ...]], ...], recompute: ast.expr, unroll: bool | None = True,
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`grad`'s body: in optimize mode the lines the gradients need and no others; else
    `value_and_grad(...)[1]`, which computes nothing the gradients do not (one gate per line
    keeps every line)."""
    if bodies.gradients is None:
        return (("", (returns(recompute),)),)
    needed, grads = bodies.gradients
    outputs = bodies.inline_outputs[len(bodies.inline_outputs) - len(grads.elts):]
    looped = rolled_sections((("", needed),), outputs, parts.jit, unroll, params, memo=bodies.signatures)
    lines = looped[0][1] if looped else parts.body("grad", needed, params, grad_names)
    return (*guard, ("", (*lines, returns(grads))))


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


def name_types(*pairs: Backprop | None) -> dict[str, tuple[tuple[int, ...], str] | None]:
    """Each name the pairs bind, with its shape and dtype (None where it has several)."""
    types: dict[str, tuple[tuple[int, ...], str] | None] = {}
    for pair in pairs:
        if pair is None:
            continue
        for v in (*pair.forward.inputs, *pair.upstream, *(e.out for e in pair.forward.eqns + pair.backward_eqns)):
            kind = (v.shape, v.dtype)
            types[v.name] = kind if types.get(v.name, kind) == kind else None
    return types


def _cache_bytes(pair: Backprop) -> int:
    return sum(math.prod(v.shape) * _itemsize(v.dtype) for v in pair.cache)


def emit_module(
    pair: Backprop, provenance: Provenance, jit: str | None = None, explain: bool = False,
    folded: Backprop | None = None, sizes: Sizes = NO_SIZES, layer: LayerNames | None = None,
    branches: Sequence[Branch] = (), vectorize: str | None = None, unroll: bool | None = None,
) -> str:
    """The whole module for a differentiated function (see `autodiff.differentiate`); `folded`
    is what `value_and_grad` runs instead, with the seed folded in (`passes.fold_seed`); the
    inputs' axes named in `sizes` are read from the arguments (see `compiler.sizes`); a `layer`
    module has only the forward with its cache and the backward, named after the layer. A
    function that branches on its values has several `branches` (the first is `pair`'s), laid
    out as `if` blocks (see `codegen.branches`). `vectorize` (a VECTORIZE_TARGETS) adds the
    functions that run a scalar function at every point of arrays (see `vectorized`). `unroll`
    says where a loop's iterations stay flat (see `rolled_sections`): `forward`,
    `value_and_grad` and `grad` may have loops; `forward_with_cache` and `backward` stay flat."""
    if len(branches) > 1:
        emitted, cached, cache_bytes = _branched(branches, provenance, jit, explain, sizes, layer)
        pair = branches[0].pair
    else:
        inline = folded or pair
        pair = recompute_views(pair, at_first_read=folded is None)  # forward_with_cache's and backward's
        bodies = Bodies.of(pair, inline, jit, explain, folded is not None)
        emitted = functions(pair, provenance, bodies, jit, sizes, layer, unroll=unroll)
        cached, cache_bytes = cached_names(pair, sizes), _cache_bytes(pair)
    if vectorize:  # the loop over the points calls value_and_grad, which numba then inlines into it
        # (not into a parallel loop: numba's parfor pass fails on the inlined tuple of gradients)
        inlined = {"value_and_grad", CHECK} if vectorize != "parallel" else set()
        emitted = tuple(dataclasses.replace(f, decorator=INLINED) if f.name in inlined else f for f in emitted)
        emitted = (*emitted, *vectorized(pair, vectorize, [name for name, _ in pair.static]))
    optimized = folded is not None or any(b.folded is not None for b in branches)
    if optimized and not explain:  # each temporary read once written where it is read; arrays reused as they die
        types = name_types(*(graph for b in branches or (Branch((), pair, folded),) for graph in (b.pair, b.folded)))
        emitted = tuple(
            dataclasses.replace(f, sections=reuse_arrays(inline_single_uses(f.sections), types, jit)) for f in emitted
        )
    # what the lines call, as written: the rewrites above and loops' writes in place (`out[:, f, i,
    # j] = s4` for `updated(...)`) call helpers of their own, and leave some uncalled
    called = {word for f in emitted for _, lines in f.sections for line in lines for word in _calls(line)}
    helpers = [helper_source(name) for name in helpers_needed(called)]
    example_sizes = sizes.values({v.name: v.shape for v in pair.forward.inputs})
    static = dict(pair.static)
    decided = dict.fromkeys(where(d) for b in branches for d in b.decisions)
    at_o2 = jit == "numba" and _has_arrays_of_three_axes(pair)
    text = template(TEMPLATE).render(
        provenance=provenance,
        jit=jit,
        helpers=helpers,
        inputs=[
            (v.name, f"static = {static_literal(static[v.name])}" if v.name in static else describe(v, sizes))
            for v in pair.forward.inputs
        ],
        static=bool(static),
        constants=[(name, repr(value)) for name, value in pair.constants],
        cache=_listing(cached),
        branches="\n    ".join(decided),
        symbols=sizes.symbols,
        fixed=[(symbol, value, line.replace(TRIPLE, SINGLE_TRIPLE)) for symbol, value, line in sizes.fixed],
        example_sizes=", ".join(f"{k} = {v}" for k, v in example_sizes.items()),
        cache_bytes=cache_bytes,
        signature=_signature(provenance.function, [v.name for v in pair.forward.inputs]),
        functions=emitted,
        compile_check=compile_check(provenance.function, at_o2) if jit == "numba" else None,
        # the functions that take the inputs: under numba, checked before each compile
        checked=[f.name for f in emitted if f.summary and f.params[-1:] != ("cache",) and f.decorator],
        compiled=[f.name for f in emitted if f.summary and f.decorator and f.decorator.startswith("@numba.njit")]
        if at_o2 else [],
        vectorized=bool(vectorize),
    )
    return text


# numba's -O3 compiles lines on arrays of this many axes and more for seconds each, and -O2 in a
# fraction of one; on matrices it compiles about as fast and its code runs 2 to 10% faster
O2_FROM_AXES = 3


def _has_arrays_of_three_axes(pair: Backprop) -> bool:
    """Whether the module computes on an array of O2_FROM_AXES axes or more: it then has numba
    compile at -O2 (`guards.compile_check`'s `compiled_at_o2`)."""
    values = (*pair.forward.inputs, *(e.out for e in (*pair.forward.eqns, *pair.backward.eqns)))
    return any(len(v.shape) >= O2_FROM_AXES for v in values)


def _calls(line: str) -> list[str]:
    """The functions a line of code calls by name, in its code, not its comments."""
    code = (part.split("  # ", 1)[0] for part in line.split("\n") if not part.lstrip().startswith("#"))
    return [word for part in code for word in _CALLED.findall(part)]


def _branched(
    branches: Sequence[Branch], provenance: Provenance, jit: str | None, explain: bool, sizes: Sizes,
    layer: LayerNames | None,
) -> tuple[tuple[Function, ...], list[str], int]:
    """The functions of a module with several paths, each path's code under its `if`s; what
    the cache holds and its largest size in bytes."""
    pairs = [recompute_views(branch.pair, at_first_read=branch.folded is None) for branch in branches]
    bodies = [
        Bodies.of(pair, branch.folded or branch.pair, jit, explain, branch.folded is not None)
        for pair, branch in zip(pairs, branches)
    ]
    symbols = {symbol: Var(symbol, (), "int64") for symbol in sizes.symbols}
    values = [{v.name: v for v in pair.cache} | symbols for pair in pairs]
    cached = [[(name, values[k][name].dtype, len(values[k][name].shape)) for name in cached_names(pair, sizes)]
              for k, pair in enumerate(pairs)]
    slots = CacheSlots.of(cached)
    per_path = [
        functions(pair, provenance, body, jit, sizes, layer, OnePath(k, slots))
        for k, (pair, body) in enumerate(zip(pairs, bodies))
    ]
    decisions = [branch.decisions for branch in branches]
    known = [
        {v.name: v for v in (*pair.forward.inputs, *(e.out for e in pair.forward.eqns))}
        | {e.out.name: e.out for e in (branch.folded or branch.pair).forward.eqns}
        for pair, branch in zip(pairs, branches)
    ]
    lines: dict[int, list[str]] = {}

    def forward_test(members: Sequence[int], depth: int, start: Mapping[int, int]) -> str:
        """The branch's condition, reading what the shared lines bound where every path can."""
        texts = set()
        for k in members:
            bound = {name: known[k][name] for name in bound_names(lines[k][: start[k]]) if name in known[k]}
            texts.add(condition_text(decisions[k][depth], bound, jit))
        return texts.pop() if len(texts) == 1 else condition_text(decisions[members[0]][depth], {}, jit)

    def note(k: int, depth: int, way: bool) -> str:
        return where(decisions[k][depth]) + ("" if way else ", the other way")

    def path_note(k: int, depth: int, way: bool) -> str:
        """The path a branch of `backward` is for: the ways its forward went (a chain's last
        `else` is the last path's)."""
        taken = decisions[depth if way else len(decisions) - 1]
        return "the path where " + "; ".join(f"{where(d)} is {d.taken}" for d in taken)

    backward_name = layer.backward if layer else "backward"
    merged_functions: list[Function] = []
    for index, function in enumerate(per_path[0]):
        if not (function.summary or function.name == CHECK):
            continue  # a part function: each path's are its own, below
        for k, emitted in enumerate(per_path):
            lines[k] = _flattened(emitted[index])
        if function.name == backward_name:  # the cache says which path the forward took
            chain = PathLines(lines, lambda k, depth: k == depth, path_note if explain else None)
            body = merged(chain, lambda members, depth, start: f"path == {depth}")
        else:
            tree = PathLines(lines, lambda k, depth: decisions[k][depth].taken, note if explain else None)
            body = merged(tree, forward_test)
        merged_functions.append(dataclasses.replace(function, sections=(("", tuple(body)),)))
    parts = [f for emitted in per_path for f in emitted if not (f.summary or f.name == CHECK)]
    listed = list(dict.fromkeys(["path", *(name for names in cached for name, _, _ in names)]))
    return (*merged_functions, *parts), listed, max(map(_cache_bytes, pairs))


def _flattened(function: Function) -> list[str]:
    """A function's sections as one list of physical lines (explain mode's block comments are
    lines of their own), each section's comment a line and a blank line between."""
    lines: list[str] = []
    for index, (comment, section) in enumerate(function.sections):
        lines += [""] if index else []
        lines += [f"# {comment}"] if comment else []
        lines += [physical for line in section for physical in line.split("\n")]
    return lines
