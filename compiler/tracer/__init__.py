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
from compiler.errors import SignatureError
from compiler.ir import Const, Eqn, Graph, Var
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
    "GATES", "ExampleSpec", "Made", "MaskedRead", "Traced", "baked_constants", "bind_arguments", "example_spec",
    "integer_examples_hint", "static_dtype", "static_values", "supported_operations", "trace", "trace_call",
]

def trace(fn: Callable, *args: Any, **kwargs: Any) -> Graph:
    """Run `fn` on stand-ins for the example arguments and return its forward graph.

    Only the examples' shapes and dtypes matter, not their values. The graph's inputs are the
    parameters in signature order, its one output the returned float scalar or array.
    """
    return trace_call(fn, args, kwargs)


def trace_call(fn: Callable, args: tuple, kwargs: dict, static: Sequence[str] = ()) -> Graph:
    """`trace(fn, *args, **kwargs)`, the parameters named in `static` taking their example
    values themselves (a count for `range(n)`, a flag): the code is specialised to them, and
    the graph lists them (`Graph.static`)."""
    arguments = bind_arguments(fn, args, kwargs)
    fixed = static_values(fn, arguments, static)
    specs = {
        name: ExampleSpec((), static_dtype(fixed[name])) if name in fixed else example_spec(name, value)
        for name, value in arguments.items()
    }
    recorder = _Recorder(stop_frame=sys._getframe(0))
    stand_ins = {name: recorder.new_value(spec.shape, spec.dtype) for name, spec in specs.items()}
    recorder.inputs = list(stand_ins)
    passed = {name: fixed.get(name, value) for name, value in stand_ins.items()}
    try:
        try:
            with _SUBSTITUTES.active():
                result = fn(**passed) if _all_keyword_safe(fn) else fn(*passed.values())
        finally:
            recorder.finish()
        result = _unmade(result)
        outputs = _check_outputs(fn, recorder, result, stand_ins, arguments)
        graph = _build_graph(recorder, list(stand_ins), outputs, baked_constants(fn))
        return dataclasses.replace(graph, static=tuple(fixed.items())) if fixed else graph
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


def _build_graph(
    recorder: _Recorder, params: list[str], outputs: list[int], constants: tuple[tuple[str, object], ...]
) -> Graph:
    n_inputs = len(params)
    types = recorder.types
    hints = recorder.hints
    produced = [eqn[2] for eqn in recorder.eqns]
    value_hints = [hints.get(i, (None,))[0] for i in produced]
    defaults = [
        (produced.index(output), naming.OUTPUT_NAME if types[output][0] == () else naming.ARRAY_OUTPUT_NAME)
        for output in outputs
    ]
    input_names, value_names = naming.forward_names(params, value_hints, defaults)
    variables: list[Var | None] = [None] * len(types)
    for index, name in [*zip(range(n_inputs), input_names), *zip(produced, value_names)]:
        shape, dtype = types[index]
        variables[index] = Var(name, shape, dtype)
    eqns = []
    for row, operands, out, loc, static in recorder.eqns:
        inputs = tuple([operand if type(operand) is Const else variables[operand] for operand in operands])
        eqns.append(Eqn(row.name, inputs, variables[out], None, None, loc, tuple(static.items()) if static else ()))
    return Graph(tuple(variables[:n_inputs]), tuple(eqns), tuple(variables[i] for i in outputs), constants=constants)
