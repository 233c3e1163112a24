"""The op table printed: the whole table as `docs/op-table.md`, and what user code can call as
the README's "What can be traced" list. Both are generated, never written by hand, and a test
keeps the checked-in copies current:

    python -m compiler.listing        # rewrite docs/op-table.md and the README's list
"""

from __future__ import annotations

import sys
from pathlib import Path

from compiler.files import write_atomically
from compiler.ops import OPS, Op, operator_symbol

ROOT = Path(__file__).resolve().parent.parent
TABLE_FILE = ROOT / "docs" / "op-table.md"
README_FILE = ROOT / "README.md"
BEGIN = "<!-- the list below is generated from the op table by `python -m compiler.listing` -->"
END = "<!-- end of the generated list -->"

def spellings(row: Op) -> list[str]:
    """How user code reaches `row`, as it spells it: `+`, `np.add`, `.sum()`, `.T`."""
    spelled = []
    for kind, name in row.entry_points():
        if kind in ("operator", "reflected", "inplace"):
            spelled.append(operator_symbol(name))
        elif kind in ("ufunc", "function"):
            spelled.append(f"np.{name}")
        elif kind == "method":
            spelled.append(f".{name}()")
        elif kind == "attribute":
            spelled.append(f".{name}")
        else:
            spelled.append(f"compiler.{name}")
    return list(dict.fromkeys(spelled))


def numba_status(row: Op) -> str:
    """How the row runs under numba: as NumPy writes it, lowered, or partly refused."""
    lowered = bool(row.numba_forward or row.numba_grads)
    if row.numba_when is not None:
        return "lowered where it applies, refused elsewhere" if lowered else "refused where it does not apply"
    return "lowered" if lowered else "as written"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table() -> str:
    """Every row of the table, those made by code included, as a Markdown document."""
    lines = [
        "# The op table",
        "",
        "Generated from `compiler/ops.py` by `python -m compiler.listing`; do not edit. Each row's forward",
        "expression and local gradients are written over its operands, `out` (the gate's output) and",
        "`grad` (the upstream gradient); a row without gradients passes none.",
        "",
        f"{len(OPS)} rows.",
        "",
        "| row | user code | forward | local gradient × upstream | numba |",
        "|---|---|---|---|---|",
    ]
    for row in OPS.values():
        reached = " ".join(f"`{s}`" for s in spellings(row)) or "(made by flatgrad)"
        grads = "<br>".join(f"{param}: `{_cell(text)}`" for param, text in row.grads.items()) or "none"
        lines.append(f"| {row.name} | {_cell(reached)} | `{_cell(row.forward)}` | {grads} | {numba_status(row)} |")
    return "\n".join(lines) + "\n"


def surface() -> str:
    """What user code can call on traced values, by kind, for the README."""
    kinds: dict[str, list[str]] = {"operators": [], "NumPy functions and ufuncs": [], "ndarray methods": [],
                                   "ndarray attributes": [], "gates": []}
    without_gradient: list[str] = []
    for row in OPS.values():
        for spelled in spellings(row):
            if spelled.startswith("np."):
                kind = "NumPy functions and ufuncs"
            elif spelled.startswith("compiler."):
                kind = "gates"
            elif spelled.endswith("()") and spelled.startswith("."):
                kind = "ndarray methods"
            elif spelled.startswith("."):
                kind = "ndarray attributes"
            else:
                kind = "operators"
            kinds[kind].append(spelled)
            if not row.grads:
                without_gradient.append(spelled)
    lines = [BEGIN]
    for kind, names in kinds.items():
        ordered = sorted(dict.fromkeys(names)) if kind != "operators" else list(dict.fromkeys(names))
        lines.append(f"- {kind}: " + " ".join(f"`{name}`" for name in ordered))
    passing_none = sorted(dict.fromkeys(without_gradient))
    lines.append("- of these, pass no gradient (bool, integer or piecewise-constant results): "
                 + " ".join(f"`{name}`" for name in passing_none))
    lines.append(END)
    return "\n".join(lines)


def readme_with_surface(readme: str) -> str:
    """The README with its generated list replaced by the table's current one."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + surface() + readme[end:]


def main() -> int:
    TABLE_FILE.parent.mkdir(exist_ok=True)
    write_atomically(TABLE_FILE, table())
    write_atomically(README_FILE, readme_with_surface(README_FILE.read_text()))
    print(f"wrote {TABLE_FILE.relative_to(ROOT)} and the list in {README_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
