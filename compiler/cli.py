"""The command line: `flatgrad emit | show | check | graph | report | demo` (`python -m compiler`).

Bad input never shows a traceback: the CLI prints one line on stderr and exits 2 (a failed
gradient check exits 1). Set FLATGRAD_TRACEBACK=1 to see the traceback behind an error.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from compiler import demo, display, report, visualize
from compiler.errors import FlatgradError
from compiler.files import write_atomically
from compiler.program import GENERATED_MARKER, CheckRow, build, check_rows
from compiler.tracer import display_path

DEFAULT_OUT_DIR = "generated"
DEFAULT_TOLERANCE = 1e-6
_SPEC = re.compile(r"^(?P<kind>[fi])(?P<bits>16|32|64)(?:\[(?P<shape>[0-9, ]*)\])?$")


class UsageError(FlatgradError):
    """The command line itself is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise UsageError(f"{message} (see {self.prog} --help)")


def parse_spec(name: str, spec: str | None, seed: int) -> Any:
    """An example value for `--arg NAME=SPEC`: a number, or a dtype and shape such as f64[4,3]."""
    if spec is None or spec == "":
        return float(np.random.default_rng(seed).uniform(0.5, 1.5))
    try:
        return float(spec)
    except ValueError:
        pass
    match = _SPEC.match(spec.strip())
    if not match:
        raise UsageError(
            f"--arg {name}={spec}: SPEC is a number (2.0) or a dtype and shape (f64, f32[4,3], i64[8])"
        )
    dtype = np.dtype(f"{'float' if match['kind'] == 'f' else 'int'}{match['bits']}")
    shape = tuple(int(n) for n in (match["shape"] or "").replace(" ", "").split(",") if n)
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.5, 1.5, shape) if dtype.kind == "f" else rng.integers(0, 3, shape)
    value = np.asarray(values, dtype=dtype)
    return value[()] if shape == () else value


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


def example_arguments(fn: Callable, specs: Sequence[str]) -> dict[str, Any]:
    """Example values for every parameter: from `--arg NAME=SPEC`, else a float scalar."""
    given: dict[str, str | None] = {}
    for item in specs:
        name, sep, spec = item.partition("=")
        given[name.strip()] = spec.strip() if sep else None
    params = list(inspect.signature(fn).parameters)
    unknown = [name for name in given if name not in params]
    if unknown:
        raise UsageError(f"--arg {unknown[0]}: the function's parameters are {', '.join(params)}")
    return {name: parse_spec(name, given.get(name), seed) for seed, name in enumerate(params)}


def _wrt(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def short_name(dotted: str) -> str:
    return dotted.rsplit(".", 1)[-1]


def _is_ours(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as stream:
            return GENERATED_MARKER in stream.read(4096)
    except OSError:
        return False


def cmd_emit(args: argparse.Namespace) -> int:
    fn, file, name = load_function(args.target)
    examples = example_arguments(fn, args.arg)
    suffix = ("_optimized" if args.optimize else "") + (f"_{args.jit}" if args.jit else "")
    out = Path(args.output or os.path.join(DEFAULT_OUT_DIR, f"{short_name(name)}{suffix}.py"))
    if out.exists() and not args.force and not _is_ours(out):
        raise UsageError(f"{out} exists and was not generated by flatgrad; pass --force to overwrite it")
    if out.is_dir():
        raise UsageError(f"{out} is a folder; name a .py file with -o")
    program = build(
        fn, (), examples, _wrt(args.wrt), args.jit, f"{file}:{name}", display_path(str(out)), args.optimize,
        args.explain,
    )
    write_atomically(out, program.source)
    print(f"wrote {display_path(str(out))}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    fn, file, name = load_function(args.target)
    examples = example_arguments(fn, args.arg)
    program = build(
        fn, (), examples, _wrt(args.wrt), args.jit, f"{file}:{name}", optimize=args.optimize, explain=args.explain
    )
    sys.stdout.write(display.for_terminal(program.source, sys.stdout))
    return 0


def format_check(rows: Sequence[CheckRow], tolerance: float) -> tuple[str, bool]:
    """The gradient-check table, and whether every error is within `tolerance`."""
    width = max(len("input"), *(len(r.name) for r in rows))
    lines = [f"{'input':<{width}}  {'flatgrad':>14}  {'central diff':>14}  {'error':>8}"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.analytic:>14.6e}  {r.numeric:>14.6e}  {r.error:>8.1e}")
    worst = max(r.error for r in rows)
    ok = worst <= tolerance
    lines.append(f"largest error {worst:.1e}, tolerance {tolerance:.0e}: {'ok' if ok else 'FAILED'}")
    return "\n".join(lines), ok


def cmd_check(args: argparse.Namespace) -> int:
    fn, _, _ = load_function(args.target)
    examples = example_arguments(fn, args.arg)
    table, ok = format_check(check_rows(fn, wrt=_wrt(args.wrt), optimize=args.optimize, **examples), args.tolerance)
    print(table)
    return 0 if ok else 1


def cmd_graph(args: argparse.Namespace) -> int:
    fn, file, name = load_function(args.target)
    examples = example_arguments(fn, args.arg)
    program = build(fn, (), examples, _wrt(args.wrt), None, f"{file}:{name}", optimize=args.optimize)
    out = Path(args.output or f"{short_name(name)}.svg")
    dot = visualize.dot_source(program.graph, tuple(examples.values()), f"{file}:{name}")
    print(f"wrote {display_path(str(visualize.render(dot, out)))}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    fn, file, name = load_function(args.target)
    examples = example_arguments(fn, args.arg)
    out = Path(args.output or f"{short_name(name)}.html")
    page = report.html_report(fn, examples, f"{file}:{name}", args.tolerance)
    print(f"wrote {display_path(str(write_atomically(out, page)))}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    sys.stdout.write(demo.run())
    return 0


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="FILE.py:FUNC", help="the function to differentiate")
    parser.add_argument(
        "--arg", action="append", default=[], metavar="NAME=SPEC",
        help="an example for parameter NAME: a number (2.0) or a dtype and shape (f64, f32[4,3], i64[8]); "
        "parameters without one are float scalars",
    )
    parser.add_argument("--wrt", metavar="a,b", help="differentiate with respect to these inputs only")
    parser.add_argument(
        "--optimize", action="store_true", help="emit the leanest code instead of one gate per line"
    )
    parser.add_argument(
        "--explain", action="store_true", help="comment each backward line with its gate and chain rule"
    )


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="flatgrad", description="Emit flat forward and backward code for a NumPy function.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    emit = commands.add_parser("emit", help="write the emitted module to a file")
    _add_target_options(emit)
    emit.add_argument("--jit", choices=["numba"], help="compile the emitted functions with numba")
    emit.add_argument("-o", "--output", metavar="OUT.py", help=f"where to write it (default: {DEFAULT_OUT_DIR}/FUNC[_optimized][_numba].py)")
    emit.add_argument("--force", action="store_true", help="overwrite OUT.py even if flatgrad did not write it")
    emit.set_defaults(run=cmd_emit)
    show = commands.add_parser("show", help="print the emitted module")
    _add_target_options(show)
    show.add_argument("--jit", choices=["numba"], help="show the numba variant")
    show.set_defaults(run=cmd_show)
    check = commands.add_parser("check", help="compare the gradient with central differences")
    _add_target_options(check)
    check.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="largest error accepted")
    check.set_defaults(run=cmd_check)
    graph = commands.add_parser("graph", help="draw the graph with every value and gradient")
    _add_target_options(graph)
    graph.add_argument("-o", "--output", metavar="OUT.svg", help="OUT.svg, OUT.png or OUT.dot (default: FUNC.svg)")
    graph.set_defaults(run=cmd_graph)
    page = commands.add_parser("report", help="one HTML page: the graph, the flat code, the gradient check")
    _add_target_options(page)
    page.add_argument("-o", "--output", metavar="OUT.html", help="where to write it (default: FUNC.html)")
    page.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="largest error accepted")
    page.set_defaults(run=cmd_report)
    show_demo = commands.add_parser("demo", help="walk through the lecture's two examples")
    show_demo.set_defaults(run=cmd_demo)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    try:
        args = parser().parse_args(argv)
        return args.run(args)
    except Exception as error:
        if os.environ.get("FLATGRAD_TRACEBACK"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        if not isinstance(error, FlatgradError):
            message = f"{_raised_at(error)}{type(error).__name__}: {message}"
        print(f"flatgrad: error: {message}", file=sys.stderr)
        return 2


def _raised_at(error: BaseException) -> str:
    """`file:line: ` of the innermost frame outside flatgrad where `error` was raised, if any."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(package)]
    return f"{display_path(frames[-1].filename)}:{frames[-1].lineno}: " if frames else ""


if __name__ == "__main__":
    sys.exit(main())
