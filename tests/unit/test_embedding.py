"""reactor embeds in a plain asyncio application (pytest-asyncio), without taking signals."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from reactor.config import load_config_text
from reactor.engine.runtime import Reactor
from reactor.testing.fakefs import FakeKernelFS

CAPTURED = Path(__file__).resolve().parents[1] / "fixtures" / "captured" / "host-6.18"


@pytest.mark.asyncio
async def test_reactor_runs_inside_an_asyncio_app_and_leaves_signal_handlers_alone() -> None:
    """In library mode reactor samples on the app's loop and installs no signal handlers."""
    fs = FakeKernelFS(
        {
            "proc": {
                "pressure": {
                    r: (CAPTURED / f"proc_pressure_{r}").read_text()
                    for r in ("memory", "io", "cpu")
                },
                "vmstat": (CAPTURED / "proc_vmstat").read_text(),
                "meminfo": (CAPTURED / "proc_meminfo").read_text(),
            }
        }
    )
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    config = load_config_text("reactor:\n  tick: 50ms\nsignals:\n  meminfo:\n    period: 50ms\n")
    async with Reactor(config, fs=fs) as reactor:
        await asyncio.sleep(0.2)
        sample = reactor.bus.latest("meminfo")
        assert sample is not None
        assert sample.value.mem_total_bytes > 0
        after = {s: signal.getsignal(s) for s in before}
    assert after == before
