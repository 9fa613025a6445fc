"""Runtime tests run on anyio's trio backend with a virtual clock (MockClock).

With ``autojump_threshold=0`` the clock jumps to the next deadline as soon as every task
is blocked, so a minute of daemon time takes milliseconds and runs the same every time.
These tests use the in-memory fake filesystem only (no worker threads: autojump would
also fire while a thread runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from trio.testing import MockClock


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event emitted during the test, as dicts."""
    with structlog.testing.capture_logs() as captured:
        yield captured
