"""Timing, checking and reporting helpers shared by flatgrad's benchmarks.

A benchmark builds a list of `Candidate`s (one per implementation: a zero-argument callable
that does one complete call, plus the result it must agree with), then:

    check_agreement(candidates, reference="...")       # every result close to the reference's
    timings = measure(candidates, settings)            # median per-call time of each
    print(render_table(timings, baselines=[...]))      # table with ratio columns
    print(render_targets([...]))                       # targets and whether they hold

Timing follows `timeit`: each candidate's loop count is calibrated as `Timer.autorange` does
(the smallest 1, 2, 5, 10, 20, ... calls that take at least `min_time`), the garbage collector
is off while timing, and each repeat gives one per-call time (loop time / loop count). The
repeats are interleaved round-robin across candidates, so a slow drift of the machine (turbo,
a neighbour process) is spread over all of them instead of landing on one; the reported figure
is the median of the repeats.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import math
import platform
import re
import statistics
import sys
import timeit
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """How long to time: `repeats` timed runs of at least `min_time` seconds each."""

    repeats: int = 7
    min_time: float = 0.2
    quick: bool = False


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line flags every benchmark understands."""
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 short repeats per implementation")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per implementation (default 7, 3 with --quick)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="seconds each repeat runs at least (default 0.2, 0.01 with --quick)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    repeats = args.repeats if args.repeats is not None else (3 if quick else 7)
    min_time = args.min_time if args.min_time is not None else (0.01 if quick else 0.2)
    if repeats < 1 or min_time <= 0:
        raise SystemExit("--repeats must be at least 1 and --min-time positive")
    return Settings(repeats=repeats, min_time=min_time, quick=quick)


# --------------------------------------------------------------------------- optional peers


def optional_import(name: str) -> tuple[Any | None, str]:
    """`(module, "")` when `name` imports, else `(None, reason)` for a skip note."""
    try:
        return importlib.import_module(name), ""
    except Exception as error:  # ImportError, or a broken install raising anything else
        return None, f"{name} is not installed ({type(error).__name__}: {error})".splitlines()[0]


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment_lines(distributions: Sequence[str]) -> list[str]:
    """One line naming the interpreter, machine and the versions of `distributions`."""
    versions = ", ".join(f"{name} {package_version(name)}" for name in distributions)
    return [
        f"python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}, "
        f"{platform.system()}; {versions}"
    ]


# --------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """One implementation under test: one call is `fn(*args)`.

    The timed loop spells the call out with the function and each argument bound to a local
    variable, `f(a0, a1, ...)`, so it costs exactly what a user's own call costs and nothing of
    the harness's. Work a user pays on every call (building input tensors, blocking on an
    asynchronous result) belongs inside `fn`. `result` turns `fn`'s return value into plain
    data to compare (default: the value itself). One-off costs (a JIT compile) are not part of
    a candidate: measure them with `time_once` before timing and report them beside the table.
    """

    name: str
    fn: Callable[..., Any]
    args: tuple = ()
    result: Callable[[Any], Any] = lambda out: out
    note: str = ""
    check: bool = True  # False for a reference row that computes nothing comparable

    def call(self) -> Any:
        return self.fn(*self.args)

    def timer(self) -> timeit.Timer:
        names = [f"_a{i}" for i in range(len(self.args))]
        setup = "\n".join(["_f = __fn", *(f"{n} = __args[{i}]" for i, n in enumerate(names))])
        return timeit.Timer(f"_f({', '.join(names)})", setup=setup, globals={"__fn": self.fn, "__args": self.args})


@dataclass
class Skipped:
    name: str
    reason: str


@dataclass
class Timing:
    name: str
    number: int  # calls per timed loop
    per_call: list[float] = field(default_factory=list)  # seconds, one per repeat

    @property
    def median(self) -> float:
        return statistics.median(self.per_call)

    @property
    def best(self) -> float:
        return min(self.per_call)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats: how noisy the figure is."""
        return (max(self.per_call) - min(self.per_call)) / self.median


# --------------------------------------------------------------------------- checking


def flatten(result: Any) -> list[float]:
    """Nested tuples/lists of numbers, NumPy arrays or 0-d tensors -> a flat list of floats."""
    if isinstance(result, (tuple, list)):
        return [x for item in result for x in flatten(item)]
    return [float(x) for x in np.asarray(result, dtype=np.float64).ravel()]


class DisagreementError(AssertionError):
    pass


def check_agreement(
    candidates: Sequence[Candidate],
    reference: str,
    rtol: float = 1e-12,
    atol: float = 1e-14,
    expected: Any = None,
) -> dict[str, list[float]]:
    """Call each candidate once and assert its result matches the reference candidate's
    (and `expected`, when given, to 4 decimals). Candidates with `check=False` are left out.
    Returns the flattened results by name."""
    results = {c.name: flatten(c.result(c.call())) for c in candidates if c.check}
    if reference not in results:
        raise KeyError(f"reference {reference!r} is not among the candidates")
    ref = np.array(results[reference])
    if expected is not None:
        np.testing.assert_allclose(ref, flatten(expected), rtol=0, atol=5e-5, err_msg=f"{reference} vs expected")
    for name, values in results.items():
        got = np.array(values)
        if got.shape != ref.shape or not np.allclose(got, ref, rtol=rtol, atol=atol):
            raise DisagreementError(
                f"{name} disagrees with {reference}:\n  {name}: {values}\n  {reference}: {list(ref)}"
            )
    return results


# --------------------------------------------------------------------------- timing


def calibrate(timer: timeit.Timer, min_time: float) -> int:
    """The loop count `timeit.Timer.autorange` would choose, for a target of `min_time` s."""
    i = 1
    while True:
        for j in (1, 2, 5):
            number = i * j
            if timer.timeit(number) >= min_time:
                return number
        i *= 10


def measure(candidates: Sequence[Candidate], settings: Settings, progress: bool | None = None) -> list[Timing]:
    """Per-call times of each candidate: repeat r times every candidate once (forwards on even
    rounds, backwards on odd ones), so that repeat r of two candidates ran seconds apart."""
    if progress is None:  # a repeat counter only where it can be redrawn in place
        progress = sys.stderr.isatty()
    timers = [c.timer() for c in candidates]
    timings = []
    for c, timer in zip(candidates, timers):
        c.call()  # one untimed call: warm caches (and any lazy compile left)
        timings.append(Timing(c.name, calibrate(timer, settings.min_time)))
    for r in range(settings.repeats):
        if progress:
            print(f"\r  timing: repeat {r + 1}/{settings.repeats}", end="", file=sys.stderr, flush=True)
        order = list(zip(timers, timings))
        for timer, t in order if r % 2 == 0 else reversed(order):  # no candidate always first
            t.per_call.append(timer.timeit(t.number) / t.number)
    if progress:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    return timings


def page_faults_per_call(candidate: Candidate, calls: int) -> float | None:
    """Minor page faults per call of `candidate` over `calls` calls (None where the platform
    does not count them): how often a call touches memory fresh from the operating system.
    Each costs roughly a microsecond; large NumPy temporaries that the allocator hands back
    to the OS after every call show up here."""
    try:
        import resource
    except ImportError:  # not on Unix
        return None
    fn, args = candidate.fn, candidate.args
    fn(*args)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn(*args)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def peak_bytes_per_call(candidate: Candidate) -> int:
    """The most memory one call of `candidate` holds at once (its results included), as
    `tracemalloc` sees it: NumPy's arrays and Python's objects, not what numba's runtime, XLA
    or PyTorch allocate on their own (report those rows as not measured)."""
    import tracemalloc

    fn, args = candidate.fn, candidate.args
    fn(*args)  # first-call costs (imports, caches) are not the call's
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def format_bytes(count: float) -> str:
    """A size in kB or MB (powers of 1000), 3 significant digits."""
    return f"{count / 1e6:.3g} MB" if count >= 1e6 else f"{count / 1e3:.3g} kB"


def time_once(call: Callable[[], Any]) -> tuple[Any, float]:
    """`(result, seconds)` of a single call: for one-off costs such as a first-call compile."""
    start = timeit.default_timer()
    out = call()
    return out, timeit.default_timer() - start


# --------------------------------------------------------------------------- reporting


def format_time(seconds: float) -> str:
    """A duration with a unit that keeps 3-4 significant digits: ns, µs, ms or s."""
    if not math.isfinite(seconds):
        return "-"
    for unit, scale in (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3)):
        if seconds < 1000 * scale:
            value = seconds / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{seconds:.2f} s"


def format_ratio(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "-"
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    if ratio >= 0.1:
        return f"{ratio:.2f}x"
    return f"{ratio:.3f}x"


@dataclass(frozen=True)
class Baseline:
    """A ratio column: each median divided by the named candidate's median."""

    name: str
    header: str


def render_table(
    timings: Sequence[Timing],
    baselines: Sequence[Baseline] = (),
    skipped: Sequence[Skipped] = (),
    extra: Sequence[tuple[str, Mapping[str, str]]] = (),
) -> str:
    """A plain-text table: implementation, median and best per-call time, spread (half the
    range of the repeats, relative to the median), then one ratio column per baseline: this
    row's time / the baseline's, as a `paired_ratio` (below 1 is faster than the baseline),
    then one column per `extra` entry (a header and the cell text by implementation name)."""
    by_name = {t.name: t for t in timings}
    headers = [
        "implementation", "median/call", "best", "spread", *[b.header for b in baselines], *[h for h, _ in extra]
    ]
    rows = []
    for t in timings:
        row = [t.name, format_time(t.median), format_time(t.best), f"±{t.spread * 50:.0f}%"]
        for b in baselines:
            base = by_name.get(b.name)
            row.append(format_ratio(paired_ratio(t, base)) if base else "n/a")
        row += [cells.get(t.name, "") for _, cells in extra]
        rows.append(row)
    for s in skipped:
        rows.append([s.name, "skipped", "", "", *["" for _ in baselines], *["" for _ in extra]])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


@dataclass(frozen=True)
class Target:
    """A claim about the measurements; `holds` is None when it cannot be judged (peer missing)."""

    description: str
    holds: bool | None
    detail: str


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over repeats of a's time / b's time in the same repeat.

    Repeat r of every candidate ran within the same round (see `measure`), so a load spike or
    a frequency change that slows round r slows both sides of its ratio: this is steadier than
    the ratio of the two medians when the machine is busy."""
    return statistics.median(x / y for x, y in zip(a.per_call, b.per_call))


def ratio_target(
    timings: Sequence[Timing],
    description: str,
    slow: str,
    fast: str,
    at_most: float | None = None,
    at_least: float | None = None,
) -> Target:
    """Judge the paired ratio `slow / fast` against `at_most` and/or `at_least`."""
    by_name = {t.name: t for t in timings}
    if slow not in by_name or fast not in by_name:
        missing = slow if slow not in by_name else fast
        return Target(description, None, f"not measured: {missing} was skipped")
    ratio = paired_ratio(by_name[slow], by_name[fast])
    holds = (at_most is None or ratio <= at_most) and (at_least is None or ratio >= at_least)
    bound = " and ".join(
        ([f"<= {at_most:g}"] if at_most is not None else []) + ([f">= {at_least:g}"] if at_least is not None else [])
    )
    shown = f"{ratio:{'.3f' if ratio < 10 else '.1f'}}"
    return Target(description, holds, f"{slow} / {fast} = {shown} (paired median; needs {bound})")


def render_targets(targets: Iterable[Target]) -> str:
    marks = {True: "HOLDS ", False: "MISSED", None: "N/A   "}
    return "\n".join(f"  [{marks[t.holds]}] {t.description}: {t.detail}" for t in targets)


# --------------------------------------------------------------------------- argument checks

_CHECK_CALL = re.compile(r"^    (?:\w+(?:, \w+)* = )?check_arguments\(.*\)\n", re.M)
_NDIM_CHECK = re.compile(r"^    if \w+\.ndim != \d+:\n        raise .*\n", re.M)


def without_checks(source: str) -> str:
    """An emitted module's source with its functions' argument checks taken out, to measure
    what the checks cost. Only for modules without named sizes (which the checks return)."""
    if re.search(r"^    \w+(?:, \w+)* = check_arguments\(", source, re.M):
        raise ValueError("the module reads named sizes from check_arguments; measure one without")
    return _NDIM_CHECK.sub("", _CHECK_CALL.sub("", source))
