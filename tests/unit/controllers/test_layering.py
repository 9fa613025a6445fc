"""controllers/ stays pure: no I/O, clock, event loop or runtime imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CONTROLLERS = Path(__file__).resolve().parents[3] / "controllers"
FORBIDDEN = ("reactor", "anyio", "asyncio", "trio", "os", "time", "pathlib", "io", "socket")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


FILES = sorted(CONTROLLERS.rglob("*.py"))


def test_controllers_package_has_modules() -> None:
    """The walk below sees the controller modules (guards against a wrong path)."""
    assert {"pid.py", "kernel.py", "compose.py"} <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: Path) -> None:
    """No controller module imports reactor, an event loop, os, time, pathlib or I/O."""
    bad = [
        f"{path.name}:{line}: import {name}"
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert not bad, "controllers/ must stay pure; found:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_open_or_clock_calls(path: Path) -> None:
    """No controller module calls open() or reads a clock by name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert "open" not in calls
    assert "monotonic" not in calls
