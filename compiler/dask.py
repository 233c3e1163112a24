"""Full-batch gradients over Dask arrays: the emitted module on every chunk, the results summed.

    value, grads = compiler.dask.value_and_grad(prog, X, y, W, b, batch=("X", "y"))

The arguments named in `batch` are Dask arrays chunked along their first axis (the rows); the
others (the weights) are NumPy arrays or numbers. Each chunk's rows go through the program's own
`value_and_grad`, and the values and gradients are summed over the chunks in a tree, which is
the gradient over all the rows when the loss is a sum over them. So only such a loss is
accepted: on the first call for a program (or through `check_additive`) its value and
gradients on a few rows are compared with their sums over two parts of those rows, and a mean
over the rows or a term that does not depend on them (a regulariser, which every chunk would
add again) is refused with a `NotAdditiveError` that says how to write the loss instead.

The workers run the emitted module, never flatgrad's tracer: the module's source travels in
the task graph once per worker (one key all chunk tasks depend on), and each worker process
imports it from a file named by the source's hash (`compiler.program.load_module`) once, so
under numba each worker compiles once, or loads numba's on-disk cache of it. The workers need
flatgrad installed for that loader, and numba for a jitted module.

Dask is imported when a function here is called: flatgrad runs without it, and a missing Dask
is an error naming `pip install 'flatgrad[dask]'`. Nothing else in `compiler` imports this
module.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from compiler.errors import FlatgradError, NotAdditiveError, SignatureError
from compiler.program import GradientProgram, load_module

# Rows of the first chunk the additivity check runs on, split in two halves.
CHECK_ROWS = 16
# Partial sums added per task of the tree reduction: a chunk count of 100 takes 3 levels.
SPLIT_EVERY = 8


def value_and_grad(
    prog: GradientProgram,
    *args: Any,
    batch: str | Sequence[str] = ("X", "y"),
    compute: bool = True,
    scale: float | None = None,
    check: bool = True,
) -> tuple[Any, tuple[Any, ...]]:
    """`(value, grads)` of `prog` over all the rows of the Dask arrays named in `batch`.

    `args` are `prog`'s arguments in order: Dask arrays, chunked along axis 0 only and alike,
    for the names in `batch`, NumPy arrays or numbers for the others. The program must have been
    built with the batch axis named (`dims={"X": "N,4", "y": "N"}`), as chunks differ in rows.
    Its loss must be a sum over the rows (see the module's docstring); `scale` multiplies the
    summed value and gradients (`scale=1 / N` gives a mean). `check=False` skips the
    additivity check. With `compute=False` the result is Dask objects (a Delayed value and a
    tuple of Delayed gradients) for `dask.compute`; else NumPy values, computed with Dask's
    current scheduler (a `distributed.Client` when one is active).
    """
    job = _Job.of(prog, args, batch, "value_and_grad")
    if check:
        _check_once(job)
    value, grads = _summed(job, scale)
    if not compute:
        return value, grads
    return _dask().compute(value, grads)


def grad(
    prog: GradientProgram,
    *args: Any,
    batch: str | Sequence[str] = ("X", "y"),
    compute: bool = True,
    scale: float | None = None,
    check: bool = True,
) -> tuple[Any, ...]:
    """The gradients alone, aligned with `prog.wrt`, as `value_and_grad` computes them."""
    job = _Job.of(prog, args, batch, "grad")
    if check:
        _check_once(job)
    _, grads = _summed(job, scale)
    if not compute:
        return grads
    return _dask().compute(*grads)


def check_additive(prog: GradientProgram, *args: Any, batch: str | Sequence[str] = ("X", "y")) -> None:
    """Raise `NotAdditiveError` unless `prog`'s value and gradients on the first rows of the
    batch arrays are the sums of theirs on two parts of those rows, at the given weights and
    at random ones. The batch arrays may be NumPy or Dask arrays; `value_and_grad` runs this on
    its first call for a program and batch."""
    job = _Job.of(prog, args, batch, "check_additive", dask_batch=False)
    _check_additivity(job)


# --------------------------------------------------------------------------- the call, checked


def _dask() -> Any:
    """The `dask` package, or an error saying how to install it."""
    try:
        import dask
        import dask.array  # noqa: F401 (registers the array collection)
    except ImportError as error:
        raise FlatgradError(
            f"compiler.dask needs Dask ({error}); install it with: pip install 'flatgrad[dask]'"
        ) from None
    return dask


@dataclass(frozen=True)
class _Job:
    """One call: the program, its arguments by name, which of them are the batch, and how the
    call was written (for errors)."""

    prog: GradientProgram
    arguments: dict[str, Any]
    batch: tuple[str, ...]
    call: str

    @classmethod
    def of(cls, prog: GradientProgram, args: tuple, batch: str | Sequence[str], function: str,
           dask_batch: bool = True) -> _Job:
        if not isinstance(prog, GradientProgram):
            raise SignatureError(
                f"compiler.dask.{function} takes a GradientProgram first (compiler.gradient(f, ..., dims=...)), "
                f"not {type(prog).__name__}"
            )
        names = [v.name for v in prog.graph.inputs]
        batch_names = (batch,) if isinstance(batch, str) else tuple(batch)
        call = f"compiler.dask.{function}(prog, {', '.join(names)}, batch={batch_names!r})"
        if len(args) != len(names):
            raise SignatureError(f"{call}: the program takes {len(names)} arguments, got {len(args)}")
        job = cls(prog, dict(zip(names, args)), batch_names, call)
        job._check_program()
        job._check_batch_names()
        job._check_named_rows()
        if dask_batch:
            job._check_arrays()
        return job

    def _check_program(self) -> None:
        prog = self.prog
        outputs = prog.graph.forward.outputs
        if prog.layer or prog.vectorized or len(outputs) != 1 or outputs[0].shape != ():
            what = (
                "a layer module" if prog.layer else "a vectorized program" if prog.vectorized
                else "a program with several outputs" if len(outputs) != 1 else "a program returning an array"
            )
            raise SignatureError(
                f"{self.call}: prog is {what}; chunks are summed, so build it from a function that returns one "
                "number, the loss summed over the rows"
            )

    def _check_batch_names(self) -> None:
        names = list(self.arguments)
        if not self.batch:
            raise SignatureError(f"{self.call}: batch is empty; name the arguments that hold the rows")
        unknown = [b for b in self.batch if b not in self.arguments]
        if unknown:
            raise SignatureError(
                f"{self.call}: batch names {', '.join(map(repr, unknown))}, not among the program's arguments "
                f"{names}; name those that hold the rows, e.g. batch={tuple(n for n in names if n in 'Xxy')!r}"
            )
        differentiated = [b for b in self.batch if b in self.prog.wrt]
        if differentiated:
            weights = tuple(w for w in self.prog.wrt if w not in self.batch)
            raise SignatureError(
                f"{self.call}: the program differentiates {', '.join(differentiated)}, in batch: "
                f"{'their gradients have' if len(differentiated) > 1 else 'its gradient has'} a row per row, not "
                f"a sum over chunks; build it with wrt={weights!r}"
            )

    def _check_named_rows(self) -> None:
        """Every batch argument's first axis is one named size, which nothing else has."""
        sizes = self.prog.sizes
        first = [(name, (sizes.of(name) or (None,))[0]) for name in self.batch]
        fixed = [name for name, axis in first if not isinstance(axis, str)]
        if fixed:
            raise SignatureError(f"{self.call}: {self._unnamed_rows(fixed)}")
        symbols = {axis for _, axis in first}
        if len(symbols) > 1:
            listing = ", ".join(f"{name}: {axis}" for name, axis in first)
            raise SignatureError(
                f"{self.call}: the batch arguments' rows are different named sizes ({listing}); "
                "name them with one size in dims, as the rows of one batch"
            )
        (symbol,) = symbols
        elsewhere = [name for name, axes in sizes.axes if symbol in (axes[1:] if name in self.batch else axes)]
        if elsewhere:
            raise SignatureError(
                f"{self.call}: the rows' size {symbol} also sizes an axis of {', '.join(elsewhere)} other than the "
                f"rows of a batch argument, which a chunk's rows would not match; name that axis with another size"
            )

    def _unnamed_rows(self, fixed: list[str]) -> str:
        """Why a batch argument with a fixed number of rows cannot take chunks, and what to write."""
        sizes, inputs = self.prog.sizes, {v.name: v for v in self.prog.graph.inputs}
        dims = {name: ",".join(["N", *map(str, inputs[name].shape[1:])]) for name in self.batch}
        message = (
            f"the program was built for a fixed number of rows of {', '.join(fixed)}, and chunks have any "
            f"number; build it with the rows named: compiler.gradient(f, ..., dims={dims!r})"
        )
        for symbol, value, line in sizes.fixed:
            message += f" (flatgrad fixed {symbol} at {value}: the emitted line `{line.strip()}` depends on it)"
        return message

    def _check_arrays(self) -> None:
        """Batch arguments are Dask arrays chunked along the rows alike; the others are not Dask."""
        dask = _dask()
        array_type = dask.array.Array
        inputs = {v.name: v for v in self.prog.graph.inputs}
        for name, value in self.arguments.items():
            is_dask = isinstance(value, array_type) or dask.is_dask_collection(value)
            if name not in self.batch and is_dask:
                raise SignatureError(
                    f"{self.call}: {name} is a Dask collection but not in batch; pass the weights as NumPy "
                    f"({name}.compute()), or add {name} to batch if it holds rows"
                )
            if name in self.batch and not isinstance(value, array_type):
                raise SignatureError(
                    f"{self.call}: {name} is in batch but is a {type(value).__name__}; pass a Dask array, "
                    f"e.g. dask.array.from_array({name}, chunks=(100_000, *{name}.shape[1:]))"
                )
            if name in self.batch:
                self._check_chunks(name, value, inputs[name])
        rows = {name: self.arguments[name].chunks[0] for name in self.batch}
        reference = self.batch[0]
        for name, chunks in rows.items():
            if chunks != rows[reference]:
                raise SignatureError(
                    f"{self.call}: {name}'s rows are chunked {_short(chunks)} but {reference}'s "
                    f"{_short(rows[reference])}; "
                    f"chunk them alike: {name} = {name}.rechunk({{0: {reference}.chunks[0]}})"
                )

    def _check_chunks(self, name: str, value: Any, var: Any) -> None:
        if value.ndim != len(var.shape) or tuple(value.shape[1:]) != tuple(var.shape[1:]):
            expected = ", ".join(["N", *map(str, var.shape[1:])])
            raise SignatureError(f"{self.call}: {name} has shape {value.shape}; the program takes ({expected})")
        if value.dtype != np.dtype(var.dtype):
            raise SignatureError(
                f"{self.call}: {name} is {value.dtype}, the program takes {var.dtype}; "
                f"pass {name}.astype({str(var.dtype)!r}) or build the program for {value.dtype}"
            )
        split = [axis for axis in range(1, value.ndim) if len(value.chunks[axis]) > 1]
        if split:
            whole = ", ".join(f"{axis}: -1" for axis in split)
            raise SignatureError(
                f"{self.call}: {name} is chunked along axis {', '.join(map(str, split))} too; each chunk must hold "
                f"whole rows: {name} = {name}.rechunk({{{whole}}})"
            )


def _short(chunks: tuple[int, ...]) -> str:
    return str(chunks) if len(chunks) <= 6 else f"({', '.join(map(str, chunks[:5]))}, ...: {len(chunks)} chunks)"


# --------------------------------------------------------------------------- additivity


# The programs checked, with the batches they were checked for: one check per program and batch.
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_once(job: _Job) -> None:
    done = _CHECKED.setdefault(job.prog, set())
    if job.batch not in done:
        _check_additivity(job)
        done.add(job.batch)


def _check_additivity(job: _Job) -> None:
    """Compare the program on a few rows with its sums over two parts of them, at the given
    weights and at random ones (a regulariser's gradient vanishes at zero weights, where
    L-BFGS often starts)."""
    rows = _first_rows(job)
    count = len(next(iter(rows.values())))
    if count < 2:
        return  # one row cannot be split
    half = count // 2
    weights = {name: value for name, value in job.arguments.items() if name not in job.batch}
    for point in (weights, _random_weights(job, weights)):
        whole = job.prog.value_and_grad(*_ordered(job, {**point, **rows}))
        parts = [
            job.prog.value_and_grad(*_ordered(job, {**point, **{n: r[part] for n, r in rows.items()}}))
            for part in (slice(None, half), slice(half, None))
        ]
        _compare(job, whole, parts, count, half)


def _first_rows(job: _Job) -> dict[str, np.ndarray]:
    """The first rows of every batch argument, as NumPy arrays (one chunk computed for Dask)."""
    rows = {name: job.arguments[name][:CHECK_ROWS] for name in job.batch}
    if any(not isinstance(value, np.ndarray) for value in rows.values()):
        computed = _dask().compute(*rows.values())
        rows = dict(zip(rows, computed))
    return {name: np.asarray(value) for name, value in rows.items()}


def _random_weights(job: _Job, weights: dict[str, Any]) -> dict[str, Any]:
    """The float weights drawn at random (both signs, magnitudes 0.5 to 1.5, as flatgrad's
    gradient checks draw them), the others as given."""
    rng = np.random.default_rng(0)
    drawn = {}
    for name, value in weights.items():
        dtype = np.asarray(value).dtype
        if name not in job.prog.wrt or dtype.kind != "f":
            drawn[name] = value
            continue
        sample = rng.choice([-1.0, 1.0], size=np.shape(value)) * rng.uniform(0.5, 1.5, size=np.shape(value))
        drawn[name] = np.asarray(sample, dtype=dtype) if np.ndim(value) else type(value)(sample)
    return drawn


def _ordered(job: _Job, arguments: dict[str, Any]) -> tuple:
    return tuple(arguments[name] for name in job.arguments)


def _compare(job: _Job, whole: tuple, parts: list[tuple], count: int, half: int) -> None:
    """Raise NotAdditiveError where the whole differs from the sum of the parts."""
    (value, grads), ((v1, g1), (v2, g2)) = whole, parts
    pairs = [("value", value, v1 + v2)] + [
        (f"grad_{name}", g, a + b) for name, g, a, b in zip(job.prog.wrt, grads, g1, g2)
    ]
    for label, on_whole, summed in pairs:
        if not _close(on_whole, summed):
            raise NotAdditiveError(_not_additive_message(job, label, on_whole, summed, count, half))


def _close(whole: Any, summed: Any) -> bool:
    whole, summed = np.asarray(whole), np.asarray(summed)
    tolerance = 1e-4 if whole.dtype == np.float32 else 1e-9
    scale = max(float(np.max(np.abs(whole), initial=0.0)), float(np.max(np.abs(summed), initial=0.0)), 1e-30)
    return bool(np.all(np.abs(whole - summed) <= tolerance * scale))


def _not_additive_message(job: _Job, label: str, whole: Any, summed: Any, count: int, half: int) -> str:
    first = job.batch[0]
    shown = f"{float(whole):.6g} against {float(summed):.6g}" if np.ndim(whole) == 0 else "different arrays"
    return (
        f"{job.call}: the loss is not a sum over the rows, so summing it over chunks would give a wrong total: "
        f"on {first}[:{count}] its {label} is not the sum of those on {first}[:{half}] and {first}[{half}:{count}] "
        f"({shown}). A mean over the rows (np.mean, or a division by N) is divided by each chunk's rows, and a "
        "term that does not read the rows (a regulariser such as 0.5 * reg * np.sum(W * W)) is added once per "
        "chunk. Write f as the sum over the rows of the per-row losses (np.sum(...), no division by N), and "
        "take the mean and the regulariser outside: pass scale=1 / N for the mean, and add the regulariser's "
        "value and gradient to the result yourself"
    )


# --------------------------------------------------------------------------- the graph


_LOCK = threading.Lock()
_MODULES: dict[str, Any] = {}  # the emitted modules this process imported, by source hash


def _module_for(source: str, digest: str) -> Any:
    """The emitted module in this process, imported once per source (under a lock: a worker's
    threads may ask at once, and numba should compile once)."""
    module = _MODULES.get(digest)
    if module is None:
        with _LOCK:
            module = _MODULES.get(digest) or load_module(source)
            _MODULES[digest] = module
    return module


def _chunk_value_and_grad(source: str, digest: str, *args: Any) -> tuple[Any, tuple[Any, ...]]:
    """One chunk's value and gradients, run on a worker by the emitted module's own function."""
    return _module_for(source, digest).value_and_grad(*args)


def _add(*partials: tuple[Any, tuple[Any, ...]]) -> tuple[Any, tuple[Any, ...]]:
    """The sum of several chunks' (value, grads): fresh arrays, none of the addends changed."""
    value, grads = partials[0]
    for other_value, other_grads in partials[1:]:
        value = value + other_value
        grads = tuple(g + h for g, h in zip(grads, other_grads))
    return value, grads


def _scaled(total: tuple[Any, tuple[Any, ...]], scale: float) -> tuple[Any, tuple[Any, ...]]:
    value, grads = total
    return value * scale, tuple(g * scale for g in grads)


def _summed(job: _Job, scale: float | None) -> tuple[Any, tuple[Any, ...]]:
    """The Delayed value and gradients: one task per chunk, then a tree of sums."""
    dask = _dask()
    delayed = dask.delayed
    source = job.prog.source
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    # One key each for the source and every weight: the chunk tasks share them, so each worker
    # receives them once, not once per chunk.
    shipped = delayed(source, name=f"flatgrad-module-{digest}")
    shared = {
        name: delayed(value, name=f"flatgrad-{name}-{dask.base.tokenize(value)}")
        for name, value in job.arguments.items()
        if name not in job.batch
    }
    blocks = {name: job.arguments[name].to_delayed().ravel() for name in job.batch}
    task = delayed(_chunk_value_and_grad, pure=True)
    partials = [
        task(shipped, digest, *(blocks[name][i] if name in blocks else shared[name] for name in job.arguments))
        for i in range(len(blocks[job.batch[0]]))
    ]
    total = _tree(delayed(_add, pure=True), partials)
    if scale is not None:
        total = delayed(_scaled, pure=True)(total, scale)
    return total[0], tuple(total[1][i] for i in range(len(job.prog.wrt)))


def _tree(add: Any, partials: list[Any]) -> Any:
    """Sum `partials` SPLIT_EVERY at a time, level by level, down to one."""
    while len(partials) > 1:
        partials = [add(*partials[i : i + SPLIT_EVERY]) for i in range(0, len(partials), SPLIT_EVERY)]
    return partials[0]
