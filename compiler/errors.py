"""The errors flatgrad raises. All derive from `FlatgradError`."""

from __future__ import annotations


class FlatgradError(Exception):
    """Base class of every error flatgrad raises on purpose."""


class TracingError(FlatgradError):
    """The user's function does something that cannot be traced into straight-line code.

    The message names the operation and the user's file:line, and says what to write instead.
    """


class UnsupportedOperationError(TracingError):
    """A NumPy function, ufunc or operator that has no row in the op table."""


class UnsupportedAttributeError(UnsupportedOperationError, AttributeError):
    """An ndarray attribute or method that has no row in the op table. Also an AttributeError,
    so that `hasattr` and `getattr(x, name, default)` on a traced value still answer False."""


class BranchOnTracedValueError(TracingError):
    """Python control flow asked a traced value for a bool where it cannot be emitted as an `if`
    (an array's truth, a `while` loop, too many paths)."""


class LoopOnTracedValueError(BranchOnTracedValueError):
    """A `while` loop tests a traced value: its trip count depends on numbers the trace does not have."""


class TooManyPathsError(BranchOnTracedValueError):
    """Branches on traced values make more paths through the function than a module holds."""


class ConcreteValueError(TracingError):
    """`float()`, `int()` or a `math.*` function asked for the number behind a traced value."""


class UndeclaredStaticError(ConcreteValueError):
    """An integer argument used as a Python int (`range(n)`, `int(n)`, a slice bound): the message
    names `static=("n",)`, which bakes its value in."""


class SignatureError(FlatgradError):
    """Arguments that do not fit the function or the program (count, type, `wrt` names)."""


class SizeDependenceError(FlatgradError):
    """Code whose operations depend on the value of a size named in `dims` (a loop over the
    rows, a branch on the size): flatgrad fixes that size at the example's value instead."""

    def __init__(self, message: str, line: str) -> None:
        super().__init__(message)
        self.line = line  # the first emitted line that differs between the sizes


class NotAdditiveError(FlatgradError):
    """A loss split over chunks of its batch (`compiler.dask`) whose value on all the rows is not
    the sum of its values on parts of them: a mean over the rows, or a term that does not depend
    on the rows (a regulariser), which every chunk would count again."""


class WriteError(FlatgradError):
    """A file cannot be written, or must not be: it would replace a folder, the traced
    function's own source, or a file flatgrad did not write (unless forced)."""


class UsageError(FlatgradError):
    """The command line itself is wrong (an unknown option, a bad `--arg`, a missing file)."""


class IRError(FlatgradError):
    """The IR broke one of its invariants: a bug in flatgrad, not in the user's code."""
