"""Benchmark: the sigmoid neuron's value and five gradients at a million points.

    f(w0, x0, w1, x1, w2) = sigmoid(w0*x0 + w1*x1 + w2), each argument an array of 10^6 points

times flatgrad's vectorized numba module (`vectorize=True`, one thread, and
`vectorize="parallel"`) against a hand-written fused numba loop, hand-written NumPy array code,
and, when installed, `jax.jit(jax.vmap(jax.value_and_grad(f)))`. Every implementation is
checked against the hand-written loop first. Compile times are printed beside the table.

    python benchmarks/bench_vectorize.py            # full run
    python benchmarks/bench_vectorize.py --quick    # smoke run
    python benchmarks/bench_vectorize.py --points 100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
for folder in (ROOT, EXAMPLES):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Baseline, Candidate, Skipped  # noqa: E402

ARGS = (2.0, -1.0, -3.0, -2.0, -3.0)
HAND_LOOP = "hand-written numba loop (fused, one thread)"
FLAT_CPU = "flatgrad vectorize=True (one thread)"
FLAT_PARALLEL = 'flatgrad vectorize="parallel"'
JAX = "jax.jit(jax.vmap(jax.value_and_grad))"


def hand_loop_function():
    import numba

    @numba.njit(cache=False)
    def loop(w0, x0, w1, x1, w2, value, g0, g1, g2, g3, g4):
        for i in range(value.shape[0]):
            s = w0[i] * x0[i] + w1[i] * x1[i] + w2[i]
            f = 1.0 / (1.0 + np.exp(-s))
            d = (1.0 - f) * f
            value[i] = f
            g0[i] = x0[i] * d
            g1[i] = w0[i] * d
            g2[i] = x1[i] * d
            g3[i] = w1[i] * d
            g4[i] = d

    def call(w0, x0, w1, x1, w2):
        outs = [np.empty(w0.shape[0]) for _ in range(6)]
        loop(w0, x0, w1, x1, w2, *outs)
        return outs[0], tuple(outs[1:])

    return loop, call


def handwritten_numpy(w0, x0, w1, x1, w2):
    f = 1.0 / (1 + np.exp(-(w0 * x0 + w1 * x1 + w2)))
    d = (1 - f) * f
    return f, (x0 * d, w0 * d, x1 * d, w1 * d, d)


def flatgrad_candidates(points: tuple, notes: list[str]) -> list[Candidate]:
    from neuron import neuron

    import compiler

    small = tuple(p[:10] for p in points)
    _, hand = hand_loop_function()
    _, seconds = harness.time_once(lambda: hand(*small))
    notes.append(f"compile (first call): hand-written loop {harness.format_time(seconds)}")
    candidates = [Candidate(HAND_LOOP, hand, points)]
    for name, target in ((FLAT_CPU, True), (FLAT_PARALLEL, "parallel")):
        (prog, emit) = harness.time_once(lambda: compiler.gradient(neuron, *ARGS, jit="numba", vectorize=target))
        _, compile_seconds = harness.time_once(lambda: prog.value_and_grad(*small))
        compiled = harness.format_time(compile_seconds)
        notes.append(f"{name}: emit {harness.format_time(emit)}, numba compile (first call) {compiled}")
        candidates.append(Candidate(name, prog.value_and_grad, points))
    candidates.append(Candidate("hand-written NumPy (array arithmetic)", handwritten_numpy, points))
    return candidates


def jax_candidates(points: tuple, notes: list[str], skipped: list[Skipped]) -> list[Candidate]:
    jax, reason = harness.optional_import("jax")
    if jax is None:
        skipped.append(Skipped(JAX, reason))
        return []
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def neuron_jax(w0, x0, w1, x1, w2):
        return 1.0 / (1.0 + jnp.exp(-(w0 * x0 + w1 * x1 + w2)))

    vg = jax.jit(jax.vmap(jax.value_and_grad(neuron_jax, argnums=(0, 1, 2, 3, 4))))

    def call(*args):
        return jax.block_until_ready(vg(*args))

    _, first = harness.time_once(lambda: call(*points))
    notes.append(f"jax first call (trace + XLA compile): {harness.format_time(first)}")
    return [Candidate(JAX, call, points, result=lambda out: (np.asarray(out[0]), tuple(map(np.asarray, out[1]))))]


def check_agreement(candidates: list[Candidate]) -> None:
    """Every implementation's values and gradients equal the hand-written loop's, at every point."""
    def arrays(candidate: Candidate) -> list[np.ndarray]:
        value, grads = candidate.result(candidate.call())
        return [np.asarray(value), *map(np.asarray, grads)]

    reference = arrays(next(c for c in candidates if c.name == HAND_LOOP))
    for candidate in candidates:
        for ours, theirs in zip(arrays(candidate), reference, strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15, err_msg=candidate.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_timing_arguments(parser)
    parser.add_argument("--points", type=int, default=10**6, help="points per argument (default 10^6)")
    args = parser.parse_args(argv)
    settings = harness.settings_from(args)
    scratch = tempfile.mkdtemp(prefix="flatgrad-bench-")
    os.environ["FLATGRAD_CACHE_DIR"] = scratch  # a real compile, not a load from numba's cache
    try:
        return run(settings, args.points)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(settings: harness.Settings, n: int) -> int:
    rng = np.random.default_rng(0)
    points = tuple(rng.normal(size=n) for _ in ARGS)
    notes: list[str] = []
    skipped: list[Skipped] = []
    candidates = flatgrad_candidates(points, notes) + jax_candidates(points, notes, skipped)
    check_agreement(candidates)
    print(f"flatgrad benchmark: sigmoid neuron value and 5 gradients at {n} points (float64)")
    for line in harness.environment_lines(["numpy", "numba", "jax", "jaxlib"]):
        print(line)
    print(f"cores: {os.cpu_count()}; median per call of {settings.repeats} repeats")
    print()
    timings = harness.measure(candidates, settings)
    print(harness.render_table(timings, [Baseline(HAND_LOOP, "vs hand loop"), Baseline(JAX, "vs jax")], skipped))
    print()
    for s in skipped:
        print(f"skipped {s.name}: {s.reason}")
    for note in notes:
        print(note)
    print()
    print("targets:")
    targets = [
        harness.ratio_target(timings, "vectorized, one thread, within 1.2x of the hand-written loop", FLAT_CPU,
                             HAND_LOOP, at_most=1.2),
        harness.ratio_target(timings, "vectorized faster than jax.jit(vmap(value_and_grad))", JAX, FLAT_CPU,
                             at_least=1.0),
    ]
    print(harness.render_targets(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
