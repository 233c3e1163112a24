"""`flatgrad report`: one self-contained HTML page, parsed; drawn by headless Chromium when present."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from neuron import neuron

from compiler.check import check_rows
from compiler.cli import main

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    """Element ids, table cells and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tags: list[str] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.ids.update(value for name, value in attrs if name == "id")
        self._in_cell = tag == "td"

    def handle_endtag(self, tag):
        self._in_cell = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell:
            self.cells.append(data.strip())


POINT = {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}


@pytest.fixture
def report(tmp_path, monkeypatch, capsys) -> Path:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "neuron.html"
    args = [f"--arg={n}={v}" for n, v in POINT.items()]
    assert main(["report", "examples/neuron.py:neuron", *args, "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    return out


def test_report_holds_the_graph_the_code_side_by_side_and_the_check(report):
    page = Page()
    page.feed(report.read_text())
    assert {"graph", "forward", "backward", "check"} <= page.ids
    text = "".join(page.text)
    assert "s1 = w1 * x1" in text  # the forward column
    assert "grad_w1 = x1 * grad_s1" in text and "mul gate, swap multiplier" in text  # the backward column
    # the check: input, flatgrad, central difference, error, tolerance; a row per input
    assert page.cells[:3] == ["w0", "-1.966119e-01", "-1.966119e-01"]
    rows = check_rows(neuron, **POINT)
    table = [[r.label, f"{r.analytic:.6e}", f"{r.numeric:.6e}", f"{r.error:.1e}", f"{r.tolerance:.0e}"] for r in rows]
    assert [page.cells[k : k + 5] for k in range(0, len(page.cells), 5)] == table
    assert [row[0] for row in table] == list(POINT)
    assert all(row[4] == "1e-06" and float(row[3]) <= 1e-6 for row in table)  # float64's tolerance, met
    assert f"largest error {max(r.error for r in rows):.1e}: ok" in text
    assert ("svg" in page.tags) == (shutil.which("dot") is not None)
    assert "<script" not in report.read_text()  # self-contained and static


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    assert shot.stat().st_size > 10_000  # a drawn page, not a blank one
