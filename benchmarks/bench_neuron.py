"""Benchmark: one value_and_grad call of the lecture's sigmoid neuron.

    f(w0, x0, w1, x1, w2) = sigmoid(w0*x0 + w1*x1 + w2)   at (2, -1, -3, -2, -3)

times flatgrad's generated code (NumPy and numba backends, and the GradientProgram wrapper)
against hand-written flat code (Python/NumPy and numba) and, when they are installed, against
jax.jit, PyTorch autograd and HIPS autograd. Every implementation is checked against the others
before anything is timed. See benchmarks/README.md for how to read the table.

    python benchmarks/bench_neuron.py            # full run (about a minute)
    python benchmarks/bench_neuron.py --quick    # smoke run (a few seconds plus compiles)
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# Runnable as `python benchmarks/bench_neuron.py` from anywhere, without installing anything
# beyond the project: the repo root makes `compiler` and `benchmarks` importable, and the
# examples are plain user files imported by name (as the tests do).
for folder in (ROOT, EXAMPLES):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Baseline, Candidate, Skipped  # noqa: E402

ARGS = (2.0, -1.0, -3.0, -2.0, -3.0)
# The lecture's numbers (SPEC.md): value, then gradients in argument order.
EXPECTED = (0.7311, (-0.1966, 0.3932, -0.3932, -0.5898, 0.1966))

GEN_NUMBA = "flatgrad numba (generated)"
GEN_UNCHECKED = "flatgrad numba, argument checks taken out"
PROG_GRAD = "flatgrad numba grad via prog.grad"
MODULE_GRAD = "flatgrad numba grad, the module's own"
HAND_GRAD = "hand-written numba grad"
HAND_NUMBA = "hand-written numba"
JAX = "jax.jit(value_and_grad)"


# --------------------------------------------------------------------------- hand-written


def handwritten_numpy(w0, x0, w1, x1, w2):
    """The lecture's flat code, with np.exp as the generated NumPy code has it."""
    # forward pass
    dot = w0 * x0 + w1 * x1 + w2
    f = 1.0 / (1 + np.exp(-dot))  # sigmoid
    # backward pass
    ddot = (1 - f) * f  # sigmoid gate: local gradient from its output
    dw0 = x0 * ddot
    dx0 = w0 * ddot
    dw1 = x1 * ddot
    dx1 = w1 * ddot
    dw2 = 1.0 * ddot
    return f, (dw0, dx0, dw1, dx1, dw2)


def handwritten_grad(w0, x0, w1, x1, w2):
    """The gradients alone, as a training loop wants them."""
    f = 1.0 / (1 + np.exp(-(w0 * x0 + w1 * x1 + w2)))
    ddot = (1 - f) * f
    return x0 * ddot, w0 * ddot, x1 * ddot, w1 * ddot, 1.0 * ddot


def handwritten_python(w0, x0, w1, x1, w2):
    """The same with math.exp, word for word as in the lecture notes: plain Python floats."""
    dot = w0 * x0 + w1 * x1 + w2
    f = 1.0 / (1 + math.exp(-dot))
    ddot = (1 - f) * f
    dw0 = x0 * ddot
    dx0 = w0 * ddot
    dw1 = x1 * ddot
    dx1 = w1 * ddot
    dw2 = 1.0 * ddot
    return f, (dw0, dx0, dw1, dx1, dw2)


# --------------------------------------------------------------------------- candidates


def flatgrad_candidates(notes: list[str]) -> list[Candidate]:
    import numba
    from neuron import neuron

    import compiler

    prog = compiler.gradient(neuron, *ARGS)
    numpy_vg = prog.module.value_and_grad

    # numba's first compile in a process also pays numba's own start-up (and its first use of
    # np.exp and of tuple returns); pay it on a throwaway function so that neither compile time
    # below carries it, whichever is compiled first.
    numba.njit(lambda x: (1.0 / (1 + np.exp(-x)), (x, x)))(1.0)

    jprog = compiler.gradient(neuron, *ARGS, jit="numba")
    numba_vg = jprog.module.value_and_grad
    _, gen_compile = harness.time_once(lambda: numba_vg(*ARGS))

    hand_numba = numba.njit(handwritten_numpy)
    _, hand_compile = harness.time_once(lambda: hand_numba(*ARGS))
    optimized_numba_vg = compiler.gradient(neuron, *ARGS, jit="numba", optimize=True).module.value_and_grad
    _, optimized_compile = harness.time_once(lambda: optimized_numba_vg(*ARGS))
    optimized_vg = compiler.gradient(neuron, *ARGS, optimize=True).module.value_and_grad

    # Dispatch floor: a jitted function that does no arithmetic but takes five floats and
    # returns the same (float, 5-tuple) structure. Calling any such numba function from Python
    # costs at least this (argument unboxing, dispatch, boxing the nested tuple).
    floor = numba.njit(lambda a, b, c, d, e: (a, (b, c, d, e, a)))
    floor(*ARGS)

    notes.append(
        f"numba first call (compile), excluded from the table: generated value_and_grad "
        f"{harness.format_time(gen_compile)}, optimize=True {harness.format_time(optimized_compile)}, "
        f"hand-written {harness.format_time(hand_compile)}"
    )
    cached = cached_load_time(jprog.module)
    if cached:
        notes.append(cached)

    # `grad` alone, as a training loop calls it: through the program, straight from the module,
    # and written by hand; and value_and_grad without the module's argument checks
    unchecked_vg = compiler.program.load_module(harness.without_checks(jprog.source)).value_and_grad
    hand_grad = numba.njit(handwritten_grad)
    for grad in (jprog.grad, jprog.module.grad, hand_grad):
        np.testing.assert_allclose(grad(*ARGS), EXPECTED[1], atol=1e-4)

    return [
        Candidate(GEN_NUMBA, numba_vg, ARGS),
        Candidate("flatgrad numba, optimize=True", optimized_numba_vg, ARGS),
        Candidate(GEN_UNCHECKED, unchecked_vg, ARGS),
        Candidate(HAND_NUMBA, hand_numba, ARGS),
        Candidate(PROG_GRAD, jprog.grad, ARGS, check=False),
        Candidate(MODULE_GRAD, jprog.module.grad, ARGS, check=False),
        Candidate(HAND_GRAD, hand_grad, ARGS, check=False),
        Candidate("(numba call floor: njit returning its inputs)", floor, ARGS, check=False),
        Candidate("flatgrad NumPy (generated)", numpy_vg, ARGS),
        Candidate("flatgrad NumPy, optimize=True", optimized_vg, ARGS),
        Candidate("flatgrad NumPy via prog.value_and_grad", prog.value_and_grad, ARGS),
        Candidate("hand-written NumPy (np.exp)", handwritten_numpy, ARGS),
        Candidate("hand-written Python (math.exp)", handwritten_python, ARGS),
    ]


def cached_load_time(module) -> str:
    """Import the generated numba module afresh from its file: numba.njit(cache=True) should
    now load value_and_grad's machine code from its on-disk cache instead of compiling."""
    spec = importlib.util.spec_from_file_location(module.__name__ + "_again", module.__file__)
    if spec is None or spec.loader is None:
        return ""
    again = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(again)
    _, seconds = harness.time_once(lambda: again.value_and_grad(*ARGS))
    hits = sum(again.value_and_grad.stats.cache_hits.values())
    how = "loaded from numba's on-disk cache" if hits else "recompiled (no numba cache hit)"
    return f"numba first call in a fresh import of the generated module: {harness.format_time(seconds)}, {how}"


def jax_candidates(notes: list[str], skipped: list[Skipped]) -> list[Candidate]:
    jax, reason = harness.optional_import("jax")
    if jax is None:
        skipped.append(Skipped(JAX, reason))
        return []
    jax.config.update("jax_enable_x64", True)  # float64, like every other implementation here
    import jax.numpy as jnp

    def neuron_jax(w0, x0, w1, x1, w2):
        return 1.0 / (1.0 + jnp.exp(-(w0 * x0 + w1 * x1 + w2)))

    vg = jax.jit(jax.value_and_grad(neuron_jax, argnums=(0, 1, 2, 3, 4)))
    block = jax.block_until_ready

    def jax_call(w0, x0, w1, x1, w2):
        return block(vg(w0, x0, w1, x1, w2))

    _, first = harness.time_once(lambda: jax_call(*ARGS))
    notes.append(f"jax first call (trace + XLA compile), excluded from the table: {harness.format_time(first)}")
    device_args = tuple(jnp.asarray(a) for a in ARGS)
    return [
        Candidate(JAX, jax_call, ARGS),
        Candidate("jax.jit, arguments already jax arrays", jax_call, device_args),
    ]


def torch_candidates(skipped: list[Skipped]) -> list[Candidate]:
    name = "PyTorch autograd"
    torch, reason = harness.optional_import("torch")
    if torch is None:
        skipped.append(Skipped(name, reason))
        return []
    tensor, sigmoid, f64 = torch.tensor, torch.sigmoid, torch.float64

    def torch_call(w0, x0, w1, x1, w2):
        # Fresh leaf tensors each call (no .grad left over from the previous one).
        tw0 = tensor(w0, dtype=f64, requires_grad=True)
        tx0 = tensor(x0, dtype=f64, requires_grad=True)
        tw1 = tensor(w1, dtype=f64, requires_grad=True)
        tx1 = tensor(x1, dtype=f64, requires_grad=True)
        tw2 = tensor(w2, dtype=f64, requires_grad=True)
        out = sigmoid(tw0 * tx0 + tw1 * tx1 + tw2)
        out.backward()
        return out.item(), (tw0.grad.item(), tx0.grad.item(), tw1.grad.item(), tx1.grad.item(), tw2.grad.item())

    return [Candidate(name, torch_call, ARGS)]


def autograd_candidates(skipped: list[Skipped]) -> list[Candidate]:
    name = "HIPS autograd value_and_grad"
    autograd, reason = harness.optional_import("autograd")
    if autograd is None:
        skipped.append(Skipped(name, reason))
        return []
    import autograd.numpy as anp

    def neuron_autograd(w0, x0, w1, x1, w2):
        return 1.0 / (1.0 + anp.exp(-(w0 * x0 + w1 * x1 + w2)))

    return [Candidate(name, autograd.value_and_grad(neuron_autograd, argnum=(0, 1, 2, 3, 4)), ARGS)]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_timing_arguments(parser)
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="use flatgrad's usual module cache (FLATGRAD_CACHE_DIR or ~/.cache/flatgrad), so the numba "
        "'compile' figure may be a load from numba's on-disk cache; by default a fresh temporary folder "
        "is used and the figure is a real compile",
    )
    args = parser.parse_args(argv)
    settings = harness.settings_from(args)

    scratch = None
    if not args.warm_cache:
        scratch = tempfile.mkdtemp(prefix="flatgrad-bench-")
        os.environ["FLATGRAD_CACHE_DIR"] = scratch
    try:
        return run(settings)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def run(settings: harness.Settings) -> int:
    notes: list[str] = []
    skipped: list[Skipped] = []
    candidates = flatgrad_candidates(notes)
    candidates += jax_candidates(notes, skipped)
    candidates += torch_candidates(skipped)
    candidates += autograd_candidates(skipped)

    harness.check_agreement(candidates, reference=HAND_NUMBA, rtol=1e-12, atol=1e-15, expected=EXPECTED)
    checked = sum(c.check for c in candidates)

    print("flatgrad benchmark: one value_and_grad call of sigmoid(w0*x0 + w1*x1 + w2) at (2, -1, -3, -2, -3)")
    for line in harness.environment_lines(["numpy", "numba", "jax", "jaxlib", "torch", "autograd"]):
        print(line)
    mode = " (--quick: smoke run, figures are rough)" if settings.quick else ""
    print(
        f"{checked} implementations agree on value and gradients (rtol 1e-12); timing "
        f"{settings.repeats} repeats of >= {settings.min_time:g} s each, median per call{mode}"
    )
    print()

    timings = harness.measure(candidates, settings)
    baselines = [Baseline(HAND_NUMBA, "vs hand numba"), Baseline(JAX, "vs jax.jit")]
    print(harness.render_table(timings, baselines, skipped))
    print()
    for s in skipped:
        print(f"skipped {s.name}: {s.reason}")
    for note in notes:
        print(note)
    print()
    print("targets:")
    targets = [
        harness.ratio_target(
            timings, "generated numba within 1.1x of hand-written numba", GEN_NUMBA, HAND_NUMBA, at_most=1.1
        ),
        harness.ratio_target(timings, "generated numba at least 50x faster than jax.jit", JAX, GEN_NUMBA, at_least=50),
        harness.ratio_target(
            timings, "prog.grad under numba within 1.3x of hand-written numba grad", PROG_GRAD, HAND_GRAD, at_most=1.3
        ),
        harness.ratio_target(
            timings, "prog.grad costs no more than the module's grad (1.05x)", PROG_GRAD, MODULE_GRAD, at_most=1.05
        ),
        harness.ratio_target(
            timings, "argument checks cost at most 1.1x (numba value_and_grad)", GEN_NUMBA, GEN_UNCHECKED, at_most=1.1
        ),
    ]
    print(harness.render_targets(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
