"""The API tests use real sockets, so they run on anyio's asyncio backend and real time.

Tests that need another backend (trio, or trio's virtual clock for a runtime without
sockets) parametrize ``anyio_backend`` themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory that does not exist yet (the server must create it, mode 0700)."""
    return tmp_path / "run"
