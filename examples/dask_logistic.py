"""Logistic regression trained with full-batch L-BFGS over a Dask array: the emitted gradient
module runs on every chunk of the rows and `compiler.dask` sums the chunks' results.

    python examples/dask_logistic.py                     # 400,000 rows in 8 chunks
    python examples/dask_logistic.py --rows 2000000 --chunk 250000

The loss given to flatgrad is a sum over the rows, the one form that splits over chunks; the
mean (`scale=1 / N`) and the L2 regulariser are applied outside it, in `objective`.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import dask
import dask.array as da
import numpy as np
from dask.diagnostics import ProgressBar
from scipy.optimize import minimize

import compiler
import compiler.dask

FEATURES = 5
REG = 1e-3
TRUE_W = np.array([1.5, -2.0, 0.5, 0.0, 1.0])
TRUE_B = -0.5


def logistic(X, y, w, b):
    """Logistic regression's loss summed over the rows: log(1 + exp(z)) - y z for z = X w + b."""
    z = X @ w + b
    return np.sum(np.logaddexp(0.0, z) - y * z)


def make_data(rows: int, chunk: int, seed: int = 0) -> tuple[da.Array, da.Array]:
    """Rows drawn from the model with TRUE_W and TRUE_B, chunk by chunk, kept in memory."""
    generator = da.random.default_rng(seed)
    X = generator.normal(size=(rows, FEATURES), chunks=(chunk, FEATURES))
    p = 1 / (1 + np.exp(-(X @ TRUE_W + TRUE_B)))
    y = (generator.uniform(size=rows, chunks=chunk) < p).astype(np.float64)
    return dask.persist(X, y)


def objective(prog: compiler.GradientProgram, X: da.Array, y: da.Array, progress: bool = True):
    """The mean loss plus 0.5 * REG * |w|^2, and its gradient, as scipy's `jac=True` wants
    them: one function of the parameter vector [w..., b]."""
    rows = X.shape[0]

    def fun(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:-1], float(params[-1])
        with ProgressBar(width=30) if progress else contextlib.nullcontext():
            value, (grad_w, grad_b) = compiler.dask.value_and_grad(prog, X, y, w, b, batch=("X", "y"), scale=1 / rows)
        loss = value + 0.5 * REG * (w @ w)  # the regulariser, once, outside the sum over chunks
        return loss, np.append(grad_w + REG * w, grad_b)

    return fun


def fit(X: da.Array, y: da.Array, progress: bool = True):
    """L-BFGS from zero weights; returns scipy's OptimizeResult."""
    # traced on 8 example rows: only their shapes and dtypes matter, and N names any row count
    prog = compiler.gradient(
        logistic, np.zeros((8, FEATURES)), np.zeros(8), np.zeros(FEATURES), 0.0,
        wrt=("w", "b"), dims={"X": f"N,{FEATURES}", "y": "N"},
    )
    return minimize(objective(prog, X, y, progress), np.zeros(FEATURES + 1), jac=True, method="L-BFGS-B")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--chunk", type=int, default=50_000)
    args = parser.parse_args()
    X, y = make_data(args.rows, args.chunk)
    print(f"{args.rows} rows in {X.numblocks[0]} chunks of up to {args.chunk}")
    start = time.perf_counter()
    result = fit(X, y)
    seconds = time.perf_counter() - start
    print(f"L-BFGS: {result.nit} iterations, {result.nfev} gradient evaluations, {seconds:.2f} s; {result.message}")
    print(f"loss {result.fun:.6f}")
    print(f"w = {np.round(result.x[:-1], 3)}  (true {TRUE_W})")
    print(f"b = {result.x[-1]:.3f}  (true {TRUE_B})")


if __name__ == "__main__":
    main()
