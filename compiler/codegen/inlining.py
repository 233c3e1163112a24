"""Optimize mode's last step on a function's lines: a temporary read once is written where it is
read, as a person writes `h = np.maximum(X @ W1 + b1, 0.0)` rather than three lines.

Why: a value bound to a name lives until the function returns, so every intermediate of a flat
function stays in memory to the end (about twice a hand-written gradient's peak), and at medium
sizes the allocator maps and unmaps each large one on every call. A temporary inside an
expression dies as soon as it is read, NumPy reuses its buffer for the next operation of the
same expression (its temporary elision), and numba compiles the elementwise operations of one
statement into one loop instead of a loop and an array per line.

Only the lines change, at the end: the passes and the IR see one gate per line as always, and
readable mode never comes here. A name the lecture's naming gave from the user's source (`h`,
`scores`, `grad_h`) keeps its line; a temporary (`s3`, `grad_s3`, a `_term`) that one later line
reads is folded into it. The rewrite is conservative: it stops at any line that is not a plain
`name = expression` (a branch, a loop, a write into an array), at a line with a comment, and
where the folded line would grow past LINE_LIMIT characters.
"""

from __future__ import annotations

import ast
import copy
from collections import Counter
from typing import Sequence

from compiler.codegen.expressions import name_and_value, simple_statement, unparse, words
from compiler.naming import is_temporary

LINE_LIMIT = 110  # a folded line stays reviewable, and the emitted module under 120 columns
# Lines never folded into: they name what the function returns or keeps
_KEPT_TARGETS = frozenset(("cache",))


def _loads(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]


def _stores(statement: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(statement) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


class _Replace(ast.NodeTransformer):
    def __init__(self, name: str, value: ast.expr) -> None:
        self.name, self.value = name, value

    def visit_Name(self, node: ast.Name) -> ast.expr:
        return copy.deepcopy(self.value) if node.id == self.name and isinstance(node.ctx, ast.Load) else node


def inline_single_uses(sections: Sequence[tuple[str, Sequence[str]]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A function's sections (see `module.Function`) with every temporary that exactly one later
    line of its own section reads written into that line, its own line dropped."""
    lines = [(index, line) for index, (_, section) in enumerate(sections) for line in section]
    statements = [simple_statement(line) for _, line in lines]
    reads: Counter[str] = Counter()
    bindings: Counter[str] = Counter()
    for (_, line), statement in zip(lines, statements):
        if statement is None:  # every word of a barrier counts as a read and a binding
            found = words(line)
            reads.update(found)
            bindings.update(found)
        else:
            reads.update(_loads(statement))
            bindings.update(_stores(statement))
    texts = [line for _, line in lines]
    dropped = [False] * len(lines)
    for i, statement in enumerate(statements):
        definition = name_and_value(statement)
        if definition is None:
            continue
        name, value = definition
        if not is_temporary(name) or reads[name] != 1 or bindings[name] != 1:
            continue
        j = _reader(name, set(_loads(value)), i, lines, statements)
        if j is None:
            continue
        folded = _Replace(name, value).visit(copy.deepcopy(statements[j]))
        text = unparse(folded)
        if len(text) > LINE_LIMIT:
            continue
        statements[j], texts[j], dropped[i] = folded, text, True
    kept: list[list[str]] = [[] for _ in sections]
    for (index, _), text, gone in zip(lines, texts, dropped):
        if not gone:
            kept[index].append(text)
    return tuple((comment, tuple(section)) for (comment, _), section in zip(sections, kept))


def _reader(
    name: str, operands: set[str], start: int, lines: Sequence[tuple[int, str]], statements: list[ast.stmt | None]
) -> int | None:
    """The line after `start` that reads `name`, where `name`'s value may move to: a plain
    assignment in the same section, with no barrier between and nothing rebinding what the value
    reads."""
    section = lines[start][0]
    for j in range(start + 1, len(lines)):
        statement = statements[j]
        if statement is None or lines[j][0] != section:
            return None
        if name in _loads(statement):
            definition = name_and_value(statement)
            return j if definition is not None and definition[0] not in _KEPT_TARGETS else None
        if _stores(statement) & operands:
            return None
    return None
