"""The import graph keeps its promises: pure controllers, one kernel-files seam, anyio only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: controllers/ is pure: no I/O, no clocks, no event loops, nothing from the runtime.
FORBIDDEN_IN_CONTROLLERS = {"reactor", "anyio", "asyncio", "trio", "os", "time", "pathlib"}


def python_files(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def imported_roots(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def test_controllers_import_nothing_impure() -> None:
    """controllers/ imports none of reactor, anyio, asyncio, trio, os, time, pathlib."""
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for path in python_files("controllers")
        for name, line in imported_roots(path)
        if name in FORBIDDEN_IN_CONTROLLERS
    ]
    assert not bad, "\n".join(bad)


def test_reactor_never_imports_asyncio() -> None:
    """reactor/ runs on anyio only, so tests can run it on trio's virtual clock."""
    bad = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in python_files("reactor")
        for name, line in imported_roots(path)
        if name == "asyncio"
    ]
    assert not bad, "\n".join(bad)


#: Packages allowed to open files: the seam itself, config loading (user files, not
#: kernel files), the shipped test helpers (which build fake trees on disk), the DAMON
#: ownership record and the API's socket and recordings (run-time files, not kernel files).
OPEN_ALLOWED = (
    "reactor/kernelfs/",
    "reactor/config/",
    "reactor/testing/",
    "reactor/damon/ownership.py",
    "reactor/api/",  # the status socket and tick recordings (--record FILE): user files
)


def opens(path: Path) -> Iterator[int]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            yield node.lineno
        elif isinstance(func, ast.Attribute) and func.attr in {
            "open",
            "read_text",
            "read_bytes",
            "write_text",
            "write_bytes",
        }:
            owner = func.value
            # os.open, Path(...).open/read_text; kernelfs objects' own methods are fine.
            by_os = isinstance(owner, ast.Name) and owner.id == "os"
            by_path = isinstance(owner, ast.Call) and getattr(owner.func, "id", "") == "Path"
            if by_os or by_path:
                yield node.lineno


def test_only_the_kernel_files_seam_opens_files() -> None:
    """Nothing in reactor/ outside kernelfs (and config/testing) opens a file itself."""
    bad = [
        f"{rel}:{line}"
        for path in python_files("reactor")
        if not (rel := str(path.relative_to(ROOT))).startswith(OPEN_ALLOWED)
        for line in opens(path)
    ]
    assert not bad, "files opened outside reactor/kernelfs: " + ", ".join(bad)
