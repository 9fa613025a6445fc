"""PSI triggers configured in signals.psi.triggers run in the daemon (fake kernel, real time)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import structlog

from reactor.config import load_config_text
from reactor.engine.runtime import Reactor
from tests.captures import host_node


@pytest.fixture
def anyio_backend() -> str:
    """asyncio on real time: a trigger wait blocks in a worker thread."""
    return "asyncio"


def config(window: str) -> Any:
    return load_config_text(
        "reactor:\n  tick: 1s\n"
        "signals:\n  psi:\n    triggers:\n"
        f"      - {{name: mem, resource: memory, threshold: 100ms, window: {window}}}\n",
        "t.yaml",
    )


@pytest.mark.anyio
async def test_an_armed_trigger_publishes_when_the_kernel_fires_it() -> None:
    """A 2 s window is armed on /proc/pressure/memory; a firing lands on psi.trigger.mem."""
    fs = host_node()
    with structlog.testing.capture_logs() as logs:
        async with Reactor(config("2s"), fs=fs) as reactor:
            assert [t.path for t in fs.triggers("/proc/pressure/memory")]
            fs.fire_trigger("/proc/pressure/memory")
            with anyio.fail_after(5):
                event = await reactor.bus.wait_newer("psi.trigger.mem", 0)
            assert event.value.mode == "trigger"
    (armed,) = [e for e in logs if e["event"] == "psi_triggers"]
    assert armed["triggers"]["psi.trigger.mem"]["mode"] == "trigger"


@pytest.mark.anyio
async def test_a_refused_trigger_falls_back_to_polling_and_says_why() -> None:
    """Unprivileged, the kernel refuses a 1 s window: reactor polls instead, with the reason."""
    fs = host_node()
    with structlog.testing.capture_logs() as logs:
        async with Reactor(config("1s"), fs=fs):
            pass
    (armed,) = [e for e in logs if e["event"] == "psi_triggers"]
    mem = armed["triggers"]["psi.trigger.mem"]
    assert mem["mode"] == "poll"
    assert "multiple of 2 s" in mem["fallback_reason"]
