"""Gradient checks that are honest: right float32 gradients pass, wrong ones fail, inputs come
from both signs within each op's domain, and the table says which element each row is."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.check import CheckRow, central_difference, check_inputs, check_passes, check_rows, format_check
from compiler.cli import main

ROOT = Path(__file__).resolve().parent.parent


def layer(x, w):
    return np.sum(np.tanh(x * w)) * 0.5


def _float32_point(seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)


def test_a_right_float32_gradient_passes():
    x, w = _float32_point()
    rows = check_rows(layer, x, w)
    assert all(row.tolerance == 1e-4 for row in rows)
    assert check_passes(rows) and compiler.check_grad(layer, x, w) < 1e-6
    # the central difference itself is not 0, as a float64 step taken in float32 made it
    assert all(abs(row.numeric) > 1e-3 for row in rows)


def test_float32_is_differenced_in_float32_where_the_function_insists():
    def strict(x):
        assert x.dtype == np.float32, "float32 only"
        return np.sum(np.sin(x) * x)

    x, _ = _float32_point()
    rows = check_rows(strict, x)
    assert rows[0].tolerance == 1e-3 and check_passes(rows)
    exact = np.sin(x.astype(np.float64)) + x * np.cos(x.astype(np.float64))
    assert rows[0].numeric == pytest.approx(exact[rows[0].index], rel=1e-3)


def test_the_step_scales_with_the_value():
    f = lambda x: x**3  # noqa: E731
    for x in (1.0, 1e4):
        assert central_difference(f, {"x": x}, "x") == pytest.approx(3 * x * x, rel=1e-8)


WRONG_TANH = textwrap.dedent(
    """
    import dataclasses, sys
    import numpy as np
    import compiler
    from compiler import ops

    # A copy of the table whose tanh rule is off by 0.1%: the check must catch it in float32.
    original = ops.OPS
    table = {**original, "tanh": dataclasses.replace(original["tanh"], grads={"x": "1.001 * (1 - out ** 2) * grad"})}
    for name, module in list(sys.modules.items()):
        if name.startswith("compiler") and getattr(module, "OPS", None) is original:
            module.OPS = table
    from compiler.check import check_passes, check_rows

    def layer(x, w):
        return np.sum(np.tanh(x * w)) * 0.5

    rng = np.random.default_rng(1)
    x, w = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    print("passes" if check_passes(check_rows(layer, x, w)) else "fails")
    """
)


def test_a_wrong_float32_gradient_fails(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WRONG_TANH], capture_output=True, text=True, cwd=ROOT,
        env={"PATH": "", "FLATGRAD_CACHE_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fails"


def test_the_table_names_each_rows_element():
    rows = [CheckRow("W1", 0.5, 0.5, (2, 3)), CheckRow("b", 1.0, 1.0 + 1e-9), CheckRow("x", 1.0, 1.0, (), 1e-4)]
    table, ok = format_check(rows)
    lines = table.splitlines()
    assert lines[1].split()[:2] == ["W1[2,", "3]"] and lines[2].split()[0] == "b"
    assert lines[0].split()[-1] == "tolerance"  # the rows' tolerances differ: each shows its own
    assert ok and lines[-1] == "largest error 1.0e-09, each input's tolerance: ok"
    table, ok = format_check(rows, tolerance=1e-10)
    assert not ok and table.splitlines()[-1] == "largest error 1.0e-09, tolerance 1e-10: FAILED"
    assert "tolerance" not in table.splitlines()[0]


def relu_net(X, W):
    return np.sum(np.maximum(0, X @ W) * np.tanh(X @ W))


def logs(x, y):
    return np.sum(np.log(x) * y)


def test_inputs_are_drawn_from_both_signs_within_each_ops_domain():
    X, W = np.zeros((6, 4)), np.zeros((4, 3))
    values, drawn = check_inputs(compiler.gradient(relu_net, X, W), {}, seed=0)
    assert (values["X"] < 0).any() and (values["X"] > 0).any() and (values["W"] < 0).any()
    assert (np.abs(values["X"]) >= 0.5).all()  # away from the kinks at 0
    assert drawn == "X, W drawn with --seed 0: floats from both signs within each op's domain"
    values, _ = check_inputs(compiler.gradient(logs, np.zeros(50), np.zeros(50)), {}, seed=0)
    assert (values["x"] > 0).all() and (values["y"] < 0).any()  # a log's operand stays positive
    again, _ = check_inputs(compiler.gradient(logs, np.zeros(50), np.zeros(50)), {}, seed=0)
    assert all(np.array_equal(values[n], again[n]) for n in values)  # the seed repeats the draw
    other, _ = check_inputs(compiler.gradient(logs, np.zeros(50), np.zeros(50)), {}, seed=1)
    assert not np.array_equal(values["y"], other["y"])


def test_given_numbers_are_kept_and_a_function_not_finite_at_both_signs_gets_positive_values():
    prog = compiler.gradient(lambda x, y: np.log(x - y), 1.0, 2.0)
    values, drawn = check_inputs(prog, {"y": -5.0}, seed=0)
    assert values["y"] == -5.0 and drawn.startswith("x drawn with --seed 0")
    prog = compiler.gradient(lambda x, y: np.sum(np.log(x * y)), np.zeros(20), np.zeros(20))
    values, drawn = check_inputs(prog, {}, seed=3)
    assert (values["x"] > 0).all() and (values["y"] > 0).all() and "floats positive" in drawn


def test_check_prints_its_seed_and_the_element_of_each_row(tmp_path, monkeypatch, capsys):
    (tmp_path / "f.py").write_text(
        "import numpy as np\n\ndef f(x):\n    return np.sum(np.maximum(0, x) * x)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["check", "f.py:f", "--arg", "x=f64[8]", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "f.py:f: x drawn with --seed 5: floats from both signs within each op's domain"
    assert out.splitlines()[2].startswith("x[")
