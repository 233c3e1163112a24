"""How values are named in the emitted code. Every name flatgrad prints is decided here.

The rules, in the order they are applied:

1. Inputs keep their parameter names.
2. A value bound to a local variable in the user's function keeps that variable's name
   (`h = np.maximum(0, X @ W1)` gives `h`). A name bound to several values in turn (a loop,
   `h = h * w`) names them `h`, `h_1`, `h_2`, ... in forward order.
3. The returned value keeps its source name if it has one, else it is `L` (the lecture's loss).
4. Every other intermediate is `s0, s1, ...`, numbered in forward order.
5. The gradient of `v` is `grad_v`. Accumulating into a gradient rebinds the same name.
   A term to be summed or cast before it adds onto an earlier `grad_v` is `grad_v_term` till then.
6. A name never shadows what the emitted module uses: Python keywords, the builtins its lines
   call (those in the op table's expressions, and `slice`), `np`, `numba`, the helpers, the
   module's own functions and `cache`, and the part functions a long body is
   split into under numba (`_value_and_grad_part0`, ...: `part_name`). A name that is taken or
   reserved gets the first free suffix `_1`, `_2`, ... Counters decide names, never object
   identities, so the same function always gives the same names. Other builtins are free:
   a parameter named `input` stays `input`.

Codegen renders a kind of line once with placeholders (`__flatgrad_0__`, ...: `placeholder`)
in the places of its names; they never reach a module.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re
from typing import Iterable, Sequence

from compiler.helpers import HELPERS
from compiler.ops import OPS

# Names the emitted module defines or imports itself.
MODULE_NAMES = (
    "np",
    "numba",
    "forward",
    "forward_with_cache",
    "backward",
    "value_and_grad",
    "grad",
    "cache",
    "path",  # with branches on values, the path forward_with_cache took (the cache's first item)
)



def _builtins_called() -> frozenset[str]:
    """The builtins emitted lines may call: those the op table's expressions name, and `slice`
    (codegen writes a slice object in a static index as `slice(a, b)`)."""
    texts = [text for row in OPS.values() for text in (row.forward, row.scalar_forward, row.numba_forward) if text]
    texts += [text for row in OPS.values() for rules in (row.grads, row.numba_grads) for text in rules.values()]
    names = {node.id for text in texts for node in ast.walk(ast.parse(text, mode="eval")) if isinstance(node, ast.Name)}
    return frozenset(names & set(dir(builtins))) | {"slice"}


RESERVED = (
    frozenset(HELPERS)
    | frozenset(keyword.kwlist)
    | frozenset(keyword.softkwlist)
    | _builtins_called()
    | frozenset(MODULE_NAMES)
)

# The part functions of a long body under numba: `_<function>_part<k>`, with several paths
# `_<function>_path<j>_part<k>`.
_PART_NAME = re.compile(r"_(?:{})(?:_path\d+)?_part\d+".format("|".join(MODULE_NAMES)))


def part_name(function: str, index: int) -> str:
    """The name of the index-th part function of `function` (rule 6)."""
    return f"_{function}_part{index}"


def is_reserved(name: str) -> bool:
    """Whether `name` may not name a value (rule 6)."""
    return name in RESERVED or (name.startswith("_") and _PART_NAME.fullmatch(name) is not None)


# Codegen's stand-ins for names while it renders a kind of line once.
_PLACEHOLDER = "__flatgrad_{}__"
PLACEHOLDERS = re.compile(r"__flatgrad_(\d+)__")


def placeholder(index: int) -> str:
    """The stand-in for the index-th name of a line."""
    return _PLACEHOLDER.format(index)


OUTPUT_NAME = "L"  # a returned number, the loss
ARRAY_OUTPUT_NAME = "out"  # a returned array, a layer's output
TEMPORARY_PREFIX = "s"
GRAD_PREFIX = "grad_"
COURSE_GRAD_PREFIX = "d"  # a layer module's, as course code writes them: dout, dx, dw


class Namer:
    """Hands out distinct names in one module's namespace."""

    def __init__(self, taken: Iterable[str] = (), grad_prefix: str = GRAD_PREFIX) -> None:
        self._taken: set[str] = set(taken)
        self._grad_prefix = grad_prefix
        self._suffix: dict[str, int] = {}  # the next suffix to try per wanted name: claims stay O(1)

    def claim(self, wanted: str) -> str:
        """`wanted` if it is free, else `wanted_1`, `wanted_2`, ..."""
        taken = self._taken
        suffix = self._suffix.get(wanted)
        if suffix is None:
            if wanted not in taken and not is_reserved(wanted) and wanted.isidentifier():
                taken.add(wanted)
                return wanted
            suffix = 1
        name = f"{wanted}_{suffix}"
        while name in taken or is_reserved(name) or not name.isidentifier():
            suffix += 1
            name = f"{wanted}_{suffix}"
        self._suffix[wanted] = suffix + 1  # the suffixes up to this one are all taken now
        taken.add(name)
        return name

    def temporaries(self) -> Iterable[str]:
        """`s0, s1, ...`, skipping names already taken."""
        index = 0
        while True:
            name = f"{TEMPORARY_PREFIX}{index}"
            index += 1
            if name not in self._taken and not is_reserved(name):
                self._taken.add(name)
                yield name

    def grad_name(self, forward_name: str) -> str:
        return self.claim(self._grad_prefix + forward_name)


def forward_names(
    params: Sequence[str], hints: Sequence[str | None], outputs: Sequence[tuple[int, str]] = ()
) -> tuple[list[str], list[str]]:
    """Names for the inputs and for each traced value (rules 1-4).

    `hints[i]` is the source name of value i (None if it was never bound to a local), and
    `outputs` the positions of the returned values among them, each with the name it takes when
    the source does not name it (`L`, `out`). Returns the input names and the value names.
    """
    namer = Namer()
    input_names = [namer.claim(p) for p in params]
    names: list[str | None] = [None] * len(hints)
    for i, hint in enumerate(hints):
        if hint is not None:
            names[i] = namer.claim(hint)
    for index, default in outputs:
        if names[index] is None:
            names[index] = namer.claim(default)
    fresh = namer.temporaries()
    return input_names, [name if name is not None else next(fresh) for name in names]


def term_name(grad_name: str) -> str:
    """The name wanted for a term to be summed or cast before it adds onto `grad_name` (rule 5)."""
    return f"{grad_name}_term"


_TEMPORARY = re.compile(
    rf"(?:(?:{GRAD_PREFIX}|{COURSE_GRAD_PREFIX}){TEMPORARY_PREFIX}\d+(?:_\d+)?|{TEMPORARY_PREFIX}\d+)(?:_term(?:_\d+)?)?"
    rf"|(?:{GRAD_PREFIX}|{COURSE_GRAD_PREFIX})\w+_term(?:_\d+)?"
)


def is_temporary(name: str) -> bool:
    """Whether `name` is one rule 4 or 5 made up (`s3`, `grad_s3`, `ds3`, `grad_W_term`), not one
    the user's source gave (`h`, `grad_h`)."""
    return _TEMPORARY.fullmatch(name) is not None
