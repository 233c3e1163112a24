"""The command line: `flatgrad emit | show | check | graph | report | demo` (`python -m compiler`).

Bad input never shows a traceback: the CLI prints one line on stderr and exits 2 (a failed
gradient check exits 1). Set FLATGRAD_TRACEBACK=1 to see the traceback behind an error.

Every option a subcommand accepts changes what it does; files are written under the policy of
`compiler.files` (`--force` replaces a file flatgrad did not write, never the function's source).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import inspect
import linecache
import os
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from compiler import demo, display, report, visualize
from compiler._version import __version__
from compiler.check import check_inputs, compare, format_check
from compiler.errors import FlatgradError, SignatureError, TracingError, UsageError
from compiler.files import display_path, write_output
from compiler.program import GradientProgram, Options, build
from compiler.sizes import parse_axes
from compiler.tracer import ExampleSpec

DEFAULT_OUT_DIR = "generated"
_SPEC = re.compile(r"^(?P<kind>[fi])(?P<bits>16|32|64)(?:\[(?P<shape>[0-9A-Za-z_, ]*)\])?$")
# The example size of a named axis (`X=f64[N,4]`): more than one, so nothing broadcasts by chance.
NAMED_SIZE_EXAMPLE = 8
_FORCE = "--force"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise UsageError(f"{message} (see {self.prog} --help)")


def parse_spec(name: str, spec: str) -> float | ExampleSpec:
    """`--arg NAME=SPEC`: a number (kept as the value to check at), or a dtype and shape such as
    f64[4,3] (values are drawn when checking); a named axis (f64[N,4]) is traced at
    NAMED_SIZE_EXAMPLE and read from the arguments by the module (see `named_axes`)."""
    try:
        return float(spec)
    except ValueError:
        pass
    match = _SPEC.match(spec.strip())
    if not match:
        raise UsageError(
            f"--arg {name}={spec}: SPEC is a number (2.0) or a dtype and shape (f64, f32[4,3], i64[8], f64[N,4])"
        )
    dtype = np.dtype(f"{'float' if match['kind'] == 'f' else 'int'}{match['bits']}")
    axes = parse_axes(match["shape"] or "", f"--arg {name}={spec}")
    shape = tuple(NAMED_SIZE_EXAMPLE if isinstance(a, str) else a for a in axes)
    return ExampleSpec(shape, dtype.name)


def named_axes(name: str, spec: str) -> tuple[str | int, ...] | None:
    """The axes of a shape spec (`f64[N,4]` -> ("N", 4)) when one is named, else None."""
    match = _SPEC.match(spec.strip())
    if match is None or not match["shape"]:
        return None
    try:
        axes = parse_axes(match["shape"], f"--arg {name}={spec}")
    except SignatureError as error:
        raise UsageError(str(error)) from None
    return axes if any(isinstance(a, str) for a in axes) else None


@dataclass(frozen=True)
class Examples:
    """The command line's examples for a function's parameters."""

    values: dict[str, Any]  # one per parameter, in signature order: what tracing sees
    numbers: dict[str, float]  # those given as numbers, kept as they are when checking
    defaulted: tuple[str, ...]  # parameters without `--arg`, traced as float scalars
    dims: dict[str, tuple[str | int, ...]]  # the parameters with a named axis (f64[N,4]), for Options.dims


def static_value(name: str, spec: str) -> Any:
    """`--arg NAME=VALUE` for a parameter named by `--static`: a Python literal, taken as written
    (`3` is an int, `0.5` a float, `'relu'` a string, `(2, 2)` a tuple)."""
    try:
        return ast.literal_eval(spec)
    except (ValueError, SyntaxError):
        raise UsageError(
            f"--arg {name}={spec}: {name} is static, so its value is a Python literal (3, 0.5, 'relu', (2, 2))"
        ) from None


def example_arguments(fn: Callable, specs: Sequence[str], static: Sequence[str] = ()) -> Examples:
    """Examples for every parameter from `--arg NAME=SPEC`; a float scalar where none is given;
    a static parameter's value is its literal, which it must have."""
    given: dict[str, str] = {}
    for item in specs:
        name, sep, spec = item.partition("=")
        if not sep or not spec.strip():
            raise UsageError(f"--arg {item}: write NAME=SPEC, e.g. --arg x=2.0 or --arg 'X=f64[8,4]'")
        given[name.strip()] = spec.strip()
    params = list(inspect.signature(fn).parameters)
    unknown = [name for name in given if name not in params]
    if unknown:
        raise UsageError(f"--arg {unknown[0]}: the function's parameters are {', '.join(params)}")
    for name in static:
        if name not in params:
            raise UsageError(f"--static {name}: the function's parameters are {', '.join(params)}")
        if name not in given:
            raise UsageError(f"--static {name} needs its value: add --arg {name}=VALUE (e.g. --arg {name}=3)")
    fixed = {name: static_value(name, given[name]) for name in static}
    parsed = {name: parse_spec(name, given[name]) if name in given else ExampleSpec((), "float64") for name in params}
    parsed.update(fixed)
    return Examples(
        values={name: fixed[name] if name in fixed else _stand_in(spec) for name, spec in parsed.items()},
        numbers={name: spec for name, spec in parsed.items() if isinstance(spec, float) or name in fixed},
        defaulted=tuple(name for name in params if name not in given),
        dims={name: axes for name in given if (axes := named_axes(name, given[name])) is not None},
    )


def _stand_in(spec: float | ExampleSpec) -> Any:
    """An example with `spec`'s shape and dtype (tracing reads nothing else of it)."""
    return spec if isinstance(spec, float) else np.zeros(spec.shape, spec.dtype)[()]


def load_function(target: str) -> tuple[Callable, str, str]:
    """`FILE.py:FUNC` -> (the function, the file as given, the function's name)."""
    file, sep, name = target.rpartition(":")
    if not sep or not file or not name:
        raise UsageError(f"{target!r}: name a function as FILE.py:FUNC")
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"{file}: no such file")
    module_name = f"flatgrad_user_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{file}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise UsageError(f"{file}:{error.lineno}: syntax error: {error.msg}") from None
    except Exception as error:
        raise UsageError(f"{file}: importing it raised {type(error).__name__}: {error}") from None
    finally:
        sys.path.pop(0)
    fn: Any = module
    for part in name.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise UsageError(f"{file} has no function {name!r}")
    if not callable(fn):
        raise UsageError(f"{file}:{name} is a {type(fn).__name__}, not a function")
    return fn, display_path(str(path)), name


@dataclass(frozen=True)
class Target:
    """The function a command works on, as the command line names it."""

    fn: Callable
    file: str  # as displayed: relative to the working directory
    name: str

    @property
    def source(self) -> str:
        return f"{self.file}:{self.name}"

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def _target(args: argparse.Namespace) -> tuple[Target, Examples]:
    fn, file, name = load_function(args.target)
    return Target(fn, file, name), example_arguments(fn, args.arg, _wrt(args.static) or ())


def _build(args: argparse.Namespace, target: Target, examples: Examples, **more: Any) -> GradientProgram:
    """The program for the command's options (`more`: the Options only some commands take); a
    failure that a missing `--arg` may explain says which parameters were traced as float
    scalars and what to write."""
    options = Options(
        _wrt(args.wrt), optimize=args.optimize, source=target.source, dims=examples.dims, static=args.static,
        unroll=getattr(args, "unroll", None), **more,
    )
    try:
        return build(target.fn, (), examples.values, options)
    except (SignatureError, UsageError):
        raise
    except Exception as error:
        hint = _defaulted_hint(error, examples.defaulted)
        if not hint:
            raise
        if isinstance(error, FlatgradError):
            raise UsageError(f"{str(error).rstrip('.')}; {hint}") from error
        raise UsageError(f"{_raised_at(error)}{type(error).__name__}: {error}; {hint}") from error


def _defaulted_hint(error: Exception, defaulted: Sequence[str]) -> str:
    """What to write when parameters that got no `--arg` (float scalars) may be arrays.

    It names the defaulted parameters the failing line of the user's code mentions; for an error
    raised by the user's code (an IndexError at `X.shape[0]`), all of them when the line names none.
    """
    line = _failing_line(error)
    named = [n for n in defaulted if re.search(rf"\b{re.escape(n)}\b", line)]
    if not named and not isinstance(error, TracingError):
        named = list(defaulted)
    if not named:
        return ""
    subject = ", ".join(named) + (" had no --arg and was" if len(named) == 1 else " had no --arg and were")
    others = [n for n in defaulted if n not in named]
    also = f" ({', '.join(others)} had none either)" if others else ""
    return (
        f"{subject} traced as a float scalar: for an array pass its dtype and shape, "
        f"e.g. --arg '{named[0]}=f64[8,4]'{also}"
    )


def _failing_line(error: Exception) -> str:
    """The source line of the user's code where `error` arose, or ''."""
    if isinstance(error, FlatgradError):
        found = re.match(r"(.+?):(\d+): ", str(error))
        return linecache.getline(found[1], int(found[2])) if found else ""
    frames = _user_frames(error)
    return frames[-1].line or "" if frames else ""


def _wrt(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def _writer_options(args: argparse.Namespace, target: Target | None = None) -> dict[str, Any]:
    """How a command writes its file: forced or not, and never over the function's source."""
    return {"overwrite": args.force, "protect": (target.file,) if target else (), "force_hint": _FORCE}


def cmd_emit(args: argparse.Namespace) -> int:
    target, examples = _target(args)
    suffix = ("_optimized" if args.optimize else "") + (f"_{args.jit}" if args.jit else "")
    out = Path(args.output or os.path.join(DEFAULT_OUT_DIR, f"{target.short_name}{suffix}.py"))
    if out.is_dir():
        raise UsageError(f"{out} is a folder; name a .py file with -o")
    program = _build(
        args, target, examples, jit=args.jit, output=display_path(str(out)), explain=args.explain, layer=args.layer,
        has_aux=args.has_aux, vectorize=_vectorize(args),
    )
    written = write_output(out, program.source, **_writer_options(args, target))
    print(f"wrote {display_path(str(written))}")
    return 0


def _vectorize(args: argparse.Namespace) -> bool | str:
    """`--vectorize` (one thread) or `--vectorize parallel`, as Options take it."""
    if args.vectorize and args.jit != "numba":
        raise UsageError("--vectorize needs --jit numba: the points are looped over in compiled code")
    return {None: False, "cpu": True}.get(args.vectorize, args.vectorize)


def cmd_show(args: argparse.Namespace) -> int:
    target, examples = _target(args)
    program = _build(
        args, target, examples, jit=args.jit, explain=args.explain, layer=args.layer, has_aux=args.has_aux,
        vectorize=_vectorize(args),
    )
    sys.stdout.write(display.for_terminal(program.source, sys.stdout))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    target, examples = _target(args)
    program = _build(args, target, examples)
    values, drawn = check_inputs(program, examples.numbers, args.seed)
    rows = compare(program, target.fn, values)
    table, ok = format_check(rows, args.tolerance)
    print(f"{target.source}: {drawn}")
    print(table)
    return 0 if ok else 1


def cmd_graph(args: argparse.Namespace) -> int:
    target, examples = _target(args)
    program = _build(args, target, examples)
    values, _ = check_inputs(program, examples.numbers, args.seed)
    out = Path(args.output or f"{target.short_name}.svg")
    dot = visualize.dot_source(program.graph, tuple(values.values()), target.source, program.jit, program.unroll)
    written = visualize.render(dot, out, **_writer_options(args, target))
    print(f"wrote {display_path(str(written))}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    target, examples = _target(args)
    program = _build(args, target, examples)
    values, drawn = check_inputs(program, examples.numbers, args.seed)
    out = Path(args.output or f"{target.short_name}.html")
    page = report.html_report(program, target.fn, values, target.source, drawn, args.tolerance)
    written = write_output(out, page, **_writer_options(args, target))
    print(f"wrote {display_path(str(written))}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    sys.stdout.write(demo.run(args.out, overwrite=args.force, force_hint=_FORCE))
    return 0


def _add_target_options(parser: argparse.ArgumentParser, explain: bool = False) -> None:
    parser.add_argument("target", metavar="FILE.py:FUNC", help="the function to differentiate")
    parser.add_argument(
        "--arg", action="append", default=[], metavar="NAME=SPEC",
        help="an example for parameter NAME: a number (2.0) or a dtype and shape (f64, f32[4,3], i64[8]); "
        "or with a named size the module reads from its arguments (f64[N,4]); "
        "parameters without one are float scalars",
    )
    parser.add_argument("--wrt", metavar="a,b", help="differentiate with respect to these inputs only")
    parser.add_argument(
        "--static", metavar="n,m", default="",
        help="parameters whose --arg values are baked in (a loop count for range(n), a flag); "
        "the module checks them at each call",
    )
    parser.add_argument(
        "--optimize", action="store_true", help="emit the leanest code instead of one gate per line"
    )
    if explain:
        parser.add_argument(
            "--explain", action="store_true", help="comment each backward line with its gate and chain rule"
        )
        parser.add_argument(
            "--has-aux", action="store_true",
            help="FUNC returns (loss, aux...): differentiate the loss alone; value_and_grad returns "
            "((loss, aux), grads)",
        )
        parser.add_argument(
            "--layer", action="store_true",
            help="a layer module, as a course writes one: FUNC(...) -> (out, cache) and its backward "
            "(affine_forward -> affine_backward(dout, cache) -> (dx, dw, db))",
        )


def _add_unroll_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unroll", action=argparse.BooleanOptionalAction, default=None,
        help="--unroll writes every iteration of a loop; --no-unroll writes the iterations it can as for "
        "loops (default: loops when a function is longer than 200 equations, or under --jit numba)",
    )


def _add_vectorize_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vectorize", nargs="?", const="cpu", choices=["cpu", "parallel"],
        help="with --jit numba, for a scalar function: value_and_grad_many over arrays of points "
        "(`--vectorize parallel` on every core)",
    )


def _add_output_options(parser: argparse.ArgumentParser, metavar: str, default: str) -> None:
    parser.add_argument("-o", "--output", metavar=metavar, help=f"where to write it (default: {default})")
    parser.add_argument(
        _FORCE, action="store_true",
        help="replace the file even if flatgrad did not write it (never the function's own source file)",
    )


def _add_check_options(parser: argparse.ArgumentParser, tolerance: bool = True) -> None:
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seed for the input values drawn where --arg gives no number (default: 0)",
    )
    if tolerance:
        parser.add_argument(
            "--tolerance", type=float, default=None,
            help="largest error accepted (default: 1e-6 for float64 gradients, 1e-4 for float32)",
        )


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="flatgrad", description="Emit flat forward and backward code for a NumPy function.")
    top.add_argument("-V", "--version", action="version", version=f"flatgrad {__version__}")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    emit = commands.add_parser(
        "emit", help="write the emitted module to a file", description="Write the emitted module to a file."
    )
    _add_target_options(emit, explain=True)
    emit.add_argument("--jit", choices=["numba"], help="compile the emitted functions with numba")
    _add_vectorize_option(emit)
    _add_unroll_option(emit)
    _add_output_options(emit, "OUT.py", f"{DEFAULT_OUT_DIR}/FUNC[_optimized][_numba].py")
    emit.set_defaults(run=cmd_emit)
    show = commands.add_parser("show", help="print the emitted module", description="Print the emitted module.")
    _add_target_options(show, explain=True)
    show.add_argument("--jit", choices=["numba"], help="show the numba variant")
    _add_vectorize_option(show)
    _add_unroll_option(show)
    show.set_defaults(run=cmd_show)
    check = commands.add_parser(
        "check", help="compare the gradient with central differences",
        description="Compare flatgrad's gradient with central differences of the function, at values drawn "
        "from both signs (or given with --arg); exits 1 when an error is above the tolerance.",
    )
    _add_target_options(check)
    _add_check_options(check)
    check.set_defaults(run=cmd_check)
    graph = commands.add_parser(
        "graph", help="draw the graph with every value and gradient",
        description="Draw the graph with every value and gradient, at values drawn as `check` draws them.",
    )
    _add_target_options(graph)
    _add_output_options(graph, "OUT.svg", "FUNC.svg; .png and .dot also work")
    _add_check_options(graph, tolerance=False)
    _add_unroll_option(graph)  # a loop the module writes as a loop is drawn once, in a box
    graph.set_defaults(run=cmd_graph)
    page = commands.add_parser(
        "report", help="one HTML page: the graph, the flat code, the gradient check",
        description="Write one HTML page: the graph, the flat forward and explained backward code, the gradient check.",
    )
    _add_target_options(page)
    _add_output_options(page, "OUT.html", "FUNC.html")
    _add_check_options(page)
    page.set_defaults(run=cmd_report)
    show_demo = commands.add_parser(
        "demo", help="walk through the lecture's two examples",
        description="Walk through the lecture's two examples and draw the neuron's graph.",
    )
    show_demo.add_argument("--out", metavar="FOLDER", help="where to draw the graph (default: a new temporary folder)")
    show_demo.add_argument(_FORCE, action="store_true", help="replace a picture in FOLDER that flatgrad did not write")
    show_demo.set_defaults(run=cmd_demo)
    return top


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`; an unknown option is reported against its subcommand, with a guess."""
    top = parser()
    args, extras = top.parse_known_args(argv)
    if extras:
        sub = _subparser(top, args.command)
        known = [option for action in sub._actions for option in action.option_strings]
        guesses = difflib.get_close_matches(extras[0].split("=")[0], known, n=1)
        guess = f"; did you mean {guesses[0]}?" if guesses else ""
        raise UsageError(f"unrecognized arguments: {' '.join(extras)}{guess} (see {sub.prog} --help)")
    return args


def _subparser(top: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    try:
        args = _parse(argv)
        return args.run(args)
    except Exception as error:
        if os.environ.get("FLATGRAD_TRACEBACK", "") not in ("", "0"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        if not isinstance(error, FlatgradError):
            message = f"{_raised_at(error)}{type(error).__name__}: {message}"
        print(f"flatgrad: error: {message}", file=sys.stderr)
        return 2


def _user_frames(error: BaseException) -> list[traceback.FrameSummary]:
    """The frames of `error`'s traceback outside flatgrad, innermost last."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    return [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(package)]


def _raised_at(error: BaseException) -> str:
    """`file:line: ` of the innermost frame outside flatgrad where `error` was raised, if any."""
    frames = _user_frames(error)
    return f"{display_path(frames[-1].filename)}:{frames[-1].lineno}: " if frames else ""


if __name__ == "__main__":
    sys.exit(main())
