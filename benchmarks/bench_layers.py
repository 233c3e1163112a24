"""The course's naive convolution (examples/layers.py), a Python loop over output positions that
flatgrad unrolls (`unroll=True`; bench_loops.py times it written as loops): what emission and
numba's compile cost as the loop grows, and what a call costs.

1. Emission at the layers issue's size, x (2, 3, 8, 8) and w (4, 3, 3, 3): equations, lines,
   numba part functions and seconds, for the NumPy and the numba module.
2. One forward and backward call at the issue's size: the generated NumPy module against the
   course's hand-written naive backward (the same loops, written by hand).
3. numba's compile time against the number of unrolled output positions (a fresh cache each
   time): forward and backward, and the seconds per unrolled block (one position, one filter).

    python benchmarks/bench_layers.py [--quick] [--positions 1,4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "examples")]

import harness  # noqa: E402
import layers  # noqa: E402

import compiler  # noqa: E402

ISSUE_SIZE = {"x": (2, 3, 8, 8), "w": (4, 3, 3, 3), "b": (4,)}


def conv_arguments(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for shape in shapes.values()]


def conv_program(shapes: dict[str, tuple[int, ...]], jit: str | None) -> tuple[compiler.GradientProgram, float]:
    start = time.perf_counter()
    program = compiler.gradient(layers.conv_forward_naive, *conv_arguments(shapes), layer=True, jit=jit, unroll=True)
    return program, time.perf_counter() - start


def part_count(source: str) -> int:
    """The numba part functions in a module: each is named twice, where defined and where called."""
    return source.count("_part") // 2


def emission() -> str:
    lines = [
        "== 1. emission of conv_forward_naive at x (2, 3, 8, 8), w (4, 3, 3, 3): 64 positions x 4 filters",
        f"{'module':>7}  {'equations':>9}  {'lines':>6}  {'parts':>5}  {'emit':>7}",
    ]
    for jit in (None, "numba"):
        program, seconds = conv_program(ISSUE_SIZE, jit)
        lines.append(
            f"{jit or 'NumPy':>7}  {len(program.graph.eqns):>9}  {program.source.count(chr(10)):>6}  "
            f"{part_count(program.source):>5}  {seconds:>6.2f}s"
        )
    return "\n".join(lines)


def numba_compile(positions: list[int]) -> None:
    """Square inputs of side h (padding 1 keeps h x h positions), 3 channels and 2 filters; each
    row printed as it is measured, as one takes minutes."""
    print("== 3. numba compile of conv_forward_naive against unrolled positions (3 channels, 2 filters, fresh cache)")
    headers = ("positions", "blocks", "lines", "parts", "forward", "backward", "per block")
    print("  ".join(f"{h:>9}" for h in headers))
    for count in positions:
        side = round(count**0.5)
        shapes = {"x": (2, 3, side, side), "w": (2, 3, 3, 3), "b": (2,)}
        program, _ = conv_program(shapes, "numba")
        arguments = conv_arguments(shapes)
        (out, cache), forward = harness.time_once(lambda: program.forward_with_cache(*arguments))
        _, backward = harness.time_once(lambda: program.backward(np.ones_like(out), cache))
        blocks = side * side * 2
        sizes = (side * side, blocks, program.source.count("\n"), part_count(program.source))
        seconds = (forward, backward, (forward + backward) / blocks)
        print("  ".join([*(f"{n:>9}" for n in sizes), *(f"{t:>8.1f}s" for t in seconds)]), flush=True)


def conv_backward_by_hand(dout, x, w, b):
    """The naive convolution's backward as a course writes it: the forward's loops, each output
    position's upstream gradient spread back over its window and its filter."""
    pad, (F, _, HH, WW) = 1, w.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dx_pad, dw = np.zeros_like(x_pad), np.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            window = x_pad[:, :, i : i + HH, j : j + WW]
            for f in range(F):
                dw[f] += np.sum(window * dout[:, f, i, j][:, None, None, None], axis=0)
                dx_pad[:, :, i : i + HH, j : j + WW] += w[f] * dout[:, f, i, j][:, None, None, None]
    return dx_pad[:, :, pad:-pad, pad:-pad], dw, db


def calls(settings: harness.Settings) -> str:
    program, _ = conv_program(ISSUE_SIZE, None)
    x, w, b = conv_arguments(ISSUE_SIZE)
    dout = np.random.default_rng(1).normal(size=(2, 4, 8, 8))
    forward, backward = program.forward_with_cache, program.backward

    def generated(x, w, b, dout):
        _, cache = forward(x, w, b)
        return backward(dout, cache)

    def by_hand(x, w, b, dout):
        layers.conv_forward_naive(x, w, b)
        return conv_backward_by_hand(dout, x, w, b)

    candidates = [
        harness.Candidate("flatgrad NumPy (generated)", generated, (x, w, b, dout), harness.flatten),
        harness.Candidate("hand-written naive NumPy", by_hand, (x, w, b, dout), harness.flatten),
    ]
    harness.check_agreement(candidates, reference=candidates[1].name, rtol=1e-9, atol=1e-12)
    timings = harness.measure(candidates, settings, progress=False)
    table = harness.render_table(timings, baselines=[harness.Baseline(candidates[1].name, "vs hand")])
    return "== 2. one forward and backward at the issue's size\n" + table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_timing_arguments(parser)
    parser.add_argument("--positions", default=None, help="unrolled positions to compile under numba (default 1,4)")
    args = parser.parse_args(argv)
    settings = harness.settings_from(args)
    positions = [int(p) for p in (args.positions or ("1" if settings.quick else "1,4")).split(",")]
    os.environ.setdefault("FLATGRAD_CACHE_DIR", tempfile.mkdtemp(prefix="flatgrad-bench-"))
    print("\n".join(harness.environment_lines(["numpy", "numba"])))
    print(emission())
    print(calls(settings), flush=True)
    numba_compile(positions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
