"""Readiness of rate sources: ready once a value is on the bus, not after the baseline."""

from __future__ import annotations

import anyio
import pytest

from reactor.config import load_config_text
from reactor.engine.runtime import Reactor
from tests.captures import host_node


@pytest.mark.anyio
async def test_a_rate_source_slower_than_startup_timeout_still_starts_ready() -> None:
    """A PSI source whose period (5 s) exceeds startup_timeout (3 s) is ready, not failed:
    its baseline read succeeded at once and its first sample comes one period later."""
    cfg = load_config_text(
        "reactor:\n  tick: 1s\n  startup_timeout: 3s\nsignals:\n  psi:\n    period: 5s\n",
        "test.yaml",
    )
    async with Reactor(cfg, fs=host_node()) as reactor:
        assert anyio.current_time() - (reactor.started_at or 0) == 5
        assert reactor.runners["psi.memory"].state == "ready"
        assert reactor.bus.latest("psi.memory") is not None
