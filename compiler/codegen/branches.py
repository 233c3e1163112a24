"""Branches on traced values as `if` blocks of flat code.

A function that branches on its values is traced once per path (`tracer.trace_paths`), and
each path becomes straight-line code of its own. Here the paths' bodies are laid out as one:
the lines all paths of a subtree begin with are written once, then an `if` on the branch's
condition holds each side's own lines. Each path runs exactly its own lines, so the merged code
is right whatever the paths hold; sharing only makes it shorter.

The condition is written from the trace (`Decision.condition`), reading the values the shared
lines have bound where they are the very values it compares, and computing the rest inline.
`backward` cannot see the forward's values, so `forward_with_cache` keeps the path's number
first in the cache, and the backward chooses by it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from compiler.codegen.expressions import expression, unparse
from compiler.codegen.guards import shape_literal
from compiler.files import display_path
from compiler.ir import Decision, Var

INDENT = "    "
_TARGET = re.compile(r"(\w+) = ")


def condition_text(decision: Decision, bound: Mapping[str, Var], jit: str | None) -> str:
    """The branch's condition as an expression, reading each value of its computation that
    `bound` holds (by name, that very value) and computing the others from theirs."""
    made = {id(eqn.out): eqn for eqn in decision.condition}

    def tree(value: Var) -> ast.expr:
        eqn = made.get(id(value))
        if eqn is None or bound.get(value.name) is value:
            return ast.Name(value.name, ast.Load())
        operands = {a.name: a for a in eqn.inputs if isinstance(a, Var)}

        class Inline(ast.NodeTransformer):
            def visit_Name(self, node: ast.Name) -> ast.expr:
                operand = operands.get(node.id)
                return tree(operand) if operand is not None else node

        return Inline().visit(expression(eqn, jit))

    return unparse(ast.Expr(tree(decision.value)))  # as a statement: no parentheses around it


def where(decision: Decision) -> str:
    """The branch as the user wrote it: `examples/huber.py:10 `if a <= delta:``."""
    place = f"{display_path(decision.loc.file)}:{decision.loc.line}" if decision.loc else "?"
    return f"{place} `{decision.source}`"


def bound_names(lines: Sequence[str]) -> set[str]:
    """The names `lines` assign (`name = ...` at their own level or nested)."""
    return {match[1] for line in lines if (match := _TARGET.match(line.strip()))}


# A test at a node of the tree of paths: (the paths in the subtree, the depth of the branch,
# how many lines of each path the shared lines above have used) -> the condition's text.
Test = Callable[[Sequence[int], int, Mapping[int, int]], str]


@dataclass(frozen=True)
class PathLines:
    """The lines of one function for each path, and which way each path takes each branch."""

    lines: Mapping[int, Sequence[str]]  # by path number
    taken: Callable[[int, int], bool]  # (path, depth) -> the way it goes at its depth-th branch
    comment: Callable[[int, int, bool], str] | None = None  # (path, depth, way) -> a comment, or ""


def merged(paths: PathLines, test: Test) -> list[str]:
    """One body for every path: shared lines once, each branch an `if` (`elif` for a chain)."""
    return _merge(paths, test, list(paths.lines), {p: 0 for p in paths.lines}, 0)


def _merge(paths: PathLines, test: Test, members: list[int], start: dict[int, int], depth: int) -> list[str]:
    lines = paths.lines
    first = members[0]
    if len(members) == 1:
        return list(lines[first][start[first]:])
    shared = 0
    while all(start[p] + shared < len(lines[p]) for p in members) and len(
        {lines[p][start[p] + shared] for p in members}
    ) == 1:
        shared += 1
    out = list(lines[first][start[first]: start[first] + shared])
    start = {**start, **{p: start[p] + shared for p in members}}
    if all(list(lines[p][start[p]:]) == list(lines[first][start[first]:]) for p in members):
        return out + list(lines[first][start[first]:])  # the branch changes nothing here
    yes = [p for p in members if paths.taken(p, depth)]
    no = [p for p in members if not paths.taken(p, depth)]
    if not yes or not no:
        return out + _merge(paths, test, members, start, depth + 1)
    condition = test(members, depth, start)
    note = (lambda way: _comment(paths.comment(yes[0], depth, way))) if paths.comment else (lambda way: "")
    out.append(f"if {condition}:{note(True)}")
    out += _indented(_merge(paths, test, yes, start, depth + 1))
    rest = _merge(paths, test, no, start, depth + 1)
    if _one_if_statement(rest):
        out.append("el" + rest[0])
        out += rest[1:]
    else:
        out.append(f"else:{note(False)}")
        out += _indented(rest)
    return out


def _comment(text: str) -> str:
    return f"  # {text}" if text else ""


def _indented(lines: list[str]) -> list[str]:
    return [INDENT + line if line else line for line in lines]


def _one_if_statement(lines: list[str]) -> bool:
    """Whether `lines` are one `if` statement (so that `else:` around them can be `elif`)."""
    if not lines or not lines[0].startswith("if "):
        return False
    return all(line.startswith((INDENT, "elif ", "else:")) or not line for line in lines[1:])


@dataclass(frozen=True)
class CacheSlots:
    """The cache of a function with several paths: the path's number, then slots. Each path
    puts its cached values in slots of their kind (number or array, dtype, rank) and fills the
    others with a stand-in, so that every path's cache is a tuple of the same types, which numba
    needs of a function's return value."""

    kinds: tuple[tuple[str, int], ...]  # (dtype, rank) per slot
    slots: tuple[tuple[tuple[str, int], ...], ...]  # per path: (name, slot) of each cached value

    @classmethod
    def of(cls, cached: Sequence[Sequence[tuple[str, str, int]]]) -> CacheSlots:
        """The slots for paths that cache these values: (name, dtype, rank) each."""
        kinds: list[tuple[str, int]] = []
        names: list[str] = []
        slots = []
        for values in cached:
            taken: set[int] = set()
            placed = []
            for name, dtype, rank in values:
                kind = (dtype, rank)
                free = [s for s, k in enumerate(kinds) if k == kind and s not in taken]
                slot = next((s for s in free if names[s] == name), free[0] if free else None)
                if slot is None:
                    kinds.append(kind)
                    names.append(name)
                    slot = len(kinds) - 1
                taken.add(slot)
                placed.append((name, slot))
            slots.append(tuple(placed))
        return cls(tuple(kinds), tuple(slots))

    def keep(self, path: int, jit: str | None) -> str:
        """`cache = 1, x, s0, None`: path `path`'s cache."""
        items = [_stand_in(kind, jit) for kind in self.kinds]
        for name, slot in self.slots[path]:
            items[slot] = name
        return "cache = " + ", ".join([str(path), *items])

    def unpack(self, path: int) -> str:
        """`x, s0 = cache[1], cache[2]`: path `path`'s values out of the cache."""
        placed = self.slots[path]
        if not placed:
            return ""
        names = ", ".join(name for name, _ in placed)
        return f"{names} = " + ", ".join(f"cache[{slot + 1}]" for _, slot in placed)


def _stand_in(kind: tuple[str, int], jit: str | None) -> str:
    """What fills a slot a path does not use: None, or under numba a value of the slot's type."""
    if jit != "numba":
        return "None"
    dtype, rank = kind
    if rank:
        return f"np.empty({shape_literal((0,) * rank)}, np.{dtype})"
    return {"float64": "0.0", "int64": "0", "bool": "False"}.get(dtype, f"np.{dtype}(0)")
