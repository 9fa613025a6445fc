"""Actuator unit tests run on anyio's asyncio backend: the actuators use worker threads,
which a virtual clock would skip past (style.md practice 3)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Every async test here runs on asyncio."""
    return "asyncio"
