"""The package's imports run one way, in the pipeline's order; every error class lives in
`compiler/errors.py`."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "compiler"

# Lowest first. A module imports only modules of earlier layers; a new module takes its place
# here (the test below fails until it does).
LAYERS = [
    ["compiler._version", "compiler.errors"],
    ["compiler.files", "compiler.helpers", "compiler.display", "compiler.sizes"],
    ["compiler.ir"],
    ["compiler.ops"],
    ["compiler.verify", "compiler.listing"],
    ["compiler.naming"],
    ["compiler.tracer.frames", "compiler.tracer.examples"],
    ["compiler.tracer.values"],
    ["compiler.tracer"],
    ["compiler.autodiff"],
    ["compiler.passes"],
    ["compiler.codegen.expressions"],
    ["compiler.codegen.lines", "compiler.codegen.guards", "compiler.codegen.explain"],  # loops write its comments
    ["compiler.codegen.branches", "compiler.codegen.inlining", "compiler.codegen.loops",
     "compiler.codegen.in_place"],
    ["compiler.codegen.module"],
    ["compiler.codegen"],
    ["compiler.visualize"],
    ["compiler.program"],
    ["compiler.check"],
    ["compiler.report", "compiler.demo"],
    ["compiler.cli"],
    ["compiler.__main__", "compiler"],
    ["compiler.dask"],  # an integration nothing in the package imports: flatgrad runs without Dask
]
LAYER = {module: index for index, layer in enumerate(LAYERS) for module in layer}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules `path` imports (`from compiler import demo` imports compiler.demo)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "compiler":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "compiler")
    return found


def test_every_module_has_a_layer():
    assert sorted(_modules()) == sorted(LAYER)


def test_imports_run_in_the_pipelines_order():
    modules = _modules()
    backwards = [
        f"{name} (layer {LAYER[name]}) imports {imported} (layer {LAYER[imported]})"
        for name, path in modules.items()
        for imported in sorted(_imports(path, modules))
        if LAYER[imported] >= LAYER[name]
    ]
    assert backwards == []


def test_the_layering_test_sees_a_backward_import(tmp_path):
    """The check above can fail: an import of a later layer is reported."""
    module = tmp_path / "ir.py"
    module.write_text("from compiler.codegen import statement\nfrom compiler import cli\n")
    modules = _modules()
    assert _imports(module, modules) == {"compiler.codegen", "compiler.cli"}
    assert all(LAYER[imported] > LAYER["compiler.ir"] for imported in _imports(module, modules))


def test_every_error_class_lives_in_errors():
    errors = importlib.import_module("compiler.errors")
    elsewhere = []
    for name in _modules():
        if name == "compiler.__main__":  # importing it runs the command line
            continue
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name and module is not errors:
                elsewhere.append(f"{name}.{cls.__name__}")
    assert elsewhere == []
