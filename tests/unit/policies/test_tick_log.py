"""``reactor.log_ticks``: every tick's ``controller_tick`` at info, or only the news.

Under ``changes`` a tick goes at info when it asked for or moved bytes, when the held
reason, binding goal or stale topics changed, when the output moved by more than 1 %
(``reactor.log.output_moved``), and at least every ``TICK_LOG_HEARTBEAT`` ticks after
the last one at info; otherwise at debug (docs/observability.md, "Log volume").
"""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from reactor.config import load_config_text
from reactor.engine.bus import Bus
from reactor.log import TICK_LOG_HEARTBEAT
from reactor.policies.base import Acted, Policy, PolicyContext
from reactor.testing import FakeKernelFS

CONFIG = """
reactor: {{backend: native, tick: 1s, log_ticks: {mode}}}
monitors:
  - name: app
    targets: {{pids: [4242]}}
policies:
  - name: cold
    kind: reclaim
    monitor: app
    goals: [{{metric: memory_psi_some, target: 0.5%}}]
    quota: {{max: 64 MiB, per: 1s}}
"""


def policy(fs: FakeKernelFS, mode: str) -> Policy:
    config = load_config_text(CONFIG.format(mode=mode), "t.yaml")
    return Policy(config.policies[0], PolicyContext(config, Bus(), fs, "native"))


def levels(pol: Policy, ticks: list[dict[str, Any]]) -> list[str]:
    """The level each tick's controller_tick was logged at."""
    with capture_logs() as logs:
        for t in ticks:
            pol.emit_tick(
                inputs={},
                terms={"binding_goal": t.get("binding", "memory_psi_some")},
                output=t.get("output", 100.0),
                acted=Acted(requested_bytes=t.get("requested", 0)),
                held=t.get("held"),
                stale=t.get("stale", ()),
            )
    return [e["log_level"] for e in logs if e["event"] == "controller_tick"]


def test_every_tick_goes_at_info_by_default(fake_kernel: FakeKernelFS) -> None:
    assert levels(policy(fake_kernel, "every"), [{}] * 5) == ["info"] * 5


def test_only_ticks_with_news_go_at_info(fake_kernel: FakeKernelFS) -> None:
    ticks = [
        {},  # the first tick: info
        {},  # nothing new
        {"output": 100.5},  # +0.5 %: an integrator's crawl
        {"output": 102.0},  # +2 % of the last output logged (100.0)
        {"output": 102.0, "requested": 4096},  # bytes asked for
        {"output": 102.0, "held": "stale input"},  # held
        {"output": 102.0, "held": "stale input"},  # still held: nothing new
        {"output": 102.0},  # no longer held
        {"output": 102.0, "binding": "refault_rate"},  # another binding goal
        {"output": 102.0, "binding": "refault_rate", "stale": ("psi.memory",)},
        {"output": None, "binding": "refault_rate", "stale": ("psi.memory",)},  # gone
    ]
    got = levels(policy(fake_kernel, "changes"), ticks)
    want = ["info", "debug", "debug", "info", "info", "info", "debug", "info", "info"]
    assert got == [*want, "info", "info"]


def test_a_quiet_policy_still_logs_at_info_every_heartbeat(fake_kernel: FakeKernelFS) -> None:
    got = levels(policy(fake_kernel, "changes"), [{}] * (2 * TICK_LOG_HEARTBEAT + 1))
    info = [i for i, level in enumerate(got) if level == "info"]
    assert info == [0, TICK_LOG_HEARTBEAT, 2 * TICK_LOG_HEARTBEAT]
