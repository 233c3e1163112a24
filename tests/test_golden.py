"""Golden files: generated/ holds what `flatgrad emit` makes of examples/, byte for byte.

Regenerate them after an intended change to the emitted code, then read the diff:

    FLATGRAD_REGENERATE=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import os
import shlex
import shutil

import pytest
from support import EXAMPLES, LAYER_EXAMPLES, ROOT

from compiler.cli import main

# (example function, `flatgrad emit` options) -> generated/<name>[_optimized][_numba].py
GOLDEN = [
    (f"examples/{stem}.py:{stem}", options + variant)
    for stem, options in EXAMPLES.items()
    for variant in ([], ["--jit", "numba"], ["--optimize"])
] + [
    (f"examples/layers.py:{name}", options + variant)
    for name, options in LAYER_EXAMPLES.items()
    for variant in ([], ["--jit", "numba"])
]


def golden_path(target: str, options: list[str]) -> str:
    name = target.rsplit(":", 1)[1]
    suffix = ("_optimized" if "--optimize" in options else "") + ("_numba" if "--jit" in options else "")
    return f"generated/{name}{suffix}.py"


@pytest.mark.parametrize("target, options", GOLDEN, ids=[golden_path(*g) for g in GOLDEN])
def test_generated_matches_emit(target, options, tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    assert main(["emit", target, *options]) == 0
    expected = golden_path(target, options)
    assert capsys.readouterr().out.strip() == f"wrote {expected}"
    emitted = (tmp_path / expected).read_text()
    golden = ROOT / expected
    if os.environ.get("FLATGRAD_REGENERATE"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(emitted)
    assert golden.is_file(), f"{expected} is missing: regenerate with FLATGRAD_REGENERATE=1"
    assert emitted == golden.read_text(), f"{expected} differs from what emit makes: see the module docstring"


def test_every_generated_file_has_an_example():
    expected = {golden_path(*g) for g in GOLDEN}
    present = {f"generated/{p.name}" for p in (ROOT / "generated").glob("*.py")}
    assert present == expected


@pytest.mark.parametrize("golden", sorted(p.name for p in (ROOT / "generated").glob("*.py")))
def test_the_headers_command_regenerates_the_file_byte_for_byte(golden, tmp_path, monkeypatch, capsys):
    """The "regenerate with" line is one shell command (quoted for POSIX shells): split as a
    shell splits it, it writes the same bytes."""
    text = (ROOT / "generated" / golden).read_text()
    command = text.split("regenerate with\n", 1)[1].splitlines()[0].strip()
    argv = shlex.split(command)
    assert argv[:2] == ["flatgrad", "emit"] and argv[-2:] == ["-o", f"generated/{golden}"]
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    assert main(argv[1:]) == 0
    assert (tmp_path / "generated" / golden).read_text() == text
