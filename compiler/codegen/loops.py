"""Loops that stay loops: runs of equations that repeat one source loop's iterations, written
back as a `for` loop, forward and (reversed) backward.

A Python loop with a fixed trip count traces into its iterations, one after another. Where a
straight line of equations is a run of blocks with the same structure (the same operations on
the same shapes, from the same source lines), whose operands are, block by block, values of the
same block, the previous block's (`total = total + ...`, an RNN's `h`), or one value for all
blocks (a weight, an input), and whose static parameters move by a fixed step per block
(`x[i + 1]`, `xp[:, :, 2 * i:2 * i + 3]`), the run is written once as the body of `for i in
range(...)`. Values of an iteration that something after the loop reads are stored into an
array made before it (`s3 = np.empty((999,))`, `s3[i] = ...`, read as `s3[i]`), which is how
the backward loop reads the forward pass's values; a gradient scattered into one element per
iteration is added in place (`grad_x[i + 1] += grad_s0`), and a gradient the first iteration
starts is started at zero before the loop (`db = np.zeros((4,))`), so that the first iteration
is one of the loop's. A write `out[:, f, i, j] = v`, traced as a new array, writes into the
array itself where nothing else reads the one before. Where the static ints do not move by one
step but by one along a row and another from row to row (a naive convolution's loops over its
output rows and columns: `x_pad[:, :, i:i + 3, j:j + 3]`), the run is a loop over a grid
(`Loop.width` columns), written `for i ...: for j ...:` over whole rows (backwards where the ints
fall), else (part of a row peeled off) `for k ...: i, j = divmod(k, width)`, its arrays with a
row and a column (`s0[i, j]`).

The analysis (`find_loops`) works on the IR alone. The writing (`rolled`) reads the lines
already rendered for the first, second and last iterations of a run, and makes the loop body
from the first, with each name that differs from one iteration to the next replaced by its
role and each number that moves replaced by an expression in `i`: the lines stay exactly what
the flat code would have been, with one gate per line. What cannot be re-rolled stays flat.
"""

from __future__ import annotations

import ast
import collections
import copy
import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from compiler.codegen.explain import comment_parts, in_place_note, renamed, unified_comment, with_comments
from compiler.codegen.expressions import in_brackets, unparse, words
from compiler.ir import Atom, Const, Eqn, Var
from compiler.ops import OPS

MIN_ITERATIONS = 3  # fewer repeats stay flat: a loop of two reads worse than two blocks
MAX_PERIOD = 400  # equations per iteration tried
# numba: a stack of fewer of a loop's values stays a tuple, which reads better and compiles fast
NUMBA_STACK_TUPLE = 8
MAX_GATHERED = 32  # values from before a loop, one per iteration, it reads from a tuple


def _ints(value: object) -> tuple[list[int], object] | None:
    """The ints in a static parameter, and its shape with them taken out (None: not a kind of
    parameter whose ints may move: an array, a dict)."""
    found: list[int] = []

    def shape(v: object) -> object:
        if isinstance(v, bool) or v is None or isinstance(v, (float, str)):
            return v
        if isinstance(v, (int, np.integer)):
            found.append(int(v))
            return "#"
        if isinstance(v, slice):
            return ("slice", shape(v.start), shape(v.stop), shape(v.step))
        if isinstance(v, tuple):
            return tuple(shape(x) for x in v)
        raise TypeError

    try:
        return found, shape(value)
    except TypeError:
        return None


def _signature(eqn: Eqn) -> tuple[tuple, tuple[int, ...]]:
    """What iterations of one loop share, equation by equation, and the ints of its static
    parameters, which may move from one iteration to the next (any other parameter is in the
    signature: a float, a string, or the very array)."""
    params, moving = [], []
    for key, value in eqn.params:
        ints = _ints(value)
        params.append((key, ints[1] if ints is not None else ("fixed", id(value))))
        moving += ints[0] if ints is not None else []
    # a number and a value of one shape alike: a carried value starts from a number (total = 0.0)
    operands = tuple(a.shape if isinstance(a, Var) else np.shape(a.value) for a in eqn.inputs)
    rule = eqn.rule
    row = OPS[eqn.op]
    if row.packs is not None and rule in row.operands:  # the gradient of part k of a stack: k moves
        rule = "part"
        moving.append(row.operands.index(eqn.rule))
    # whether it adds onto a gradient is left out: a first iteration's first term starts the sum
    # the others add to (see `_classify`)
    signature = (eqn.op, rule, eqn.loc, eqn.out.shape, eqn.out.dtype, operands,
                 tuple(params), eqn.types)
    return signature, tuple(moving)


@dataclass(frozen=True)
class Role:
    """What an operand of a loop body's equation is, the same in every iteration."""

    kind: str  # "local", "carried" (the previous iteration's), "invariant", "const", "outer", "gathered"
    position: int = -1  # local, carried: the body equation that makes it
    value: Atom | None = None  # invariant: the value; const: the number
    outer: tuple[int, int, int, int] | None = None  # outer: (loop, position, iteration at 0, step)
    values: tuple[Var, ...] = ()  # gathered: one value made before the loop per iteration


@dataclass
class Loop:
    """`count` iterations of `period` equations from `start` in a list of equations."""

    start: int
    period: int
    count: int
    roles: list[list[Role]] = field(default_factory=list)  # per body equation, per read
    inits: dict[int, Atom] = field(default_factory=dict)  # carried position -> value before the loop
    stored: set[int] = field(default_factory=set)  # positions read after the loop: kept per iteration
    finals: dict[int, Var] = field(default_factory=dict)  # carried position -> its last value, read after
    first: int = 0  # the index variable's value in the first iteration
    step: int = 1  # and its step
    width: int = 0  # a loop over a grid's rows and columns: the columns (0: one index)

    @property
    def stop(self) -> int:
        return self.start + self.period * self.count

    def place(self, t: int) -> tuple[int, int]:
        """Iteration t's (row, column) in a loop over a grid."""
        return divmod(self.first + self.step * t, self.width)

    @property
    def zero_starts(self) -> set[int]:
        """The carried positions of gradients the first iteration starts (`db = scatter(...)`,
        added to in the next ones): started at zero before the loop, and the body written from
        later iterations."""
        return {position for position, init in self.inits.items() if isinstance(init, _ZeroStart)}

    @property
    def rows(self) -> tuple[int, int]:
        """The first and last rows a loop over a grid runs over, in increasing order."""
        ends = sorted((self.place(0)[0], self.place(self.count - 1)[0]))
        return ends[0], ends[1]

    def aligned(self) -> bool:
        """Whether a loop over a grid runs over whole rows (`for i ...: for j ...`), not part of
        its first or last (`for k ...: i, j = divmod(k, 4)`)."""
        return self.count % self.width == 0 and self.place(0)[1] == (0 if self.step > 0 else self.width - 1)

    def carried(self) -> set[int]:
        """The positions whose values the next iteration reads."""
        return {r.position for body in self.roles for r in body if r.kind == "carried"}

    def eqn(self, eqns: Sequence[Eqn], iteration: int, position: int) -> Eqn:
        return eqns[self.start + iteration * self.period + position]


def _affine(values: Sequence[Sequence[int]]) -> int:
    """How many of the int lists, from the first, move position by position by a fixed step."""
    if len(values) < 2:
        return len(values)
    steps = [b - a for a, b in zip(values[0], values[1])]
    for t, v in enumerate(values):
        if len(v) != len(steps) or any(v[k] != values[0][k] + t * steps[k] for k in range(len(steps))):
            return t
    return len(values)


def _params_move_by_steps(moving: Sequence[tuple[int, ...]], loop: Loop) -> int:
    """How many iterations, from the first, have static parameters whose ints (`moving`, by
    equation) stay or move by a fixed step per iteration (a convolution's rows: each a run)."""
    count = loop.count
    for position in range(loop.period):
        first = loop.start + position
        count = min(count, _affine([moving[first + t * loop.period] for t in range(count)]))
    return count


def _grid(moving: Sequence[tuple[int, ...]], loop: Loop, loops: Sequence[Loop]) -> Loop | None:
    """The loop as a loop over the rows and columns of a grid (a naive convolution's output
    positions), cut to its leading iterations whose static ints are `c + a * row + b * column`;
    None where it is not one. Where it reads an earlier grid loop's stored values, its grid is
    that loop's (it runs over the same positions, often in reverse); else its rows start where
    the ints jump (iterations 0, 1, 2, 3 move by one step, iteration 4 by another: 4 columns)."""
    first = loop.start
    vectors = [tuple(itertools.chain.from_iterable(moving[first + t * loop.period + p] for p in range(loop.period)))
               for t in range(loop.count)]
    reads = [r.outer for body in loop.roles for r in body if r.kind == "outer" and r.outer[3] != 0]  # type: ignore[index]
    if reads:
        number, _, made, step = reads[0]  # type: ignore[misc]
        other = loops[number]
        if not other.width:
            return None
        grid = Loop(loop.start, loop.period, loop.count, width=other.width, step=other.step * step,
                    first=other.first + other.step * made)
    else:
        steps = [tuple(b - a for a, b in zip(u, v)) for u, v in zip(vectors, vectors[1:])]
        if not steps:
            return None
        inner = collections.Counter(steps).most_common(1)[0][0]  # the step along a row: the most frequent
        jumps = [t for t in range(1, loop.count) if steps[t - 1] != inner]
        if not jumps:
            return None
        width = jumps[1] - jumps[0] if len(jumps) > 1 else max(jumps[0], loop.count - jumps[0])
        if width < 2:
            return None
        if all(s <= 0 for s in inner) and any(inner):  # its ints fall along a row: the grid runs
            # back, from its last place (`for i in range(7, -1, -1)`), to end in row 0
            last = loop.count - 1
            grid = Loop(loop.start, loop.period, loop.count, width=width, step=-1,
                        first=last + (jumps[0] - 1 - last) % width)
        else:
            grid = Loop(loop.start, loop.period, loop.count, width=width, first=-jumps[0] % width)
    places = [grid.place(t) for t in range(loop.count)]
    basis = [0] + [t for t in range(1, loop.count) if places[t][0] == places[0][0]][:1]
    basis += [t for t in range(1, loop.count) if places[t][0] != places[0][0]][:1]
    if len(basis) < 3:
        return None
    fits = [_solved([places[t] for t in basis], [vectors[t][k] for t in basis]) for k in range(len(vectors[0]))]
    if any(fit is None for fit in fits):
        return None
    count = next((t for t, (row, column) in enumerate(places) if any(
        v != c + a * row + b * column for v, (c, a, b) in zip(vectors[t], fits))), loop.count)  # type: ignore[misc]
    grid.count = count
    return grid


def _solved(places: Sequence[tuple[int, int]], values: Sequence[int]) -> tuple[int, int, int] | None:
    """The ints (c, a, b) with `c + a * row + b * column` the value at each of three places; None
    where there are none (the places on one line, or a fraction)."""
    (r0, c0), (r1, c1), (r2, c2) = places
    determinant = (r1 - r0) * (c2 - c0) - (r2 - r0) * (c1 - c0)
    if determinant == 0:
        return None
    dv1, dv2 = values[1] - values[0], values[2] - values[0]
    a, left_a = divmod(dv1 * (c2 - c0) - dv2 * (c1 - c0), determinant)
    b, left_b = divmod((r1 - r0) * dv2 - (r2 - r0) * dv1, determinant)
    if left_a or left_b:
        return None
    return values[0] - a * r0 - b * c0, a, b


def _reads_fit(loop: Loop, loops: Sequence[Loop]) -> bool:
    """Whether the loop can name each earlier loop's stored value it reads: an array of a loop
    over a grid (`window[i, j]`) only from a loop over the same grid, at the same places or whole
    rows apart, or at one place."""
    for body in loop.roles:
        for role in body:
            if role.kind != "outer":
                continue
            number, _, made, step = role.outer  # type: ignore[misc]
            other = loops[number]
            if not other.width or step == 0:
                continue
            if other.width != loop.width or other.step * step != loop.step:
                return False
            if (other.first + other.step * made - loop.first) % other.width:
                return False
    return True


class _Where:
    """Where each value of a list of equations is made: (index) by id."""

    def __init__(self, eqns: Sequence[Eqn]) -> None:
        self.index: dict[int, int] = {}
        for k, e in enumerate(eqns):
            self.index.setdefault(id(e.out), k)


def _classify(eqns: Sequence[Eqn], loop: Loop, where: _Where, loops: Sequence[Loop]) -> int:
    """Fill in `loop.roles` and `loop.inits`; return how many leading iterations are consistent
    (the loop is cut to them by the caller)."""
    start, period = loop.start, loop.period
    roles: list[list[Role | None]] = [[None] * len(_reads(eqns, loop, 0, j)) for j in range(period)]
    inits: dict[int, Atom] = {}
    early: set[int] = set()  # carried positions the body reads after making them again

    def role_of(atom: Atom, t: int) -> Role | None:
        if isinstance(atom, Const):
            return Role("const", value=atom)
        index = where.index.get(id(atom))
        if index is not None and start <= index < loop.stop:
            made_t, position = divmod(index - start, period)
            if made_t == t:
                return Role("local", position)
            if made_t == t - 1:
                return Role("carried", position)
            return None
        if index is not None:
            for number, other in enumerate(loops):
                if other.start <= index < other.stop and other is not loop:
                    made_t, position = divmod(index - other.start, other.period)
                    if position in other.stored:
                        return Role("outer", outer=(number, position, made_t, 0))
                    break  # a carried value's last: named after that loop, as in the flat code
        return Role("invariant", value=atom)

    for t in range(loop.count):
        for j in range(period):
            reads = _reads(eqns, loop, t, j)
            if len(reads) != len(roles[j]):  # adds onto a gradient here, not there
                return t
            for p, atom in enumerate(reads):
                role = role_of(atom, t)
                if role is None:
                    return t
                known = roles[j][p]
                if role.kind == "outer":  # an earlier loop's value: its iteration moves by a step
                    number, position, made_t, _ = role.outer  # type: ignore[misc]
                    if t == 0:
                        roles[j][p] = role
                        continue
                    first = known.outer if known is not None and known.kind == "outer" else None
                    if first is None or first[:2] != (number, position):
                        return t
                    step = made_t - first[2]
                    if t == 1 and step in (1, -1, 0):  # 0: one value of it for every iteration
                        roles[j][p] = Role("outer", outer=(number, position, first[2], step))
                    elif t == 1 or made_t != first[2] + t * first[3]:
                        return t
                    continue
                if t == 0:  # an invariant or a constant may turn out a carried value's start at t = 1
                    roles[j][p] = role
                    continue
                if role.kind == "carried":
                    if known is None or known.kind not in ("invariant", "const", "carried"):
                        return t
                    if t == 1 and known.kind != "carried":
                        if role.position < j:  # read after this iteration has made it again: kept
                            early.add(role.position)  # per iteration, h[i] read as h[i + 1] is made
                        if inits.setdefault(role.position, known.value) is not known.value:  # type: ignore[arg-type]
                            return t
                    elif known.kind == "carried" and known.position != role.position:
                        return t
                    roles[j][p] = role
                    continue
                if role.kind == "invariant" and known is not None and known.kind in ("invariant", "gathered"):
                    seen = (known.value,) if known.kind == "invariant" else known.values
                    if known.kind == "invariant" and known.value is role.value:
                        continue
                    if len(seen) != t or not isinstance(role.value, Var) or not all(isinstance(v, Var) for v in seen):
                        return t
                    if t == MAX_GATHERED:  # a longer tuple compiles slowly under numba: the loop ends here
                        return t
                    index = where.index.get(id(role.value))
                    if index is not None and index >= start:  # made in the loop's span: not before it
                        return t
                    roles[j][p] = Role("gathered", values=(*seen, role.value))  # type: ignore[arg-type]
                    continue
                if known is None or known.kind != role.kind:
                    return t
                if role.kind == "local" and known.position != role.position:
                    return t
                if role.kind == "invariant" and known.value is not role.value:
                    return t
                if role.kind == "const" and not _same_constant(known.value, role.value):
                    return t
    loop.roles = roles  # type: ignore[assignment]
    loop.inits = inits
    loop.stored = early
    return loop.count if _names_hold(eqns, loop) else 0


class _ZeroStart(Const):
    """The zeros a gradient the first iteration of a loop starts is taken to add onto, so that
    the first iteration is one more of the rest (`db[3] += ds`, from `db = np.zeros(...)`)."""

    def literal(self) -> str:
        shape, dtype = np.shape(self.value), np.asarray(self.value).dtype.name
        if not shape:
            return "0.0" if dtype == "float64" else f"np.{dtype}(0)"
        return f"np.zeros({shape!r})" if dtype == "float64" else f"np.zeros({shape!r}, np.{dtype})"


def _reads(eqns: Sequence[Eqn], loop: Loop, t: int, position: int) -> tuple[Atom, ...]:
    """What the equation at `position` of iteration t reads; in the first iteration, where it
    starts a gradient that the second adds onto (no `accumulate`, where the second has one),
    with zeros it is taken to add onto."""
    eqn = loop.eqn(eqns, t, position)
    if t == 0 and eqn.accumulate is None and loop.count > 1 and loop.eqn(eqns, 1, position).accumulate is not None:
        out = eqn.out
        return (*eqn.reads, _ZeroStart(np.zeros(out.shape, out.dtype)))
    return eqn.reads


def _names_hold(eqns: Sequence[Eqn], loop: Loop) -> bool:
    """Whether the body's names, the first iteration's, hold what each line reads: an
    accumulation gives one name to several of an iteration's values (`grad_s40` made, then
    added to), so the previous iteration's value under that name must be read before this
    iteration binds it again."""
    names = [loop.eqn(eqns, 0, position).out.name for position in range(loop.period)]
    for j, body in enumerate(loop.roles):
        for role in body:
            if role.kind == "carried" and any(
                names[p] == names[role.position] and p != role.position for p in range(j)
            ):
                return False
    return True


def _same_constant(a: Atom | None, b: Atom | None) -> bool:
    if not (isinstance(a, Const) and isinstance(b, Const) and type(a.value) is type(b.value)):
        return False
    if isinstance(a.value, (int, float)):
        return a.value == b.value
    return bool(np.array_equal(a.value, b.value))


def _reads_after(eqns: Sequence[Eqn], outputs: Sequence[Var], loop: Loop, where: _Where) -> bool:
    """Mark what is read after the loop: stored positions (a carried one keeps its value before
    the loop too: an RNN's `h[0]` is h0, `h[t + 1]` the state after step t) and the last values
    of carried ones. False where an array's name would be its first value's."""
    carried = {r.position for body in loop.roles for r in body if r.kind == "carried"}
    reads = [a for e in eqns[loop.stop:] for a in e.reads] + list(outputs)
    for atom in reads:
        index = where.index.get(id(atom))
        if index is None or not loop.start <= index < loop.stop:
            continue
        t, position = divmod(index - loop.start, loop.period)
        if position in carried and t == loop.count - 1:
            loop.finals[position] = atom  # type: ignore[assignment]
        else:
            loop.stored.add(position)
    for position in loop.stored & carried:
        init = loop.inits.get(position)
        if isinstance(init, Var) and init.name == loop.eqn(eqns, 0, position).out.name:
            return False
    return True


def _names_free(eqns: Sequence[Eqn], outputs: Sequence[Var], loop: Loop, where: _Where) -> bool:
    """Whether the loop's names stand for its values alone: an accumulation binds one name to
    several values in turn, so an array the loop stores must have a name nothing else binds, and
    a value from before the loop that is read after it must not have a name the body binds."""
    mine = {id(loop.eqn(eqns, t, p).out) for t in range(loop.count) for p in range(loop.period)}
    body = {loop.eqn(eqns, 0, p).out.name for p in range(loop.period)}
    stored = {loop.eqn(eqns, 0, p).out.name for p in loop.stored}
    if any(e.out.name in stored and id(e.out) not in mine for e in eqns):
        return False
    later = [a for e in eqns[loop.stop:] for a in e.reads] + list(outputs)
    return not any(
        isinstance(a, Var) and a.name in body and id(a) not in mine and where.index.get(id(a), -1) < loop.start
        for a in later
    )


def find_loops(
    eqns: Sequence[Eqn], outputs: Sequence[Var], boundaries: Sequence[int] = (), min_eqns: int = 0,
    memo: dict[int, tuple[tuple, tuple[int, ...]]] | None = None, avoid: frozenset[int] = frozenset(),
) -> list[Loop]:
    """The runs of `eqns` that can be written as loops, in order, none across a boundary (an
    index where a section of the function starts); `outputs` are read after the last equation.
    A run must repeat at least MIN_ITERATIONS times and cover more than `min_eqns` equations,
    and start at no index in `avoid` (where `rolled` found a run's lines not one body).
    `memo` keeps equations' signatures by id across calls on the same equations."""
    memo = {} if memo is None else memo
    signed = [memo.get(id(e)) or memo.setdefault(id(e), _signature(e)) for e in eqns]
    signatures = [signature for signature, _ in signed]
    moving = [ints for _, ints in signed]
    where = _Where(eqns)
    loops: list[Loop] = []
    cuts = sorted(set(boundaries) | {len(eqns)})
    position = 0
    def candidate(position: int, period: int, limit: int, best: Loop | None) -> tuple[Loop | None, int]:
        """The loop of `period` equations from `position` (None: none, or none longer than
        `best`), and how many iterations of the same structure its operands allowed."""
        block = signatures[position:position + period]
        count = 1
        while position + (count + 1) * period <= limit and signatures[
            position + count * period: position + (count + 1) * period
        ] == block:
            count += 1
        if count < MIN_ITERATIONS or best is not None and count * period <= best.count * best.period:
            return None, 0
        loop = Loop(position, period, count)
        count = _classify(eqns, loop, where, loops)
        if count < MIN_ITERATIONS:
            return None, 0
        held = True  # whether the loop's roles hold (its names too: see `_names_hold`)
        if count < loop.count:  # the roles again, of the iterations kept
            loop = Loop(position, period, count)
            held = _classify(eqns, loop, where, loops) == count
        line = _params_move_by_steps(moving, loop)
        grid = _grid(moving, loop, loops) if line < count and held else None
        for kept in ([grid] if grid is not None and grid.count > line else []) + [Loop(position, period, line)]:
            if kept.count < MIN_ITERATIONS:
                continue
            if kept.count == loop.count and held:  # the same iterations: the same roles
                kept.roles, kept.inits, kept.stored = loop.roles, loop.inits, set(loop.stored)
            elif _classify(eqns, kept, where, loops) < kept.count:
                continue  # the roles again, of the iterations kept
            if not _reads_after(eqns, outputs, kept, where) or not _names_free(eqns, outputs, kept, where):
                continue
            if not kept.width:
                _index_variable(kept, loops)
            longer = best is None or kept.count * kept.period > best.count * best.period
            if _reads_fit(kept, loops) and kept.count * kept.period > min_eqns and longer:
                return kept, count
        return None, count

    while position < len(eqns):
        limit = next(c for c in cuts if c > position)
        best: Loop | None = None
        following = [k for k in range(position + 1, min(limit, position + MAX_PERIOD + 1))
                     if signatures[k] == signatures[position]][:3] if position not in avoid else []
        allowed = 0
        for other in following:
            found, count = candidate(position, other - position, limit, best)
            if found is not None:
                best, allowed = found, count
        if best is not None:  # a loop inside a loop (a convolution's filters, in each position
            # of its grid, in optimize mode): the outer one, its body the inner unrolled, covers more
            beyond = next((k for k in range(best.stop, min(limit, position + MAX_PERIOD + 1))
                           if signatures[k] == signatures[position]), None)
            found, count = candidate(position, beyond - position, limit, best) if beyond else (None, 0)
            if found is not None:
                best, allowed = found, count
        if best is not None and best.count < allowed:
            # a loop cut short (a grid's rows that do not fit one grid): its iterations may start
            # mid-way through the source loop's (a backward pass's first line adds the previous
            # position's gradient), so that one line's place is the next position's; a loop
            # starting a few lines on may run longer
            for shift in range(1, best.period):
                if position + shift in avoid:
                    continue
                found, _ = candidate(position + shift, best.period, limit, None)
                if found is not None and found.count > best.count:
                    best = found
                    break
        if best is None:
            position += 1
            continue
        # the source loop's iterations may start earlier: the search starts a run at a line
        # that repeats once per iteration, and a line before it may repeat more often (each of
        # a convolution's filters reads dout; only its position's dx_pad line is once a position)
        floor = max([loops[-1].stop if loops else 0, *(c for c in cuts if c <= position)])
        for shift in range(1, min(best.period, best.start - floor) + 1):
            if best.start - shift not in avoid:
                found, _ = candidate(best.start - shift, best.period, limit, best)
                if found is not None:
                    best = found
                    break
        loops.append(best)
        position = best.stop
    return loops


def _index_variable(loop: Loop, loops: Sequence[Loop]) -> None:
    """The loop's `i`: where it reads an earlier loop's stored values, the iteration of that loop
    it reads (a backward loop runs its forward loop's iterations in reverse: `s3[i]`), else
    0, 1, 2, ..."""
    for body in loop.roles:
        for role in body:
            if role.kind == "outer" and role.outer[3] != 0:  # type: ignore[index]
                _, _, loop.first, loop.step = role.outer  # type: ignore[misc]
                return


# ----------------------------------------------------------------------------- writing


def _index_expression(index: str | Sequence[str], constant: int, slope: int | Sequence[int]) -> ast.expr:
    """`constant + slope * index` as it reads best: `i`, `i + 1`, `998 - i`, `2 * i + 3`; with
    several indices and slopes, their sum: `4 * i + j`, `3 - i`."""
    names = [index] if isinstance(index, str) else list(index)
    slopes = [slope] if isinstance(slope, int) else list(slope)

    def term(name: str, k: int) -> ast.expr:
        named = ast.Name(name, ast.Load())
        return named if k == 1 else ast.BinOp(ast.Constant(k), ast.Mult(), named)

    up = [term(n, k) for n, k in zip(names, slopes) if k > 0]
    down = [term(n, -k) for n, k in zip(names, slopes) if k < 0]
    if not up and not down:
        return ast.Constant(constant)
    if up:
        tree = up[0]
        for t in up[1:]:
            tree = ast.BinOp(tree, ast.Add(), t)
    elif constant:
        tree = ast.Constant(constant)
    else:
        tree = ast.UnaryOp(ast.USub(), down.pop(0))
    for t in down:
        tree = ast.BinOp(tree, ast.Sub(), t)
    if up and constant:
        tree = ast.BinOp(tree, ast.Add() if constant > 0 else ast.Sub(), ast.Constant(abs(constant)))
    return tree


# The lines of a loop's iterations that are not one body: raised as ValueError, caught in `_body`
def _unify(a: object, b: object, c: object, iterations: tuple[int, int, int], name_of) -> object:
    """One tree from the lines of three iterations (`iterations` apart from the first): names
    by `name_of(name_a, name_b, name_c)`, ints that move as `(first, step)` markers."""
    if isinstance(a, ast.expr) and not isinstance(a, ast.Name) and isinstance(b, ast.Name) and isinstance(c, ast.Name):
        return name_of(a, b, c)  # a carried value, a number or array constant before the first iteration
    if type(a) is not type(b) or type(a) is not type(c):
        raise ValueError("not one body")
    if isinstance(a, ast.Name):
        return name_of(a, b, c)
    if isinstance(a, ast.Constant):
        if a.value == b.value == c.value and type(a.value) is type(b.value):
            return copy.copy(a)
        if all(isinstance(n.value, int) and not isinstance(n.value, bool) for n in (a, b, c)):
            return ("moves", a.value, b.value, c.value)  # written by `_Moves`
        raise ValueError("not one body")
    if isinstance(a, ast.AST):
        node = copy.copy(a)
        for name, value in ast.iter_fields(a):
            setattr(node, name, _unify(value, getattr(b, name), getattr(c, name), iterations, name_of))
        return node
    if isinstance(a, list):
        if len(a) != len(b) or len(a) != len(c):
            raise ValueError("not one body")
        return [_unify(x, y, z, iterations, name_of) for x, y, z in zip(a, b, c)]
    if a != b or a != c:
        raise ValueError("not one body")
    return a


class _Moves(ast.NodeTransformer):
    """Put the loop index into the markers `_unify` left for moving ints (the values in the
    iterations `picks`): ValueError where they do not move as the index does."""

    def __init__(self, index: Sequence[str], loop: Loop, picks: Sequence[int]) -> None:
        self.index, self.loop, self.picks = index, loop, picks

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name, value in ast.iter_fields(node):
            if isinstance(value, tuple) and value[:1] == ("moves",):
                setattr(node, name, self._expression(value))
            elif isinstance(value, list):
                setattr(node, name, [self._expression(v) if isinstance(v, tuple) and v[:1] == ("moves",)
                                     else self.visit(v) if isinstance(v, ast.AST) else v for v in value])
            elif isinstance(value, ast.AST):
                setattr(node, name, self.visit(value))
        return node

    def _expression(self, marker: tuple) -> ast.expr:
        expression = _moving(self.loop, self.index, marker[1:], self.picks)
        if expression is None:
            raise ValueError("not one body")
        return expression


def _moving(loop: Loop, index: Sequence[str], values: Sequence[int], picks: Sequence[int]) -> ast.expr | None:
    """The ints `values` of the iterations `picks` as an expression in the loop's index: `first +
    step * t`, or over a grid `c + a * row + b * column`; None where they move otherwise."""
    if loop.width:
        fit = _solved([loop.place(t) for t in picks], values)
        return None if fit is None else _index_expression(index[:2], fit[0], fit[1:])
    moves = _moves(values, picks)
    return None if moves is None else _iteration(loop, index, *moves)


def _slot(name: str, owner: Loop, reader: Loop | None, index: Sequence[str], constant: int, slope: int,
          carried: bool, context: ast.expr_context) -> ast.expr:
    """Where the array `owner` stores a value in holds that of its iteration `constant + slope *
    t` (t the `reader` loop's iteration; `reader` None: the number `constant`): a carried
    value's array holds the value before the loop first, so iteration t's is one further on; a
    loop over a grid's array has a row and a column (`window[i, j]`), but a carried value's is
    one array over the iterations in turn (`dout_13[15 - 4 * i - j]`). ValueError where the
    reader cannot name it (see `_reads_fit`, which keeps such loops flat)."""
    array = ast.Name(name, ast.Load())
    if not owner.width or carried:
        constant += carried
        place = ast.Constant(constant) if reader is None else _iteration(reader, index, constant, slope)
        return ast.Subscript(array, place, context)
    first_row = owner.rows[0]
    if reader is None or slope == 0:
        row, column = owner.place(constant)
        return ast.Subscript(array, ast.Tuple([ast.Constant(row - first_row), ast.Constant(column)], ast.Load()),
                             context)
    offset = owner.first + owner.step * constant - reader.first  # places apart: whole rows
    if reader.width != owner.width or owner.step * slope != reader.step or offset % owner.width:
        raise ValueError("not one body")
    rows = offset // owner.width - first_row
    place = [_index_expression(index[0], rows, 1), ast.Name(index[1], ast.Load())]
    return ast.Subscript(array, ast.Tuple(place, ast.Load()), context)


def _iteration(loop: Loop, index: Sequence[str], constant: int = 0, slope: int = 1) -> ast.expr:
    """`constant + slope * t` in terms of the loop's index `i = loop.first + loop.step * t`, or
    over a grid its row and column (`i = (loop.first + loop.step * t) // width`, `j` the rest)."""
    slope_i = slope * loop.step  # t = loop.step * (i - loop.first), as the step is 1 or -1
    if loop.width:
        return _index_expression(index[:2], constant - slope_i * loop.first, (slope_i * loop.width, slope_i))
    return _index_expression(index[0], constant - slope_i * loop.first, slope_i)


def rolled(
    eqns: Sequence[Eqn], lines: Sequence[str], loops: Sequence[Loop], outputs: Sequence[Var],
    boundaries: Sequence[int], taken: set[str], jit: str | None = None,
) -> list[list[str]] | range:
    """`lines` (one per equation of `eqns`, for the backend `jit`) with every loop written as a
    `for` loop, cut into sections at `boundaries` as `find_loops` was given them; or, where a
    loop's lines cannot be made one body (the first iteration writes `1.0 * s2` as `s2`), the
    starts `find_loops` is to avoid next. `outputs` are named after the last line."""
    free = (n for n in itertools.chain(("i", "j", "k", "t"), (f"i_{k}" for k in itertools.count(1))) if n not in taken)
    index = tuple(itertools.islice(free, 3))  # a loop's `i`; over a grid, row `i`, column `j`, and `k`
    owner = {}  # value id -> (loop, iteration, position), for the values loops store
    for loop in loops:
        for t in range(loop.count):
            for position in loop.stored:
                owner[id(loop.eqn(eqns, t, position).out)] = (loop, t, position)
    starts = [0, *sorted(boundaries)]
    sections: list[list[str]] = [[] for _ in starts]

    def section(at: int) -> list[str]:
        return sections[max(k for k, start in enumerate(starts) if start <= at)]

    cursor = 0
    own: set[str] = set()  # arrays a loop added to in place: its own, added to so after it too

    slots: dict[str, str] = {}  # a stored value's name -> where its array holds it, for comments

    def renamed_stored(name: str) -> str | None:
        if not slots:
            for key, (loop, t, position) in owner.items():
                value = loop.eqn(eqns, t, position).out
                if id(value) == key:
                    slots.setdefault(value.name, stored_place(eqns, loop, t, position))
        return slots.get(name)

    def flat(k: int) -> str:
        eqn = eqns[k]
        above, code, note = comment_parts(lines[k]) or ([], lines[k], "")
        line = _flat(code, eqn.reads, owner, eqns, jit)
        operands = {a.name for a in eqn.inputs if isinstance(a, Var)}
        added_to = eqn.accumulate.name if eqn.accumulate is not None else None
        if operands & own:  # read another way: an alias may share the array
            own.difference_update(operands)
        if added_to in own and eqn.out.name == added_to:
            line = _in_place(ast.parse(line).body[0], ())
            note = in_place_note(note, *line.split(" += ", 1)) if " += " in line else note
        else:
            own.discard(added_to)
            own.discard(eqn.out.name)  # bound to another array
        if not (above or note):
            return line
        return with_comments([renamed(a, renamed_stored) for a in above], line, renamed(note, renamed_stored))

    for loop in loops:
        for k in range(cursor, loop.start):
            section(k).append(flat(k))
        body = _body(eqns, lines, loop, loops, index, taken)
        if isinstance(body, int):
            return range(loop.start, loop.start + body)
        section(loop.start).extend(body)
        own.update(line.rsplit("\n", 1)[-1].split("[", 1)[0].strip() for line in body if " += " in line)
        cursor = loop.stop
    for k in range(cursor, len(eqns)):
        section(k).append(flat(k))
    named = [v for v in outputs if id(v) in owner]  # an output a loop stores: named after it, the
    arrays = {loop.eqn(eqns, 0, p).out.name for loop in loops for p in loop.stored}  # array's own name last
    named.sort(key=lambda v: v.name in arrays)
    sections[-1] += [_flat(f"{v.name} = {v.name}", (v,), owner, eqns) for v in dict.fromkeys(named)]
    return sections


def stored_place(eqns: Sequence[Eqn], loop: Loop, t: int, position: int) -> str:
    """Where the code after the loop reads iteration t's value at `position` of the loop, which
    stores it: `s1[4]`, `window[1, 2]`."""
    name = loop.eqn(eqns, 0, position).out.name
    return unparse(ast.Expr(_slot(name, loop, None, (), t, 0, position in loop.carried(), ast.Load())))


def held_names(eqns: Sequence[Eqn], loops: Sequence[Loop], values: Sequence[Var]) -> list[str]:
    """The names that hold `values` after `rolled`'s lines, once each: a value a loop stores is
    in its array (`s3`, all iterations' values)."""
    names = {}
    for loop in loops:
        for t in range(loop.count):
            for position in loop.stored:
                names[id(loop.eqn(eqns, t, position).out)] = loop.eqn(eqns, 0, position).out.name
    return list(dict.fromkeys(names.get(id(v), v.name) for v in values))


def _flat(line: str, reads: Sequence[Atom], owner: dict, eqns: Sequence[Eqn], jit: str | None = None) -> str:
    """A line outside the loops, reading a stored value as `s3[2]`."""
    stored = {a.name: owner[id(a)] for a in reads if isinstance(a, Var) and id(a) in owner}
    if not stored:
        return line

    class Read(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            if node.id not in stored or not isinstance(node.ctx, ast.Load):
                return node
            loop, t, position = stored[node.id]
            name = loop.eqn(eqns, 0, position).out.name
            return _slot(name, loop, None, (), t, 0, position in loop.carried(), ast.Load())

    return unparse(_Stacked(stored, eqns, jit).visit(Read().visit(ast.parse(line))))


class _Stacked(ast.NodeTransformer):
    """`np.stack((h[1], h[2], ..., h[30]), axis=1)` of consecutive values a loop stored, as the
    slice of its array they are: `np.stack(h[1:31], axis=1)` (numba, whose np.stack takes a
    tuple only: the slice with its first axis moved, `h[1:31].transpose((1, 0, 2))`, copied). A
    tuple of tens of arrays takes numba seconds to compile."""

    def __init__(self, stored: dict, eqns: Sequence[Eqn], jit: str | None) -> None:
        self.ndims = {loop.eqn(eqns, 0, position).out.name: len(loop.eqn(eqns, 0, position).out.shape)
                      for loop, _, position in stored.values()}
        self.jit = jit

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        if unparse(node.func) != "np.stack" or not node.args or not isinstance(node.args[0], ast.Tuple):
            return node
        items = node.args[0].elts
        slots = [(item.value.id, item.slice.value) for item in items if isinstance(item, ast.Subscript)
                 and isinstance(item.value, ast.Name) and isinstance(item.slice, ast.Constant)]
        names = {name for name, _ in slots}
        if len(slots) != len(items) or len(items) < 2 or len(names) != 1 or names - self.ndims.keys():
            return node
        first = slots[0][1]
        if not all(isinstance(k, int) and k == first + n for n, (_, k) in enumerate(slots)):
            return node
        given = [k.value for k in node.keywords if k.arg == "axis"] + node.args[1:2]
        axes = [a.value if isinstance(a, ast.Constant) else None for a in given]
        (name,) = names
        ndim = self.ndims[name]
        axis = axes[0] if axes else 0
        if not isinstance(axis, int) or not -ndim - 1 <= axis <= ndim:
            return node
        axis %= ndim + 1
        span = ast.Slice(ast.Constant(first), ast.Constant(first + len(items)))
        part = ast.Subscript(ast.Name(name, ast.Load()), span, ast.Load())
        if self.jit != "numba":
            return ast.Call(node.func, [part], [ast.keyword("axis", ast.Constant(axis))] if axis else [])
        if len(items) < NUMBA_STACK_TUPLE:
            return node
        order = ast.Tuple([ast.Constant(k) for k in (*range(1, axis + 1), 0, *range(axis + 1, ndim + 1))], ast.Load())
        moved = ast.Call(ast.Attribute(part, "transpose", ast.Load()), [order], [])
        return ast.Call(ast.Attribute(ast.Name("np", ast.Load()), "ascontiguousarray", ast.Load()), [moved], [])


def _made_for(eqns: Sequence[Eqn], lines: Sequence[str], loop: Loop, value: Atom) -> bool:
    """Whether `value` is an array made just before the loop for it alone: a scatter's new array
    that nothing but the loop reads (the first iteration's gradient, peeled off)."""
    made = next((k for k in range(loop.start - 1, -1, -1) if eqns[k].out is value), None)
    parts = comment_parts(lines[made]) if made is not None else None
    if parts is None or not parts[1].split(" = ", 1)[-1].startswith("scatter("):
        return False
    inside = range(loop.start, loop.stop)
    return not any(a is value for k, e in enumerate(eqns) if k not in inside for a in e.reads)


def _body(
    eqns: Sequence[Eqn], lines: Sequence[str], loop: Loop, loops: Sequence[Loop], index: tuple[str, ...],
    taken: set[str]
) -> list[str] | int:
    """The loop's lines: its arrays made and its carried values started, the `for` and its
    body, then the last carried values under the names the flat code gave them. Where that
    cannot be written, how many of its first lines to start past (a first iteration's line the
    flat code writes otherwise: `p = s2` for `p = 1.0 * s2`), at least 1."""
    last = loop.count - 1
    carried = loop.carried()
    bound = {loop.eqn(eqns, 0, position).out.name for position in range(loop.period)}
    for body_roles in loop.roles:  # a value from before the loop under a name the body binds
        if any(r.kind == "invariant" and isinstance(r.value, Var) and r.value.name in bound for r in body_roles):
            return 1
    # first what reads values from before the loop, as the lines after may bind their names
    before: list[str] = []
    gathered: dict[tuple[int, ...], str] = {}  # values made before the loop, one per iteration: a tuple
    for role in (r for body in loop.roles for r in body if r.kind == "gathered"):
        key = tuple(map(id, role.values))
        if key not in gathered:
            name = next(n for n in (f"{role.values[0].name}_steps{s}" for s in ("", *range(1, 99))) if n not in taken)
            taken.add(name)
            gathered[key] = name
            before.append(f"{name} = ({', '.join(v.name for v in role.values)})")
    for position in sorted(loop.stored):
        out = loop.eqn(eqns, 0, position).out
        if loop.width and position not in carried:
            shape = (loop.rows[1] - loop.rows[0] + 1, loop.width, *out.shape)
        else:
            shape = (loop.count + (position in carried), *out.shape)
        before.append(f"{out.name} = np.empty({shape!r}, np.{out.dtype})")
    body: list[str] = []
    comments: list[tuple[list[str], str]] = []  # explain mode's, per body line
    commented = _BodyComments(eqns, loop, loops, index)
    constants: dict[int, str] = {}
    writes = _writes_in_place(eqns, loop)
    aliases: dict[str, str] = {}  # a write's result, read as the array it was written into
    written_into: set[str] = set()
    picks = (1, 2, last) if loop.zero_starts else (0, 1, last)  # the first starts gradients
    if len(set(picks)) < 3:
        return 1
    for position in range(loop.period):
        parts = [comment_parts(lines[loop.start + t * loop.period + position]) for t in picks]
        if any(part is None or "#" in part[1] for part in parts):
            return position + 1
        name_of = _Names(eqns, loop, loops, position, index, picks, gathered)
        try:
            trees = [ast.parse(code).body[0] for _, code, _ in parts]  # type: ignore[misc]
            tree = _Moves(index, loop, picks).visit(_unify(*trees, picks, name_of))
        except (ValueError, SyntaxError, IndexError):
            return position + 1
        constants.update(name_of.starts)
        tree = _Renamed(aliases).visit(tree)
        if position in writes:
            tree, result, array = _written(tree)
            written_into.add(array)
            if result != array:
                aliases[result] = array
        body.append(_in_place(tree, index))
        if any(above or note for above, _, note in parts):  # type: ignore[misc]
            comments.append(commented.of(parts, body[-1], name_of))  # type: ignore[arg-type]
        else:
            comments.append(([], ""))
    # arrays added to or written in place: the loop's own
    added = {line.split("[", 1)[0] for line in body if " += " in line} | written_into
    starts: list[tuple[str, str, str]] = []  # (target, value, the name the value reads) per carried start
    for position, init in sorted(loop.inits.items()):
        name = loop.eqn(eqns, 0, position).out.name
        if isinstance(init, _ZeroStart):
            value = init.literal()
        else:
            value = init.name if isinstance(init, Var) else constants.get(position, repr(init.value))  # type: ignore[union-attr]
        array = isinstance(init, Var) and bool(init.shape)
        if position in loop.stored:
            starts.append((f"{name}[0]", value, value))
        elif array and name in added and not _made_for(eqns, lines, loop, init):  # it must be the loop's own
            starts.append((name, f"{value}.copy()", value))
        elif value != name:
            starts.append((name, value, value))
    if {source for _, _, source in starts} & {loop.eqn(eqns, 0, position).out.name for position in loop.stored}:
        return 1  # an array made above under the name of a value a start reads
    if any(source == other for _, _, source in starts for other, _, own in starts if own != source):
        # one start's name is another's value: bound all at once
        before.append(f"{', '.join(t for t, _, _ in starts)} = {', '.join(v for _, v, _ in starts)}")
    else:
        before += [f"{target} = {value}" for target, value, _ in starts]
    header = _headers(loop, index)
    after = []
    for position, final in sorted(loop.finals.items()):
        name = loop.eqn(eqns, 0, position).out.name
        if position not in loop.stored and final.name != name:  # a stored one is read from its array
            after.append(f"{final.name} = {name}")
    lines = [with_comments(above, line, note) for line, (above, note) in zip(body, comments)]
    if not any(above or note for above, note in comments):  # explain mode's comments stay per line
        kept = {loop.eqn(eqns, 0, p).out.name for p in loop.stored | loop.carried() | set(loop.finals)}
        lines = _inner_loops(lines, kept, taken | {n for h in header for n in words(h)})
    indent = "    " * (len(header) if loop.width and loop.aligned() else 1)
    return [*before, *_nested(header), *(indent + line.replace("\n", "\n" + indent) for line in lines), *after]


def _writes_in_place(eqns: Sequence[Eqn], loop: Loop) -> set[int]:
    """The body's write gates (`x[index] = v`, traced as `out = updated(x, index, v)`) that may
    write into x itself: x is the previous write's result, or the previous iteration's, which
    nothing else reads, and neither is kept per iteration. A naive convolution's `out[:, f, i,
    j] = ...` then writes into one array, not a copy of the whole output per filter and position."""
    reads: collections.Counter[int] = collections.Counter(
        r.position for body in loop.roles for r in body if r.kind in ("local", "carried"))
    writes = set()
    for position in range(loop.period):
        eqn = loop.eqn(eqns, 0, position)
        if eqn.op != "setitem" or eqn.rule is not None or position in loop.stored:
            continue
        source = loop.roles[position][0]
        if source.kind in ("local", "carried") and reads[source.position] == 1 and source.position not in loop.stored:
            local_only = source.kind == "local" and source.position not in loop.carried() | set(loop.finals)
            if local_only or source.kind == "carried":
                writes.add(position)
    # a write's result read under its own name after the loop or by the next iteration must be
    # named as the array it is written into
    for position in list(writes):
        out, source = loop.eqn(eqns, 0, position).out, loop.roles[position][0]
        array = loop.eqn(eqns, 0, source.position).out
        kept = position in loop.carried() or position in loop.finals
        if kept and out.name != _written_name(eqns, loop, writes, source.position, array.name):
            writes.discard(position)
    return writes


def _written_name(eqns: Sequence[Eqn], loop: Loop, writes: set[int], position: int, name: str) -> str:
    """The name of the array the value at `position` lives in, after the body's writes in place
    (a write's result is its operand's array)."""
    while position in writes:
        source = loop.roles[position][0]
        position, name = source.position, loop.eqn(eqns, 0, source.position).out.name
        if source.kind == "carried":  # the array the iteration starts with, under its name
            break
    return name


class _Renamed(ast.NodeTransformer):
    """Reads of names renamed (a write's result, read as the array it was written into)."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if isinstance(node.ctx, ast.Load) and node.id in self.names:
            return ast.Name(self.names[node.id], ast.Load())
        return node


def _written(tree: ast.stmt) -> tuple[ast.stmt, str, str]:
    """`out = updated(x, index, v)` as `x[index] = v`; with the names of out and x."""
    assert isinstance(tree, ast.Assign) and isinstance(tree.value, ast.Call), "a write gate's line"
    (target,), (array, where, value) = tree.targets, tree.value.args
    assert isinstance(target, ast.Name) and isinstance(array, ast.Name)
    written = ast.Assign([ast.Subscript(ast.Name(array.id, ast.Load()), in_brackets(where), ast.Store())], value)
    return ast.fix_missing_locations(written), target.id, array.id


INNER_INDICES = ("k", "m", "n", "p", "q")  # an inner loop's index: the first the code leaves free


@dataclass
class _Block:
    """A run of statements in a loop body, taken apart: its shape with names and ints blanked
    out, and its names and ints in the order `ast.walk` meets them."""

    shape: list[str]
    names: list[ast.Name]
    ints: list[ast.Constant]

    @classmethod
    def of(cls, statements: Sequence[ast.stmt]) -> _Block:
        names, ints, shape = [], [], []
        for statement in statements:
            blank = copy.deepcopy(statement)
            for node in ast.walk(statement):
                if isinstance(node, ast.Name):
                    names.append(node)
                elif isinstance(node, ast.Constant) and type(node.value) is int:
                    ints.append(node)
            for node in ast.walk(blank):
                if isinstance(node, ast.Name):
                    node.id = "_"
                elif isinstance(node, ast.Constant) and type(node.value) is int:
                    node.value = 0
            shape.append(ast.dump(blank))
        return cls(shape, names, ints)

    def bound(self) -> set[str]:
        return {n.id for n in self.names if isinstance(n.ctx, ast.Store)}


def _one_body(blocks: Sequence[_Block], outside: set[str], kept: set[str]) -> list[tuple[int, int]] | None:
    """Whether the blocks are one body: the same statements but for names the blocks bind (each
    read in its own block only, and by nothing `outside` them), names the same in every block,
    and ints that move by a fixed step from block to block; the (first, step) of each int."""
    first = blocks[0]
    if any(b.shape != first.shape for b in blocks[1:]):
        return None
    for position, name in enumerate(first.names):
        spellings = [b.names[position].id for b in blocks]
        if len(set(spellings)) == 1:
            continue
        for block, spelling in zip(blocks, spellings):
            if spelling not in block.bound() or spelling in outside or spelling in kept:
                return None
            if any(spelling in other.bound() or spelling in {n.id for n in other.names}
                   for other in blocks if other is not block):
                return None
    moves = []
    for position in range(len(first.ints)):
        values = [b.ints[position].value for b in blocks]
        step = values[1] - values[0]
        if any(v != values[0] + k * step for k, v in enumerate(values)):
            return None
        moves.append((values[0], step))
    return moves


def _inner_loops(lines: list[str], kept: set[str], taken: set[str]) -> list[str]:
    """A loop body's lines with its longest run of three or more repeated blocks (a convolution's
    filters, within a position: `s0 = w[0]`, `s5 = w[1]`, ...) written as an inner `for` loop
    over the blocks, once, in the first block's names (`s0 = w[k]`); the lines as they are where
    there is none. `kept` are names the code after the loop reads (stored, carried or final)."""
    try:
        statements = [ast.parse(line).body[0] for line in lines]
    except (SyntaxError, IndexError):
        return lines
    size = len(statements)
    shapes = [_Block.of([s]).shape[0] for s in statements]
    best: tuple[int, int, int, list[tuple[int, int]]] | None = None  # (start, period, count, moves)
    for period in range(1, size // 3 + 1):
        for start in range(size - 3 * period + 1):
            count = 1
            while (start + (count + 1) * period <= size
                   and shapes[start + count * period:start + (count + 1) * period] == shapes[start:start + period]):
                count += 1
            if count < 3 or best is not None and count * period <= best[2] * best[1]:
                continue
            blocks = [_Block.of(statements[start + k * period:start + (k + 1) * period]) for k in range(count)]
            outside = set().union(*(words(line) for k, line in enumerate(lines)
                                    if not start <= k < start + count * period))
            moves = _one_body(blocks, outside, kept)
            if moves is not None and any(step for _, step in moves):
                best = (start, period, count, moves)
    if best is None:
        return lines
    start, period, count, moves = best
    index = next((n for n in INNER_INDICES if n not in taken), None)
    if index is None:
        return lines
    body = copy.deepcopy(statements[start:start + period])
    ints = _Block.of(body).ints
    # the index runs as the int that moves least (`out[0, i, j, k]`, beside slices `2 * k:2 * k + 3`),
    # or over the blocks' numbers where another int does not move by a multiple of its step
    first, step = min((m for m in moves if m[1]), key=lambda m: abs(m[1]))
    if any(moved % step for _, moved in moves):
        first, step = 0, 1
    for node, (value, moved) in zip(ints, moves):
        if moved:
            node.value = ("moves", value - (moved // step) * first, moved // step)
    tree = _IndexInts(index).visit(ast.Module(body, []))
    header = f"for {index} in {_range(first, count, step)}:"
    inner = [header, *("    " + unparse(s).replace("\n", "\n    ") for s in tree.body)]
    return [*lines[:start], "\n".join(inner), *lines[start + count * period:]]


class _IndexInts(ast.NodeTransformer):
    """Ints `_inner_loops` marked as moving, written `c + a * k` in the inner loop's index."""

    def __init__(self, index: str) -> None:
        self.index = index

    def visit_Constant(self, node: ast.Constant) -> ast.expr:
        if isinstance(node.value, tuple) and node.value[:1] == ("moves",):
            _, constant, slope = node.value
            return _index_expression(self.index, constant, slope)
        return node


def _range(first: int, count: int, step: int) -> str:
    if step == 1:
        return f"range({count})" if first == 0 else f"range({first}, {first + count})"
    return f"range({first}, {first + step * count}, {step})"


def _headers(loop: Loop, index: Sequence[str]) -> list[str]:
    """The loop's `for` line; over a grid, its row's and column's `for` lines over whole rows,
    else a `for` over the places and the line that makes them a row and a column."""
    if not loop.width:
        return [f"for {index[0]} in {_range(loop.first, loop.count, loop.step)}:"]
    if not loop.aligned():
        return [f"for {index[2]} in {_range(loop.first, loop.count, loop.step)}:",
                f"{index[0]}, {index[1]} = divmod({index[2]}, {loop.width})"]
    row, column = loop.place(0)
    return [f"for {index[0]} in {_range(row, loop.count // loop.width, loop.step)}:",
            f"for {index[1]} in {_range(column, loop.width, loop.step)}:"]


def _nested(headers: Sequence[str]) -> list[str]:
    """Header lines, each inside the one before where that one is a `for`."""
    out, indent = [], ""
    for line in headers:
        out.append(indent + line)
        indent += "    " if line.startswith("for ") else ""
    return out


class _Names:
    """A name in the loop body: by the role of the value it names, the same in every iteration."""

    def __init__(self, eqns: Sequence[Eqn], loop: Loop, loops: Sequence[Loop], position: int, index: tuple[str, ...],
                 picks: tuple[int, ...], gathered: dict[tuple[int, ...], str]) -> None:
        self.eqns, self.loop, self.loops, self.position, self.index = eqns, loop, loops, position, index
        self.gathered = gathered
        self.starts: dict[int, str] = {}  # carried position -> its constant start, as written
        self.carried = loop.carried()
        self.reads = [{a.name: p for p, a in enumerate(loop.eqn(eqns, t, position).reads) if isinstance(a, Var)}
                      for t in picks]
        self.outs = [loop.eqn(eqns, t, position).out.name for t in picks]

    def __call__(self, a: ast.expr, b: ast.Name, c: ast.Name) -> ast.expr:
        """The name for a, b and c, the same place in the first, second and last iterations'
        lines (a is an expression where the first iteration has a constant: a carried value's
        start, kept in `starts`)."""
        loop = self.loop
        if not isinstance(a, ast.Name):
            slots = {self.reads[1].get(b.id), self.reads[2].get(c.id)}
            role = loop.roles[self.position][slots.pop()] if len(slots) == 1 and None not in slots else None
            if role is None or role.kind != "carried":
                raise ValueError("not one body")
            self.starts[role.position] = repr(a.value) if isinstance(a, ast.Constant) else unparse(a)
            return self._local(role.position, ast.Load(), previous=True)
        if isinstance(a.ctx, ast.Store):
            if [a.id, b.id, c.id] != self.outs:
                raise ValueError("not one body")
            return self._local(self.position, ast.Store(), previous=False)
        slots = [reads.get(n.id) for reads, n in zip(self.reads, (a, b, c))]
        if slots[0] is None:
            if a.id == b.id == c.id:
                return copy.copy(a)  # np, a helper's name
            raise ValueError("not one body")
        if len(set(slots)) != 1:
            raise ValueError("not one body")
        role = loop.roles[self.position][slots[0]]
        if role.kind == "local":
            return self._local(role.position, ast.Load(), previous=False)
        if role.kind == "carried":
            return self._local(role.position, ast.Load(), previous=True)
        if role.kind in ("invariant", "const"):
            if a.id != b.id or a.id != c.id:
                raise ValueError("not one body")
            return copy.copy(a)
        if role.kind == "gathered":
            name = self.gathered[tuple(map(id, role.values))]
            return ast.Subscript(ast.Name(name, ast.Load()), _iteration(loop, self.index), ast.Load())
        number, position, first, step = role.outer  # type: ignore[misc]
        outer = self.loops[number]
        name = outer.eqn(self.eqns, 0, position).out.name
        return _slot(name, outer, loop, self.index, first, step, position in outer.carried(), ast.Load())

    def _local(self, position: int, context: ast.expr_context, previous: bool) -> ast.expr:
        """The value the body makes at `position`, in this iteration or (`previous`) the last."""
        name = self.loop.eqn(self.eqns, 0, position).out.name
        if position not in self.loop.stored:
            return ast.Name(name, context)
        return _slot(name, self.loop, self.loop, self.index, -1 if previous else 0, 1, position in self.carried,
                     context)


class _BodyComments:
    """Explain mode's comments on a loop body's line, from those of the iterations it is written
    from (see `explain.unified_comment`): a name that moves is written as the body writes it
    (`grad_s43`, `s3[i]`), or as the body of the loop that makes it (`s6 = total + s5` in a
    backward loop's block comment); a number that moves as an expression in the index."""

    def __init__(self, eqns: Sequence[Eqn], loop: Loop, loops: Sequence[Loop], index: tuple[str, ...]) -> None:
        self.eqns, self.loop, self.loops, self.index = eqns, loop, loops, index
        self.picks = (1, 2, loop.count - 1) if loop.zero_starts else (0, 1, loop.count - 1)
        self._owners: dict[str, list[tuple[int, int, int]]] | None = None

    def of(self, parts: Sequence[tuple[list[str], str, str]], line: str, name_of: _Names) -> tuple[list[str], str]:
        """The block comment's lines and the comment of the body's `line`, from the parts of
        the lines it was written from (`name_of` named its names); a part that cannot be
        written for every iteration is left out (one is written from the second and last
        iterations where the first differs: a carried value's start)."""
        self.name_of = name_of
        aboves = [above for above, _, _ in parts]
        tried = ((0, 1, 2), (1, 2)) if len({len(a) for a in aboves}) == 1 else ((1, 2),)
        above = [text for k in range(len(aboves[1])) if (text := self._one(aboves, k, tried)) is not None]
        note = self._one([[note] for _, _, note in parts], 0) or ""
        if " += " in line:
            return above, in_place_note(note, *line.split(" += ", 1))
        tree = ast.parse(line).body[0]
        chain, added, _ = note.partition(", added to ")
        if added and isinstance(tree, ast.Assign) and isinstance(tree.value, ast.BinOp):  # what the
            target, before = unparse(tree.targets[0]), unparse(ast.Expr(tree.value.left))  # body adds to
            note = f"{chain}, added to {target}" + (f" (so far {before})" if before != target else "")
        return above, note

    def _one(self, texts: Sequence[Sequence[str]], k: int, tried: Sequence[tuple[int, ...]] = ((0, 1, 2), (1, 2))
             ) -> str | None:
        """Comment `k` of each of the lines, as one for the body, from the first of the `tried`
        choices of the lines that gives one."""
        for chosen in tried:
            if any(k >= len(texts[c]) for c in chosen):
                continue
            picks = tuple(self.picks[c] for c in chosen)
            text = unified_comment([texts[c][k] for c in chosen], lambda names: self._name(names, picks),
                                   lambda numbers: self._number(numbers, picks))
            if text is not None:
                return text
        return None

    def _name(self, names: tuple[str, ...], picks: tuple[int, ...]) -> str | None:
        name_of = self.name_of
        if len(names) == 3:  # the line's own names, as the body's line writes them
            if list(names) == name_of.outs:
                return unparse(ast.Expr(name_of._local(name_of.position, ast.Load(), previous=False)))
            try:
                return unparse(ast.Expr(name_of(*(ast.Name(n, ast.Load()) for n in names))))
            except (ValueError, KeyError):
                pass
        owned = [dict(((n, p), t) for n, t, p in self.owners.get(name, ())) for name in names]
        for number, position in owned[0]:  # a loop's last value may be the next loop's start
            if all((number, position) in o for o in owned):
                text = self._made(number, position, [o[number, position] for o in owned], picks)
                if text is not None:
                    return text
        return None

    def _made(self, number: int, position: int, made: Sequence[int], picks: tuple[int, ...]) -> str | None:
        """The values loop `number` makes at `position` in iterations `made`, as read by this
        loop's iterations `picks`."""
        other = self.loops[number]
        if other is self.loop:  # this iteration's value or the last's
            offsets = {m - t for m, t in zip(made, picks)}
            if offsets not in ({0}, {-1}):
                return None
            return unparse(ast.Expr(self.name_of._local(position, ast.Load(), previous=offsets == {-1})))
        name = other.eqn(self.eqns, 0, position).out.name
        if position not in other.stored:  # named as that loop's body names it
            return name
        moves = _moves(made, picks)
        if moves is None:
            return None
        try:
            slot = _slot(name, other, self.loop, self.index, *moves, position in other.carried(), ast.Load())
        except ValueError:
            return None
        return unparse(ast.Expr(slot))

    def _number(self, numbers: tuple[int, ...], picks: tuple[int, ...]) -> str | None:
        if self.loop.width and len(picks) < 3:
            return None
        moving = _moving(self.loop, self.index, numbers, picks)
        return None if moving is None else unparse(ast.Expr(moving))

    @property
    def owners(self) -> dict[str, list[tuple[int, int, int]]]:
        """The loops' values by name: (loop, iteration, position) of each, a carried value's start
        its iteration -1's."""
        if self._owners is None:
            self._owners = {}
            for number, loop in enumerate(self.loops):
                for t in range(loop.count):
                    for position in range(loop.period):
                        name = loop.eqn(self.eqns, t, position).out.name
                        self._owners.setdefault(name, []).append((number, t, position))
                for position, init in sorted(loop.inits.items()):
                    if isinstance(init, Var):
                        self._owners.setdefault(init.name, []).append((number, -1, position))
        return self._owners


def _moves(values: Sequence[int], picks: Sequence[int]) -> tuple[int, int] | None:
    """(the value at iteration 0, its step per iteration) of values at iterations `picks`."""
    step, left = divmod(values[1] - values[0], picks[1] - picks[0])
    first = values[0] - step * picks[0]
    if left or any(v != first + step * t for v, t in zip(values, picks)):
        return None
    return first, step


def _in_place(tree: ast.stmt, index: Sequence[str]) -> str:
    """`g = g + scatter(shape, (i + 1,), v, dtype)` as `g[i + 1] += v`: one element a time, not
    a new array of the whole shape per iteration (the loop's own `g`: see `_body`). Only where
    the place is the loop index and numbers: no index array, whose places may repeat."""
    line = unparse(tree)
    if not (isinstance(tree, ast.Assign) and len(tree.targets) == 1 and isinstance(tree.targets[0], ast.Name)):
        return line
    value, target = tree.value, tree.targets[0].id
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add) and isinstance(value.left, ast.Name)
            and value.left.id == target and isinstance(value.right, ast.Call)):
        return line
    call = value.right
    if not (isinstance(call.func, ast.Name) and call.func.id == "scatter" and len(call.args) == 4):
        return line
    where = call.args[1]
    if not isinstance(where, ast.Tuple) or not all(_place(e, index) for e in where.elts):
        return line
    subscript = ast.Subscript(ast.Name(target, ast.Load()), in_brackets(where), ast.Store())
    return unparse(ast.AugAssign(subscript, ast.Add(), call.args[2]))


def _place(node: ast.expr, index: Sequence[str]) -> bool:
    """Whether an index element names places by numbers and the loop index only."""
    if isinstance(node, ast.Call):  # slice(1, 3)
        return isinstance(node.func, ast.Name) and node.func.id == "slice" and all(_place(a, index) for a in node.args)
    return all(
        isinstance(n, (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.expr_context))
        or isinstance(n, ast.Name) and n.id in index
        for n in ast.walk(node)
    )
