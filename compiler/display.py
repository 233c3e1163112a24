"""Showing emitted code to people: highlighted on a terminal and in Jupyter, plain elsewhere."""

from __future__ import annotations

import html
import os
from typing import TextIO

from pygments import highlight
from pygments.formatters import HtmlFormatter, TerminalFormatter
from pygments.lexers import PythonLexer


def for_terminal(source: str, stream: TextIO) -> str:
    """`source` highlighted when `stream` is a terminal, unchanged when it is a pipe or a file,
    or when the user asks for no colour (NO_COLOR set, TERM=dumb)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return source
    if not getattr(stream, "isatty", lambda: False)():
        return source
    return highlight(source, PythonLexer(), TerminalFormatter())


def as_html(source: str, title: str = "") -> str:
    """`source` as a self-contained highlighted HTML fragment (inline styles, no stylesheet)."""
    heading = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    return heading + highlight(source, PythonLexer(), HtmlFormatter(noclasses=True))
