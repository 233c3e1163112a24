"""Benchmark: loops that stay loops, against the same code with every iteration written out.

    rosenbrock(x)            examples/rosenbrock.py, a Python loop over n coordinates (n = 1000)
    rnn_forward(x, h0, ...)  examples/layers.py, a vanilla RNN over T steps, as a layer
                             (forward_with_cache, then backward)
    conv_forward_naive       examples/layers.py, a naive convolution over output positions

For each: flatgrad's emit time, numba's compile time (first call) and the time per call, with
loops (`unroll=False`) and flat (`unroll=True`), NumPy and numba; beside them a hand-written
numba loop and, when installed, jax.jit of the same Python loop. Flat numba modules of these
sizes take minutes to compile and are left out unless asked for (`--flat-numba`).

    python benchmarks/bench_loops.py              # full run
    python benchmarks/bench_loops.py --quick      # smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":  # one thread per library, before NumPy loads its BLAS
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
for folder in (ROOT, EXAMPLES):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Baseline, Candidate, Skipped  # noqa: E402

HAND = "hand-written numba loop"
JAX = "jax.jit(value_and_grad) of the Python loop"


def rosenbrock_hand():
    import numba

    @numba.njit(cache=False)
    def value_and_grad(x):
        total, grad = 0.0, np.zeros(x.shape[0])
        for i in range(x.shape[0] - 1):
            a, b = x[i + 1] - x[i] ** 2, 1 - x[i]
            total += 100.0 * a * a + b * b
            grad[i + 1] += 200.0 * a
            grad[i] += -400.0 * a * x[i] - 2.0 * b
        return total, (grad,)

    return value_and_grad


def flatgrad_rows(
    name: str, build, call, args: tuple, notes: list[str], numba_rows: tuple[str, ...]
) -> list[Candidate]:
    """One row per (loops, flat) x (NumPy, numba), numba's only for the kinds in `numba_rows`
    ("loops", "flat"); emit and compile times into `notes`."""
    rows = []
    for jit in (None, "numba"):
        for unroll in (False, True):
            kind = "flat" if unroll else "loops"
            label = f"flatgrad {'numba' if jit else 'NumPy'}, {kind}"
            if jit and kind not in numba_rows:
                notes.append(f"{name}: {label} not built (minutes of numba compile: see --help)")
                continue
            prog, emit = harness.time_once(lambda: build(jit, unroll))
            _, first = harness.time_once(lambda: call(prog, *args))
            lines = prog.source.count("\n")
            notes.append(
                f"{name}: {label}: emit {harness.format_time(emit)}"
                + (f", numba compile (first call) {harness.format_time(first)}" if jit else "")
                + f", {lines} lines"
            )
            rows.append(Candidate(label, lambda *a, prog=prog: call(prog, *a), args))
    return rows


def rosenbrock_case(n: int, notes: list[str], skipped: list[Skipped], numba_rows: tuple[str, ...]) -> list[Candidate]:
    from rosenbrock import rosenbrock

    import compiler

    x = np.random.default_rng(0).normal(size=n)
    rows = flatgrad_rows(
        "rosenbrock", lambda jit, unroll: compiler.gradient(rosenbrock, x, jit=jit, unroll=unroll),
        lambda prog, x: prog.module.value_and_grad(x), (x,), notes, numba_rows,
    )
    hand = rosenbrock_hand()
    _, first = harness.time_once(lambda: hand(x))
    notes.append(f"rosenbrock: {HAND} compile {harness.format_time(first)}")
    rows.append(Candidate(HAND, hand, (x,)))
    jax, reason = harness.optional_import("jax")
    if jax is None:
        skipped.append(Skipped(JAX, reason))
        return rows
    jax.config.update("jax_enable_x64", True)
    vg = jax.jit(jax.value_and_grad(rosenbrock))

    def jax_call(x):
        return jax.block_until_ready(vg(x))

    _, first = harness.time_once(lambda: jax_call(x))
    notes.append(f"rosenbrock: {JAX} trace + compile {harness.format_time(first)}")
    rows.append(Candidate(JAX, jax_call, (x,), result=lambda out: (float(out[0]), (np.asarray(out[1]),))))
    return rows


def layer_case(name: str, args: tuple, notes: list[str], numba_rows: tuple[str, ...]) -> list[Candidate]:
    import layers

    import compiler

    f = getattr(layers, name)
    dout = np.random.default_rng(1).normal(size=f(*args).shape)

    def call(prog, *a):
        out, cache = prog.forward_with_cache(*a)
        return float(np.sum(out * dout)), prog.backward(dout, cache)

    return flatgrad_rows(
        name, lambda jit, unroll: compiler.gradient(f, *args, layer=True, jit=jit, unroll=unroll), call, args, notes,
        numba_rows,
    )


def run(settings: harness.Settings, n: int, flat_numba: bool) -> int:
    import numba

    print("flatgrad benchmark: loops that stay loops (unroll=False) against every iteration written out")
    for line in harness.environment_lines(["numpy", "numba", "jax"]):
        print(line)
    numba.njit(lambda a: (a @ a.T + 1.0).sum())(np.ones((2, 2)))  # numba's start-up, paid here
    rng = np.random.default_rng(0)
    numba_rows = ("loops", "flat") if flat_numba else ("loops",)
    rnn = (rng.normal(size=(8, 30, 16)), rng.normal(size=(8, 32)), rng.normal(size=(16, 32)) / 4,
           rng.normal(size=(32, 32)) / 6, rng.normal(size=32))
    conv = (rng.normal(size=(4, 3, 8, 8)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4))
    cases = [
        (f"rosenbrock, n = {n}", lambda notes, skipped: rosenbrock_case(n, notes, skipped, numba_rows)),
        ("rnn_forward + backward, N = 8, T = 30, D = 16, H = 32",
         lambda notes, skipped: layer_case("rnn_forward", rnn, notes, numba_rows)),
        ("conv_forward_naive + backward, x 4x3x8x8, w 4x3x3x3",
         lambda notes, skipped: layer_case("conv_forward_naive", conv, notes, numba_rows)),
    ]
    baseline = "flatgrad NumPy, flat"
    for title, make in cases:
        notes: list[str] = []
        skipped: list[Skipped] = []
        candidates = make(notes, skipped)
        harness.check_agreement(candidates, reference=candidates[0].name, rtol=1e-9, atol=1e-12)
        print(f"\n== {title}")
        timings = harness.measure(candidates, settings)
        print(harness.render_table(timings, [Baseline(baseline, "vs flat NumPy"), Baseline(HAND, "vs hand numba")],
                                   skipped))
        for note in notes:
            print(note)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_timing_arguments(parser)
    parser.add_argument("--n", type=int, default=1000, help="Rosenbrock's coordinates (default 1000)")
    parser.add_argument("--flat-numba", action="store_true", help="also compile the flat modules under numba")
    args = parser.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="flatgrad-bench-")
    os.environ["FLATGRAD_CACHE_DIR"] = scratch  # real compiles, not loads from numba's cache
    try:
        return run(harness.settings_from(args), args.n, args.flat_numba)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
