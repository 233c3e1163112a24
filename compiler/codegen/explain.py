"""Explain mode: what each backward line does, for a learner.

The backward pass is laid out in blocks, one per gate, as the lecture's notes write it: a
comment above the block names the gate, the forward line it differentiates and the line of
the user's source that made it; each line then says what it computes as a local gradient
times an upstream one, in a form that evaluates to the line's right-hand side:

- `local A × upstream B` is `(A) * (B)`;
- `local A (shape) @ upstream B (shape)` and `upstream B (shape) @ local A (shape)` are
  matrix products;
- `, added to V` adds the target's value before the line, `, added to V (so far W)` the value
  of W, which it stands for (after copy propagation the first term may still have W's name).

Where a gate's gradient is not a product (a scatter, a reshape, a sum back to a broadcast
operand's shape), the local factor is 1 and the upstream term says where the gradient goes.
"""

from __future__ import annotations

import ast
import linecache
import re
from typing import Callable, Sequence

import numpy as np

from compiler.codegen.expressions import expression, unparse
from compiler.files import display_path
from compiler.helpers import HELPERS
from compiler.ir import Eqn, Var, stand_in
from compiler.ops import OPS

# A block's comment stays under this many characters; the quoted source line is shortened.
HEADER_WIDTH = 92


def gate_header(forward: Eqn | None, forward_line: str, gate: str) -> list[str]:
    """The comment lines above a gate's block: its forward line and gate, then, unless that
    line is the user's own, where the user wrote it and what:

        L = s0 * r: mul gate, swap multiplier
        from examples/huber.py:11: return 0.5 * r * r
    """
    if forward is None:  # optimize mode dropped the gate's own line (a copy reads its operand)
        return [f"{gate}: a line optimize mode dropped"]
    pattern = _pattern(forward)
    if len(forward_line) + len(pattern) + 2 > HEADER_WIDTH:  # the gate's name alone
        pattern = pattern.split(", ")[0]
    text = f"{forward_line}: {pattern}"
    if forward.loc is None:
        return [text]
    where = f"{display_path(forward.loc.file)}:{forward.loc.line}"
    source = linecache.getline(forward.loc.file, forward.loc.line).strip()
    if source == forward_line or not source:
        return [f"{text} ({where})"]
    room = HEADER_WIDTH - len(where) - 7
    return [text, f"from {where}: {source if len(source) <= room else source[: room - 1] + '…'}"]


def _pattern(forward: Eqn) -> str:
    """The gate's pattern, with the values it names written as the gate's operands: the op
    table's `x` is the value the gate reads. A detail about an operand that is a constant
    (which gets no gradient) is left out."""
    row = OPS[forward.op]
    head, _, detail = row.pattern.partition(": ")
    names: dict[str, object] = dict(zip(row.operands, forward.inputs))
    mentioned = [name for name in names if re.search(rf"\b{name}\b", detail)]
    if any(not isinstance(names[name], Var) for name in mentioned):
        return head
    for name in mentioned:
        detail = re.sub(rf"\b{name}\b", "\0" + name + "\0", detail)
    for name in mentioned:
        detail = detail.replace("\0" + name + "\0", names[name].name)  # type: ignore[union-attr]
    return f"{head}, {detail}" if detail else head


def line_comment(eqn: Eqn, jit: str | None = None, forward: Eqn | None = None) -> str:
    """What a backward line computes: `local A × upstream B[, added to V]` (see the module's
    docstring), or for a line of no gate what it stands for (the seed, a zero gradient);
    `forward` is the gate's forward equation, which names a broadcast operand."""
    if eqn.gate is None:
        if eqn.op == "ones_like":
            return "the seed: the gradient of the output with respect to itself is 1"
        return "no path from this input to the output: its gradient is 0"
    line = expression(eqn, jit)
    tree, negated = line, False
    if eqn.accumulate is not None:
        assert isinstance(line, ast.BinOp)
        tree, negated = line.right, isinstance(line.op, ast.Sub)
    chain = _product(eqn, tree, negated)
    if not _holds(eqn, line, chain):  # a product read off a line it does not equal: say it plainly
        chain = _local("-1" if negated else "1", unparse(ast.Expr(tree)))
    if eqn.accumulate is not None:
        chain += f", added to {eqn.out.name}"
        if eqn.accumulate.name != eqn.out.name:
            chain += f" (so far {eqn.accumulate.name})"
    if eqn.rule is None:  # a step after the gate's rule: a sum back to the operand's shape, a cast
        return f"{_step(eqn, forward)}: {chain}"
    return chain


def _step(eqn: Eqn, forward: Eqn | None) -> str:
    """What a step after a gate's rule does: `b2 was broadcast along axis 0`."""
    if eqn.op == "astype":
        return "cast back to the value's dtype"
    operands = [a for a in (forward.inputs if forward else ()) if isinstance(a, Var) and a.shape == eqn.out.shape]
    named = [a.name for a in operands if eqn.out.name.endswith(a.name) or eqn.out.name.endswith(f"{a.name}_term")]
    axes = dict(eqn.params).get("axis")
    if isinstance(axes, tuple) and len(axes) == 1:
        axes = axes[0]
    along = f"axis {axes}" if isinstance(axes, int) else f"axes {axes}"
    return f"{named[0]} was broadcast along {along}" if len(set(named)) == 1 else "summed over the broadcast axes"


def _upstream(eqn: Eqn) -> tuple[str, ast.expr] | None:
    """The upstream gradient the line reads, as written, and as a tree."""
    if eqn.rule is None:
        return None
    upstream = dict(zip(OPS[eqn.op].rule_names(eqn.rule), eqn.inputs))["grad"]
    if isinstance(upstream, Var):
        return upstream.name, ast.Name(upstream.name, ast.Load())
    return repr(upstream.value), ast.Constant(upstream.value)


def _product(eqn: Eqn, term: ast.expr, negated: bool) -> str:
    """`term` (negated where the line subtracts it) as local gradient times upstream."""
    upstream = _upstream(eqn)
    text = unparse(ast.Expr(term))
    if upstream is None:  # a step: its operand is the gradient it brings to shape
        return _local("-1" if negated else "1", text)
    name, _ = upstream
    spread = _spread(term, name)
    if spread is not None:  # np.full(shape, g): the upstream number, the same at every element
        return _local(_negate(spread) if negated else spread, name)
    if isinstance(upstream[1], ast.Constant):  # the seed, folded into the line: the local is the line
        return _local(_negate(text) if negated else text, name)
    if text == name:
        return _local("-1" if negated else "1", name)
    if isinstance(term, ast.UnaryOp) and isinstance(term.op, ast.USub) and unparse(ast.Expr(term.operand)) == name:
        return _local("1" if negated else "-1", name)
    if isinstance(term, ast.BinOp) and isinstance(term.op, ast.Mult) and unparse(ast.Expr(term.right)) == name:
        local = unparse(ast.Expr(term.left))
        return _local(_negate(local) if negated else local, name)
    if isinstance(term, ast.BinOp) and isinstance(term.op, ast.MatMult) and not negated:
        left, right = unparse(ast.Expr(term.left)), unparse(ast.Expr(term.right))
        if right == name:
            return f"local {_grouped(left)}{_shape(eqn, term.left)} @ upstream {name}{_shape(eqn, term.right)}"
        if left == name:
            return f"upstream {name}{_shape(eqn, term.left)} @ local {_grouped(right)}{_shape(eqn, term.right)}"
    return _local("-1" if negated else "1", text)


def _spread(term: ast.expr, name: str) -> str | None:
    """`np.ones(shape)` where `term` spreads the upstream number over an array (`np.full(shape,
    g)`, `np.broadcast_to(g, shape)`): its local gradient is 1 at every element."""
    if not (isinstance(term, ast.Call) and len(term.args) == 2 and not term.keywords):
        return None
    function = unparse(ast.Expr(term.func))
    shape, value = {"np.full": term.args, "np.broadcast_to": term.args[::-1]}.get(function, (None, None))
    if shape is None or unparse(ast.Expr(value)) != name:
        return None
    text = unparse(ast.Expr(shape))
    return f"np.ones(({text}))" if isinstance(shape, ast.Tuple) else f"np.ones({text})"


def _local(local: str, upstream: str) -> str:
    return f"local {_grouped(local)} × upstream {_grouped(upstream)}"


def _negate(text: str) -> str:
    return text[1:] if text.startswith("-") and _is_atom(text[1:]) else f"-{_grouped(text)}"


def _is_atom(text: str) -> bool:
    """Whether `text` reads as one operand next to `×`: a name, a number, a call, an index."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return False
    if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub):
        tree = tree.operand
    if isinstance(tree, ast.BinOp) and isinstance(tree.op, (ast.Mult, ast.Div, ast.Pow)):
        return True  # a product times the upstream reads as one: `(1 - s) * s × upstream g`
    return isinstance(tree, (ast.Name, ast.Constant, ast.Attribute, ast.Call, ast.Subscript))


def _grouped(text: str) -> str:
    """`text` in parentheses unless it is one operand: `(1 - h ** 2)`, `(s5 > 0)`, `x1`."""
    return text if _is_atom(text) else f"({text})"


# What the comments claim, as Python: `local A × upstream B` is `(A) * (B)`; the matrix
# products carry each side's shape, `(8, 4)`
_SHAPE = r"(?: \((?:[\w ,*+-]|\([\w ,*+-]*\))*\))?"  # `(8, 4)`, `(N, 4)`, `((N - 1), 4)`
_CLAIMS = (
    (re.compile(rf"local (?P<a>.+?){_SHAPE} @ upstream (?P<b>.+?){_SHAPE}$"), "({a}) @ ({b})"),
    (re.compile(rf"upstream (?P<b>.+?){_SHAPE} @ local (?P<a>.+?){_SHAPE}$"), "({b}) @ ({a})"),
    (re.compile(r"local (?P<a>.+?) × upstream (?P<b>.+)$"), "({a}) * ({b})"),
)


def claimed(comment: str) -> str | None:
    """The Python expression a line's `local ... upstream ...` comment says its right-hand side
    equals, without what it adds to (`(A) * (B)`, `(A) @ (B)`, `(B) @ (A)`); None for another
    comment."""
    chain = comment.split(", added to ")[0]
    if not chain.startswith(("local ", "upstream ")) and ": " in chain:  # a step says what it does first
        chain = chain.split(": ", 1)[1]
    for pattern, meaning in _CLAIMS:
        found = pattern.match(chain)
        if found is not None:
            return meaning.format(**found.groupdict())
    return None


# Where floats are drawn from to check a comment: each interval lies in the domain of some ops
# (a square root's below 1, an arccosh's above 1), and a check needs one where the line is finite
_CHECK_INTERVALS = ((0.2, 0.8), (1.2, 1.8), (-0.8, -0.2))


def _values(eqn: Eqn, interval: tuple[float, float] = _CHECK_INTERVALS[0]) -> dict[str, object]:
    """Random values for the names a line reads (integers as stand-ins, which index safely)."""
    rng = np.random.default_rng(0)
    values: dict[str, object] = {}
    for a in eqn.reads:
        if isinstance(a, Var):
            kind = np.dtype(a.dtype).kind
            random = rng.uniform(*interval, a.shape).astype(a.dtype)
            values[a.name] = random if kind == "f" else stand_in(a.shape, a.dtype)
    return values


def _evaluate(tree: ast.expr | str, values: dict[str, object]) -> object:
    expression_tree = ast.parse(tree, mode="eval") if isinstance(tree, str) else ast.Expression(tree)
    code = compile(ast.fix_missing_locations(expression_tree), "<explain>", "eval")
    with np.errstate(all="ignore"):
        return eval(code, {"np": np, **HELPERS}, dict(values))


def _holds(eqn: Eqn, line: ast.expr, chain: str) -> bool:
    """Whether the comment's product, plus what the line adds to, equals the line's right-hand
    side on random values."""
    product = claimed(chain)
    if product is None:
        return False
    if eqn.accumulate is not None:
        product = f"{eqn.accumulate.name} + {product}"
    informative = False
    for interval in _CHECK_INTERVALS:
        values = _values(eqn, interval)
        try:
            expected, got = _evaluate(line, values), _evaluate(product, values)
        except Exception:  # the comment's text is no Python of these values: it does not hold
            return False
        if np.shape(expected) != np.shape(got) or not np.allclose(expected, got, equal_nan=True):
            return False
        informative = informative or bool(np.any(np.isfinite(expected)))
    return informative


def _shape(eqn: Eqn, tree: ast.expr) -> str:
    """The shape of an operand of a matrix product, after a space: ` (8, 4)`."""
    try:
        return " " + str(tuple(np.shape(_evaluate(tree, _values(eqn)))))
    except Exception:  # the comment goes without the shape
        return ""




def explained(
    eqns: list[Eqn] | tuple[Eqn, ...], lines: list[str], gates: dict[str, tuple[str, Eqn]], retaken: set[int],
    jit: str | None = None,
) -> list[str]:
    """Backward lines in explain mode's blocks: each gate's first line carries the block's
    comment above it (a line of its own: the text holds a newline), each line its own comment.
    `gates` maps a forward value's name to its line and equation; `retaken` holds the ids of
    values that are views of the forward pass taken again in the backward."""
    explained_lines = []
    last = None
    for eqn, line in zip(eqns, lines):
        if id(eqn.out) in retaken:
            explained_lines.append(f"{line}  # a view of the forward pass, taken again")
            last = None
            continue
        forward_line, forward = gates.get(eqn.gate, (eqn.gate, None)) if eqn.gate else ("", None)
        text = f"{line}  # {line_comment(eqn, jit, forward)}"
        if eqn.gate is not None and eqn.gate != last:
            text = "".join(f"# {line}\n" for line in gate_header(forward, forward_line, eqn.gate)) + text
        last = eqn.gate
        explained_lines.append(text)
    return explained_lines


# ----------------------------------------------------------------------------- comments in loops
# A loop's body is written from several iterations' lines (`codegen.loops`); explain mode's
# comments come with them, and the names and numbers that move are written the way the body
# writes them (`s3[i]`, `x[i + 1]`).

SOURCE_QUOTE = "from "  # a block comment's line quoting the user's source: never renamed


def comment_parts(text: str) -> tuple[list[str], str, str] | None:
    """A line as `explained` writes it, in parts: the block comment's lines above it (without
    `# `), the code, and its own comment (without `  # `), each possibly empty; None for text
    that is not one line of code under comment lines."""
    *above, line = text.split("\n")
    if any(not a.startswith("# ") for a in above):
        return None
    code, _, note = line.partition("  # ")
    return [a[2:] for a in above], code, note


def with_comments(above: Sequence[str], code: str, note: str) -> str:
    """The line `comment_parts` took apart, put back together."""
    return "".join(f"# {a}\n" for a in above) + code + (f"  # {note}" if note else "")


_TOKEN = re.compile(r"[A-Za-z_]\w*|\d+|\s+|.")
_OPEN, _CLOSE = ("", "[", "(", ",", ":"), ("", "]", ")", ",", ":")


def unified_comment(
    texts: Sequence[str], name: Callable[[tuple[str, ...]], str | None],
    number: Callable[[tuple[int, ...]], str | None],
) -> str | None:
    """One comment for a loop body from the same comment in several of its iterations: where
    they agree it is kept, a name that differs is `name(those names)`, an int that differs
    `number(those ints)` (in parentheses unless it stands alone, `x[i + 1]`); None where
    either gives None or the comments differ otherwise."""
    tokens = [_TOKEN.findall(text) for text in texts]
    if len({len(t) for t in tokens}) != 1:
        return None
    out: list[str] = []
    for k, column in enumerate(zip(*tokens)):
        if len(set(column)) == 1:
            out.append(column[0])
            continue
        if all(c.isdigit() for c in column):
            text = number(tuple(map(int, column)))
            before = next((t for t in reversed(tokens[0][:k]) if not t.isspace()), "")
            after = next((t for t in tokens[0][k + 1:] if not t.isspace()), "")
            if text is not None and " " in text and not (before in _OPEN and after in _CLOSE):
                text = f"({text})"
        elif all(c[0].isalpha() or c[0] == "_" for c in column):
            text = name(column)
        else:
            return None
        if text is None:
            return None
        out.append(text)
    return "".join(out)


def renamed(comment: str, rename: Callable[[str], str | None]) -> str:
    """A comment with each name `rename` gives text for replaced by it (a quote of the user's
    source stays as written)."""
    if comment.startswith(SOURCE_QUOTE):
        return comment
    return re.sub(r"\b[A-Za-z_]\w*\b", lambda m: rename(m.group()) or m.group(), comment)


def in_place_note(note: str, target: str, value: str) -> str:
    """A scatter's comment for the line that adds in place instead (`grad_x[i + 1] += g`):
    `local 1 × upstream g, added to grad_x[i + 1]`."""
    if not note.startswith("local 1 × upstream scatter(") or ", added to " not in note:
        return note
    return f"local 1 × upstream {_grouped(value)}, added to {target}"
