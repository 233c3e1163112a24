"""How flatgrad scales, and what optimize mode buys.

1. Emission time against program size: trace, differentiate, emit (and the optimize passes) for
   unrolled programs of 1k, 10k and 100k operations.
2. numba's compile time of the emitted `value_and_grad` against program size.
3. optimize=False against optimize=True: one value_and_grad call of every benchmark problem.

    python benchmarks/bench_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples")]

import harness  # noqa: E402

import compiler  # noqa: E402
from compiler import passes  # noqa: E402
from compiler.autodiff import differentiate  # noqa: E402
from compiler.codegen import Provenance, emit_module  # noqa: E402
from compiler.tracer import trace  # noqa: E402


def unrolled(operations: int):
    """A scalar program of `operations` gates: h = tanh(h * w), unrolled."""

    def chain(x, w):
        h = x
        for _ in range(operations // 2):
            h = np.tanh(h * w)
        return h

    return chain


def _emit_once(f) -> tuple[float, float, float, float, int]:
    """Seconds to trace, differentiate, emit and run the optimize passes, and the equations."""
    was_enabled = gc.isenabled()
    gc.disable()  # as compiler.gradient does
    try:
        t0 = time.perf_counter()
        forward = trace(f, 0.5, 0.9)
        t1 = time.perf_counter()
        graph = differentiate(forward, ["x", "w"])
        t2 = time.perf_counter()
        emit_module(graph, Provenance("chain", "chain", "-"))
        t3 = time.perf_counter()
        passes.optimize(graph)
        t4 = time.perf_counter()
    finally:
        if was_enabled:
            gc.enable()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3, len(graph.eqns)


def emission(sizes: list[int], repeat: int = 3) -> str:
    """Each size `repeat` times; the stages of the fastest run (this VM's speed varies by up to
    2x from one run to the next), and the first run's total, which also pays for the memory the
    process takes from the system."""
    lines = [
        f"== 1. emission time against program size (an unrolled chain h = tanh(h * w); fastest of {repeat})",
        f"{'operations':>10}  {'equations':>9}  {'trace':>7}  {'differentiate':>13}  {'emit':>7}  "
        f"{'total':>7}  {'per op':>8}  {'first run':>9}  {'optimize':>8}",
    ]
    for n in sizes:
        f = unrolled(n)
        runs = [_emit_once(f) for _ in range(repeat)]
        first = sum(runs[0][:3])
        traced, differentiated, emitted, optimized, equations = min(runs, key=lambda run: sum(run[:3]))
        total = traced + differentiated + emitted
        lines.append(
            f"{n:>10}  {equations:>9}  {traced:>6.2f}s  {differentiated:>12.2f}s  {emitted:>6.2f}s  "
            f"{total:>6.2f}s  {total / n * 1e6:>6.1f}µs  {first:>8.2f}s  {optimized:>7.2f}s"
        )
    return "\n".join(lines)


def numba_compile(sizes: list[int]) -> str:
    lines = [
        "== 2. numba compile time of value_and_grad against program size (a fresh cache each time)",
        f"{'operations':>10}  {'lines':>6}  {'compile':>8}  {'per line':>9}",
    ]
    for n in sizes:
        program = compiler.gradient(unrolled(n), 0.5, 0.9, jit="numba")
        _, seconds = harness.time_once(lambda: program.value_and_grad(0.5, 0.9))
        per_equation = seconds / len(program.graph.eqns) * 1e3
        lines.append(f"{n:>10}  {len(program.graph.eqns):>6}  {seconds:>7.2f}s  {per_equation:>7.2f}ms")
    return "\n".join(lines)


def problems(quick: bool) -> list[tuple[str, object, dict, tuple | None]]:
    from neuron import neuron
    from softmax import softmax
    from svm_net import svm_net

    rng = np.random.default_rng(0)
    out: list[tuple[str, object, dict, tuple | None]] = [
        ("neuron", neuron, dict(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0), None)
    ]
    for size, (N, D, H, C) in {"small": (8, 4, 8, 3), "medium": (256, 64, 128, 10)}.items():
        if quick and size == "medium":
            continue
        X, y = rng.normal(size=(N, D)), rng.integers(0, C, N)
        W1, b1 = rng.normal(size=(D, H)) * 0.1, np.zeros(H)
        W2, b2 = rng.normal(size=(H, C)) * 0.1, np.zeros(C)
        out.append((f"svm_net {size}", svm_net, dict(X=X, y=y, W1=W1, b1=b1, W2=W2, b2=b2), ("W1", "b1", "W2", "b2")))
        W = rng.normal(size=(D, C)) * 0.1
        out.append((f"softmax {size}", softmax, dict(X=X, y=y, W=W, b=np.zeros(C)), ("W", "b")))
    return out


def optimize_on_off(settings: harness.Settings) -> str:
    sections = ["== 3. optimize=False against optimize=True: one value_and_grad call (NumPy backend)"]
    for name, f, args, wrt in problems(settings.quick):
        candidates = []
        for optimize in (False, True):
            program = compiler.gradient(f, **args, wrt=wrt, optimize=optimize)
            label = f"optimize={optimize} ({len(program.graph.eqns)} equations)"
            call = program.module.value_and_grad
            candidates.append(harness.Candidate(label, call, tuple(args.values()), harness.flatten))
        harness.check_agreement(candidates, reference=candidates[0].name)
        timings = harness.measure(candidates, settings, progress=False)
        table = harness.render_table(timings, baselines=[harness.Baseline(candidates[0].name, "vs readable")])
        sections.append(f"-- {name}\n{table}")
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_timing_arguments(parser)
    args = parser.parse_args(argv)
    settings = harness.settings_from(args)
    os.environ.setdefault("FLATGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="flatgrad-bench-"))
    print("\n".join(harness.environment_lines(["numpy", "numba"])))
    print(emission([1_000, 10_000] if settings.quick else [1_000, 10_000, 100_000], repeat=1 if settings.quick else 3))
    print(numba_compile([100, 400] if settings.quick else [100, 200, 400, 800, 1600]))
    print(optimize_on_off(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
