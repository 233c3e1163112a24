"""The checked-in listings of the op table are current: docs/op-table.md and the README's list
of what can be traced are generated from the table (`python -m compiler.listing`)."""

from __future__ import annotations

from compiler import listing
from compiler.ops import OPS


def test_the_table_listing_is_current():
    assert listing.TABLE_FILE.read_text() == listing.table(), "run `python -m compiler.listing`"


def test_the_readmes_list_is_current():
    readme = listing.README_FILE.read_text()
    assert listing.readme_with_surface(readme) == readme, "run `python -m compiler.listing`"


def test_every_row_and_every_spelling_is_listed():
    text = listing.table()
    for row in OPS.values():
        assert f"| {row.name} |" in text
        for spelled in listing.spellings(row):
            assert f"`{spelled}`" in listing.surface() or not spelled
