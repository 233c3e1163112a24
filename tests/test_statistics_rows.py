"""The statistics, products and linear-algebra rows (`ops._statistics_rows`) beyond what the
table-driven tests of test_ops.py check: every row under numba (compiled as written, lowered to
loop helpers, or refused when the module is built, never a numba TypingError at the first call),
prod's gradient where an element is 0, var/std's ddof, einsum's subscripts, errors that name the
call, and SciPy's logsumexp.

Under numba, several rows share one traced function, so that numba compiles few functions
(each compile takes a second or more).
"""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from table_harness import build, central_differences, check_against_autograd, check_against_fd

import compiler
from compiler.errors import FlatgradError, UnsupportedOperationError

HERE = "test_statistics_rows.py"


def statistics(x, v):
    a = np.var(x) + np.std(x, ddof=1) + np.sum(x.var(axis=0) * 2.0) + np.sum(np.std(x, axis=1, keepdims=True, ddof=1))
    b = np.prod(x) + np.sum(x.prod(axis=1)) + np.sum(np.prod(x, axis=0, keepdims=True) * 0.5) + np.prod(v)
    c = np.sum(np.cumsum(x) * v[0]) + np.sum(np.cumsum(x, axis=1) * x) + np.sum(np.cumsum(v, axis=0) * v)
    d = np.linalg.norm(x) + np.sum(np.linalg.norm(x, axis=1)) + np.sum(np.linalg.norm(x, axis=0, keepdims=True))
    return a + b + c + d + np.linalg.norm(v)


def products(x, v, m, k, c, r):
    a = np.sum(np.outer(v, v) * m) + np.inner(v, v) + np.sum(np.inner(m, x)) + np.sum(np.inner(m, v) * v)
    b = np.sum(np.inner(v, x)) + np.sum(np.kron(x, k) * 0.3) + np.trace(x) + m.trace()
    d = np.sum(np.cross(c, c * c) * c) + np.sum(np.cross(r, r + 1.0) * r)
    return a + b + d + np.sum(np.dot(v[0], x) * x) + np.sum(np.dot(m, 2.0) * m)


def linear_algebra(a, b, v):
    A = a + 6.0 * np.eye(3)  # well conditioned at the values drawn below
    return np.linalg.det(A) + np.sum(np.linalg.inv(A) * b) + np.sum(np.linalg.solve(A, b) * b) + np.sum(
        np.linalg.solve(A, v) ** 2
    )


def _args(rng: np.random.Generator, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    return [rng.uniform(0.5, 1.5, shape) for shape in shapes]


@pytest.mark.numba
@pytest.mark.parametrize(
    "f, shapes, lowered",
    [
        (statistics, ((3, 4), (5,)), ("prod_along(", "prod_others_along(", "prod_others_flat(", "cumsum_from_end(")),
        (products, ((3, 4), (4,), (4, 4), (2, 2), (3,), (4, 3)), ("cross_of_rows(", "kron_grad_x(", "kron_grad_y(")),
        (linear_algebra, ((3, 3), (3, 3), (3,)), ()),
    ],
    ids=["statistics", "products", "linear_algebra"],
)
def test_numba_agrees_with_numpy(f, shapes, lowered):
    """Each row under numba, as written or lowered, gives NumPy's numbers (at a zero too: prod)."""
    rng = np.random.default_rng(0)
    args = _args(rng, *shapes)
    plain = build(f, *args)
    jitted = compiler.gradient(f, *args, jit="numba")
    for helper in lowered:
        assert helper in jitted.source, helper
    with_zero = [a.copy() for a in args]
    with_zero[0][1, 2] = 0.0  # prod's gradient where an element is 0
    for values in (args, _args(rng, *shapes), with_zero):
        value, grads = jitted.value_and_grad(*values)
        expected_value, expected_grads = plain.value_and_grad(*values)
        assert value == pytest.approx(float(expected_value), rel=1e-12)
        for ours, theirs in zip(grads, expected_grads):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.numba
def test_numba_keeps_float32():
    """numba's own np.var, np.trace and np.linalg.det of float32 are float64: the rows whose
    value is a number are checked here (the others keep the dtype of their array operations)."""

    def f(x, a):
        A = a + np.float32(6.0) * np.eye(3, dtype=np.float32)
        return np.var(x) + np.std(x) + np.linalg.norm(x) + np.trace(x) + np.prod(x) + np.linalg.det(A)

    rng = np.random.default_rng(1)
    x, a = (rng.uniform(0.5, 1.5, s).astype(np.float32) for s in ((3, 4), (3, 3)))
    jitted = compiler.gradient(f, x, a, jit="numba")
    value, grads = jitted.value_and_grad(x, a)
    expected_value, expected_grads = compiler.gradient(f, x, a).value_and_grad(x, a)
    assert value == pytest.approx(float(expected_value), rel=1e-5)
    for ours, theirs in zip(grads, expected_grads):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=1e-4)


@pytest.mark.parametrize(
    "f, example",
    [
        (lambda x, y: np.sum(np.einsum("ij,jk->ik", x, y)), "einsum"),
        (lambda x, y: np.sum(np.tensordot(x, y, axes=1)), "tensordot"),
        (lambda x, y: np.sum(x.var(axis=(0, 1), keepdims=True)) + np.sum(y), "var_keep"),
        (lambda x, y: np.sum(np.linalg.norm(x, axis=(0, 1), keepdims=True)) + np.sum(y), "norm_keep"),
        (lambda x, y: np.sum(np.prod(x[None], axis=1)) + np.sum(y), "prod"),
        (lambda x, y: np.sum(np.cumsum(x[None], axis=2)) + np.sum(y), "cumsum"),
    ],
    ids=["einsum", "tensordot", "var-tuple-axis", "norm-tuple-axis", "prod-3d", "cumsum-3d"],
)
def test_numba_refuses_what_it_cannot_compile_when_the_module_is_built(f, example):
    """No numba lowering: a FlatgradError naming the row when the module is built (no numba
    TypingError at the first call); the same function runs in NumPy."""
    x, y = np.ones((3, 4)), np.ones((4, 2))
    with pytest.raises(FlatgradError, match=rf"{example} with .* has no numba lowering yet; use jit=None"):
        compiler.gradient(f, x, y, jit="numba")
    build(f, x, y)


# --- prod's gradient where an element is 0 ----------------------------------------------------


@pytest.mark.parametrize(
    "zeros", [[(1, 2)], [(1, 2), (0, 2)], [(1, 2), (1, 3)]], ids=["one", "two-in-a-column", "two-in-a-row"]
)
@pytest.mark.parametrize(
    "call", ["np.prod(x)", "x.prod(axis=0)", "np.prod(x, axis=1, keepdims=True)", "x.prod(axis=(0, 1))"]
)
def test_prod_gradient_is_the_product_of_the_others_where_an_element_is_0(zeros, call):
    """prod is linear in each element: its gradient is the product of the other elements, which
    central differences give exactly. Autograd's out / x gives nan there."""
    shape = np.shape(eval(call, {"np": np, "x": np.ones((3, 4))}))
    namespace = {"np": np, "W": np.arange(1.0, 1.0 + np.prod(shape)).reshape(shape)}  # each output its weight
    exec(f"def f(x):\n    return np.sum({call} * W)\n", namespace)
    f = namespace["f"]
    x = np.random.default_rng(2).uniform(0.5, 1.5, (3, 4))
    for place in zeros:
        x[place] = 0.0
    prog = build(f, x)
    (grad,) = prog.grad(x)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, central_differences(f, [x], 0), rtol=1e-7, atol=1e-9)


# --- var and std: ddof ---------------------------------------------------------------------------


@pytest.mark.parametrize("ddof", [0, 1, 2, 0.5])
def test_var_and_std_take_ddof(ddof):
    def f(x):
        return np.var(x, ddof=ddof) + np.sum(np.std(x, axis=0, ddof=ddof)) + np.sum(
            x.var(axis=1, ddof=ddof, keepdims=True)
        )

    def oracle(x):
        return anp.var(x, ddof=ddof) + anp.sum(anp.std(x, axis=0, ddof=ddof)) + anp.sum(
            anp.var(x, axis=1, ddof=ddof, keepdims=True)
        )

    prog = build(f, np.ones((4, 3)))
    assert f"ddof={ddof!r}" in prog.source
    x = np.random.default_rng(3).uniform(-2, 2, (4, 3))
    check_against_fd(prog, f, ["x"], [x])
    check_against_autograd(prog, oracle, ["x"], [x])


# --- einsum, tensordot: subscripts ----------------------------------------------------------------


def test_einsum_gradients_are_einsums_of_the_other_operand_and_grad():
    prog = build(lambda x, y: np.sum(np.einsum("ij,jk->ik", x, y) * 2.0), np.ones((2, 3)), np.ones((3, 4)))
    assert "s0 = np.einsum('ij,jk->ik', x, y)" in prog.source
    assert "grad_x = np.einsum('jk,ik->ij', y, grad_s0)" in prog.source
    assert "grad_y = np.einsum('ij,ik->jk', x, grad_s0)" in prog.source


@pytest.mark.parametrize("subscripts", ["ij,jk", "Ba,ab", "ab,bA", " ij , jk -> ki "])
def test_einsum_implicit_output_and_spaces_follow_numpy(subscripts):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2, 3)), rng.normal(size=(3, 2))
    W = rng.normal(size=np.einsum(subscripts, x, y).shape)

    def f(x, y):
        return np.sum(np.einsum(subscripts, x, y) * W)

    prog = build(f, x, y)
    check_against_fd(prog, f, ["x", "y"], [x, y])
    check_against_autograd(prog, lambda x, y: anp.sum(anp.einsum(subscripts, x, y) * W), ["x", "y"], [x, y])


def test_tensordot_gradient_subscripts_pair_the_contracted_axes():
    prog = build(lambda x, y: np.sum(np.tensordot(x, y, axes=([0, 2], [1, 0]))), np.ones((2, 3, 4)), np.ones((4, 2, 5)))
    assert "np.tensordot(x, y, axes=((0, 2), (1, 0)))" in prog.source
    # x's axes are i j k, y's k i l (its axes 1 and 0 pair with x's 0 and 2), the output's j l
    assert "grad_x = np.einsum('kil,jl->ijk', y, grad_s0)" in prog.source
    assert "grad_y = np.einsum('ijk,jl->kil', x, grad_s0)" in prog.source


@pytest.mark.parametrize(
    "call, written",
    [
        ("np.einsum('ii,jk->ik', x, y)", "subscripts='ii,jk->ik'"),  # a repeated index: a diagonal
        ("np.einsum('ij,jk->k', x, y)", "subscripts='ij,jk->k'"),  # i summed within x alone
        ("np.einsum('...j,jk->k', x, y)", r"subscripts='\.\.\.j,jk->k'"),
        ("np.linalg.norm(x, ord=1)", "ord=1"),  # a matrix's 1-norm: a max of sums, not smooth
        ("np.linalg.norm(x, ord=2)", "ord=2"),  # a matrix's spectral norm
        ("np.cross(x[:, :2], y.T[:, :2])", "axis=-1"),  # 2-vectors
        ("np.var(x, axis=2)", "axis=2"),
        ("np.cumsum(x, axis=(0, 1))", r"axis=\(0, 1\)"),
        ("np.tensordot(x, y, axes=3)", "axes=3"),
    ],
)
def test_a_call_no_row_takes_names_its_shapes_and_arguments(call, written):
    namespace = {"np": np}
    exec(f"def f(x, y):\n    return np.sum({call})\n", namespace)
    pattern = rf"<string>:2: np\.[a-z.]+ on operands of .* shape has no rule .*; this call had \(.*{written}[,;]"
    with pytest.raises(UnsupportedOperationError, match=pattern):
        compiler.gradient(namespace["f"], np.ones((2, 3)), np.ones((3, 2)))


def test_np_linalg_functions_without_a_row_are_named_so():
    with pytest.raises(UnsupportedOperationError, match=r"np\.linalg\.slogdet has no rule"):
        compiler.gradient(lambda x: np.linalg.slogdet(x)[1], np.ones((3, 3)))


# --- np.linalg: only shapes matter ---------------------------------------------------------------


def test_linalg_rows_trace_from_a_singular_example():
    """Tracing reads shapes, not values: a singular example (np.ones) is fine; the numbers it runs
    on must be invertible, as in NumPy (a singular one raises NumPy's LinAlgError)."""

    def f(a, b):
        return np.linalg.det(a) + np.sum(np.linalg.inv(a) @ b) + np.sum(np.linalg.solve(a, b[:, 0]))

    prog = build(f, np.ones((3, 3)), np.ones((3, 2)))
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(3, 3)) + 4.0 * np.eye(3), rng.normal(size=(3, 2))
    check_against_fd(prog, f, ["a", "b"], [a, b])
    with pytest.raises(np.linalg.LinAlgError):
        prog.value_and_grad(np.ones((3, 3)), b)


def test_trace_and_kron_read_as_the_lecture_writes_them():
    source = build(lambda x, y: np.trace(x) + np.sum(np.kron(x, y)), np.ones((3, 4)), np.ones((2, 2))).source
    assert "np.eye(3, 4) * grad_s0" in source
    assert "np.einsum('kl,ikjl->ij', y, grad_s1.reshape(3, 2, 4, 2))" in source


# --- SciPy ----------------------------------------------------------------------------------------


def test_scipy_logsumexp_is_named_with_what_to_write_instead():
    """SciPy's functions convert their arguments to NumPy arrays rather than dispatch to traced
    values: the error names the SciPy function and the user's line, and says what to write."""
    import scipy.special  # here: importing SciPy takes a noticeable part of a second

    def f(x):
        return scipy.special.logsumexp(x)  # SCIPY

    line = f.__code__.co_firstlineno + 1
    pattern = rf"{HERE}:{line}: scipy\.special\.logsumexp\(\) is SciPy code.*np\.log\(np\.sum\(np\.exp\(x - m\)\)\)"
    with pytest.raises(UnsupportedOperationError, match=pattern):
        compiler.gradient(f, np.ones(4))

    def instead(x):
        m = np.max(x)
        return m + np.log(np.sum(np.exp(x - m)))

    prog = build(instead, np.ones(4), optimize=True)
    assert [e.op for e in prog.graph.forward_eqns] == ["logsumexp_all"]
    x = np.array([1000.0, 999.0, -3.0, 0.5])  # exp(x) alone would overflow
    value, (grad,) = prog.value_and_grad(x)
    assert float(value) == pytest.approx(float(scipy.special.logsumexp(x)), rel=1e-15)
    np.testing.assert_allclose(grad, autograd.grad(lambda x: anp.log(anp.sum(anp.exp(x - 1000.0))) + 1000.0)(x))


# --- optimize mode --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "f",
    [
        lambda v, m: np.sum(v @ m),  # the vecmat row's `y @ grad`: a bug these rows found, now fixed
        lambda v, m: np.sum(np.outer(v, m[0])) + np.sum(np.inner(m.T, v)),
        lambda v, m: np.sum(np.einsum("i,ij->j", v, m)) + np.sum(np.tensordot(v, m, axes=1)),
    ],
    ids=["vecmat", "outer-inner", "einsum-tensordot"],
)
def test_optimize_mode_reads_no_number_into_a_matrix_product(f):
    """Optimize mode reads the number a fill repeats (`np.full(shape, g)`) in place of the fill
    where arithmetic broadcasts it; `@` takes no number, so it keeps the fill."""
    rng = np.random.default_rng(6)
    v, m = rng.normal(size=3), rng.normal(size=(3, 4))
    prog = build(f, v, m, optimize=True)
    check_against_fd(prog, f, ["v", "m"], [v, m])
