"""compiler.dask: the emitted module on every chunk of a Dask array, the results summed.

Correctness against the program on the whole in-memory array and against HIPS autograd; the
refusals (a loss that is not a sum over the rows, a wrong batch, chunks that do not hold whole
rows or do not line up, a program with a fixed number of rows); `compute=False`; one numba
program; and a LocalCluster of two worker processes over 10^6 rows in chunks of 10^5.
"""

from __future__ import annotations

import sys

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import compiler
from compiler.errors import FlatgradError, NotAdditiveError, SignatureError

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
import compiler.dask as fd  # noqa: E402

DIMS = {"X": "N,4", "y": "N"}


def logistic(X, y, w, b):
    """Logistic regression's loss summed over the rows: additive over the batch."""
    z = X @ w + b
    return np.sum(np.logaddexp(0.0, z) - y * z)


def logistic_autograd(X, y, w, b):
    z = anp.dot(X, w) + b
    return anp.sum(anp.logaddexp(0.0, z) - y * z)


def softmax_sum(X, y, W, b):
    """Cross-entropy summed over the rows, integer labels."""
    scores = X @ W + b
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.sum(log_probs[np.arange(X.shape[0]), y])


def logistic_mean(X, y, w, b):
    z = X @ w + b
    return np.mean(np.logaddexp(0.0, z) - y * z)


def logistic_regularised(X, y, w, b):
    z = X @ w + b
    return np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * 1e-2 * np.sum(w * w)


def data(rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 4))
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-X @ [1.0, -2.0, 0.5, 0.0]))).astype(float)
    return X, y, rng.normal(size=4), 0.25


def program(f=logistic, jit=None, **options):
    X, y, w, b = data(8)
    return compiler.gradient(f, X, y, w, b, wrt=("w", "b"), dims=DIMS, jit=jit, **options)


def chunked(X, y, rows):
    return da.from_array(X, chunks=(rows, 4)), da.from_array(y, chunks=rows)


def assert_same(result, expected):
    (value, grads), (value0, grads0) = result, expected
    np.testing.assert_allclose(value, value0, rtol=1e-12)
    assert len(grads) == len(grads0)
    for g, g0 in zip(grads, grads0):
        np.testing.assert_allclose(g, g0, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- correctness


def test_the_sum_over_uneven_chunks_is_the_gradient_on_the_whole_array():
    prog = program()
    X, y, w, b = data(250)
    Xd, yd = chunked(X, y, 64)  # 64, 64, 64, 58 rows
    assert_same(fd.value_and_grad(prog, Xd, yd, w, b, batch=("X", "y")), prog.value_and_grad(X, y, w, b))


def test_against_autograd_an_independent_oracle():
    prog = program()
    X, y, w, b = data(40, seed=1)
    value, (grad_w, grad_b) = fd.value_and_grad(prog, *chunked(X, y, 7), w, b, batch=("X", "y"))
    expected = autograd.value_and_grad(logistic_autograd, argnum=(2, 3))(X, y, w, b)
    np.testing.assert_allclose(value, expected[0], rtol=1e-12)
    np.testing.assert_allclose(grad_w, expected[1][0], rtol=1e-10)
    np.testing.assert_allclose(grad_b, expected[1][1], rtol=1e-10)


def test_integer_labels_and_many_chunks_through_the_tree_of_sums():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 3, size=300)
    W, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    prog = compiler.gradient(softmax_sum, X[:8], y[:8], W, b, wrt=("W", "b"), dims=DIMS)
    Xd, yd = da.from_array(X, chunks=(11, 4)), da.from_array(y, chunks=11)  # 28 chunks: 3 levels of sums
    assert_same(fd.value_and_grad(prog, Xd, yd, W, b, batch=("X", "y")), prog.value_and_grad(X, y, W, b))
    grads = fd.grad(prog, Xd, yd, W, b, batch=("X", "y"))
    np.testing.assert_allclose(grads[0], prog.grad(X, y, W, b)[0], rtol=1e-12)


def test_compute_false_gives_dask_objects_and_scale_a_mean():
    prog = program()
    X, y, w, b = data(100)
    value, grads = fd.value_and_grad(prog, *chunked(X, y, 30), w, b, batch=("X", "y"), compute=False, scale=1 / 100)
    assert dask.is_dask_collection(value) and all(dask.is_dask_collection(g) for g in grads)
    value0, grads0 = prog.value_and_grad(X, y, w, b)
    assert_same(dask.compute(value, grads), (value0 / 100, tuple(g / 100 for g in grads0)))
    lazy = fd.grad(prog, *chunked(X, y, 30), w, b, batch=("X", "y"), compute=False)
    assert len(lazy) == 2 and dask.is_dask_collection(lazy[0])


def test_one_chunk_and_a_batch_of_one_argument():
    def rows_only(X, w):
        return np.sum((X @ w) ** 2)

    X, _, w, _ = data(50)
    prog = compiler.gradient(rows_only, X[:8], w, wrt="w", dims={"X": "N,4"})
    result = fd.value_and_grad(prog, da.from_array(X, chunks=(50, 4)), w, batch="X")
    assert_same(result, prog.value_and_grad(X, w))


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("f, hint", [(logistic_mean, "mean"), (logistic_regularised, "regulariser")])
def test_a_loss_that_is_not_a_sum_over_the_rows_is_refused(f, hint):
    prog = program(f)
    X, y, _, _ = data(100)
    w = np.zeros(4)  # where L-BFGS starts: the regulariser's value and gradient vanish here
    with pytest.raises(NotAdditiveError) as caught:
        fd.value_and_grad(prog, *chunked(X, y, 30), w, 0.0, batch=("X", "y"))
    message = str(caught.value)
    assert message.startswith("compiler.dask.value_and_grad(prog, X, y, w, b, batch=('X', 'y')): the loss is not a sum")
    assert hint in message and "np.sum" in message and "scale=1 / N" in message
    with pytest.raises(NotAdditiveError):
        fd.check_additive(prog, X, y, w, 0.0, batch=("X", "y"))
    # asked not to check, it computes what it is asked: the per-chunk means summed
    fd.value_and_grad(prog, *chunked(X, y, 30), w, 0.0, batch=("X", "y"), check=False)


def test_an_additive_loss_passes_the_explicit_check():
    X, y, w, b = data(20)
    assert fd.check_additive(program(), X, y, w, b, batch=("X", "y")) is None


def refusal(prog, *args, batch=("X", "y"), match):
    with pytest.raises(SignatureError, match=match):
        fd.value_and_grad(prog, *args, batch=batch)


def test_wrong_batch_names_and_differentiated_rows():
    X, y, w, b = data(40)
    Xd, yd = chunked(X, y, 10)
    refusal(program(), Xd, yd, w, b, batch=("X", "labels"), match=r"batch names 'labels', not among .*'X', 'y', 'w'")
    refusal(program(), Xd, yd, w, b, batch=(), match="batch is empty")
    every = compiler.gradient(logistic, *data(8), dims=DIMS)
    refusal(every, Xd, yd, w, b, match=r"differentiates X, y, in batch: their gradients have a row.*wrt=\('w', 'b'\)")
    refusal(program(), Xd, yd, w, match=r"the program takes 4 arguments, got 3")


def test_chunks_that_do_not_hold_whole_rows_or_do_not_line_up():
    X, y, w, b = data(40)
    refusal(program(), da.from_array(X, chunks=(10, 2)), da.from_array(y, chunks=10), w, b,
            match=r"X is chunked along axis 1 too.*X.rechunk\(\{1: -1\}\)")
    refusal(program(), da.from_array(X, chunks=(10, 4)), da.from_array(y, chunks=20), w, b,
            match=r"y's rows are chunked \(20, 20\) but X's \(10, 10, 10, 10\).*y.rechunk\(\{0: X.chunks\[0\]\}\)")


def test_arguments_of_the_wrong_kind():
    X, y, w, b = data(40)
    Xd, yd = chunked(X, y, 10)
    refusal(program(), X, yd, w, b, match=r"X is in batch but is a ndarray; pass a Dask array")
    refusal(program(), Xd, yd, da.from_array(w), b, match=r"w is a Dask collection but not in batch")
    refusal(program(), Xd.astype(np.float32), yd, w, b, match=r"X is float32, the program takes float64")
    refusal(program(), da.from_array(np.ones((40, 3)), chunks=(10, 3)), yd, w, b,
            match=r"X has shape \(40, 3\); the program takes \(N, 4\)")
    with pytest.raises(SignatureError, match="takes a GradientProgram first"):
        fd.value_and_grad(logistic, Xd, yd, w, b)


def test_a_program_with_a_fixed_number_of_rows_names_dims():
    X, y, w, b = data(40)
    fixed = compiler.gradient(logistic, *data(8), wrt=("w", "b"))
    refusal(fixed, *chunked(X, y, 10), w, b,
            match=r"fixed number of rows of X, y.*dims=\{'X': 'N,4', 'y': 'N'\}")


def test_a_program_returning_an_array_is_refused():
    def scores(X, w):
        return X @ w

    X, _, w, _ = data(40)
    prog = compiler.gradient(scores, X[:8], w, dims={"X": "N,4"})
    refusal(prog, da.from_array(X, chunks=(10, 4)), w, batch="X", match="a program returning an array")


def test_without_dask_the_error_names_the_extra(monkeypatch):
    X, y, w, b = data(40)
    monkeypatch.setitem(sys.modules, "dask", None)  # `import dask` now raises ImportError
    with pytest.raises(FlatgradError, match=r"pip install 'flatgrad\[dask\]'"):
        fd.value_and_grad(program(), X, y, w, b)


def test_the_example_trains_logistic_regression_with_lbfgs():
    import dask_logistic

    X, y = dask_logistic.make_data(20_000, 3_000)
    result = dask_logistic.fit(X, y, progress=False)
    assert result.success, result.message
    np.testing.assert_allclose(result.x[:-1], dask_logistic.TRUE_W, atol=0.15)
    np.testing.assert_allclose(result.x[-1], dask_logistic.TRUE_B, atol=0.15)


# --------------------------------------------------------------------------- numba, a cluster


@pytest.mark.numba
def test_a_numba_program_on_every_chunk():
    prog = program(jit="numba")
    X, y, w, b = data(200)
    assert_same(fd.value_and_grad(prog, *chunked(X, y, 64), w, b, batch=("X", "y")), prog.value_and_grad(X, y, w, b))


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.mark.slow
def test_a_local_cluster_of_two_processes_over_a_million_rows(client):
    rows, chunk = 10**6, 10**5
    generator = da.random.default_rng(0)
    X = generator.normal(size=(rows, 4), chunks=(chunk, 4))
    y = (generator.uniform(size=rows, chunks=chunk) < 0.5).astype(float)
    X, y = client.persist([X, y])  # made on the workers: the data never passes through this process
    w, b = np.array([0.5, -1.0, 0.25, 2.0]), 0.1
    prog = program()
    value, grads = fd.value_and_grad(prog, X, y, w, b, batch=("X", "y"))
    X_all, y_all = client.compute([X, y], sync=True)
    value0, grads0 = prog.value_and_grad(X_all, y_all, w, b)
    np.testing.assert_allclose(value, value0, rtol=1e-10)
    for g, g0 in zip(grads, grads0):
        np.testing.assert_allclose(g, g0, rtol=1e-9)
    # each worker imported the module from its source: no worker has traced anything
    loaded = client.run(lambda: sorted(__import__("compiler.dask").dask._MODULES))
    assert len(loaded) == 2 and all(len(digests) == 1 for digests in loaded.values())

