"""Native reclaim with the cold-set feedforward (controllers.tuners.reclaim_tuner), on a
fake process and a fake bus: the pageable cold bytes reach the controller before it
steps, the quota drains a known cold set within the bound its formula gives, a stall
above the goal lowers the excess, limits are tracked, config and reload keep their
meaning.

The fake process holds COLD = 96 MiB of clean file pages in 48 mappings of 2 MiB (each
one cold region of the snapshot: no access for 10 aggregations of 1 s) and HOT = 4 MiB
of file pages accessed in every sample. No swap (the host's meminfo), tick 1 s,
``quota.per`` 1 s, ``quota.min`` 0 (the start: 4 MiB), ``min_age`` 3 s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest

from controllers.compose import GoalComposite
from controllers.feedforward import ColdFeedforward, FeedforwardState
from reactor.config import load_config_text
from reactor.engine.bus import Bus
from reactor.engine.monitors import AccessView
from reactor.policies import build_policy
from reactor.policies.base import PolicyContext
from reactor.policies.reclaim import NativeReclaim
from reactor.sampler.procfs import Mappings, parse_smaps
from reactor.sampler.snapshot import Region, Snapshot, regions_array
from reactor.testing import FakeKernelFS
from tests.unit.actuators.fakes import MIB, PAGE, FakeMapping, FakeProcess

PID = 6161
HOT_AT = 0x7D0000000000
COLD_AT = 0x7E0000000000
CHUNK = 2 * MIB
CHUNKS = 48
COLD = CHUNKS * CHUNK  # 96 MiB
HOT = 4 * MIB
START = 4 * MIB  # quota.min 0: the quota's start, and the feedforward's starting excess
GOAL = 0.005

POLICY = """
reactor: {backend: native, tick: 1s}
monitors:
  - name: app
    targets: {pids: [6161]}
    sample: 100ms
    aggregation: 1s
policies:
  - name: cold
    kind: reclaim
    monitor: app
    min_age: 3s
    goals: [{metric: memory_psi_some, target: 0.5%}]
    quota: {max: 256 MiB, per: 1s}
"""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio: the policy reads smaps and the actuator calls in worker threads."""
    return "asyncio"


def snapshot(now: float) -> AccessView:
    """HOT accessed in all 10 samples, each cold chunk in none for 10 aggregations."""
    regions = [Region(HOT_AT, HOT_AT + HOT, 10, 10)]
    regions += [
        Region(COLD_AT + i * CHUNK, COLD_AT + (i + 1) * CHUNK, 0, 10) for i in range(CHUNKS)
    ]
    snap = Snapshot(f"app.pids:{PID}", regions_array(regions), 0.1, 1.0, "page-idle", PAGE, now, 10)
    return AccessView("app", "native", MappingProxyType({snap.target: snap}))


def native(fs: FakeKernelFS, policy: str = POLICY) -> tuple[NativeReclaim, Bus, FakeProcess]:
    """The policy on the fake process (its actuator calls go to the fake)."""
    maps = [FakeMapping(HOT_AT, HOT, "file", "/srv/hot.bin")]
    maps += [
        FakeMapping(COLD_AT + i * CHUNK, CHUNK, "file", f"/srv/cold{i}.bin") for i in range(CHUNKS)
    ]
    proc = FakeProcess(fs, PID, maps)
    config = load_config_text(policy, "t.yaml")
    bus = Bus()
    pol = build_policy(config.policies[0], PolicyContext(config, bus, fs, "native"))
    assert isinstance(pol, NativeReclaim)
    pol.actuator.calls = proc
    return pol, bus, proc


def cold_rss(proc: FakeProcess) -> int:
    return sum(int(m.resident.sum()) * PAGE for m in proc.mappings if m.start >= COLD_AT)


def hot_rss(proc: FakeProcess) -> int:
    return sum(int(m.resident.sum()) * PAGE for m in proc.mappings if m.start < COLD_AT)


class Spy:
    """Records the measurement each controller step receives."""

    def __init__(self, pol: NativeReclaim) -> None:
        self.seen: list[Mapping[str, float | None]] = []
        ctl = pol.controller
        step = ctl.step

        def spy(state: Any, measurement: Any, now: float) -> Any:
            self.seen.append(dict(measurement))
            return step(state, measurement, now)

        object.__setattr__(ctl, "step", spy)  # the frozen settings object, this test only


async def tick(pol: NativeReclaim, bus: Bus, now: float, psi: float = 0.0) -> None:
    """Publish this second's snapshot and PSI, then tick half a second later."""
    bus.publish("access.app", snapshot(now), now)
    bus.publish("psi.memory", SimpleNamespace(some_share=psi, full_share=0.0), now)
    await pol.tick(now + 0.5, 1.0)


@pytest.mark.anyio
async def test_cold_bytes_reach_the_controller_before_it_steps(fake_kernel: FakeKernelFS) -> None:
    """The first step already sees the 96 MiB of pageable cold pieces (the hot chunk and
    nothing else left out) and its quota is the drain 0.9 x 96 MiB plus the 4 MiB excess."""
    pol, bus, _ = native(fake_kernel)
    assert isinstance(pol.controller, ColdFeedforward)
    spy = Spy(pol)
    await tick(pol, bus, 100.0)
    (first,) = spy.seen
    assert first["cold_bytes"] == COLD
    assert first["cold_reclaimed_bytes"] is None  # nothing acted before
    assert pol.output == pytest.approx(0.9 * COLD + START)
    assert pol.controller_terms["feedforward.cold_bytes"] == COLD


@pytest.mark.anyio
async def test_the_quota_drains_a_known_cold_set_within_the_derived_bound(
    fake_kernel: FakeKernelFS,
) -> None:
    """Derivation (controllers/feedforward.py: quota = drain + refill + excess, bytes per
    ``per`` = 1 s, tick dt = 1 s, so a tick may page out the whole quota):

    * tick 1: cold = 96 MiB (48 pieces); no refill estimate yet (one reading); the
      excess holds at its start, 4 MiB (no tick before: not informative, and PSI 0 does
      not ask for less). Quota = 0.9 x 96 + 4 = 90.4 MiB: 45 whole pieces and the first
      0.4 MiB of the 46th, held for min_age by address. Cold RSS left: 96 - 90.4 = 5.6
      MiB.
    * tick 2: cold = the 46th piece less its held 0.4 MiB, and the 2 pieces never
      issued: 5.6 MiB. Refill: (5.6 - 96 + 90.4) / 1 = 0 (cold remained: the exact
      branch). Informative? what tick 1 left of the cold set, 5.6 MiB > 0.1 x 4 MiB of
      excess: no, the excess holds at 4 MiB. Quota = 0.9 x 5.6 + 0 + 4 = 9.04 MiB >=
      5.6 MiB: all of it goes. Cold RSS 0 after tick 2; every byte was asked for once
      (96 MiB requested in all).
    * ticks 3 and 4: nothing cold is resident; nothing is asked for.

    The PSI-only composite needs ~11 ticks for the same 96 MiB (4 MiB x 1.4 per tick:
    5.6 + 7.8 + ... sums past 96 MiB at its 8th tick, after 3 s of min_age holds). The
    hot chunk is never a candidate: it stays resident.
    """
    pol, bus, proc = native(fake_kernel)
    left = []
    for i in range(4):
        await tick(pol, bus, 100.0 + i)
        left.append(cold_rss(proc))
    assert left[0] == pytest.approx(COLD - (0.9 * COLD + START), abs=PAGE)
    assert left[1:] == [0, 0, 0]
    assert pol.requested_total == pytest.approx(COLD, abs=PAGE), "a byte asked for twice"
    assert hot_rss(proc) == HOT


@pytest.mark.anyio
async def test_a_stall_above_the_goal_lowers_the_excess(fake_kernel: FakeKernelFS) -> None:
    """Once the cold set is drained (cold reading 0: every tick is informative), PSI at
    4x the goal takes one Newton step of gain 0.24 with slope 1 on the excess:
    ln(excess) += 0.24 x ln(1/4), i.e. x 4^-0.24 = 0.717 (the 8/s rate cap is far)."""
    pol, bus, _ = native(fake_kernel)
    for i in range(5):
        await tick(pol, bus, 100.0 + i)
    state = pol.state
    assert isinstance(state, FeedforwardState) and state.cold == 0
    before = state.excess_state.output
    await tick(pol, bus, 105.0, psi=4 * GOAL)
    state = pol.state
    assert isinstance(state, FeedforwardState)
    assert state.excess_state.output == pytest.approx(before * 4**-0.24, rel=1e-6)
    assert pol.binding == "memory_psi_some"


@pytest.mark.anyio
async def test_a_per_tick_cap_is_tracked(fake_kernel: FakeKernelFS) -> None:
    """max_bytes_per_tick 16 MiB cuts the 90.4 MiB quota: the controller follows the
    16 MiB applied (its state's output), it does not keep asking for the cut part."""
    pol, bus, proc = native(fake_kernel, POLICY + "    max_bytes_per_tick: 16 MiB\n")
    await tick(pol, bus, 100.0)
    assert cold_rss(proc) == COLD - 16 * MIB
    assert pol.output == pytest.approx(0.9 * COLD + START)  # asked
    assert pol.state.output == pytest.approx(16 * MIB)  # applied, tracked


@pytest.mark.anyio
async def test_a_late_tick_budget_is_cut_to_whole_pages(fake_kernel: FakeKernelFS) -> None:
    """A tick 4.7 ms late scales the 90.4 MiB quota to a budget that is no page multiple;
    the budget is cut to whole pages (the kernel pages out whole pages, so the rest of a
    page would go past the quota), and what left RSS is exactly what was asked for."""
    pol, bus, proc = native(fake_kernel)
    now = 100.0
    bus.publish("access.app", snapshot(now), now)
    bus.publish("psi.memory", SimpleNamespace(some_share=0.0, full_share=0.0), now)
    await pol.tick(now + 0.5, 1.0047)
    exact = (0.9 * COLD + START) * 1.0047
    assert exact % PAGE != 0  # the premise: the scaled quota is no page multiple
    assert pol.requested_total == int(exact) // PAGE * PAGE
    assert COLD - cold_rss(proc) == pol.requested_total


def resplit_view(now: float, maps: Mappings, offset: int) -> AccessView:
    """The cold set as regions whose inner bounds moved by ``offset`` (a monitor's
    regions split and merge between aggregations), with the sampled mappings ``maps``
    (their Rss as of a sample, as a per-mapping probe hands them over)."""
    regions = [Region(HOT_AT, HOT_AT + HOT, 10, 10)]
    edges = [COLD_AT, *(COLD_AT + i * CHUNK + offset for i in range(1, CHUNKS)), COLD_AT + COLD]
    regions += [Region(a, b, 0, 10) for a, b in itertools.pairwise(edges)]
    snap = Snapshot(
        f"app.pids:{PID}",
        regions_array(regions),
        0.1,
        1.0,
        "referenced",
        PAGE,
        now,
        10,
        mappings=maps,
    )
    return AccessView("app", "native", MappingProxyType({snap.target: snap}))


@pytest.mark.anyio
async def test_ranges_paged_out_are_not_asked_again_when_the_regions_split_anew(
    fake_kernel: FakeKernelFS,
) -> None:
    """A range paged out is held for ``min_age`` by address, not by region: the next
    tick's snapshot splits the same cold memory into other regions, and its sampled Rss
    predates the pageout (the sampler's last sample ran at the instant the policy acted),
    yet the second tick pages out the next 16 MiB, not the first 16 MiB again.

    16 MiB per tick (``max_bytes_per_tick``), cold regions in address order (all equally
    cold and old): tick 1 pages out [0, 16) MiB of the cold set; tick 2's regions have
    their inner bounds 1 MiB higher and its mappings still show every chunk resident.
    Held by region, tick 2's first regions are new keys over the same memory, and it
    would issue [0, 16) MiB again (cold RSS stays at COLD - 16 MiB); held by address, it
    issues [16, 32) MiB: cold RSS COLD - 32 MiB."""
    pol, bus, proc = native(fake_kernel, POLICY + "    max_bytes_per_tick: 16 MiB\n")
    stale = parse_smaps(fake_kernel.read_text(f"/proc/{PID}/smaps"))
    for i, offset in enumerate((0, MIB)):
        now = 100.0 + i
        bus.publish("access.app", resplit_view(now, stale, offset), now)
        bus.publish("psi.memory", SimpleNamespace(some_share=0.0, full_share=0.0), now)
        await pol.tick(now + 0.5, 1.0)
    assert cold_rss(proc) == COLD - 32 * MIB
    assert hot_rss(proc) == HOT


def test_explicit_controller_kind_and_memory_only_goals_keep_the_composite(
    fake_kernel: FakeKernelFS,
) -> None:
    """controller.kind written (adaptive too) or no stall goal: the per-goal composite."""
    explicit = POLICY + "    controller: {kind: adaptive}\n"
    assert isinstance(native(fake_kernel, explicit)[0].controller, GoalComposite)
    memory_only = POLICY.replace("memory_psi_some, target: 0.5%", "free_ratio, target: 20%")
    assert isinstance(native(fake_kernel, memory_only)[0].controller, GoalComposite)
    probe = POLICY + "    controller: {probe_factor: 1.2}\n"
    ctl = native(fake_kernel, probe)[0].controller
    assert isinstance(ctl, ColdFeedforward)
    (goal,) = ctl.excess.goals
    assert goal.controller.probe_factor == 1.2  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_reload_with_a_changed_goal_keeps_the_quota_applied_last(
    fake_kernel: FakeKernelFS,
) -> None:
    """A new target carries the state (same goals); a new goal set starts a fresh
    feedforward at the quota applied last; an explicit kind swaps to the composite at it."""
    pol, bus, _ = native(fake_kernel)
    await tick(pol, bus, 100.0)
    applied = pol.state.output
    for text in (
        POLICY.replace("0.5%", "1%"),
        POLICY.replace(
            "goals: [{metric: memory_psi_some, target: 0.5%}]",
            "goals: [{metric: memory_psi_some, target: 0.5%}, {metric: free_ratio, target: 5%}]",
        ),
        POLICY + "    controller: {kind: adaptive}\n",
    ):
        pol.update(load_config_text(text, "t.yaml").policies[0])
        assert pol.state.output == pytest.approx(applied)
    assert isinstance(pol.controller, GoalComposite)
    assert math.isfinite(pol.state.output)


@pytest.mark.anyio
async def test_a_budget_the_pieces_ran_out_before_holds_the_excess(
    fake_kernel: FakeKernelFS,
) -> None:
    """Tick 1's budget (90.4 MiB) runs out before its 96 MiB of pieces: the quota limited
    the act (``quota_bound`` 1 at tick 2). Tick 2's 7.6 MiB outlasts the 4 MiB of pieces
    left: unbound (0 at tick 3), and so on while the cold set stays drained. PSI stays 0
    (no signal, which would probe the excess x1.4 a tick), so the excess holds at its
    4 MiB start instead of reaching 4 x 1.4**3 = 11 MiB by tick 6."""
    pol, bus, _ = native(fake_kernel)
    spy = Spy(pol)
    for i in range(6):
        await tick(pol, bus, 100.0 + i)
    bound = [m["quota_bound"] for m in spy.seen]
    assert bound[:3] == [None, 1.0, 0.0], bound
    state = pol.state
    assert isinstance(state, FeedforwardState)
    assert state.excess_state.output == pytest.approx(START)
