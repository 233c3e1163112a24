"""Benchmark: one value_and_grad call of the array examples, at a small and a medium size.

    svm_net(X, y, W1, b1, W2, b2)   two-layer ReLU net, multiclass hinge loss, L2 term
                                    (examples/svm_net.py; gradient w.r.t. W1, b1, W2, b2)
    softmax(X, y, W, b)             softmax classifier, cross-entropy loss, L2 term
                                    (examples/softmax.py; gradient w.r.t. W, b)
    mlp(X, t, W1, b1, W2, b2)       two-layer tanh net, mean squared error against targets t
                                    (examples/mlp.py; gradient w.r.t. W1, b1, W2, b2)

    small:  N=8 examples, D=4 features, H=8 hidden units, C=3 classes (outputs)
    medium: N=256, D=64, H=128, C=10
    large:  N=20000, D=64, H=128, C=10

times flatgrad's generated code (NumPy and numba backends) against a hand-written gradient in
the course-assignment style (NumPy, and the same under numba.njit) and, when they are installed,
against jax.jit, PyTorch autograd and HIPS autograd. Every implementation is checked against
flatgrad's NumPy output before anything is timed. See benchmarks/README.md for how to read it.

    python benchmarks/bench_arrays.py            # full run (about two minutes: 7 repeats of >= 0.1 s)
    python benchmarks/bench_arrays.py --quick    # smoke run (about half a minute, mostly compiles)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import timeit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def threads_from(argv: list[str]) -> int:
    """The --threads value (default 1), read before argparse runs: BLAS and OpenMP read their
    thread counts when they load, that is when NumPy is imported below."""
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        else:
            value = argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return 1  # argparse reports the bad value later
    return 1


def limit_threads(threads: int) -> None:
    """Give NumPy's and scipy's BLAS (numba's matmul), PyTorch and XLA `threads` threads each;
    0 leaves every library its default. Variables already set in the environment win."""
    if threads <= 0:
        return
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {XLA_SINGLE_THREAD}".strip()


if __name__ == "__main__":  # before NumPy is imported (python benchmarks/bench_arrays.py, or -m)
    limit_threads(threads_from(sys.argv[1:]))

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
for folder in (ROOT, EXAMPLES):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import mlp as mlp_example  # noqa: E402  (examples/mlp.py)
import numpy as np  # noqa: E402
import softmax as softmax_example  # noqa: E402  (examples/softmax.py)
import svm_net as svm_example  # noqa: E402  (examples/svm_net.py)

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Baseline, Candidate, Skipped, Target, Timing  # noqa: E402

SVM_REG = svm_example.REG  # the examples' L2 strengths: the hand-written code uses the same
SOFTMAX_REG = softmax_example.REG

SIZES = {
    "small": dict(N=8, D=4, H=8, C=3),
    "medium": dict(N=256, D=64, H=128, C=10),
    "large": dict(N=20000, D=64, H=128, C=10),
}

GEN_NUMPY = "flatgrad NumPy (generated)"
GEN_PROG = "flatgrad NumPy via prog.value_and_grad"
GEN_NUMBA = "flatgrad numba (generated)"
GEN_OPTIMIZED = "flatgrad NumPy, optimize=True"
GEN_OPTIMIZED_NUMBA = "flatgrad numba, optimize=True"
NUMPY_UNCHECKED = "flatgrad NumPy, argument checks taken out"
NUMBA_UNCHECKED = "flatgrad numba, argument checks taken out"
HAND_NUMPY = "hand-written NumPy"
HAND_NUMBA = "hand-written numba"
JAX = "jax.jit(value_and_grad)"
JAX_DEVICE = "jax.jit, arguments already jax arrays"
TORCH = "PyTorch autograd"
AUTOGRAD = "HIPS autograd value_and_grad"
BEST = "flatgrad best (min of NumPy, optimized NumPy, numba, optimized numba)"
FLATGRAD_ROWS = (GEN_NUMPY, GEN_OPTIMIZED, GEN_NUMBA, GEN_OPTIMIZED_NUMBA)
# Rows whose arrays numba's runtime, XLA or PyTorch allocate, which tracemalloc does not see
UNTRACED = (GEN_NUMBA, GEN_OPTIMIZED_NUMBA, NUMBA_UNCHECKED, HAND_NUMBA, JAX, JAX_DEVICE, TORCH)

# Agreement with flatgrad's NumPy output: value and every gradient element. Different but
# equivalent formulas (dscores = probs - onehot vs the chain through exp and the division)
# round differently, so a gradient element near zero gets an absolute tolerance.
RTOL, ATOL = 1e-10, 1e-13


# =========================================================================== hand-written NumPy
# The course-assignment style (cs231n): the forward pass, then the backward pass by hand,
# starting from dscores. Same loss as the examples, L2 term and margins[.., y] = 0 included.


def svm_hand_numpy(X, y, W1, b1, W2, b2):
    N = X.shape[0]
    # forward pass
    h = np.maximum(0, X @ W1 + b1)
    scores = h @ W2 + b2
    correct = scores[np.arange(N), y]
    margins = np.maximum(0, scores - correct[:, None] + 1.0)
    margins[np.arange(N), y] = 0
    loss = np.sum(margins) / N + SVM_REG * (np.sum(W1 * W1) + np.sum(W2 * W2))
    # backward pass
    dscores = (margins > 0).astype(np.float64)  # every positive margin counts once ...
    dscores[np.arange(N), y] = -np.sum(dscores, axis=1)  # ... and against the correct class
    dscores /= N
    dW2 = h.T @ dscores + 2 * SVM_REG * W2
    db2 = dscores.sum(axis=0)
    dh = dscores @ W2.T
    dh[h <= 0] = 0  # ReLU gate
    dW1 = X.T @ dh + 2 * SVM_REG * W1
    db1 = dh.sum(axis=0)
    return loss, (dW1, db1, dW2, db2)


def softmax_hand_numpy(X, y, W, b):
    N = X.shape[0]
    # forward pass
    scores = X @ W + b
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    exp_scores = np.exp(shifted)
    probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    loss = -np.sum(np.log(probs[np.arange(N), y])) / N + 0.5 * SOFTMAX_REG * np.sum(W * W)
    # backward pass
    dscores = probs  # probs is ours: update it in place, as the assignment does
    dscores[np.arange(N), y] -= 1
    dscores /= N
    dW = X.T @ dscores + SOFTMAX_REG * W
    db = dscores.sum(axis=0)
    return loss, (dW, db)


# =========================================================================== hand-written numba
# The same code under numba.njit, with loops where numba has no NumPy spelling: per-row
# index reads and writes (scores[arange, y], margins[arange, y] = 0, dscores[arange, y] -= 1),
# and the keepdims / axis reductions of softmax. Everything else is the NumPy code verbatim.


def mlp_hand_numpy(X, t, W1, b1, W2, b2):
    N, C = t.shape
    # forward pass
    h = np.tanh(X @ W1 + b1)
    diff = h @ W2 + b2 - t
    loss = np.mean(diff**2)
    # backward pass
    dpred = diff * (2.0 / (N * C))
    dW2 = h.T @ dpred
    db2 = dpred.sum(axis=0)
    dz = (dpred @ W2.T) * (1 - h * h)
    dW1 = X.T @ dz
    db1 = dz.sum(axis=0)
    return loss, (dW1, db1, dW2, db2)


def svm_hand_numba_py(X, y, W1, b1, W2, b2):
    N = X.shape[0]
    h = np.maximum(0.0, X @ W1 + b1)
    scores = h @ W2 + b2
    margins = np.empty_like(scores)
    for i in range(N):
        margins[i] = np.maximum(0.0, scores[i] - scores[i, y[i]] + 1.0)
        margins[i, y[i]] = 0.0
    loss = np.sum(margins) / N + SVM_REG * (np.sum(W1 * W1) + np.sum(W2 * W2))
    dscores = (margins > 0).astype(np.float64)
    for i in range(N):
        dscores[i, y[i]] = -np.sum(dscores[i])
    dscores /= N
    dW2 = h.T @ dscores + 2 * SVM_REG * W2
    db2 = dscores.sum(axis=0)
    dh = dscores @ W2.T
    dh *= h > 0  # ReLU gate (numba has no boolean-mask assignment on 2-d arrays)
    dW1 = X.T @ dh + 2 * SVM_REG * W1
    db1 = dh.sum(axis=0)
    return loss, (dW1, db1, dW2, db2)


def softmax_hand_numba_py(X, y, W, b):
    N = X.shape[0]
    scores = X @ W + b
    probs = np.empty_like(scores)
    logp = 0.0
    for i in range(N):
        e = np.exp(scores[i] - np.max(scores[i]))
        probs[i] = e / np.sum(e)
        logp += np.log(probs[i, y[i]])
    loss = -logp / N + 0.5 * SOFTMAX_REG * np.sum(W * W)
    dscores = probs
    for i in range(N):
        dscores[i, y[i]] -= 1
    dscores /= N
    dW = X.T @ dscores + SOFTMAX_REG * W
    db = dscores.sum(axis=0)
    return loss, (dW, db)


mlp_hand_numba_py = mlp_hand_numpy  # nothing in it that numba does not compile as it is


# =========================================================================== problems


@dataclass
class Problem:
    name: str  # the example's function name
    fn: Callable
    wrt: tuple[str, ...]
    hand_numpy: Callable
    hand_numba_py: Callable
    inputs: Callable[[np.random.Generator, dict], tuple]  # (rng, size) -> the arguments
    loss_for: Callable[[Any], Callable]  # array module (jnp, anp, torch shim) -> functional loss
    torch_loss: Callable | None = None
    hand_numba: Any = None  # compiled once per problem (all sizes share numba types)


def svm_inputs(rng: np.random.Generator, s: dict) -> tuple:
    N, D, H, C = s["N"], s["D"], s["H"], s["C"]
    X = rng.standard_normal((N, D))
    y = rng.integers(0, C, N).astype(np.int64)
    W1 = rng.standard_normal((D, H)) / np.sqrt(D)
    b1 = 0.1 * rng.standard_normal(H)
    W2 = rng.standard_normal((H, C)) / np.sqrt(H)
    b2 = 0.1 * rng.standard_normal(C)
    return X, y, W1, b1, W2, b2


def softmax_inputs(rng: np.random.Generator, s: dict) -> tuple:
    N, D, C = s["N"], s["D"], s["C"]
    X = rng.standard_normal((N, D))
    y = rng.integers(0, C, N).astype(np.int64)
    W = rng.standard_normal((D, C)) / np.sqrt(D)
    b = 0.1 * rng.standard_normal(C)
    return X, y, W, b


def mlp_inputs(rng: np.random.Generator, s: dict) -> tuple:
    N, D, H, C = s["N"], s["D"], s["H"], s["C"]
    X = rng.standard_normal((N, D))
    t = rng.standard_normal((N, C))
    W1 = rng.standard_normal((D, H)) / np.sqrt(D)
    b1 = 0.1 * rng.standard_normal(H)
    W2 = rng.standard_normal((H, C)) / np.sqrt(H)
    b2 = 0.1 * rng.standard_normal(C)
    return X, t, W1, b1, W2, b2


# Functional losses for the peers (no in-place updates), written once over an array module.


def svm_loss_for(xp) -> Callable:
    def svm_functional(X, y, W1, b1, W2, b2):
        N, C = X.shape[0], W2.shape[1]
        h = xp.maximum(0.0, X @ W1 + b1)
        scores = h @ W2 + b2
        correct = scores[xp.arange(N), y]
        margins = xp.maximum(0.0, scores - correct[:, None] + 1.0)
        margins = xp.where(xp.arange(C)[None, :] == y[:, None], 0.0, margins)
        data_loss = xp.sum(margins) / N
        reg_loss = SVM_REG * (xp.sum(W1 * W1) + xp.sum(W2 * W2))
        return data_loss + reg_loss

    return svm_functional


def softmax_loss_for(xp) -> Callable:
    def softmax_functional(X, y, W, b):
        N = X.shape[0]
        scores = X @ W + b
        shifted = scores - xp.max(scores, axis=1, keepdims=True)
        exp_scores = xp.exp(shifted)
        probs = exp_scores / xp.sum(exp_scores, axis=1, keepdims=True)
        correct_logprobs = -xp.log(probs[xp.arange(N), y])
        data_loss = xp.sum(correct_logprobs) / N
        reg_loss = 0.5 * SOFTMAX_REG * xp.sum(W * W)
        return data_loss + reg_loss

    return softmax_functional


def mlp_loss_for(xp) -> Callable:
    def mlp_functional(X, t, W1, b1, W2, b2):
        return xp.mean((xp.tanh(X @ W1 + b1) @ W2 + b2 - t) ** 2)

    return mlp_functional


def svm_torch(torch) -> Callable:
    def svm_functional(X, y, W1, b1, W2, b2):
        N, C = X.shape[0], W2.shape[1]
        h = torch.relu(X @ W1 + b1)
        scores = h @ W2 + b2
        correct = scores[torch.arange(N), y]
        margins = torch.relu(scores - correct[:, None] + 1.0)
        margins = torch.where(torch.arange(C)[None, :] == y[:, None], 0.0, margins)
        return torch.sum(margins) / N + SVM_REG * (torch.sum(W1 * W1) + torch.sum(W2 * W2))

    return svm_functional


def softmax_torch(torch) -> Callable:
    def softmax_functional(X, y, W, b):
        N = X.shape[0]
        scores = X @ W + b
        shifted = scores - torch.amax(scores, dim=1, keepdim=True)
        exp_scores = torch.exp(shifted)
        probs = exp_scores / torch.sum(exp_scores, dim=1, keepdim=True)
        correct_logprobs = -torch.log(probs[torch.arange(N), y])
        return torch.sum(correct_logprobs) / N + 0.5 * SOFTMAX_REG * torch.sum(W * W)

    return softmax_functional


PROBLEMS = [
    Problem(
        "svm_net",
        svm_example.svm_net,
        ("W1", "b1", "W2", "b2"),
        svm_hand_numpy,
        svm_hand_numba_py,
        svm_inputs,
        svm_loss_for,
        svm_torch,
    ),
    Problem(
        "softmax",
        softmax_example.softmax,
        ("W", "b"),
        softmax_hand_numpy,
        softmax_hand_numba_py,
        softmax_inputs,
        softmax_loss_for,
        softmax_torch,
    ),
    Problem(
        "mlp",
        mlp_example.mlp,
        ("W1", "b1", "W2", "b2"),
        mlp_hand_numpy,
        mlp_hand_numba_py,
        mlp_inputs,
        mlp_loss_for,
        mlp_loss_for,  # torch has tanh and mean under the same names
    ),
]


# =========================================================================== candidates


@dataclass
class Case:
    """One table: a problem at a size, its candidates, notes and skips."""

    problem: Problem
    size: str
    args: tuple
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    compile_times: dict[str, float] = field(default_factory=dict)  # numba's first calls, seconds
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in SIZES[self.size].items() if self.problem.name != "softmax" or k != "H")
        grads = ", ".join(self.problem.wrt)
        return f"{self.problem.name}, {self.size} ({dims}): value and gradients w.r.t. {grads}"


def argnums(problem: Problem) -> tuple[int, ...]:
    params = list(problem.fn.__code__.co_varnames[: problem.fn.__code__.co_argcount])
    return tuple(params.index(name) for name in problem.wrt)


COMPILED = (GEN_NUMBA, GEN_OPTIMIZED_NUMBA, HAND_NUMBA)


def compile_seconds(problem: str, size: str, which: str) -> float:
    """The first call of `which` (one of COMPILED) at `size`: numba's compile, in this process.
    numba's own start-up is paid before, on a throwaway function."""
    import numba

    import compiler

    numba.njit(lambda a: (a @ a.T + 1.0).sum())(np.ones((2, 2)))
    p = next(p for p in PROBLEMS if p.name == problem)
    args = p.inputs(np.random.default_rng(0), SIZES[size])
    if which == HAND_NUMBA:
        function = numba.njit(p.hand_numba_py)
    else:
        function = compiler.gradient(p.fn, *args, wrt=p.wrt, jit="numba", optimize=which == GEN_OPTIMIZED_NUMBA)
        function = function.module.value_and_grad
    return harness.time_once(lambda: function(*args))[1]


def in_fresh_process(call: str) -> list[float]:
    """The numbers `bench_arrays.<call>` returns, computed in a new Python process that has
    imported only what that needs, with an empty module cache (NaNs if it fails)."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="flatgrad-fresh-") as cache:
        code = f"import sys; sys.path[:0] = [{str(ROOT)!r}]\nfrom benchmarks import bench_arrays as b\nprint(b.{call})"
        env = {**os.environ, "FLATGRAD_CACHE_DIR": cache}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    try:
        return [float(x) for x in done.stdout.strip().splitlines()[-1].strip("()[]").split(",") if x.strip()]
    except (ValueError, IndexError):
        print(f"{call} not measured: {done.stderr.strip()[-300:]}")
        return [math.nan, math.nan]


def compile_in_fresh_process(problem: str, size: str, which: str) -> float:
    """`compile_seconds` in a new process: none of it done before by another function."""
    return in_fresh_process(f"compile_seconds({problem!r}, {size!r}, {which!r})")[0]


FRESH = (GEN_NUMPY, GEN_OPTIMIZED, HAND_NUMPY)  # the NumPy rows, as a user's process runs them


def fresh_call(problem: str, size: str, which: str, calls: int = 100) -> tuple[float, float]:
    """(seconds, minor page faults) per call of `which` (one of FRESH) in this process, over
    `calls` calls after the first: in a process that has run nothing else, glibc hands freed
    large arrays back to the OS and faults them in again on every call."""
    import resource

    import compiler

    p = next(p for p in PROBLEMS if p.name == problem)
    args = p.inputs(np.random.default_rng(0), SIZES[size])
    if which == HAND_NUMPY:
        function = p.hand_numpy
    else:
        function = compiler.gradient(p.fn, *args, wrt=p.wrt, optimize=which == GEN_OPTIMIZED).module.value_and_grad
    function(*args)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = timeit.default_timer()
    for _ in range(calls):
        function(*args)
    seconds = (timeit.default_timer() - start) / calls
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls


def flatgrad_candidates(case: Case) -> None:
    import compiler

    p, args = case.problem, case.args
    (prog, trace_s) = harness.time_once(lambda: compiler.gradient(p.fn, *args, wrt=p.wrt))
    numpy_vg = prog.module.value_and_grad
    optimized_vg = compiler.gradient(p.fn, *args, wrt=p.wrt, optimize=True).module.value_and_grad
    jprog = compiler.gradient(p.fn, *args, wrt=p.wrt, jit="numba")
    numba_vg = jprog.module.value_and_grad
    numba_vg(*args)
    optimized_numba_vg = compiler.gradient(p.fn, *args, wrt=p.wrt, jit="numba", optimize=True).module.value_and_grad
    optimized_numba_vg(*args)
    if p.hand_numba is None:
        import numba

        p.hand_numba = numba.njit(p.hand_numba_py)
    p.hand_numba(*args)
    # numba compiles each NumPy function once per process and types, whoever calls it: each
    # compile is timed in a process of its own, so that none is cheaper for coming later
    case.compile_times = {which: compile_in_fresh_process(p.name, case.size, which) for which in COMPILED}
    times = ", ".join(f"{which} {harness.format_time(case.compile_times[which])}" for which in COMPILED)
    case.notes.append(
        f"flatgrad trace + differentiate + emit (compiler.gradient): {harness.format_time(trace_s)}; "
        f"numba first call (compile) of value_and_grad, each in a fresh process, excluded from the table: {times}"
    )
    # what the modules' argument checks cost: the same modules without them
    numpy_unchecked = compiler.program.load_module(harness.without_checks(prog.source)).value_and_grad
    numba_unchecked = compiler.program.load_module(harness.without_checks(jprog.source)).value_and_grad
    numba_unchecked(*args)  # compiled outside the timing, as the generated one is
    case.candidates += [
        Candidate(NUMPY_UNCHECKED, numpy_unchecked, args),
        Candidate(NUMBA_UNCHECKED, numba_unchecked, args),
        Candidate(GEN_NUMPY, numpy_vg, args),
        Candidate(GEN_OPTIMIZED, optimized_vg, args),
        Candidate(GEN_PROG, prog.value_and_grad, args),
        Candidate(GEN_NUMBA, numba_vg, args),
        Candidate(GEN_OPTIMIZED_NUMBA, optimized_numba_vg, args),
        Candidate(HAND_NUMPY, p.hand_numpy, args),
        Candidate(HAND_NUMBA, p.hand_numba, args),
    ]


def jax_candidates(case: Case) -> None:
    jax, reason = harness.optional_import("jax")
    if jax is None:
        case.skipped.append(Skipped(JAX, reason))
        return
    jax.config.update("jax_enable_x64", True)  # float64, like every other implementation here
    import jax.numpy as jnp

    p, args = case.problem, case.args
    vg = jax.jit(jax.value_and_grad(p.loss_for(jnp), argnums=argnums(p)))
    block = jax.block_until_ready

    def jax_call(*a):
        return block(vg(*a))

    _, first = harness.time_once(lambda: jax_call(*args))
    case.notes.append(f"jax first call (trace + XLA compile), excluded from the table: {harness.format_time(first)}")
    device_args = tuple(jnp.asarray(a) for a in args)
    case.candidates += [Candidate(JAX, jax_call, args), Candidate(JAX_DEVICE, jax_call, device_args)]


def torch_candidates(case: Case) -> None:
    torch, reason = harness.optional_import("torch")
    if torch is None:
        case.skipped.append(Skipped(TORCH, reason))
        return
    if THREADS[0] > 0:
        torch.set_num_threads(THREADS[0])
    p, args = case.problem, case.args
    loss = p.torch_loss(torch)
    from_numpy = torch.from_numpy
    diff = set(argnums(p))
    flags = tuple(i in diff for i in range(len(args)))

    def torch_call(*a):
        # NumPy in, NumPy out: fresh tensors over the caller's arrays (no copy), leaves for the
        # parameters, backward, then the value and the .grad arrays (no copy either).
        tensors = [from_numpy(x).requires_grad_() if f else from_numpy(x) for x, f in zip(a, flags)]
        out = loss(*tensors)
        out.backward()
        return out.item(), tuple(t.grad.numpy() for t, f in zip(tensors, flags) if f)

    case.candidates.append(Candidate(TORCH, torch_call, args))


def autograd_candidates(case: Case) -> None:
    autograd, reason = harness.optional_import("autograd")
    if autograd is None:
        case.skipped.append(Skipped(AUTOGRAD, reason))
        return
    import autograd.numpy as anp

    p = case.problem
    vg = autograd.value_and_grad(p.loss_for(anp), argnum=argnums(p))
    case.candidates.append(Candidate(AUTOGRAD, vg, case.args))


# =========================================================================== page faults


def fault_cells(case: Case, timings: list[Timing]) -> dict[str, str]:
    """Minor page faults per call of each row, counted over a repeat's worth of calls or two
    after the timing (20 to 200 calls): memory the allocator took back from the OS and hands out
    again, paid on first touch (one to two microseconds each on a small VM)."""
    numbers = {t.name: t.number for t in timings}
    cells = {}
    for c in case.candidates:
        calls = max(20, min(200, numbers.get(c.name, 20) * 2))
        faults = harness.page_faults_per_call(c, calls)
        cells[c.name] = "n/a" if faults is None else f"{faults:.0f}" if faults >= 10 else f"{faults:.1f}"
    return cells


def fresh_cells(case: Case) -> tuple[dict[str, str], dict[str, str]]:
    """Time and minor page faults per call of the NumPy rows, each in a process of its own."""
    times, faults = {}, {}
    for which in FRESH:
        seconds, count = in_fresh_process(f"fresh_call({case.problem.name!r}, {case.size!r}, {which!r})")
        times[which] = harness.format_time(seconds)
        faults[which] = f"{count:.0f}" if count >= 10 else f"{count:.1f}"
    return times, faults


def peak_cells(case: Case) -> dict[str, str]:
    """The most memory one call holds at once, for the rows whose arrays tracemalloc sees."""
    return {
        c.name: "n/a" if c.name in UNTRACED else harness.format_bytes(harness.peak_bytes_per_call(c))
        for c in case.candidates
    }


# =========================================================================== targets


def best_of(timings: list[Timing], names: tuple[str, ...], label: str) -> Timing | None:
    """A synthetic row: per repeat, the faster of `names` (repeat r of each ran in round r)."""
    rows = [t for t in timings if t.name in names]
    if len(rows) != len(names):
        return None
    return Timing(label, 0, [min(xs) for xs in zip(*(t.per_call for t in rows))])


def case_targets(case: Case, timings: list[Timing]) -> list[Target]:
    tag = f"{case.problem.name} {case.size}"
    targets = [
        harness.ratio_target(
            timings, f"({tag}) (1) flatgrad NumPy <= 1.1x hand-written NumPy", GEN_NUMPY, HAND_NUMPY, at_most=1.1
        ),
        harness.ratio_target(
            timings, f"({tag}) (1, optimize=True) <= 1.1x hand-written NumPy", GEN_OPTIMIZED, HAND_NUMPY, at_most=1.1
        ),
    ]
    for checked, unchecked in ((GEN_NUMPY, NUMPY_UNCHECKED), (GEN_NUMBA, NUMBA_UNCHECKED)):
        targets.append(
            harness.ratio_target(
                timings, f"({tag}) argument checks cost at most 1.1x ({checked})", checked, unchecked, at_most=1.1
            )
        )
    best = best_of(timings, FLATGRAD_ROWS, BEST)
    if best is None:
        return targets
    by_name = {t.name: t for t in timings}
    winner = min(FLATGRAD_ROWS, key=lambda n: by_name[n].median)
    pool = [*timings, best]
    targets.append(harness.ratio_target(pool, f"({tag}) (4) flatgrad best <= 1.1x hand-written numba", BEST,
                                        HAND_NUMBA, at_most=1.1))
    compiled, hand = (case.compile_times.get(name, math.nan) for name in (GEN_OPTIMIZED_NUMBA, HAND_NUMBA))
    targets.append(Target(
        f"({tag}) (5) numba compile, optimize=True <= 2x hand-written",
        compiled <= 2 * hand,
        f"{harness.format_time(compiled)} against {harness.format_time(hand)}: {compiled / hand:.2f}x",
    ))
    if case.size == "medium":
        t = harness.ratio_target(pool, f"({tag}) (2) flatgrad best no slower than jax.jit", BEST, JAX, at_most=1.0)
    elif case.size == "small":
        t = harness.ratio_target(pool, f"({tag}) (3) flatgrad best >= 5x faster than jax.jit", JAX, BEST, at_least=5)
    else:  # large: no target against jax.jit, whose fused kernels win on memory traffic there
        return targets
    targets.append(Target(t.description, t.holds, f"{t.detail}; faster backend by median: {winner}"))
    return targets


# =========================================================================== main

THREADS = [1]  # set from --threads by main()


def thread_line() -> str:
    if THREADS[0] <= 0:
        return "threads: every library's default (--threads 0)"
    settings = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in THREAD_VARIABLES)
    xla = os.environ.get("XLA_FLAGS", "")
    return f"threads: {THREADS[0]} per library ({settings}; torch.set_num_threads; XLA_FLAGS={xla!r})"



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_timing_arguments(parser)
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="use flatgrad's usual module cache (FLATGRAD_CACHE_DIR or ~/.cache/flatgrad), so the numba "
        "'compile' figures may be loads from numba's on-disk cache; by default a fresh temporary folder "
        "is used and they are real compiles",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for BLAS (NumPy's, and scipy's under numba), PyTorch and XLA (default 1; 0 leaves each "
        "library its default). Takes effect when the script is run directly or with -m",
    )
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="leave out jax, PyTorch and HIPS autograd (a process with NumPy and numba only: their imports "
        "also change how the allocator reuses memory, see faults/call)",
    )
    parser.add_argument(
        "--problem", choices=[p.name for p in PROBLEMS], action="append", help="only this problem (repeatable)"
    )
    parser.add_argument("--size", choices=list(SIZES), action="append", help="only this size (repeatable)")
    args = parser.parse_args(argv)
    if args.min_time is None and not args.quick:
        # 36 rows: 0.1 s per repeat (not the harness's 0.2 s) keeps a full run near two
        # minutes; the slowest row still makes about a hundred calls per repeat.
        args.min_time = 0.1
    settings = harness.settings_from(args)
    THREADS[0] = args.threads
    limit_threads(args.threads)  # for XLA (read when jax starts) if main() was called directly

    scratch = None
    if not args.warm_cache:
        scratch = tempfile.mkdtemp(prefix="flatgrad-bench-")
        os.environ["FLATGRAD_CACHE_DIR"] = scratch
    try:
        return run(settings, args.problem or [p.name for p in PROBLEMS], args.size or list(SIZES), not args.no_peers)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def run(settings: harness.Settings, problems: list[str], sizes: list[str], peers: bool = True) -> int:
    import numba

    print("flatgrad benchmark: one value_and_grad call of the array examples (float64), per problem and size")
    for line in harness.environment_lines(["numpy", "numba", "scipy", "jax", "jaxlib", "torch", "autograd"]):
        print(line)
    mode = " (--quick: smoke run, figures are rough)" if settings.quick else ""
    print(thread_line())
    print(f"timing {settings.repeats} repeats of >= {settings.min_time:g} s each, median per call{mode}")

    # numba's own start-up (and its first matmul through scipy's BLAS) is paid here, on a
    # throwaway function, so that no compile time below carries it.
    numba.njit(lambda a: (a @ a.T + 1.0).sum())(np.ones((2, 2)))

    all_targets: list[Target] = []
    for p in PROBLEMS:
        if p.name not in problems:
            continue
        for size in SIZES:
            if size not in sizes:
                continue
            case = Case(p, size, p.inputs(np.random.default_rng(0), SIZES[size]))
            flatgrad_candidates(case)
            if peers:
                jax_candidates(case)
                torch_candidates(case)
                autograd_candidates(case)
            else:
                case.skipped += [Skipped(name, "--no-peers") for name in (JAX, TORCH, AUTOGRAD)]
            harness.check_agreement(case.candidates, reference=GEN_NUMPY, rtol=RTOL, atol=ATOL)
            checked = sum(c.check for c in case.candidates)

            print()
            print(f"== {case.title}")
            print(
                f"{checked} implementations agree with {GEN_NUMPY} on the value and every gradient element "
                f"(rtol {RTOL:g}, atol {ATOL:g})"
            )
            timings = harness.measure(case.candidates, settings)
            baselines = [Baseline(HAND_NUMPY, "vs hand NumPy"), Baseline(JAX, "vs jax.jit")]
            fresh_times, fresh_faults = fresh_cells(case)
            extra = [
                ("faults/call", fault_cells(case, timings)), ("peak/call", peak_cells(case)),
                ("fresh process: time/call", fresh_times), ("faults/call", fresh_faults),
            ]
            print(harness.render_table(timings, baselines, case.skipped, extra))
            for s in case.skipped:
                print(f"skipped {s.name}: {s.reason}")
            for note in case.notes:
                print(note)
            targets = case_targets(case, timings)
            print(harness.render_targets(targets))
            all_targets += targets

    print()
    print("targets:")
    print(harness.render_targets(all_targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
