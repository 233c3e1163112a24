"""Benchmark: full-batch value and gradient of logistic regression over a Dask array.

    L(X, y, w, b) = sum over rows of log(1 + exp(x w + b)) - y (x w + b),  X of 10^6 x 8

times `compiler.dask.value_and_grad` on a LocalCluster of 1 and of 2 worker processes (one
thread each; the rows persisted on the workers, chunks of 10^5) against the program's own
`value_and_grad` on the whole array in this process's memory, and reports throughput in rows
per second. The overhead is measured on tiny chunks (50 rows, whose compute takes microseconds):
a call over one such chunk is the fixed cost of a call, and a call over 200 of them, less that,
divided by 199 is the cost of each further chunk.

    python benchmarks/bench_dask.py              # full run
    python benchmarks/bench_dask.py --quick      # smoke run
    python benchmarks/bench_dask.py --rows 2000000 --chunk 250000 --jit numba
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Baseline, Candidate  # noqa: E402

FEATURES = 8
TINY_CHUNK = 50
TINY_CHUNKS = 200
NUMPY = "NumPy: prog.value_and_grad on the whole array"


def logistic(X, y, w, b):
    z = X @ w + b
    return np.sum(np.logaddexp(0.0, z) - y * z)


def dask_name(workers: int) -> str:
    return f"Dask, {workers} worker{'s' if workers > 1 else ''} (processes)"


def tiny_name(workers: int, chunks: int) -> str:
    return f"{dask_name(workers)}: {chunks} chunk{'s' if chunks > 1 else ''} of {TINY_CHUNK} rows"


def rows_on(client, rows: int, chunk: int):
    """X and y drawn on the cluster's workers (the same numbers on every cluster: one seed)."""
    import dask.array as da

    generator = da.random.default_rng(0)
    X = generator.normal(size=(rows, FEATURES), chunks=(chunk, FEATURES))
    y = (generator.uniform(size=rows, chunks=chunk) < 0.5).astype(np.float64)
    return client.persist([X, y])


def on_cluster(client, prog, X, y, w, b):
    """One full-batch call, computed on `client` (not whichever client is the default)."""
    import compiler.dask

    lazy = compiler.dask.value_and_grad(prog, X, y, w, b, batch=("X", "y"), compute=False, check=False)
    return client.compute(lazy, sync=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_timing_arguments(parser)
    parser.add_argument("--rows", type=int, default=10**6, help="rows of the batch (default 10^6)")
    parser.add_argument("--chunk", type=int, default=10**5, help="rows per chunk (default 10^5)")
    parser.add_argument("--jit", choices=["numba"], default=None, help="the emitted module's backend")
    args = parser.parse_args(argv)
    settings = harness.settings_from(args)
    scratch = tempfile.mkdtemp(prefix="flatgrad-bench-")
    os.environ["FLATGRAD_CACHE_DIR"] = scratch  # the workers inherit it: one module file for all
    warnings.filterwarnings("ignore", message="Sending large graph")
    logging.getLogger("distributed").setLevel(logging.WARNING)  # no INFO lines as the clusters close
    try:
        return run(settings, args.rows, args.chunk, args.jit)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(settings: harness.Settings, rows: int, chunk: int, jit: str | None) -> int:
    import distributed

    import compiler
    import compiler.dask

    rng = np.random.default_rng(1)
    w, b = rng.normal(size=FEATURES), 0.1
    prog = compiler.gradient(
        logistic, np.zeros((8, FEATURES)), np.zeros(8), w, b, wrt=("w", "b"),
        dims={"X": f"N,{FEATURES}", "y": "N"}, jit=jit,
    )
    with contextlib.ExitStack() as stack:  # clients close before their clusters, on errors too
        clients = {}
        for workers in (1, 2):
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
            ))
            clients[workers] = stack.enter_context(distributed.Client(cluster, set_as_default=False))
        candidates, notes = candidates_for(prog, clients, rows, chunk, w, b)
        harness.check_agreement([c for c in candidates if "tiny" not in c.note], reference=NUMPY, rtol=1e-9, atol=1e-9)
        report(settings, rows, chunk, jit, candidates, notes)
    return 0


def candidates_for(prog, clients, rows: int, chunk: int, w, b) -> tuple[list[Candidate], list[str]]:
    import compiler.dask

    notes = []
    data = {workers: rows_on(client, rows, chunk) for workers, client in clients.items()}
    X, y = clients[1].compute(data[1], sync=True)  # the same rows, in this process's memory
    (_, first) = harness.time_once(lambda: prog.value_and_grad(X[:8], y[:8], w, b))
    notes.append(f"first call of the module in this process (numba compiles there): {harness.format_time(first)}")
    compiler.dask.check_additive(prog, X, y, w, b, batch=("X", "y"))
    candidates = [Candidate(NUMPY, prog.value_and_grad, (X, y, w, b))]
    for workers, client in clients.items():
        (_, first) = harness.time_once(lambda: on_cluster(client, prog, *data[workers], w, b))
        notes.append(f"{dask_name(workers)}: first call (each worker imports the module): {harness.format_time(first)}")
        candidates.append(Candidate(dask_name(workers), on_cluster, (client, prog, *data[workers], w, b)))
    for workers, client in clients.items():
        for chunks in (1, TINY_CHUNKS):
            tiny = rows_on(client, TINY_CHUNK * chunks, TINY_CHUNK)
            arguments = (client, prog, *tiny, w, b)
            candidates.append(Candidate(tiny_name(workers, chunks), on_cluster, arguments, note="tiny"))
    return candidates, notes


def report(settings, rows: int, chunk: int, jit: str | None, candidates: list[Candidate], notes: list[str]) -> None:
    chunks = -(-rows // chunk)
    print(f"flatgrad benchmark: logistic regression's value and gradient over {rows} x {FEATURES} rows (float64), "
          f"module {'numba' if jit else 'NumPy'}; Dask in {chunks} chunks of {chunk}")
    for line in harness.environment_lines(["numpy", "numba", "dask", "distributed"]):
        print(line)
    print(f"cores: {os.cpu_count()}; median per call of {settings.repeats} repeats")
    print()
    timings = harness.measure(candidates, settings)
    by_name = {t.name: t for t in timings}
    throughput = {
        c.name: f"{rows / by_name[c.name].median:,.0f}" for c in candidates if c.note != "tiny"
    }
    overhead = {}
    for workers in (1, 2):
        one, many = by_name[tiny_name(workers, 1)], by_name[tiny_name(workers, TINY_CHUNKS)]
        overhead[one.name] = f"{harness.format_time(one.median)} per call"
        overhead[many.name] = f"{harness.format_time((many.median - one.median) / (TINY_CHUNKS - 1))} per chunk"
    extra = [("rows/s", throughput), ("overhead", overhead)]
    print(harness.render_table(timings, [Baseline(NUMPY, "vs NumPy")], extra=extra))
    print()
    for note in notes:
        print(note)
    print(f"overhead: a call over one chunk of {TINY_CHUNK} rows costs the call's fixed part (graph, submission, "
          f"the round trip); the call over {TINY_CHUNKS} such chunks less that, divided by {TINY_CHUNKS - 1}, is "
          "what each further chunk costs beside its compute (its task, its partial sum's transfer, its share of "
          "the tree of sums)")


if __name__ == "__main__":
    sys.exit(main())
