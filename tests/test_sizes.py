"""Named sizes and the checks every emitted module makes of its arguments (issue 13).

A module traced with `dims={"X": "N,4", "y": "N"}` reads N from its arguments and serves every
batch size; every module raises a ValueError naming the argument it cannot take.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import json
import shutil
import subprocess
import sys

import autograd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import EXAMPLES, ROOT, pyflakes_messages
from svm_net import svm_net
from test_arrays import LAYERS, data, svm_net_oracle
from test_random_programs import ATOL, RTOL, array_function, array_programs, draw_array_case

import compiler
from compiler.cli import main, parse_spec
from compiler.errors import SignatureError
from compiler.sizes import fit, fit_float, parse_axes, sizes_for

NET_DIMS = {"X": "N,4", "y": "N"}


# --------------------------------------------------------------------------- the spelling


def test_axes_are_names_and_numbers():
    assert parse_axes("N, 4", "dims") == ("N", 4)
    assert parse_axes(("N", 4), "dims") == ("N", 4)
    assert parse_axes("", "dims") == ()
    for bad, message in [("N,4-x", "cannot name a size"), ("for", "cannot name a size"), ("-2", "no size")]:
        with pytest.raises(SignatureError, match=message):
            parse_axes(bad, "dims")


@pytest.mark.parametrize(
    "dims, message",
    [
        ({"Z": "N"}, r"dims names \['Z'\], which are not parameters"),
        ({"X": "N"}, r"has 1 axes, but the example X has shape \(8, 4\)"),
        ({"X": "N,5"}, r"fixes an axis at 5, but the example X has shape \(8, 4\)"),
        ({"X": "N,4", "y": "N", "b2": "N"}, "N is 3 in the example b2 but 8 in X"),
        ({"X": "y,4"}, "'y' is a parameter's name"),
    ],
)
def test_dims_that_do_not_fit_the_examples_are_refused(dims, message):
    with pytest.raises(SignatureError, match=message):
        compiler.gradient(svm_net, **data(8, 4, 8, 3, seed=0), dims=dims)


def test_a_size_is_fitted_from_five_points():
    points = [{"N": 8, "D": 4}, *({"N": 8 * a, "D": 4 * b} for a, b in [(2, 3), (3, 5), (4, 2), (5, 4)])]

    def at(expression):
        return [eval(expression, {}, dict(point)) for point in points]

    for expression in ["N", "4 * N", "N + 1", "N * D", "N * D - N", "D * D - 3", "2 * N + D - 1", "-N"]:
        assert fit(at(expression), points) == expression
    assert fit([7, 8, 9, 10, 11], points) is None
    assert fit(at("N * D - N")[:4], points[:4]) is None  # two terms need five points
    for expression in ["1 / N", "1 / (N * D)", "1 / (N * D - N)", "0.5 * N", "3 / N"]:
        assert fit_float(at(expression), points) == expression
    assert fit_float([0.1, 0.7, 0.2, 0.3, 0.4], points) is None
    assert sizes_for(None, {"X": (8, 4)}).symbols == ()


# --------------------------------------------------------------------------- one module, any N


def test_the_module_reads_N_from_its_arguments():
    prog = compiler.gradient(svm_net, **data(8, 4, 8, 3, seed=0), wrt=LAYERS, dims=NET_DIMS)
    assert "    X: float64[N, 4]\n    y: int64[N]\n" in prog.source
    assert "N = check_arguments(X, y, W1, b1, W2, b2)" in prog.source
    assert "scores[np.arange(N), y]" in prog.source and "data_loss = s6 / N" in prog.source
    assert "--arg 'X=f64[N,4]' --arg 'y=i64[N]'" in prog.source
    for n in (1, 3, 8, 50):
        d = data(n, 4, 8, 3, seed=n)
        value, grads = prog.value_and_grad(*d.values())
        assert value == pytest.approx(svm_net_oracle(**d), rel=1e-12)
        expected = autograd.grad(lambda *w: svm_net_oracle(d["X"], d["y"], *w), (0, 1, 2, 3))(
            *(d[k] for k in LAYERS)
        )
        for ours, theirs in zip(grads, expected):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    wrong_y = r"svm_net: y must be int64\[N\] with N = X.shape\[0\], not ndarray int64\[7\]"
    with pytest.raises(ValueError, match=wrong_y):
        prog.grad(*{**data(8, 4, 8, 3, seed=0), "y": np.zeros(7, np.int64)}.values())


def test_backward_reads_N_from_its_cache_or_keeps_it():
    def mean_square(x):
        return np.sum(x * x) / x.shape[0]

    prog = compiler.gradient(mean_square, np.ones(4), dims={"x": "N"})
    cached = prog.source.split("cache = ", 1)[1].splitlines()[0]
    assert "N" in cached or "x" in cached
    for n in (1, 6):
        x = np.arange(n, dtype=float)
        value, cache = prog.forward_with_cache(x)
        (grad_x,) = prog.backward(1.0, cache)
        np.testing.assert_allclose(grad_x, 2 * x / n)
        assert value == pytest.approx(np.sum(x * x) / n)


def rows(X, w):
    """A loop over the rows: its code depends on N's value."""
    total = 0.0
    for row in X:
        total = total + np.sum(row * w)
    return total / X.shape[0]


def test_a_size_the_code_depends_on_is_fixed_and_checked():
    prog = compiler.gradient(rows, np.ones((3, 2)), np.ones(2), dims={"X": "N,2"})
    assert "N is fixed at 3, the example's: the code depends on its value" in prog.source
    assert "    X: float64[3, 2]\n" in prog.source and "--arg 'X=f64[N,2]'" in prog.source
    X, w = np.arange(6.0).reshape(3, 2), np.array([0.5, -1.0])
    value, (grad_X, grad_w) = prog.value_and_grad(X, w)
    assert value == pytest.approx(rows(X, w))
    np.testing.assert_allclose(grad_w, X.sum(axis=0) / 3)
    with pytest.raises(ValueError, match=r"rows: X must be float64\[3, 2\], not ndarray float64\[4, 2\]"):
        prog.grad(np.ones((4, 2)), w)
    # the other named sizes stay symbolic
    def scaled(X, Y):
        return np.sum(X[:, :1] * Y) / X.shape[0]

    prog = compiler.gradient(scaled, np.ones((3, 2)), np.ones(1), dims={"X": "N,D", "Y": "M"})
    assert "M is fixed at 1" in prog.source and "X: float64[N, D]" in prog.source
    assert prog.value_and_grad(np.ones((5, 4)), np.full(1, 2.0))[0] == pytest.approx(2.0)


def test_the_lazy_api_keeps_a_program_for_each_value_of_a_fixed_size():
    lazy = compiler.grad(rows, wrt="w", dims={"X": "N,2"})
    w = np.array([0.5, -1.0])
    for n in (3, 4, 3):
        X = np.arange(2.0 * n).reshape(n, 2)
        np.testing.assert_allclose(lazy(X, w), X.sum(axis=0) / n)
    assert len(lazy.programs) == 2


def test_the_command_line_names_sizes(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    assert main(["emit", "examples/softmax.py:softmax", *EXAMPLES["softmax"], "-o", "s.py"]) == 0
    assert "N = check_arguments(X, y, W, b)" in (tmp_path / "s.py").read_text()
    assert main(["emit", "examples/softmax.py:softmax", "--arg", "X=f64[N-1,4]"]) == 2
    assert "SPEC is a number (2.0) or a dtype and shape" in capsys.readouterr().err


# --------------------------------------------------------------------------- saved modules

# Imports a saved module where `compiler` cannot be imported and prints its value and
# gradients (as lists) at each N.
_STANDALONE = """
import importlib.util, json, sys
import numpy as np
sys.modules["compiler"] = None  # a saved module must not need flatgrad
spec = importlib.util.spec_from_file_location("saved", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
out = []
for n in json.loads(sys.argv[2]):
    rng = np.random.default_rng(n)
    args = (rng.normal(size=(n, 4)), rng.integers(0, 3, n), rng.normal(size=(4, 8)) * 0.5,
            rng.normal(size=8) * 0.1, rng.normal(size=(8, 3)) * 0.5, rng.normal(size=3) * 0.1)
    value, grads = module.value_and_grad(*args)
    out.append([float(value), [g.tolist() for g in grads]])
try:  # compiled for these types now: the compiled check runs
    module.grad(*args[:1], args[1][:-1], *args[2:])
except ValueError as error:
    out.append(str(error))
print(json.dumps(out))
"""


def _standalone(path, sizes):
    run = subprocess.run(
        [sys.executable, "-c", _STANDALONE, str(path), json.dumps(sizes)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _against_autograd(results, sizes):
    assert "svm_net: y must be int64[N] with N = X.shape[0]" in results.pop()
    for n, (value, grads) in zip(sizes, results):
        rng = np.random.default_rng(n)
        d = dict(
            X=rng.normal(size=(n, 4)), y=rng.integers(0, 3, n), W1=rng.normal(size=(4, 8)) * 0.5,
            b1=rng.normal(size=8) * 0.1, W2=rng.normal(size=(8, 3)) * 0.5, b2=rng.normal(size=3) * 0.1,
        )
        assert value == pytest.approx(svm_net_oracle(**d), rel=1e-10)
        expected = autograd.grad(lambda *w: svm_net_oracle(d["X"], d["y"], *w), (0, 1, 2, 3))(
            *(d[k] for k in LAYERS)
        )
        for ours, theirs in zip(grads, expected):
            np.testing.assert_allclose(np.array(ours), theirs, rtol=1e-9, atol=1e-12)


SIZES = [1, 2, 8, 16, 1000]


def test_saved_svm_net_serves_every_batch_size(tmp_path):
    saved = shutil.copy(ROOT / "generated" / "svm_net.py", tmp_path / "svm_net.py")
    _against_autograd(_standalone(saved, SIZES), SIZES)


@pytest.mark.numba
def test_saved_svm_net_under_numba_serves_every_batch_size(tmp_path):
    saved = shutil.copy(ROOT / "generated" / "svm_net_numba.py", tmp_path / "svm_net_numba.py")
    _against_autograd(_standalone(saved, SIZES), SIZES)


def _golden_arguments(stem):
    """Arguments of the shapes and dtypes an example's golden modules are written for."""
    options = EXAMPLES[stem]
    given = dict(options[i + 1].split("=", 1) for i, o in enumerate(options) if o == "--arg")
    params = list(inspect.signature(getattr(importlib.import_module(stem), stem)).parameters)
    rng = np.random.default_rng(0)
    arguments = {}
    for name in params:
        spec = parse_spec(name, given.get(name, "f64"))
        if spec.dtype.startswith("int"):
            arguments[name] = np.zeros(spec.shape, spec.dtype)
        else:
            arguments[name] = rng.normal(size=spec.shape) if spec.shape else 0.5
    return arguments


def _wrong_arguments(arguments):
    """(name, what is wrong, the arguments with that one wrong): a number given an array, an
    array a wrong shape, dtype or number of axes, or given as a list."""
    for name, value in arguments.items():
        if np.ndim(value) == 0:
            yield name, "array", {**arguments, name: np.ones(3)}
            continue
        yield name, "shape", {**arguments, name: np.resize(value, tuple(n + 1 for n in value.shape))}
        yield name, "dtype", {**arguments, name: value.astype(np.float32 if value.dtype.kind == "i" else np.int64)}
        yield name, "axes", {**arguments, name: value[..., None]}
        yield name, "list", {**arguments, name: value.tolist()}


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", ["", "_optimized"])
@pytest.mark.parametrize("stem", list(EXAMPLES))
def test_every_golden_module_names_the_argument_it_cannot_take(stem, variant):
    module = _load(ROOT / "generated" / f"{stem}{variant}.py")
    arguments = _golden_arguments(stem)
    module.value_and_grad(*arguments.values())
    for name, _, wrong in _wrong_arguments(arguments):
        for function in (module.forward, module.value_and_grad, module.grad, module.forward_with_cache):
            with pytest.raises(ValueError, match=rf"^{stem}: {name} must be "):
                function(*wrong.values())


@pytest.mark.numba
@pytest.mark.parametrize("stem", list(EXAMPLES))
def test_every_numba_golden_module_names_the_argument_it_cannot_take(stem, tmp_path):
    module = _load(shutil.copy(ROOT / "generated" / f"{stem}_numba.py", tmp_path / f"{stem}_numba.py"))
    arguments = _golden_arguments(stem)
    # numba checks in Python before it compiles for new argument types, so these raise without
    # a compile; test_saved_svm_net_under_numba_serves_every_batch_size checks the compiled check
    cases = [(name, wrong) for name, _, wrong in _wrong_arguments(arguments)]
    for name, wrong in cases:
        with pytest.raises(ValueError, match=rf"^\(?'?{stem}: {name} must be "):
            module.grad(*wrong.values())


# --------------------------------------------------------------------------- random programs

# Every size of the random programs' inputs but 1 is named, the same size by the same name (so
# that what broadcasts at the example broadcasts at any size), and the module is run at others.
_NAMES = {4: "A", 3: "B", 2: "C"}
_OTHER_SIZES = {4: 5, 3: 6, 2: 7, 1: 1}


def _with_number_weights(program):
    """The program with its weight arrays (baked constants of one shape) as numbers."""
    def number(o):
        return float(o.flat[0]) if isinstance(o, np.ndarray) else o

    nodes = tuple(dataclasses.replace(n, operands=tuple(map(number, n.operands))) for n in program.nodes)
    return dataclasses.replace(program, nodes=nodes)


@settings(derandomize=True, max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_random_array_programs_with_named_sizes_against_autograd(data):
    program = _with_number_weights(data.draw(array_programs(), label="program"))
    f = array_function(program)
    dims = {f"a{i}": ",".join(_NAMES.get(n, str(n)) for n in s) for i, s in enumerate(program.shapes) if s}
    examples = [np.ones(s) if s else 1.0 for s in program.shapes]
    prog = compiler.gradient(f, *examples, dims=dims)
    assert pyflakes_messages(prog.source) == ""

    def other(shape):
        return tuple(_OTHER_SIZES[n] for n in shape)

    nodes = tuple(dataclasses.replace(n, shape=other(n.shape)) for n in program.nodes)
    resized = dataclasses.replace(program, shapes=tuple(map(other, program.shapes)), nodes=nodes)
    args, expected_value, expected_grads = draw_array_case(data, resized)
    with np.errstate(all="ignore"):
        value, grads = prog.value_and_grad(*args)
    np.testing.assert_allclose(float(value), expected_value, rtol=1e-12, atol=1e-12, err_msg=str(program))
    for i, (grad, expected) in enumerate(zip(grads, expected_grads)):
        assert np.shape(grad) == np.shape(args[i]), str(program)
        scale = max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=ATOL * scale, err_msg=f"a{i}\n{program}")


@pytest.mark.parametrize("name", ["scores", "cache", "updated"])
def test_a_size_cannot_take_a_name_the_module_uses(name):
    with pytest.raises(SignatureError, match=f"the named size {name} is also a name in the emitted code"):
        compiler.gradient(svm_net, **data(8, 4, 8, 3, seed=0), dims={"X": f"{name},4", "y": name})


def test_shape_arithmetic_on_named_sizes_stays_symbolic():
    def flattened(X, w):
        N, D = X.shape
        rows = X.reshape(N, -1) * w
        return np.sum(rows.reshape(N * D) ** 2) / (N * D) + np.mean(X[:, : D - 1])

    prog = compiler.gradient(flattened, np.ones((4, 3)), 1.0, dims={"X": "N,D"})
    assert "N * D" in prog.source and "D - 1" in prog.source
    for shape in [(1, 2), (5, 7)]:
        X, w = np.random.default_rng(0).normal(size=shape), 0.7
        value, (grad_X, grad_w) = prog.value_and_grad(X, w)
        assert value == pytest.approx(flattened(X, w), rel=1e-12)
        expected = autograd.grad(flattened, (0, 1))(X, w)
        np.testing.assert_allclose(grad_X, expected[0], rtol=1e-12)
        assert grad_w == pytest.approx(expected[1], rel=1e-12)
