"""The write policy, for every writer: emit, graph (.dot, .svg, .png), report, demo and
`GradientProgram.save`. A new file gets the umask's mode and an overwritten one keeps its own;
a file flatgrad did not write is replaced only when forced; a folder and the traced function's
own source never are."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import zlib
from pathlib import Path

import pytest

import compiler
from compiler import files
from compiler.cli import main
from compiler.errors import WriteError

ROOT = Path(__file__).resolve().parent.parent
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")

SOURCE = "def simple(x, y, z):\n    q = x + y\n    return q * z\n"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "user.py").write_text(SOURCE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(command: str, suffix: str):
    def write(path: str, force: bool) -> None:
        argv = [command, "user.py:simple", "-o", path] + (["--force"] if force else [])
        if main(argv) != 0:
            raise WriteError("the command failed")

    write.suffix = suffix
    return write


def _save(path: str, force: bool) -> None:
    namespace: dict = {}
    exec(compile(SOURCE, str(Path("user.py").resolve()), "exec"), namespace)  # as if imported from user.py
    compiler.gradient(namespace["simple"], 1.0, 2.0, 3.0).save(path, overwrite=force)


_save.suffix = ".py"


def _demo(path: str, force: bool) -> None:
    """demo draws neuron.svg (or .dot) into its --out folder; `path` names that file."""
    argv = ["demo", "--out", str(Path(path).parent)] + (["--force"] if force else [])
    if main(argv) != 0:
        raise WriteError("the command failed")


_demo.suffix = ".svg" if shutil.which("dot") else ".dot"

WRITERS = [
    pytest.param(_cli("emit", ".py"), id="emit"),
    pytest.param(_cli("graph", ".dot"), id="graph-dot"),
    pytest.param(_cli("graph", ".svg"), id="graph-svg", marks=needs_dot),
    pytest.param(_cli("graph", ".png"), id="graph-png", marks=needs_dot),
    pytest.param(_cli("report", ".html"), id="report"),
    pytest.param(_save, id="save"),
    pytest.param(_demo, id="demo"),
]
# Writers of a file the user names (demo names its own file in the user's folder).
NAMED_FILE_WRITERS = [writer for writer in WRITERS if writer.id != "demo"]


def _path(writer, workdir: Path) -> Path:
    return workdir / "out" / (("neuron" if writer is _demo else "result") + writer.suffix)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("writer", WRITERS)
def test_a_new_file_gets_the_umask_mode_and_an_overwritten_one_keeps_its_own(writer, workdir, capsys):
    path = _path(writer, workdir)
    path.parent.mkdir()
    old = os.umask(0o027)
    try:
        writer(str(path), False)
    finally:
        os.umask(old)
    assert _mode(path) == 0o640
    assert files.is_generated(path)
    path.chmod(0o604)
    writer(str(path), False)  # flatgrad's own file: replaced without being forced
    assert _mode(path) == 0o604


@pytest.mark.parametrize("writer", WRITERS)
def test_a_file_flatgrad_did_not_write_is_replaced_only_when_forced(writer, workdir, capsys):
    path = _path(writer, workdir)
    path.parent.mkdir()
    path.write_text("my homework\n")
    with pytest.raises(WriteError):
        writer(str(path), False)
    assert path.read_text() == "my homework\n"
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left behind
    err = capsys.readouterr().err
    if err:  # the command line's one line
        assert err.count("\n") == 1 and "was not written by flatgrad; pass --force" in err
    writer(str(path), True)
    assert files.is_generated(path)


@pytest.mark.parametrize("writer", NAMED_FILE_WRITERS)
def test_the_functions_own_source_is_never_written_even_when_forced(writer, workdir, capsys):
    source = workdir / "user.py"
    link = _path(writer, workdir)  # the source under the writer's suffix, through a symlink
    link.parent.mkdir()
    link.symlink_to(source)
    targets = [source, link] if writer.suffix == ".py" else [link]
    for target in targets:
        for force in (False, True):
            with pytest.raises(WriteError, match="the command failed|source file of the function"):
                writer(str(target), force)
            assert source.read_text() == SOURCE and link.is_symlink()
            err = capsys.readouterr().err
            assert not err or "is the source file of the function being differentiated" in err


def test_a_folder_is_never_replaced(workdir, capsys):
    (workdir / "folder").mkdir()
    assert main(["report", "user.py:simple", "-o", "folder", "--force"]) == 2
    assert "folder is a folder" in capsys.readouterr().err
    program = compiler.gradient(lambda x: x * x, 1.0)
    with pytest.raises(WriteError, match="is a folder"):
        program.save(workdir / "folder", overwrite=True)
    with pytest.raises(WriteError, match="is a folder"):
        program.save(".")
    assert (workdir / "folder").is_dir()


def test_an_unwritable_place_is_one_clear_error(workdir, capsys):
    (workdir / "blocker").write_text("a file where a folder should be\n")
    assert main(["demo", "--out", "blocker/sub"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flatgrad: error: cannot write blocker/sub/neuron.") and err.count("\n") == 1


def test_demo_writes_into_a_fresh_folder_of_its_own_by_default(capsys):
    first = main(["demo"]), capsys.readouterr().out
    second = main(["demo"]), capsys.readouterr().out
    paths = [Path(out.rsplit("gradient (red): ", 1)[1].strip()) for _, out in (first, second)]
    assert first[0] == second[0] == 0
    assert paths[0].parent != paths[1].parent and all(p.is_file() for p in paths)
    assert all(p.parent.name.startswith("flatgrad-demo-") for p in paths)


@needs_dot
def test_a_png_carries_the_marker_in_a_valid_text_chunk(workdir, capsys):
    assert main(["graph", "user.py:simple", "-o", "g.png"]) == 0
    data = (workdir / "g.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        position += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    assert (b"tEXt", b"Software\0" + files.GENERATED_MARKER.encode()) in chunks


def test_demo_without_a_temporary_folder_says_to_name_one(monkeypatch, capsys):
    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkdtemp", refuse)
    assert main(["demo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "name one with --out" in captured.err
