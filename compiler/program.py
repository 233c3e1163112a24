"""The public API: trace, differentiate and emit a function, then load and run the module.

`gradient` runs the whole pipeline (tracer -> autodiff -> codegen) and returns a
`GradientProgram`, which imports the emitted module from a real file in a cache folder keyed
by a hash of its source. A real file gives tracebacks and `inspect` the generated lines, and
lets numba cache its compiled code (`numba.njit(cache=True)` needs a file to cache against).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import importlib.util
import inspect
import os
import shlex
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from compiler import display, passes, visualize
from compiler.autodiff import differentiate
from compiler.codegen import JIT_BACKENDS, VECTORIZE_TARGETS, LayerNames, Provenance, emit_module
from compiler.codegen.guards import CHECK
from compiler.errors import FlatgradError, SignatureError, SizeDependenceError
from compiler.files import display_path, write_atomically, write_output
from compiler.helpers import HELPERS
from compiler.ir import Backprop, Branch, Graph, Var
from compiler.naming import COURSE_GRAD_PREFIX, GRAD_PREFIX
from compiler.sizes import NO_SIZES, Sizes, probe_factors, sizes_for, symbolic_source
from compiler.tracer import ExampleSpec, bind_arguments, example_spec, integer_examples_hint, trace_paths


def spec_text(spec: ExampleSpec | Var, axes: Sequence[str | int] | None = None) -> str:
    """The command line's spelling of a shape and dtype: `f64`, `f32[4,3]`, `i64[8]`, or with
    named sizes (`axes`) `f64[N,4]`."""
    dtype = np.dtype(spec.dtype)
    short = f"{dtype.kind}{dtype.itemsize * 8}"
    shape = spec.shape if axes is None else axes
    return short + (f"[{','.join(map(str, shape))}]" if shape else "")


def cache_dir() -> Path:
    """Where emitted modules are written to be imported: $FLATGRAD_CACHE_DIR, else the user cache."""
    configured = os.environ.get("FLATGRAD_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flatgrad"


_LOADED: dict[str, types.ModuleType] = {}


def load_module(source: str) -> types.ModuleType:
    """Import emitted source from a file named by its hash (written once, reused after)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    if digest in _LOADED:
        return _LOADED[digest]
    name = f"flatgrad_{digest}"
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / "flatgrad"):
        path = folder / f"{name}.py"
        try:
            if not path.is_file() or path.read_text(encoding="utf-8") != source:
                write_atomically(path, source)
            break
        except OSError:
            continue
    else:
        raise FlatgradError(f"cannot write the emitted module into {cache_dir()} or the temp folder")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's on-disk cache finds a function's globals by module name
    spec.loader.exec_module(module)
    _LOADED[digest] = module
    return module


def _emitted(name: str, doc: str) -> functools.cached_property:
    """A `GradientProgram` attribute that is the emitted module's function `name`."""

    def function(self: GradientProgram) -> Callable[..., Any]:
        layer = self.layer
        emitted = {"forward_with_cache": layer.forward, "backward": layer.backward}.get(name, name) if layer else name
        if self.vectorized and name in ("value_and_grad", "grad"):
            emitted = f"{name}_many"
        found = getattr(self.module, emitted, None)
        if found is None and name == "forward" and layer:  # a layer module's forward keeps its cache
            with_cache = getattr(self.module, layer.forward)
            return lambda *args, **kwargs: with_cache(*args, **kwargs)[0]
        return found if found is not None else self._no_gradient(name)

    function.__doc__ = doc
    return functools.cached_property(function)


class GradientProgram:
    """A traced, differentiated and emitted function, ready to run.

    `source` is the module's text and `graph` its IR; `forward`, `value_and_grad` and `grad`
    run the emitted functions (compiled by numba when `jit="numba"`); `wrt` names the inputs
    the gradients are taken with respect to, in the order `grad` returns them.
    """

    def __init__(
        self,
        graph: Backprop,
        source: str,
        wrt: tuple[str, ...],
        jit: str | None,
        optimize: bool = False,
        source_file: str | None = None,
        sizes: Sizes = NO_SIZES,
        layer: LayerNames | None = None,
    ) -> None:
        self.graph = graph
        self.source = source
        self.wrt = wrt
        self.jit = jit
        self.optimize = optimize
        self.source_file = source_file  # the traced function's file, which `save` never writes over
        self._module: types.ModuleType | None = None
        self._dtypes = {v.name: np.dtype(v.dtype) for v in graph.inputs}
        self.sizes = sizes  # the sizes named in the module, and those fixed (compiler.sizes)
        self.layer = layer  # a layer module's function names
        # with branches on values, every path's differentiated code; `graph` is the first's
        self.branches: tuple[Branch, ...] = ()
        self.vectorized = False  # value_and_grad and grad take arrays of points (`vectorize`)
        self.unroll: bool | None = True  # where the module writes loops (`Options.unroll`); flat: True

    @property
    def module(self) -> types.ModuleType:
        """The emitted module, imported on first use."""
        if self._module is None:
            self._module = load_module(self.source)
        return self._module

    def _arguments(self, args: tuple, kwargs: dict) -> tuple:
        names = [v.name for v in self.graph.inputs]
        if kwargs:
            unknown = sorted(set(kwargs) - set(names))
            if unknown:
                raise SignatureError(f"unknown arguments {unknown}; the inputs are {names}")
            args = args + tuple(kwargs[name] for name in names[len(args) :] if name in kwargs)
        if len(args) != len(names):
            raise SignatureError(f"the program takes {len(names)} arguments ({', '.join(names)}), got {len(args)}")
        for var, value in zip(self.graph.inputs, args):
            shape = () if type(value) in (float, int) else np.shape(value)  # np.shape(float) is slow
            if shape != var.shape:
                raise SignatureError(
                    f"argument {var.name!r} has shape {shape}, but the program was traced "
                    f"for shape {var.shape}; trace again with such an example"
                )
            dtype = getattr(value, "dtype", None)
            if dtype is not None and dtype != self._dtypes[var.name]:  # dtype.name is slow
                raise SignatureError(
                    f"argument {var.name!r} has dtype {dtype.name}, but the program was traced "
                    f"for {var.dtype}; pass {var.dtype} or trace again with such an example"
                )
        return args

    # The module's own functions, looked up once and then found in the instance's dict: a call
    # of `prog.grad` costs no more than one of the module's `grad`, which checks its arguments.
    forward = _emitted("forward", "The function's value, computed by the emitted `forward`.")
    value_and_grad = _emitted("value_and_grad", "`(value, grads)`, with `grads` aligned with `wrt`.")
    grad = _emitted("grad", "The gradients alone, aligned with `wrt`.")
    forward_with_cache = _emitted("forward_with_cache", "`(value, cache)`, the cache being what `backward` reads.")
    backward = _emitted("backward", "The gradients from an upstream gradient and `forward_with_cache`'s cache.")

    def _no_gradient(self, name: str) -> Callable[..., Any]:
        """What stands for `value_and_grad` and `grad` when the output is an array."""
        output = self.graph.forward.outputs[0]

        if self.layer:
            why = f"a layer module has only {self.layer.forward} and {self.layer.backward}"
        else:
            why = f"the function returns an array ({output.name}, shape {output.shape}), with no gradient of its own"

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise SignatureError(
                f"prog.{name}: {why}; run `{output.name}, cache = prog.forward_with_cache(...)` and then "
                f"`prog.backward({self.graph.upstream[0].name}, cache)` with an upstream gradient of "
                f"{output.name}'s shape"
            )

        return refuse

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the module to `path` (atomically) and return the path.

        An existing file is replaced only if flatgrad wrote it, or with `overwrite=True`; the
        traced function's own source file never is (see `compiler.files`).
        """
        protect = (self.source_file,) if self.source_file else ()
        return write_output(path, self.source, overwrite=overwrite, protect=protect)

    def dot(self, *args: Any, **kwargs: Any) -> str:
        """Graphviz DOT of the graph at `args`: each gate a node, each value an edge carrying its
        forward value (green) and its gradient (red), as in the lecture's figures. Where the
        function branches on its values, the graph is of the path `args` take. A loop the
        module's `forward` writes as a `for` loop is drawn once, in a box (see
        `visualize.dot_source`)."""
        arguments = self._arguments(args, kwargs)
        return visualize.dot_source(self.path_at(*arguments).pair, arguments, jit=self.jit, unroll=self.unroll)

    def path_at(self, *args: Any, **kwargs: Any) -> Branch:
        """The path through the function's branches on values that these arguments take (the
        only one where it has none): its decisions and its differentiated code."""
        if len(self.branches) <= 1:
            return self.branches[0] if self.branches else Branch((), self.graph)
        _, cache = self.forward_with_cache(*args, **kwargs)
        return self.branches[cache[0]]

    def _repr_html_(self) -> str:
        """Jupyter shows a program as its highlighted source."""
        return display.as_html(self.source, repr(self))

    def __repr__(self) -> str:
        inputs = ", ".join(v.name for v in self.graph.inputs)
        return f"<GradientProgram ({inputs}) -> {self.graph.outputs[0].name}, wrt={self.wrt}, jit={self.jit}>"


def _default_wrt(graph: Graph) -> tuple[str, ...]:
    static = dict(graph.static)
    return tuple(v.name for v in graph.inputs if np.dtype(v.dtype).kind == "f" and v.name not in static)


def _resolve_wrt(graph: Graph, wrt: str | Sequence[str] | None, label: str, hint: str = "") -> tuple[str, ...]:
    if wrt is None:
        names = _default_wrt(graph)
        if not names:
            raise SignatureError(f"{label} has no float input to differentiate with respect to{hint}")
        return names
    names = (wrt,) if isinstance(wrt, str) else tuple(dict.fromkeys(wrt))
    inputs = {v.name: v for v in graph.inputs}
    for name in names:
        if name not in inputs:
            raise SignatureError(f"wrt names {name!r}, which is not a parameter of {label}: {list(inputs)}")
        if name in dict(graph.static):
            raise SignatureError(f"wrt names {name!r}, which is static: a static value is baked in, without a gradient")
        if np.dtype(inputs[name].dtype).kind != "f":
            raise SignatureError(
                f"wrt names {name!r}, an {inputs[name].dtype} input; only float inputs have gradients"
            )
    if not names:
        raise SignatureError("wrt is empty: name at least one input")
    return names


def source_file(f: Callable) -> str | None:
    """The file `f` was defined in, if it has one."""
    try:
        return inspect.getsourcefile(f)
    except TypeError:
        return None


@dataclass(frozen=True)
class Options:
    """How to build a program from a function: what to differentiate, for which backend, in
    which style, and how the module's header names where it came from."""

    wrt: str | Sequence[str] | None = None  # a parameter name or names; None: every float one
    jit: str | None = None  # None (NumPy) or one of codegen.JIT_BACKENDS
    optimize: bool = False  # the leanest code instead of one gate per line
    explain: bool = False  # comment each backward line with its gate and chain rule
    source: str | None = None  # the header's `FILE.py:FUNC` (default: the function's file and name)
    output: str | None = None  # the file the header's command writes (the CLI's -o)
    dims: Mapping[str, Any] | None = None  # named sizes by parameter: {"X": "N,4"} (see compiler.sizes)
    layer: bool = False  # a layer module: `affine_forward` and `affine_backward(dout, cache)`, nothing else
    has_aux: bool = False  # differentiate the first output only; the others are returned beside it
    static: Sequence[str] = ()  # parameters whose example values are baked in (a count, a flag)
    vectorize: bool | str = False  # numba: value_and_grad at every point of arrays (True or "parallel")
    unroll: bool | None = None  # True: loops stay flat; False: re-rolled where found; None: when long or jitted

    def check(self) -> Options:
        """These options, after checking what can be checked before tracing."""
        if self.jit not in (None, *JIT_BACKENDS):
            raise FlatgradError(f"jit={self.jit!r} is not a backend; use None (NumPy) or 'numba'")
        if self.jit == "numba" and importlib.util.find_spec("numba") is None:
            raise FlatgradError("jit='numba' needs numba: pip install numba scipy")
        if isinstance(self.static, str):
            names = tuple(n.strip() for n in self.static.split(",") if n.strip())
            return dataclasses.replace(self, static=names).check()
        if self.vectorize not in (False, None, True, *VECTORIZE_TARGETS):
            raise FlatgradError(f"vectorize={self.vectorize!r}: write True (one thread) or 'parallel' (every core)")
        if self.unroll not in (None, True, False):
            raise FlatgradError(f"unroll={self.unroll!r}: write True (flat), False (loops) or None (the default)")
        if self.vectorize and self.jit != "numba":
            raise FlatgradError("vectorize needs jit='numba': the points are looped over in compiled code")
        if isinstance(self.wrt, str) and "," in self.wrt:
            names = tuple(n.strip() for n in self.wrt.split(","))
            raise SignatureError(f"wrt={self.wrt!r} names one parameter; for several write wrt={names!r}")
        return self


def provenance(
    f: Callable, graph: Graph | Backprop, wrt: tuple[str, ...], options: Options, sizes: Sizes = NO_SIZES
) -> Provenance:
    """Where a module comes from (`options.source`, default: `f`'s file and name) and the
    `flatgrad emit` command that regenerates it (writing to `options.output`, when given)."""
    source = options.source
    if source is None:
        file = display_path(source_file(f) or "<unknown>")
        source = f"{file}:{getattr(f, '__qualname__', getattr(f, '__name__', 'f'))}"
    command = ["flatgrad", "emit", source]
    static = dict(graph.static)
    for v in graph.inputs:
        if v.name in static:
            command += ["--arg", f"{v.name}={static[v.name]!r}"]
        elif spec_text(v) != "f64":
            command += ["--arg", f"{v.name}={spec_text(v, sizes.of(v.name))}"]
    if static:
        command += ["--static", ",".join(static)]
    if wrt != _default_wrt(graph):
        command += ["--wrt", ",".join(wrt)]
    if options.jit:
        command += ["--jit", options.jit]
    if options.optimize:
        command.append("--optimize")
    if options.explain:
        command.append("--explain")
    if options.layer:
        command.append("--layer")
    if options.has_aux:
        command.append("--has-aux")
    if options.vectorize:
        command += ["--vectorize"] + (["parallel"] if options.vectorize == "parallel" else [])
    if options.unroll is not None:
        command.append("--unroll" if options.unroll else "--no-unroll")
    if options.output:
        command += ["-o", options.output]
    # Quoted for POSIX shells: zsh expands an unquoted `X=f64[8,4]` as a glob.
    return Provenance(getattr(f, "__name__", "f"), source, shlex.join(command))


def build(f: Callable, args: tuple, kwargs: dict, options: Options = Options()) -> GradientProgram:
    """The pipeline: trace `f` on the examples, differentiate, optimize, emit.

    With named sizes (`options.dims`) the pipeline runs at the examples and at probes that
    scale every named size, and `sizes.symbolic_source` writes the sizes the modules differ in
    as expressions of the names. A size whose value the code depends on (a loop over the rows,
    a branch on it) is fixed at the example's instead, which the module's header says and its
    argument checks hold it to."""
    options = options.check()
    arguments = bind_arguments(f, args, kwargs)
    shapes = {
        name: () if name in options.static else example_spec(name, value).shape for name, value in arguments.items()
    }
    requested = sizes_for(options.dims, shapes)
    examples = _Examples(f, args, kwargs, arguments, shapes)
    try:
        return _with_sizes(examples, options, requested, requested)
    except SizeDependenceError as error:
        dependence = error
    # Specialise: fix one named size at the example's value (the checks then hold the module to
    # it), the first that makes the rest symbolic; failing that, every one of them.
    values = requested.values(shapes)
    for symbol in requested.symbols:
        try:
            return _with_sizes(examples, options, requested.fixing(symbol, values[symbol], dependence.line), requested)
        except SizeDependenceError:
            continue
    sizes = requested
    for symbol in requested.symbols:
        sizes = sizes.fixing(symbol, values[symbol], dependence.line)
    return _with_sizes(examples, options, sizes, requested)


@dataclass(frozen=True)
class _Examples:
    """A function and its example arguments, as given and bound by parameter name, with shapes."""

    f: Callable
    args: tuple
    kwargs: dict
    arguments: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]


def _with_sizes(examples: _Examples, options: Options, sizes: Sizes, requested: Sizes) -> GradientProgram:
    """The program with `sizes` named (`requested` is what the header's command asks for); a
    SizeDependenceError when the code depends on one's value."""
    f, args, kwargs, arguments, shapes = examples.f, examples.args, examples.kwargs, examples.arguments, examples.shapes
    program = _build_at(f, args, kwargs, options, sizes, requested)
    if not sizes.symbols:
        return program
    _check_size_names(sizes, program)
    points, sources = [sizes.values(shapes)], [program.source]
    positional = list(arguments)[: len(args)]
    for factors in probe_factors(sizes.symbols):
        probe_shapes = sizes.probe(shapes, factors)
        probed = {name: np.resize(arguments[name], shape) for name, shape in probe_shapes.items()}
        probe_args = tuple(probed.get(name, arguments[name]) for name in positional)
        probe_kwargs = {name: probed.get(name, value) for name, value in kwargs.items()}
        points.append(sizes.values({**shapes, **probe_shapes}))
        sources.append(_build_at(f, probe_args, probe_kwargs, options, sizes, requested).source)
    program.source = symbolic_source(sources, points, getattr(f, "__name__", "f"))
    return program


# Names the emitted module binds besides the program's values, which a named size cannot take
_MODULE_NAMES = frozenset(("np", "numba", "cache", CHECK, *HELPERS))


def _check_size_names(sizes: Sizes, program: GradientProgram) -> None:
    graph = program.graph
    taken = _MODULE_NAMES.union(v.name for v in graph.inputs + graph.outputs).union(e.out.name for e in graph.eqns)
    for symbol in sizes.symbols:
        if symbol in taken:
            raise SignatureError(
                f"the named size {symbol} is also a name in the emitted code; name the size otherwise"
            )


def _build_at(
    f: Callable, args: tuple, kwargs: dict, options: Options, sizes: Sizes, requested: Sizes
) -> GradientProgram:
    with _collector_paused():
        paths = trace_paths(f, args, kwargs, options.static)
        first = paths[0].graph
        if options.jit == "numba":
            _check_numba_static(first)
        hint = integer_examples_hint(bind_arguments(f, args, kwargs))
        names = _resolve_wrt(first, options.wrt, f"{getattr(f, '__qualname__', f)}()", hint)
        branches = tuple(Branch(path.decisions, *_differentiated(f, path.graph, names, options)) for path in paths)
        graph = branches[0].pair
        origin = provenance(f, graph, names, options, requested)
        layer = LayerNames.of(origin.function) if options.layer else None
        vectorize = _vectorize_target(f, graph, options)
        source_code = emit_module(
            graph, origin, options.jit, options.explain, branches[0].folded, sizes, layer,
            branches if len(branches) > 1 else (), vectorize, options.unroll,
        )
    program = GradientProgram(graph, source_code, names, options.jit, options.optimize, source_file(f), sizes, layer)
    program.branches = branches
    program.vectorized = vectorize is not None
    program.unroll = options.unroll if len(branches) == 1 else True  # a module that branches stays flat
    return program


def _differentiated(
    f: Callable, forward: Graph, names: tuple[str, ...], options: Options
) -> tuple[Backprop, Backprop | None]:
    """The forward graph differentiated with respect to `names`, and optimized as `options` say:
    the pair, and the one `value_and_grad` runs where its seed is folded in (else None)."""
    forward = passes.optimize_forward(forward) if options.optimize else passes.fuse_for_stability(forward)
    if options.has_aux:
        _check_aux(f, forward)
    graph = differentiate(forward, names, COURSE_GRAD_PREFIX if options.layer else GRAD_PREFIX, options.has_aux)
    if not options.optimize:
        return passes.drop_unread_zeroing_of(graph), None
    graph = passes.optimize(graph)
    return graph, passes.fold_seed(graph)


def _vectorize_target(f: Callable, pair: Backprop, options: Options) -> str | None:
    """The target of the vectorized functions (None: none), checked: a scalar function of
    scalar arguments, differentiated from one number."""
    if not options.vectorize:
        return None
    static = dict(pair.static)
    label = f"{getattr(f, '__qualname__', f)}()"
    arrays = [v.name for v in pair.forward.inputs if v.shape and v.name not in static]
    if arrays or pair.seed is None or options.layer:
        why = f"takes the arrays {', '.join(arrays)}" if arrays else "has no scalar value to differentiate"
        raise SignatureError(
            f"vectorize runs a scalar function at every point of arrays, and {label} {why}; "
            "trace it on numbers (the arrays go to value_and_grad_many), or emit it without vectorize"
        )
    return "parallel" if options.vectorize == "parallel" else "cpu"


def _check_numba_static(forward: Graph) -> None:
    """numba takes numbers, strings, None and tuples of numbers as arguments, not a dict."""
    for name, value in forward.static:
        items = value if isinstance(value, tuple) else (value,)
        if isinstance(value, dict) or any(isinstance(item, (tuple, dict)) for item in items):
            raise SignatureError(
                f"static parameter {name!r} is a {type(value).__name__} of {value!r}, which a numba function "
                "cannot take as an argument; give each setting its own static parameter, or emit without jit"
            )


def _check_aux(f: Callable, forward: Graph) -> None:
    """has_aux differentiates the first of several outputs: a number."""
    label = f"{getattr(f, '__qualname__', f)}()"
    first = forward.outputs[0]
    if len(forward.outputs) < 2:
        raise SignatureError(f"has_aux=True, but {label} returns one value; return (loss, aux)")
    if first.shape != () or np.dtype(first.dtype).kind != "f":
        raise SignatureError(
            f"has_aux=True differentiates {label}'s first output, which is {first.dtype}{list(first.shape)}, "
            "not a float number; return the loss first"
        )


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector: tracing makes many small objects and no garbage cycles,
    and collections that walk every live object would make large programs quadratic."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def gradient(
    f: Callable,
    *example_args: Any,
    wrt: str | Sequence[str] | None = None,
    jit: str | None = None,
    optimize: bool = False,
    explain: bool = False,
    dims: Mapping[str, Any] | None = None,
    layer: bool = False,
    has_aux: bool = False,
    static: Sequence[str] = (),
    vectorize: bool | str = False,
    unroll: bool | None = None,
    **example_kwargs: Any,
) -> GradientProgram:
    """Trace `f` on example arguments, differentiate it and emit flat forward/backward code.

    Only the examples' shapes and dtypes matter. `wrt` is a parameter name or names (default:
    every float parameter); `jit="numba"` runs the emitted functions under
    `numba.njit(cache=True)`; `optimize=True` emits the leanest code instead of the lecture's
    one gate per line (see `compiler.passes`); `explain=True` comments each backward line with
    its gate, the gate's pattern and the chain rule it applies.

    `dims` names sizes the module reads from its arguments instead of baking in, one entry per
    axis of a parameter, a name or a number: `dims={"X": "N,4", "y": "N"}` gives one module for
    every batch size N (`compiler.sizes`).

    `layer=True` emits a layer module, as a course writes one: the forward named after `f`
    (`affine_forward(x, w, b) -> (out, cache)`) and its backward (`affine_backward(dout, cache)
    -> (dx, dw, db)`), gradients named `dx`; `prog.forward_with_cache` and `prog.backward` run them.

    A function may return several values (a tuple): `backward` then takes one upstream gradient
    per float output (None for zeros). With `has_aux=True` only the first, a number, is
    differentiated, and `value_and_grad` returns `((loss, aux), grads)`, as JAX's does.

    `static` names parameters whose example values are baked in, as JAX's `static_argnames`:
    a count (`for i in range(n)`), a flag, a dict of layer settings. The code is written for
    those values, and every emitted function checks them (`if n != 3: raise ValueError`).

    `vectorize=True` (with `jit="numba"`; `"parallel"` for every core) makes a scalar
    function's `prog.value_and_grad` and `prog.grad` take arrays of any broadcastable shapes and
    return arrays of values and gradients, computed in one compiled loop over the points.

    A Python loop traces into its iterations. Where they repeat one structure (`total = total +
    ...` over `x[i]`, an RNN's steps), `forward`, `value_and_grad` and `grad` write them as a
    `for` loop, and the backward pass as the reversed loop (`codegen.loops`): by default when the
    body is longer than 200 equations or under numba; `unroll=True` keeps every iteration's
    lines, `unroll=False` writes every loop it finds.
    """
    options = Options(
        wrt, jit, optimize, explain, dims=dims, layer=layer, has_aux=has_aux, static=static, vectorize=vectorize,
        unroll=unroll,
    )
    return build(f, example_args, example_kwargs, options)


def _signature_key(arguments: dict[str, Any], dims: Mapping[str, Any] | None, static: Sequence[str]) -> tuple:
    """What tells programs apart: each argument's dtype and shape, its named sizes as names,
    a static argument's value."""
    key: list[tuple] = []
    for name, value in arguments.items():
        if name in static:
            key.append((name, "static", repr(value)))
            continue
        spec = example_spec(name, value)
        named = dims.get(name) if dims else None
        key.append((name, spec.dtype, spec.shape if named is None else (named, len(spec.shape))))
    return tuple(key)


def _lazy(f: Callable, options: Options, pick: Callable) -> Callable:
    options = options.check()
    programs: dict[tuple, GradientProgram] = {}
    # for a signature whose program fixed a named size (its code depends on the value), where
    # that size is read: the size's value then tells programs apart too
    fixed_at: dict[tuple, tuple[tuple[str, int], ...]] = {}

    @functools.wraps(f)
    def transformed(*args: Any, **kwargs: Any) -> Any:
        arguments = bind_arguments(f, args, kwargs)
        signature = _signature_key(arguments, options.dims, options.static)

        def key() -> tuple:
            return signature + tuple(np.shape(arguments[name])[axis] for name, axis in fixed_at.get(signature, ()))

        program = programs.get(key())
        if program is None:
            program = build(f, args, kwargs, options)
            if program.sizes.fixed:
                shapes = {name: np.shape(value) for name, value in arguments.items()}
                defining = sizes_for(options.dims, shapes).defining()
                fixed_at[signature] = tuple(defining[symbol] for symbol, _, _ in program.sizes.fixed)
            programs[key()] = program
        value, grads = program.value_and_grad(*arguments.values())
        return pick(value, grads[0] if isinstance(options.wrt, str) else grads)

    transformed.programs = programs  # type: ignore[attr-defined]
    return transformed


def grad(
    f: Callable, wrt: str | Sequence[str] | None = None, jit: str | None = None, optimize: bool = False,
    dims: Mapping[str, Any] | None = None, has_aux: bool = False, static: Sequence[str] = (),
) -> Callable:
    """A function computing `f`'s gradients, traced on first call per argument signature: the
    dtypes and the fixed sizes, a size named in `dims` (as in `gradient`) taking any value, and
    the value of each parameter named in `static` (one program per value).

    With `wrt` a single name it returns that one gradient, else a tuple aligned with `wrt`.
    """
    options = Options(wrt, jit, optimize, dims=dims, has_aux=has_aux, static=static)
    return _lazy(f, options, lambda value, grads: grads)


def value_and_grad(
    f: Callable, wrt: str | Sequence[str] | None = None, jit: str | None = None, optimize: bool = False,
    dims: Mapping[str, Any] | None = None, has_aux: bool = False, static: Sequence[str] = (),
) -> Callable:
    """Like `grad`, returning `(value, gradients)`; with `has_aux`, `((loss, aux), gradients)`."""
    options = Options(wrt, jit, optimize, dims=dims, has_aux=has_aux, static=static)
    return _lazy(f, options, lambda value, grads: (value, grads))
