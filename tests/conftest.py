"""Shared test helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
EXAMPLES = ROOT / "examples"

# The examples are plain user files, not a package: make them importable by name. So are the
# tests' support modules (support, table_harness), whatever pytest's import mode.
for folder in (EXAMPLES, TESTS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Emitted modules (and numba's cache of them) go to a temporary folder, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLATGRAD_CACHE_DIR", str(tmp_path_factory.mktemp("flatgrad-cache")))
        yield
