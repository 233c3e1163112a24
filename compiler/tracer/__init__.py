"""The tracer: run the user's function on stand-in values and record a forward `Graph`.

`Traced` stands in for each input. Its operators, NumPy's `__array_ufunc__` and
`__array_function__` protocols, and the `compiler.<gate>` functions record one equation per
operation, found through the op table's `operators`/`ufuncs`/`functions`/`gate` fields. Each
equation keeps the user's file:line (frame inspection), and each value the name of the local
variable it was first bound to (see `naming`).

Anything that would need the number behind a traced value (a branch, `float()`, `math.exp`)
or that has no row in the table raises a `TracingError` naming the operation, the user's
file:line and what to write instead.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from typing import Any, Callable, Sequence

import numpy as np

from compiler import naming
from compiler.errors import SignatureError, TooManyPathsError
from compiler.files import display_path
from compiler.ir import Const, Decision, Eqn, Graph, Path, Var, dtype_name
from compiler.ops import OPS
from compiler.tracer.examples import (
    ExampleSpec,
    _function_label,
    baked_constants,
    bind_arguments,
    example_spec,
    integer_examples_hint,
    static_dtype,
    static_values,
)
from compiler.tracer.frames import supported_operations
from compiler.tracer.values import _SUBSTITUTES, GATES, Made, MaskedRead, Traced, _apply, _Recorder, _unmade

__all__ = [
    "GATES", "MAX_PATHS", "ExampleSpec", "Made", "MaskedRead", "Traced", "baked_constants", "bind_arguments",
    "example_spec", "integer_examples_hint", "static_dtype", "static_values", "supported_operations", "trace",
    "trace_paths",
]

def trace(fn: Callable, *args: Any, **kwargs: Any) -> Graph:
    """Run `fn` on stand-ins for the example arguments and return its forward graph.

    Only the examples' shapes and dtypes matter, not their values. The graph's inputs are the
    parameters in signature order, its one output the returned float scalar or array. Where
    `fn` branches on traced values, this is the path that takes each branch's True way;
    `trace_paths` gives every path.
    """
    return trace_paths(fn, args, kwargs)[0].graph


# A module holds at most this many paths through branches on traced values.
MAX_PATHS = 64
# What a value only branches read is called: no line binds it, the `if` line computes it.
DECIDING = "<condition>"


def trace_paths(fn: Callable, args: tuple, kwargs: dict, static: Sequence[str] = ()) -> tuple[Path, ...]:
    """Every path through `fn`'s branches on traced values, each traced as straight-line code;
    one path, with no decisions, where it has none. The parameters named in `static` take
    their example values themselves (a count for `range(n)`, a flag): the code is specialised to
    them, and each graph lists them (`Graph.static`).

    The trace has no numbers to decide a branch by, so it runs `fn` once per path: a run takes
    the ways it is told at its first branches and True at the rest, and each branch it meets
    past those is a new path to run, taking the other way there.
    """
    paths: list[Path] = []
    pending: list[tuple[bool, ...]] = [()]
    while pending:
        forced = pending.pop()
        path = _trace_path(fn, args, kwargs, static, forced)
        paths.append(path)
        taken = [d.taken for d in path.decisions]
        pending.extend(tuple(taken[:k]) + (not taken[k],) for k in range(len(taken) - 1, len(forced) - 1, -1))
        if len(paths) + len(pending) > MAX_PATHS:
            raise _too_many_paths(fn, paths)
    paths.sort(key=lambda path: [not d.taken for d in path.decisions])  # True before False, as `if` writes it
    return tuple(paths)


def _too_many_paths(fn: Callable, paths: list[Path]) -> TooManyPathsError:
    lines = dict.fromkeys(
        f"{display_path(d.loc.file)}:{d.loc.line}" for path in paths for d in path.decisions if d.loc is not None
    )
    shown = ", ".join(list(lines)[:4]) + (", ..." if len(lines) > 4 else "")
    return TooManyPathsError(
        f"{_function_label(fn)} has more than {MAX_PATHS} paths through its branches on traced values (at {shown}); "
        "an `if` inside an unrolled loop doubles them each iteration: choose with np.where (or np.maximum, "
        "np.minimum) there, which keeps one path"
    )


def _trace_path(fn: Callable, args: tuple, kwargs: dict, static: Sequence[str], forced: tuple[bool, ...]) -> Path:
    """One run of `fn` on stand-ins, taking the `forced` ways at its first branches."""
    arguments = bind_arguments(fn, args, kwargs)
    fixed = static_values(fn, arguments, static)
    specs = {
        name: ExampleSpec((), static_dtype(fixed[name])) if name in fixed else example_spec(name, value)
        for name, value in arguments.items()
    }
    recorder = _Recorder(stop_frame=sys._getframe(0))
    stand_ins = {name: recorder.new_value(spec.shape, spec.dtype) for name, spec in specs.items()}
    recorder.inputs = list(stand_ins)
    recorder.forced = forced
    passed = {name: fixed.get(name, value) for name, value in stand_ins.items()}
    try:
        try:
            with _SUBSTITUTES.active():
                result = fn(**passed) if _all_keyword_safe(fn) else fn(*passed.values())
        finally:
            recorder.finish()
        result = _unmade(result)
        outputs = _check_outputs(fn, recorder, result, stand_ins, arguments)
        graph, variables = _build_graph(recorder, list(stand_ins), outputs, baked_constants(fn))
        graph = dataclasses.replace(graph, static=tuple(fixed.items())) if fixed else graph
        return _with_decisions(graph, variables, recorder)
    finally:
        # The recorder holds this frame, which holds the recorder: let go, so that what it
        # recorded is freed now, not at the collector's next run (compiler.gradient pauses it).
        recorder.release()


def _all_keyword_safe(fn: Callable) -> bool:
    params = inspect.signature(fn).parameters.values()
    return not any(p.kind is p.POSITIONAL_ONLY for p in params)


def _check_outputs(
    fn: Callable, recorder: _Recorder, result: Any, inputs: dict[str, Traced], arguments: dict[str, Any]
) -> list[int]:
    """The returned values: one, or a tuple's (an integer or bool one is auxiliary, never
    differentiated; at least one is a float)."""
    label = _function_label(fn)
    if isinstance(result, dict):
        raise SignatureError(f"{label} returns a dict; return one value or a tuple of values")
    several = isinstance(result, (tuple, list))
    results = [_unmade(item) for item in result] if several else [result]
    if not results:
        raise SignatureError(f"{label} returns an empty {type(result).__name__}; there is no gradient to compute")
    indices: list[int] = []
    for position, item in enumerate(results):
        which = f" as its output {position}" if several else ""
        if isinstance(item, (tuple, list, dict)):
            raise SignatureError(
                f"{label} returns a {type(item).__name__}{which} (a cache?); return the outputs themselves: "
                "flatgrad's forward_with_cache keeps what the backward reads (layer=True names it as a course does)"
            )
        if recorder.decisions and _is_constant(item):  # this path's value is a constant (`return 0.0`)
            item = _constant_output(recorder, np.asarray(_unmade(item)))
        if not isinstance(item, Traced) or item._recorder is not recorder:
            raise SignatureError(
                f"{label} returns {item!r}{which}, which does not depend on its inputs; "
                + ("return only values computed from them" if several else "there is no gradient to compute")
            )
        if item._index < len(inputs) or item._index in indices:  # an input, or returned twice: copy it into a gate
            item = _apply(OPS["pos"], (item,))
        indices.append(item._index)
    dtypes = [recorder.types[i][1] for i in indices]
    if not any(np.dtype(dtype).kind == "f" for dtype in dtypes):
        returned = f"values of dtype {', '.join(dtypes)}" if several else f"a value of dtype {dtypes[0]}"
        what = "a float scalar or array" + (" among its outputs" if several else "")
        raise SignatureError(f"{label} returns {returned}; it must return {what}{integer_examples_hint(arguments)}")
    return indices


def _with_decisions(graph: Graph, variables: list[Var | None], recorder: _Recorder) -> Path:
    """The path a run took: its graph, without the equations that only decide branches (the
    module's `if` lines compute those), and its decisions."""
    if not recorder.decisions:
        return Path((), graph)
    made_decisions = []
    for index, taken, loc, source in recorder.decisions:
        value = variables[index]
        assert value is not None
        needed = {id(variables[i]) for i in recorder.ancestors([index])}
        condition = tuple(eqn for eqn in graph.eqns if id(eqn.out) in needed)
        made_decisions.append(Decision(value, taken, condition, loc, source))
    # the comparisons the branches ask for are the `if` lines' (see _deciding_only; the
    # numbers they compare are the user's, and stay where the path computes them)
    eqns = tuple(eqn for eqn in graph.eqns if eqn.out.name != DECIDING)
    return Path(tuple(made_decisions), dataclasses.replace(graph, eqns=eqns))


def _is_constant(value: Any) -> bool:
    value = _unmade(value)
    return not isinstance(value, Traced) and np.asarray(value).dtype.kind in "biuf"


def _constant_output(recorder: _Recorder, value: np.ndarray) -> Traced:
    """A value a path returns that is a constant, as a gate of its own (`L = 0.0`): a path
    through branches may return a number where others return what they computed. An integer
    (`return 0`) stands for the float the other paths return."""
    if value.dtype.kind != "f":
        value = value.astype(np.float64)
    out = recorder.new_value(value.shape, dtype_name(value.dtype))
    operand = Const(value.item() if value.shape == () else value)
    recorder.eqns.append((OPS["pos"], (operand,), out._index, None, {}))
    return out


def _deciding_only(recorder: _Recorder, outputs: list[int]) -> set[int]:
    """The values only branches read: what they asked for True or False, and the bools that is
    computed from (`x > 0` in `np.all(x > 0)`), where no output is computed from them."""
    if not recorder.decisions:
        return set()
    made = {eqn[2] for eqn in recorder.eqns}
    needed = recorder.ancestors(outputs)
    asked = {index for index, *_ in recorder.decisions}

    def only_deciding(value: int) -> bool:
        return value in made and value not in needed and (value in asked or recorder.types[value][1] == "bool")

    return recorder.ancestors(asked, only_deciding)


def _build_graph(
    recorder: _Recorder, params: list[str], outputs: list[int], constants: tuple[tuple[str, object], ...]
) -> tuple[Graph, list[Var | None]]:
    n_inputs = len(params)
    types = recorder.types
    hints = recorder.hints
    deciding = _deciding_only(recorder, outputs)
    produced = [eqn[2] for eqn in recorder.eqns if eqn[2] not in deciding]
    value_hints = [hints.get(i, (None,))[0] for i in produced]
    if recorder.decisions:  # every path names its outputs alike (`L`), as the module's functions do
        for output in outputs:
            value_hints[produced.index(output)] = None
    defaults = [
        (produced.index(output), naming.OUTPUT_NAME if types[output][0] == () else naming.ARRAY_OUTPUT_NAME)
        for output in outputs
    ]
    input_names, value_names = naming.forward_names(params, value_hints, defaults)
    variables: list[Var | None] = [None] * len(types)
    # a comparison only a branch asks for is written into the `if` line: it takes no name of its own
    named = [*zip(range(n_inputs), input_names), *zip(produced, value_names), *((i, DECIDING) for i in deciding)]
    for index, name in named:
        shape, dtype = types[index]
        variables[index] = Var(name, shape, dtype)
    eqns = []
    for row, operands, out, loc, static in recorder.eqns:
        inputs = tuple([operand if type(operand) is Const else variables[operand] for operand in operands])
        eqns.append(Eqn(row.name, inputs, variables[out], None, None, loc, tuple(static.items()) if static else ()))
    graph = Graph(tuple(variables[:n_inputs]), tuple(eqns), tuple(variables[i] for i in outputs), constants=constants)
    return graph, variables
