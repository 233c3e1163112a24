"""The emitted module stands alone: no flatgrad at run time, clean under pyflakes, the same
numbers under numba, and the same bytes for the same function whatever the hash seed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from neuron import neuron
from simple import simple
from staged import staged
from support import pyflakes_messages

import compiler

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [(simple, (-2.0, 5.0, -4.0)), (neuron, (2.0, -1.0, -3.0, -2.0, -3.0)), (staged, (3.0, -4.0))]


@pytest.mark.parametrize("path", sorted((ROOT / "generated").glob("*.py")), ids=lambda p: p.name)
def test_generated_modules_pass_pyflakes(path):
    assert pyflakes_messages(path.read_text(), str(path)) == ""


@pytest.mark.parametrize("f, args", EXAMPLES, ids=lambda p: getattr(p, "__name__", ""))
def test_emitted_source_passes_pyflakes(f, args):
    assert pyflakes_messages(compiler.gradient(f, *args).source, f.__name__) == ""


def test_saved_module_runs_without_flatgrad(tmp_path):
    saved = compiler.gradient(neuron, 2.0, -1.0, -3.0, -2.0, -3.0).save(tmp_path / "neuron_grad.py")
    assert saved == tmp_path / "neuron_grad.py"
    script = textwrap.dedent(
        """
        import sys
        sys.modules["compiler"] = None  # any `import compiler` now fails
        import neuron_grad
        value, grads = neuron_grad.value_and_grad(2.0, -1.0, -3.0, -2.0, -3.0)
        print(round(float(value), 4), [round(float(g), 4) for g in grads])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "0.7311 [-0.1966, 0.3932, -0.3932, -0.5898, 0.1966]"


def test_save_is_atomic_and_leaves_no_temporary(tmp_path):
    prog = compiler.gradient(simple, 1.0, 2.0, 3.0)
    target = tmp_path / "deep" / "simple_grad.py"
    prog.save(target)
    prog.save(target)
    assert target.read_text() == prog.source
    assert [p.name for p in target.parent.iterdir()] == ["simple_grad.py"]


@pytest.mark.numba
def test_numba_agrees_with_numpy():
    """One jitted program per example; numba compiles once and caches on disk."""
    for f, args in EXAMPLES:
        plain = compiler.gradient(f, *args)
        jitted = compiler.gradient(f, *args, jit="numba")
        assert "@numba.njit(cache=True)" in jitted.source
        assert type(jitted.module.value_and_grad).__module__.startswith("numba")
        value, grads = jitted.value_and_grad(*args)
        expected_value, expected_grads = plain.value_and_grad(*args)
        assert value == pytest.approx(expected_value, rel=1e-12)
        assert grads == pytest.approx(expected_grads, rel=1e-12)
        assert jitted.forward(*args) == pytest.approx(expected_value, rel=1e-12)
        assert jitted.grad(*args) == pytest.approx(expected_grads, rel=1e-12)


def test_numba_modules_compile_at_o2_and_put_numbas_level_back(monkeypatch):
    """numba's -O3 spends seconds per line on arrays of three axes and more (and minutes on a
    convolution's backward); a module with such arrays compiles at -O2, unless NUMBA_OPT is set.
    On matrices -O3 compiles about as fast and its code runs a few percent faster: kept."""
    import numba

    plain = compiler.gradient(simple, 1.0, 2.0, 3.0, jit="numba").source
    assert "compiled_at_o2" not in plain and "import os" not in plain
    module = compiler.gradient(lambda x: np.sum(np.tanh(x)), np.ones((2, 2, 2)), jit="numba").module
    config = numba.core.config
    monkeypatch.delenv("NUMBA_OPT", raising=False)
    monkeypatch.setattr(config, "OPT", type(config.OPT)(3))
    seen = []

    class Dispatcher:  # stands for numba's: what the module wraps is its `_compile_for_args`
        def _compile_for_args(self, fail=False):
            seen.append(int(config.OPT))
            if fail:
                raise RuntimeError("numba could not compile")

    function = module.compiled_at_o2(Dispatcher())
    function._compile_for_args()
    with pytest.raises(RuntimeError):
        function._compile_for_args(fail=True)
    assert seen == [2, 2] and config.OPT == 3  # put back, after a failed compile too
    monkeypatch.setenv("NUMBA_OPT", "3")  # the user's level stands
    function._compile_for_args()
    assert seen[-1] == 3


def test_source_depends_on_the_examples_shapes_not_their_values():
    """In one process (memo tables warm): determinism across processes is the next test's."""
    first = compiler.gradient(staged, 1.0, 2.0).source
    assert compiler.gradient(staged, 5.0, -1.0).source == first


@pytest.mark.parametrize("target", ["examples/staged.py:staged", "examples/huber.py:huber"])  # huber branches
def test_source_is_independent_of_the_hash_seed(target):
    outputs = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-m", "compiler", "show", target, "--optimize"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1


@pytest.mark.numba
@pytest.mark.parametrize("optimize", [False, True])
def test_numba_splits_long_functions_into_parts(monkeypatch, optimize):
    """numba compile time grows faster than a function's length: long bodies become parts (in
    optimize mode, value_and_grad's body is the graph with the seed folded in)."""
    import compiler.codegen.module

    monkeypatch.setattr(compiler.codegen.module, "NUMBA_PART_LINES", 8 if not optimize else 4)
    jitted = compiler.gradient(staged, 3.0, -4.0, jit="numba", optimize=optimize)
    assert "def _value_and_grad_part0(" in jitted.source and "def _backward_part0(" in jitted.source
    plain = compiler.gradient(staged, 3.0, -4.0)
    value, grads = jitted.value_and_grad(3.0, -4.0)
    expected_value, expected_grads = plain.value_and_grad(3.0, -4.0)
    assert value == pytest.approx(expected_value, rel=1e-12)
    assert grads == pytest.approx(expected_grads, rel=1e-12)
    _, cache = jitted.module.forward_with_cache(3.0, -4.0)
    assert jitted.module.backward(2.0, cache) == pytest.approx(tuple(2 * g for g in expected_grads), rel=1e-12)
    assert pyflakes_messages(jitted.source, "parts") == ""


@pytest.mark.numba
def test_numba_lowers_max_and_min_along_an_axis():
    import numpy as np

    def f(x):
        return np.sum(np.max(x, axis=1) * 2.0) + np.sum(np.min(x, axis=0, keepdims=True))

    x = np.random.default_rng(0).normal(size=(4, 3))
    jitted = compiler.gradient(f, x, jit="numba")
    assert "extreme_along(x, 1, True)" in jitted.source and "extreme_along(x, 0, False)" in jitted.source
    value, (grad,) = jitted.value_and_grad(x)
    expected_value, (expected,) = compiler.gradient(f, x).value_and_grad(x)
    assert value == pytest.approx(expected_value, rel=1e-12)
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


def test_a_long_cache_is_summed_up_in_the_header():
    def chain(x, w):
        h = x
        for _ in range(30):
            h = np.tanh(h * w)
        return h

    prog = compiler.gradient(chain, 0.5, 0.9)
    (line,) = [line for line in prog.source.splitlines() if line.startswith("The backward pass caches")]
    assert line.startswith("The backward pass caches x, w, h, h_1, ") and " h_21 and 8 more: 256 bytes" in line
    # the cache itself holds every value backward reads
    _, cache = prog.module.forward_with_cache(0.5, 0.9)
    assert len(cache) == 32


@pytest.mark.numba
def test_float32_stays_float32_under_numba():
    """numba computes float32 with a Python number in float64 (NumPy does not), and `@` refuses
    mixed dtypes: the numbers in float32 arithmetic are written as np.float32."""

    def f(W, x):
        h = np.tanh(W @ x) * 2.0 + 1
        return np.sum(h * h) / 3 + 0.5 * np.sum(W**2)

    W = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    x = np.linspace(-1, 1, 4).astype(np.float32)
    jitted = compiler.gradient(f, W, x, jit="numba")
    assert "s2 = s1 * np.float32(2.0)" in jitted.source and "np.full((3, 4), grad_s7)" in jitted.source
    value, grads = jitted.value_and_grad(W, x)
    expected_value, expected_grads = compiler.gradient(f, W, x).value_and_grad(W, x)
    assert value == pytest.approx(float(expected_value), rel=1e-6)
    for ours, theirs in zip(grads, expected_grads):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_a_line_form_keeps_every_character_but_its_placeholders():
    # A line's form is a format string the names fill; braces, quotes and backslashes in the
    # rendered text stay as they are.
    from compiler.codegen.lines import format_string

    text = """__flatgrad_0__ = {'a': __flatgrad_1__}["b"] + f'{x}\\n' * __flatgrad_12__ + __flatgrad_1__"""
    names = ["out", "x1", *[f"n{k}" for k in range(2, 12)], "last"]
    assert format_string(text).format(*names) == """out = {'a': x1}["b"] + f'{x}\\n' * last + x1"""
    assert format_string("no names at all").format() == "no names at all"

def test_a_user_name_never_takes_a_part_functions_name(monkeypatch):
    """Part functions' names are reserved: a user's local of that name gets a suffix."""
    import compiler.codegen.module

    monkeypatch.setattr(compiler.codegen.module, "NUMBA_PART_LINES", 2)

    def f(x, w):
        _value_and_grad_part1 = x * w
        h = _value_and_grad_part1 * w
        h = h * w
        return h * w

    source = compiler.gradient(f, 1.0, 2.0, jit="numba").source
    assert "def _value_and_grad_part1(" in source
    assert "    _value_and_grad_part1_1 = x * w" in source
    assert not re.search(r"^\s*_value_and_grad_part1 = ", source, re.M)
