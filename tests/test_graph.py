"""Pictures of backprop: DOT of the graph with values and gradients, drawn by Graphviz."""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.cli import main
from neuron import neuron

GOLDEN = Path(__file__).resolve().parent / "golden" / "neuron.dot"
AT = (2.0, -1.0, -3.0, -2.0, -3.0)
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


def test_neuron_dot_matches_its_golden_file():
    dot = compiler.gradient(neuron, *AT).dot(*AT)
    if os.environ.get("FLATGRAD_REGENERATE"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(dot)
    assert dot == GOLDEN.read_text()


def edge(dot: str, name: str) -> str:
    return next(line for line in dot.splitlines() if f"<b>{name}</b>" in line)


def test_each_edge_carries_its_value_above_and_its_gradient_below():
    dot = compiler.gradient(neuron, *AT).dot(*AT)
    expected = {"w0": ("2.00", "-0.20"), "x0": ("-1.00", "0.39"), "w1": ("-3.00", "-0.39"),
                "x1": ("-2.00", "-0.59"), "w2": ("-3.00", "0.20"), "s3": ("1.00", "0.20"), "L": ("0.73", "1.00")}
    for name, (value, grad) in expected.items():
        label = edge(dot, name)
        assert label.index(f'"darkgreen">{value}<') < label.index(f'"red3">{grad}<'), label
    assert 'label="sigmoid"' in dot and 'label="×"' in dot


def test_array_values_show_their_shapes():
    dot = compiler.gradient(lambda W, x: np.sum(np.tanh(W @ x)), np.ones((3, 2)), np.ones(2)).dot(
        np.ones((3, 2)), np.ones(2)
    )
    assert "float64[3,2]" in edge(dot, "W")


@needs_dot
def test_svg_is_drawn_and_parses(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    out = tmp_path / "neuron.svg"
    argv = ["graph", "examples/neuron.py:neuron", *[f"--arg={n}={v}" for n, v in zip(("w0", "x0", "w1", "x1", "w2"), AT)]]
    assert main([*argv, "-o", str(out)]) == 0
    texts = [t.text for t in ET.parse(out).iter() if t.tag.endswith("text") and t.text]
    assert "0.73" in texts and "-0.20" in texts and "sigmoid" in texts


def test_without_dot_a_dot_file_still_works_and_svg_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    assert main(["graph", "examples/simple.py:simple", "-o", str(tmp_path / "g.dot")]) == 0
    assert (tmp_path / "g.dot").read_text().startswith("digraph flatgrad {")
    capsys.readouterr()
    assert main(["graph", "examples/simple.py:simple", "-o", str(tmp_path / "g.svg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install graphviz" in err
    assert not (tmp_path / "g.svg").exists()
