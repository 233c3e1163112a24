"""The optimizing passes, each on hand-written programs with before/after listings, and optimize
mode on every example: same numbers, fewer operations, the verifier content after each pass."""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from support import EXAMPLES, assert_fresh, central_differences

import compiler
from compiler import passes
from compiler.autodiff import differentiate
from compiler.check import check_inputs
from compiler.cli import example_arguments
from compiler.verify import verify

RNG = np.random.default_rng(7)


def body(graph) -> list[str]:
    return str(graph).splitlines()[1:-1]


def test_fuse_gates_spots_sigmoid_and_relu():
    def f(x, w):
        s = 1.0 / (1 + np.exp(-(x * w)))
        return np.sum(np.maximum(0, s - 0.5))

    before = compiler.trace(f, np.ones(3), 2.0)
    assert [e.op for e in before.eqns] == ["mul", "neg", "exp", "add", "div", "sub", "maximum", "sum_all"]
    after = verify(passes.fuse_gates(before))
    assert body(after) == [
        "  s0 = mul(x, w)",
        "  s = sigmoid(s0)",
        "  s4 = sub(s, 0.5)",  # names were given when tracing: s1..s3 went into the sigmoid
        "  s5 = relu(s4)",
        "  L = sum_all(s5; axis=None, keepdims=False)",
    ]


def test_fuse_gates_keeps_values_read_elsewhere_and_the_other_tie():
    def f(x):
        e = np.exp(-x)
        return 1 / (1 + e) + e + np.maximum(x, 0.0)  # e is read twice; maximum(x, 0) ties to x

    after = passes.fuse_gates(compiler.trace(f, 1.0))
    assert [e.op for e in after.eqns] == [e.op for e in compiler.trace(f, 1.0).eqns]


def test_dead_code_goes():
    def f(x, y):
        np.exp(x) * y  # computed and dropped: the point of the test
        return x * y

    before = compiler.trace(f, 1.0, 2.0)
    assert len(before.eqns) == 3
    assert body(verify(passes.eliminate_dead_code(before))) == ["  L = mul(x, y)"]


def test_copies_propagate_but_outputs_keep_their_names():
    graph = differentiate(compiler.trace(lambda x, y, z: (x + y) * z, 1.0, 2.0, 3.0), ["x", "y", "z"])
    after = verify(passes.propagate_copies(graph))
    assert body(after) == [
        "  s0 = add(x, y)",
        "  L = mul(s0, z)",
        "  # backward",
        "  grad_L = ones_like(L)",
        "  grad_z = mul.grad[y](s0, grad_L)",
        "  grad_s0 = mul.grad[x](z, grad_L)",
        "  grad_x = add.grad[x](grad_s0)",  # outputs: the copies carry the gradients' names
        "  grad_y = add.grad[y](grad_s0)",
    ]


def test_copies_are_not_read_past_a_rebinding_of_their_source():
    def f(x):
        a = x * 2.0
        return a * a + a  # grad_a is accumulated twice

    graph = differentiate(compiler.trace(f, 1.5), ["x"])
    verify(passes.propagate_copies(graph))
    assert compiler.gradient(f, 1.5, optimize=True).grad(1.5) == pytest.approx((8 * 1.5 + 2.0,))  # f = 4x^2 + 2x


def test_common_subexpressions_are_computed_once():
    def f(x, y):
        a = np.exp(x) * y
        b = np.exp(x) * y
        return a + b

    after = verify(passes.eliminate_common_subexpressions(compiler.trace(f, 1.0, 2.0)))
    assert body(after) == ["  s0 = exp(x)", "  a = mul(s0, y)", "  L = add(a, a)"]


def test_constants_fold_and_identities_pass_their_operand_through():
    def f(x, y):
        a = x * 1 + 0
        return (a - 0) / 1 * y ** 1

    after = verify(passes.fold_constants(compiler.trace(f, 1.0, 2.0)))
    assert body(after) == ["  L = mul(x, y)"]


def test_folding_never_changes_a_type():
    def f(x):
        mask = (x > 0) * 1  # bool times 1 is an integer array: not the mask itself
        return np.sum(x * 1.0 * mask)  # float32 times a Python 1.0 stays float32: folds

    x = np.ones(3, np.float32)
    after = verify(passes.fold_constants(compiler.trace(f, x)))
    assert [e.op for e in after.eqns] == ["gt", "mul", "mul", "sum_all"]
    assert "mul(x, 1.0)" not in str(after)


def test_arithmetic_reads_the_number_a_fill_repeats():
    def f(W, v):
        return 0.5 * np.sum(W * W) + np.sum(np.tanh(v)) + np.sum(-v)

    graph = differentiate(passes.optimize_forward(compiler.trace(f, np.ones((2, 3)), np.ones(4))), ["W", "v"])
    assert "  grad_s0 = sum_all.grad[x](grad_s1; axis=None, keepdims=False)" in body(graph)
    after = verify(passes.eliminate_dead_code(verify(passes.broadcast_fills(graph))))
    assert "  grad_W = square.grad[x](W, grad_s1)" in body(after)  # 2 * W * grad_s1
    assert "  grad_v = grad_v + tanh.grad[x](s3, grad_s4)" in body(after)  # (1 - s3 ** 2) * grad_s4
    # -grad alone would be a number, not v's shape: the fill stays for it
    assert not any(line.startswith(("  grad_s0 = ", "  grad_s3 = ")) for line in body(after))
    assert "  grad_s6 = sum_all.grad[x](grad_s7; axis=None, keepdims=False)" in body(after)
    assert "  grad_v = neg.grad[x](grad_s6)" in body(after)


def test_the_seed_is_folded_into_value_and_grad_only():
    """value_and_grad reads the seed as 1.0 (`grad_s3 = (1 - L) * L`); backward(grad_L, cache)
    keeps it as its parameter."""
    from neuron import neuron

    graph = passes.optimize(differentiate(compiler.trace(neuron, *[1.0] * 5), ["w0", "x0", "w1", "x1", "w2"]))
    folded = verify(passes.fold_seed(graph, check=verify))
    assert folded.seed is None and folded.upstream == () and graph.seed is not None
    assert str(folded.backward.eqns[0]) == "grad_s3 = sigmoid.grad[x](L, 1.0)"
    prog = compiler.gradient(neuron, 2.0, -1.0, -3.0, -2.0, -3.0, optimize=True)
    value_and_grad, backward = prog.source.split("def value_and_grad")[1].split("def backward")
    assert "grad_L" not in value_and_grad and "grad_s3 = (1 - L) * L\n" in value_and_grad
    assert "grad_s3 = (1 - L) * L * grad_L\n" in backward
    _, cache = prog.module.forward_with_cache(2.0, -1.0, -3.0, -2.0, -3.0)
    assert prog.module.backward(2.0, cache) == pytest.approx([2 * g for g in prog.grad(2.0, -1.0, -3.0, -2.0, -3.0)])


def test_a_float32_seed_stays_a_line():
    prog = compiler.gradient(lambda x: np.sum(x * x), np.ones(3, np.float32), optimize=True)
    assert "grad_L = np.float32(1.0)" in prog.source.split("def value_and_grad")[1].split("def grad")[0]
    assert prog.grad(np.arange(3, dtype=np.float32))[0].dtype == np.float32


def test_the_seed_stays_the_upstream_gradient_of_backward():
    """Even where no gradient reaches an input, backward(grad_L, cache) keeps its parameter."""
    prog = compiler.gradient(lambda x, y: np.sin(x) * 2.0, 1.0, 2.0, optimize=True)
    _, cache = prog.module.forward_with_cache(0.5, 2.0)
    assert prog.module.backward(3.0, cache) == pytest.approx((3.0 * 2.0 * np.cos(0.5), 0.0))
    assert "def backward(grad_L, cache):" in prog.source


def test_wrt_subset_emits_no_gradient_lines_for_the_others():
    prog = compiler.gradient(lambda x, y: np.sin(x) * np.cos(y), 1.0, 2.0, wrt="y", optimize=True)
    assert "grad_x" not in prog.source
    assert "np.cos(x)" not in prog.source.split("# backward pass")[1]


def _programs(stem: str, options: list[str]):
    """An example's function, its example arguments, and its readable and optimized programs."""
    module = __import__(stem)
    f = getattr(module, stem)
    examples = example_arguments(f, [v for k, v in zip(options, options[1:]) if k == "--arg"])
    args, _ = check_inputs(compiler.gradient(f, **examples.values), examples.numbers, seed=0)
    wrt = tuple(options[options.index("--wrt") + 1].split(",")) if "--wrt" in options else None
    return f, args, compiler.gradient(f, **args, wrt=wrt), compiler.gradient(f, **args, wrt=wrt, optimize=True)


@pytest.mark.parametrize("stem", list(EXAMPLES))
def test_every_example_returns_fresh_writable_gradients(stem):
    """In both modes, from value_and_grad and from backward: no gradient is an input, another
    gradient or a read-only view, so scaling each in place (as SGD does) changes it alone."""
    f, args, readable, optimized = _programs(stem, EXAMPLES[stem])
    inputs = list(args.values())
    for prog in (readable, optimized):
        _, grads = prog.value_and_grad(*inputs)
        assert_fresh(grads, inputs, f"{stem} value_and_grad")
        _, cache = prog.module.forward_with_cache(*inputs)
        assert_fresh(prog.module.backward(1.0, cache), inputs + list(cache), f"{stem} backward")
        before = [np.copy(a) for a in inputs]
        _, grads = prog.value_and_grad(*inputs)
        kept = [np.copy(g) for g in grads]
        for grad in grads:  # SGD writes into the gradients it gets (`g *= lr`)
            if isinstance(grad, np.ndarray) and grad.ndim:
                grad *= 0.5
        for grad, copy, k in zip(grads, kept, range(len(kept))):
            if isinstance(grad, np.ndarray) and grad.ndim:
                np.testing.assert_array_equal(grad, 0.5 * copy, err_msg=f"{stem}: gradient {k}")
        for value, copy in zip(inputs, before):
            np.testing.assert_array_equal(value, copy)


def verified_passes(f, args: dict, wrt: tuple[str, ...]):
    """The passes `compiler.gradient(f, **args, wrt=wrt, optimize=True)` runs, in its order, with
    the IR verifier after every one (the seed's folding too); the optimized graph."""
    forward = passes.optimize_forward(verify(compiler.trace(f, **args)), check=verify)
    graph = passes.optimize(verify(differentiate(forward, list(wrt))), check=verify)
    passes.fold_seed(graph, check=verify)
    return graph


@pytest.mark.parametrize("stem", list(EXAMPLES))
def test_optimize_mode_on_every_example(stem):
    f, args, readable, optimized = _programs(stem, EXAMPLES[stem])
    assert str(verified_passes(f, args, optimized.wrt)) == str(optimized.graph)  # what was verified was emitted
    # the cheap-gradient principle: forward and backward together cost at most 3x the forward
    # (counting operations: the seed `grad_L = 1.0` and copies that name outputs compute nothing)
    graph = optimized.graph
    operations = [e for e in graph.forward.eqns + graph.backward.eqns if passes.copy_source(e) is None]
    assert len(operations) <= 3 * len(graph.forward.eqns)
    assert len(optimized.graph.eqns) <= len(readable.graph.eqns)
    assert "* 1.0\n" not in optimized.source and "* 1.0)" not in optimized.source
    value, grads = optimized.value_and_grad(*args.values())
    expected_value, expected_grads = readable.value_and_grad(*args.values())
    assert value == pytest.approx(expected_value, rel=1e-12)
    for ours, theirs in zip(grads, expected_grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.numba
def test_softmax_cross_entropy_is_fused_with_gradient_onehot_minus_probs_in_numpy_and_numba():
    """exp(x - max) / sum(exp(x - max)) becomes one softmax gate, and the log of each row's picked
    probability one gate whose backward reads the softmax's output: no softmax backward pass."""
    f, args, readable, optimized = _programs("softmax", EXAMPLES["softmax"])
    lines = [line.strip() for line in optimized.source.splitlines()]
    assert "probs = softmax(scores, 1)" in lines
    assert "correct_logprobs = -log_softmax_pick(scores, probs, (np.arange(8), y))" in lines  # finite
    assert "grad_scores = log_softmax_pick_grad_rows(probs, y, -grad_correct_logprobs)" in lines  # a pick per row
    assert not any(line.startswith(("shifted =", "exp_scores =", "grad_probs =")) for line in lines)
    jitted = compiler.gradient(f, **args, wrt=("W", "b"), optimize=True, jit="numba")
    assert "def softmax_along(" in jitted.source and "def log_softmax_pick_grad_pairs(" in jitted.source
    value, grads = jitted.value_and_grad(*args.values())
    expected_value, expected_grads = readable.value_and_grad(*args.values())
    assert value == pytest.approx(expected_value, rel=1e-12)
    for ours, theirs in zip(grads, expected_grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-14)


def _against_autograd(make, *args, fused: str):
    """`make(np)` in optimize mode: `fused` among its gates, and value and gradients as
    autograd finds them for `make(autograd.numpy)`."""
    prog = compiler.gradient(make(np), *args, optimize=True)
    assert fused in [e.op for e in prog.graph.forward_eqns], str(prog.graph)
    value, grads = prog.value_and_grad(*args)
    assert value == pytest.approx(make(anp)(*args), rel=1e-12)
    for i, ours in enumerate(grads):
        np.testing.assert_allclose(ours, autograd.grad(make(anp), i)(*args), rtol=1e-10, atol=1e-12)
    return prog


def test_cross_entropy_fusion_keeps_other_reads_of_probs_and_repeated_rows():
    rows, labels = np.array([0, 2, 2, 1]), np.array([1, 0, 3, 3])

    def make(xp):
        def f(scores):
            e = xp.exp(scores - xp.max(scores, axis=1, keepdims=True))
            probs = e / xp.sum(e, axis=1, keepdims=True)
            return -xp.sum(xp.log(probs[rows, labels]) * xp.arange(1.0, 5.0)) + xp.sum(probs**2)

        return f

    prog = _against_autograd(make, np.random.default_rng(1).normal(size=(3, 4)), fused="log_softmax_pick")
    assert "grad_probs" in prog.source  # probs**2 still sends its gradient through the softmax


def test_cross_entropy_along_axis_0_is_not_fused():
    def make(xp):
        def f(scores):
            e = xp.exp(scores)
            probs = e / xp.sum(e, axis=0, keepdims=True)
            return -xp.sum(xp.log(probs[np.arange(4), np.arange(4)]))

        return f

    prog = _against_autograd(make, np.random.default_rng(2).normal(size=(4, 4)), fused="softmax")
    assert "log_softmax_pick" not in [e.op for e in prog.graph.eqns]


@pytest.mark.parametrize(
    "spelling, fused",
    [
        ("xp.log(xp.sum(xp.exp(x)))", "logsumexp_all"),
        ("xp.max(x) + xp.log(xp.sum(xp.exp(x - xp.max(x))))", "logsumexp_all"),
        ("xp.log(xp.sum(xp.exp(x), axis=1))", "logsumexp"),
        ("xp.log(xp.sum(xp.exp(x), axis=0, keepdims=True))", "logsumexp_keep"),
        (
            "xp.log(xp.sum(xp.exp(x - xp.max(x, axis=1, keepdims=True)), axis=1, keepdims=True))"
            " + xp.max(x, axis=1, keepdims=True)",
            "logsumexp_keep",
        ),
    ],
)
def test_log_sum_exp_is_fused_from_each_spelling(spelling, fused):
    def make(xp):
        def f(x):
            return xp.sum(xp.sin(eval(spelling, {"xp": xp, "x": x})))  # an upstream gradient that varies

        return f

    _against_autograd(make, np.random.default_rng(3).normal(size=(3, 4)), fused=fused)


def test_fused_log_sum_exp_does_not_overflow():
    def f(x):
        return np.sum(np.log(np.sum(np.exp(x), axis=1)))

    x = np.array([[1000.0, 1000.0], [-1000.0, -999.0]])
    value, (grad,) = compiler.gradient(f, x, optimize=True).value_and_grad(x)
    assert value == pytest.approx(1000 + np.log(2) - 999 + np.log1p(np.exp(-1)))
    np.testing.assert_allclose(grad, [[0.5, 0.5], [1 / (1 + np.e), np.e / (1 + np.e)]])


@pytest.mark.numba
def test_log_sum_exp_under_numba():
    def f(x):
        top = np.max(x, axis=0, keepdims=True)
        lse = top + np.log(np.sum(np.exp(x - top), axis=0, keepdims=True))
        return np.sum(lse * np.arange(1.0, 5.0)) + np.sum(np.log(np.sum(np.exp(x), axis=1)))

    x = np.random.default_rng(4).normal(size=(3, 4))
    jitted = compiler.gradient(f, x, optimize=True, jit="numba")
    assert {"logsumexp_keep", "logsumexp"} <= {e.op for e in jitted.graph.eqns}
    value, (grad,) = jitted.value_and_grad(x)
    expected_value, (expected,) = compiler.gradient(f, x).value_and_grad(x)
    assert value == pytest.approx(expected_value, rel=1e-12)
    np.testing.assert_allclose(grad, expected, rtol=1e-10)


def test_softmax_written_with_exp_twice_still_fuses():
    """CSE runs before fusion, so `np.exp(s) / np.sum(np.exp(s), ...)` is one softmax gate."""

    def f(scores):
        shifted = scores - np.max(scores, axis=1, keepdims=True)
        probs = np.exp(shifted) / np.sum(np.exp(shifted), axis=1, keepdims=True)
        return np.sum(probs * np.arange(1.0, 4.0))

    scores = np.random.default_rng(0).normal(size=(4, 3))
    optimized = compiler.gradient(f, scores, optimize=True)
    assert [e.op for e in optimized.graph.forward_eqns][0] == "softmax"
    np.testing.assert_allclose(optimized.grad(scores)[0], compiler.gradient(f, scores).grad(scores)[0], rtol=1e-12)


@pytest.mark.parametrize("optimize", [False, True], ids=["readable", "optimized"])
@pytest.mark.parametrize(
    "f",
    [
        lambda a, b: np.sum(a * b),  # optimized, grad_a is b itself
        lambda a, b: np.sum((a + b) * 2.0),  # grad_a and grad_b are one array
        lambda a, b: np.sum(a) + np.sum(b * 0.0),  # a gradient of ones from a fill
    ],
    ids=["product", "shared", "fill"],
)
def test_gradients_that_would_alias_are_copied(f, optimize):
    a, b = np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.5, 2.0])
    prog = compiler.gradient(f, a, b, optimize=optimize)
    grads = prog.grad(a, b)
    assert_fresh(grads, [a, b], prog.source)


@pytest.mark.parametrize("stem", ["svm_net", "mlp", "huber"])
def test_optimize_modes_grad_runs_no_line_only_the_value_needs(stem):
    """`grad` has its own body in optimize mode: no data-loss or regularisation sums, no
    total of the margins; and its gradients are value_and_grad's, bit for bit."""
    f, args, readable, optimized = _programs(stem, EXAMPLES[stem])
    body = optimized.source.split("\ndef grad(")[1].split("\n\n\n")[0]
    assert "value_and_grad(" not in body and "return L" not in body
    if stem == "svm_net":
        assert "np.sum(" not in body and "reg_loss" not in body and "data_loss" not in body
    for point in (args, {k: v * 0.5 if np.asarray(v).dtype.kind == "f" else v for k, v in args.items()}):
        for ours, theirs in zip(optimized.grad(*point.values()), optimized.value_and_grad(*point.values())[1]):
            np.testing.assert_array_equal(ours, theirs)
    assert "return value_and_grad(" in readable.source  # readable mode keeps every gate: grad calls it


def test_the_fused_cross_entropy_is_finite_for_a_confidently_wrong_row():
    """log(probs[label]) is -inf where the label's probability underflows to 0; the fused gate's
    forward is the log-softmax instead (the picked score minus the row's log-sum-exp)."""
    f, args, readable, optimized = _programs("softmax", EXAMPLES["softmax"])
    args = {**args, "W": np.tile([[300.0, -300.0, 0.0]], (4, 1)), "X": np.abs(args["X"]) + 0.5}
    args["y"] = np.full_like(args["y"], 1)  # every row's label gets probability exp(-1000s): 0.0
    value, grads = optimized.value_and_grad(*args.values())
    X, W, b = args["X"], args["W"], args["b"]
    scores = X @ W + b
    shifted = scores - scores.max(axis=1, keepdims=True)
    expected = -np.mean(shifted[:, 1] - np.log(np.exp(shifted).sum(axis=1))) + 0.5 * 1e-3 * np.sum(W * W)
    assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-12)
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("jit", [None, pytest.param("numba", marks=pytest.mark.numba)])
def test_optimize_mode_reads_a_forward_value_instead_of_computing_it_again(jit):
    """cos's local gradient is -sin(x): where the forward pass computed np.sin(s0) as s1, the
    backward reads s1 (in value_and_grad and grad; `backward` has only its cache). Under numba
    too, where the body is not split into part functions."""
    def f(x):
        s0 = x * 2.0
        return np.sum(np.sin(s0) * np.cos(s0))

    optimized = compiler.gradient(f, np.ones(3), optimize=True, jit=jit)
    for function in ("value_and_grad", "grad"):
        body = optimized.source.split(f"\ndef {function}(")[1].split("\n\n\n")[0]
        assert body.count("np.sin(") == 1 and body.count("np.cos(") == 1, body  # the forward's own
        # times the upstream, itself s1 where it is read once (and written over, as it dies)
        assert "grad_s0 = -s1 * " in body or "grad_s0 = np.multiply(-s1, s1" in body
    x = np.array([0.1, -0.7, 1.3])
    expected = compiler.gradient(f, np.ones(3)).grad(x)[0]
    np.testing.assert_allclose(optimized.grad(x)[0], expected, rtol=1e-15)
    np.testing.assert_allclose(optimized.value_and_grad(x)[1][0], expected, rtol=1e-15)


def _columns_written_once(x, w):
    out = np.zeros((3, 4))
    for k in range(4):
        out[:, k] = x[:, k] * w[k]
    return np.sum(out * out)


def _place_written_twice(x, w):
    out = x * 1.0
    out[:, 0:2] = w[:, 0:2]  # the second write covers column 1 again:
    out[:, 1:3] = np.tanh(w[:, 1:3])  # the first write's gradient must not see it
    return np.sum(out ** 3)


def _place_read_before_written(x, w):
    y = x * 2.0
    total = np.sum(y[0] * w[0])  # y's row 0 read, then overwritten: its gradient has two parts
    y[0] = w[1]
    return total + np.sum(y * y)


@pytest.mark.parametrize("optimize", [False, True])
def test_a_write_gates_gradient_skips_zeroing_what_nothing_reads(optimize):
    args = {"x": RNG.normal(size=(3, 4)), "w": RNG.normal(size=4)}
    prog = compiler.gradient(_columns_written_once, *args.values(), optimize=optimize)
    graph = differentiate(compiler.trace(_columns_written_once, *args.values()), ["x", "w"])
    assert sum(e.op == "setitem" and e.rule == "x" for e in graph.backward.eqns) == 3  # not onto np.zeros
    after = verify(passes.drop_unread_zeroing(passes._joined(graph, graph.upstream)))
    # every column is written once and read once: no zeroing is read, and none stays
    assert not any(e.op == "setitem" and e.rule == "x" for e in after.eqns)
    assert "updated(grad" not in prog.source
    value, grads = prog.value_and_grad(*args.values())
    expected = central_differences(_columns_written_once, args, ["x", "w"])
    for ours, theirs in zip(grads, expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("f", [_place_written_twice, _place_read_before_written])
def test_a_write_gates_gradient_keeps_zeroing_what_a_later_line_reads(f):
    args = {"x": RNG.normal(size=(3, 4)), "w": RNG.normal(size=(3, 4))}
    for optimize in (False, True):
        prog = compiler.gradient(f, *args.values(), optimize=optimize)
        assert "updated(grad" in prog.source, optimize
        _, grads = prog.value_and_grad(*args.values())
        for ours, theirs in zip(grads, central_differences(f, args, ["x", "w"])):
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8)


def test_places_apart_are_told_by_ints_and_slices_only():
    shape = (4, 5, 6)
    assert passes._apart((slice(None), 0), (slice(None), 1), shape)
    assert passes._apart((slice(0, 2),), (slice(2, 4),), shape)
    assert passes._apart((-1,), (slice(0, 3),), shape)  # -1 is row 3
    assert passes._apart((slice(0, 6, 2),), (slice(1, 6, 2),), (6,))  # evens and odds
    assert not passes._apart((slice(None), 0), (slice(None), slice(0, 2)), shape)
    assert not passes._apart((Ellipsis, 0), (Ellipsis, 1), shape)  # not told: kept
    assert not passes._apart((None, 0), (None, 1), shape)
