"""The fake's DAMOS madvise actions over unmapped holes, and what the quota charges for them.

The kernel (mm/damon/vaddr.c damos_madvise(), mm/madvise.c madvise_walk_vmas()) advises
every mapping in a region and then fails with ENOMEM for the unmapped part: the region
counts 0 bytes applied, its mapped pages were acted on all the same, and the quota
charges it as a failure (core.c damos_charge_quota(): fail_charge_num/denom from 7.2).
The conformance test ``test_pageout_of_a_region_over_a_hole_applies_0_bytes`` checks the
pageout case against the real kernel; these check the rest on the fake alone.
"""

from __future__ import annotations

import struct

import pytest

from reactor.testing.damon_fake import PAGE_SIZE
from tests.conformance import Workload
from tests.conformance.damon_sysfs import Sysfs
from tests.unit.damon_fake.test_conformance_fake import FakeBackend, MiB, start_cold_pageout

HOLE = 2 * MiB
REGION = 4 * MiB
MADVISE_ACTIONS = ("willneed", "cold", "pageout", "hugepage", "nohugepage", "collapse")


def overlaps(lo: int, hi: int, hole: tuple[int, int]) -> bool:
    return lo < hole[1] and hole[0] < hi


def present_or_swapped(backend: FakeBackend, pid: int, lo: int, hi: int) -> set[int]:
    """The distinct values of 2 * present + swapped (pagemap bits 63 and 62) over [lo, hi):
    {1} all swapped, {2} all present, {0} none of them mapped."""
    n = (hi - lo) // PAGE_SIZE
    data = backend.fs.read_bytes(f"/proc/{pid}/pagemap", lo // PAGE_SIZE * 8, n * 8)
    return {(e >> 63) * 2 + (e >> 62 & 1) for e in struct.unpack(f"<{n}Q", data)}


def start_three_regions(backend: FakeBackend, action: str, **quota: int) -> tuple[Sysfs, Workload]:
    """An fvaddr kdamond over three REGION-byte regions of a child whose cold buffer has
    a HOLE in the middle: its first 4 MiB, the 4 MiB around the hole, its last 4 MiB
    (fixed: min = max = 3 regions). The scheme matches every region at every apply;
    ``quota`` names files under quotas/ to write."""
    work = backend.spawn_process(hole=HOLE)
    assert work.hole is not None
    mid = (work.hole[0] + work.hole[1]) // 2
    regions = (
        (work.cold[0], work.cold[0] + REGION),
        (mid - REGION // 2, mid + REGION // 2),
        (work.cold[1] - REGION, work.cold[1]),
    )
    s = Sysfs(backend)
    s.kdamonds(1)
    s.stage(ops="fvaddr", pids=(work.pid,))
    c = s.ctx()
    s.w(f"{c}/monitoring_attrs/nr_regions/min", 3)
    s.w(f"{c}/monitoring_attrs/nr_regions/max", 3)
    s.w(f"{c}/targets/0/regions/nr_regions", 3)
    for i, (lo, hi) in enumerate(regions):
        s.w(f"{c}/targets/0/regions/{i}/start", lo)
        s.w(f"{c}/targets/0/regions/{i}/end", hi)
    s.w(f"{s.scheme()}/action", action)
    if action.startswith("migrate"):
        s.w(f"{s.scheme()}/target_nid", 1)
    for name, value in quota.items():
        s.w(f"{s.scheme()}/quotas/{name}", value)
    s.state(0, "on")
    return s, work


@pytest.mark.parametrize("action", MADVISE_ACTIONS)
def test_madvise_actions_count_a_region_over_a_hole_as_not_applied(action: str) -> None:
    """Every action damon_va_apply_scheme() hands to damos_madvise(): the two wholly
    mapped regions count their whole length at each apply, the one over the hole 0."""
    backend = FakeBackend()
    s, _ = start_three_regions(backend, action)
    backend.wait(1.0)
    s.state(0, "update_schemes_stats")
    nr_tried, nr_applied = s.stat("nr_tried"), s.stat("nr_applied")
    assert nr_tried >= 3 and nr_tried % 3 == 0
    assert s.stat("sz_tried") == REGION * nr_tried
    assert nr_applied * 3 == nr_tried * 2
    assert s.stat("sz_applied") == REGION * nr_applied


def test_migration_is_not_failed_by_a_hole_and_moves_each_page_once() -> None:
    """Migration walks the page tables (damos_va_migrate()): a hole is skipped, not an
    error, so the region over it counts what its mapped part moved. The pages move in the
    first pass; every later pass finds them on the target node already and moves (and
    applies) nothing (__damon_migrate_folio_list())."""
    backend = FakeBackend()
    s, work = start_three_regions(backend, "migrate_cold")
    resident = backend.fake.node_bytes(work.pid)
    assert list(resident) == [0]  # every page starts on the first node
    backend.wait(1.0)
    s.state(0, "update_schemes_stats")
    assert s.stat("nr_tried") >= 6 and s.stat("nr_tried") % 3 == 0  # several passes
    assert s.stat("nr_applied") == 3
    assert s.stat("sz_applied") == 3 * REGION - HOLE
    # the regions' mapped bytes moved; the rest of the process stayed on node 0
    after = backend.fake.node_bytes(work.pid)
    assert after[1] == 3 * REGION - HOLE
    assert after[0] == resident[0] - after[1]


def test_stat_applies_nothing_anywhere() -> None:
    backend = FakeBackend()
    s, _ = start_three_regions(backend, "stat")
    backend.wait(1.0)
    s.state(0, "update_schemes_stats")
    assert s.stat("nr_tried") >= 3 and s.stat("nr_applied") == 0


def test_pageout_over_a_hole_still_moves_the_mapped_pages() -> None:
    """The region over the hole applies 0 bytes, yet its two mapped MiB leave RAM."""
    backend = FakeBackend()
    s, work = start_three_regions(backend, "pageout")
    assert work.hole is not None
    backend.wait(1.0)
    s.state(0, "update_schemes_stats")
    assert s.stat("nr_tried") > s.stat("nr_applied") > 0
    mid = (work.hole[0] + work.hole[1]) // 2
    below, above = (mid - REGION // 2, work.hole[0]), (work.hole[1], mid + REGION // 2)
    assert present_or_swapped(backend, work.pid, *below) == {1}  # swapped, not present
    assert present_or_swapped(backend, work.pid, *above) == {1}
    assert present_or_swapped(backend, work.pid, *work.hole) == {0}  # not mapped at all
    assert backend.fake.swapped_bytes(work.pid) == 3 * REGION - HOLE


@pytest.mark.parametrize(
    ("kernel", "fail_charge", "charged_per_pass"),
    [
        ("7.2.12", None, 3 * REGION),  # fail_charge_denom 0 (default): charged in full
        ("7.2.12", (0, 1), 2 * REGION),  # failed bytes cost nothing
        ("7.2.12", (1, 4), 2 * REGION + REGION // 4),
        ("7.1.0", None, 3 * REGION),  # no fail_charge before 7.2: charged in full
    ],
)
def test_quota_charges_a_region_over_a_hole_by_the_fail_charge_ratio(
    kernel: str, fail_charge: tuple[int, int] | None, charged_per_pass: int
) -> None:
    """damos_charge_quota(): a region charges applied + (size - applied) * num / denom
    when fail_charge_denom is set, its size otherwise; the region over the hole applied
    0 bytes, the two others their size. One charge window (60 s) holds every pass."""
    backend = FakeBackend(kernel)
    quota = {"bytes": 1 << 30, "reset_interval_ms": 60_000}
    if fail_charge is not None:
        quota |= {"fail_charge_num": fail_charge[0], "fail_charge_denom": fail_charge[1]}
    start_three_regions(backend, "pageout", **quota)
    backend.wait(1.0)
    ctx = backend.fake.context(0)
    assert ctx is not None
    scheme = ctx.schemes[0]
    assert scheme.stats.nr_tried >= 3 and scheme.stats.nr_tried % 3 == 0
    assert scheme.charged_sz == charged_per_pass * (scheme.stats.nr_tried // 3)


def test_vaddr_regions_span_a_small_hole_and_tries_over_it_apply_nothing() -> None:
    """vaddr's three regions leave out only the two largest gaps (mm/damon/vaddr.c
    __damon_va_three_regions(), damon_set_regions() fills the rest), so a 2 MiB hole in
    a process with bigger gaps elsewhere stays inside the monitored regions; in an apply
    pass the tried regions that overlap it count 0 bytes applied, the others their size,
    and the hole regions' mapped cold pages are swapped out all the same."""
    backend = FakeBackend()
    s, work = start_cold_pageout(backend, hole=HOLE)
    assert work.hole is not None
    hole = work.hole
    backend.wait(2.0)
    ctx = backend.fake.context(0)
    assert ctx is not None
    assert any(overlaps(r.start, r.end, hole) for r in ctx.targets[0].regions)
    for _ in range(20):  # passes until one tries a region over the hole
        s.state(0, "update_schemes_stats")
        before = {n: s.stat(n) for n in ("nr_tried", "sz_tried", "nr_applied", "sz_applied")}
        s.state(0, "update_schemes_tried_regions")  # waits for one whole apply pass
        tried = [(lo, hi) for lo, hi, _, _ in s.tried()]
        s.state(0, "update_schemes_stats")
        after = {n: s.stat(n) for n in before}
        if any(overlaps(lo, hi, hole) for lo, hi in tried):
            break
    else:
        pytest.fail("no apply pass tried a region over the hole")
    mapped = [(lo, hi) for lo, hi in tried if not overlaps(lo, hi, hole)]
    assert after["nr_tried"] - before["nr_tried"] == len(tried)
    assert after["sz_tried"] - before["sz_tried"] == sum(hi - lo for lo, hi in tried)
    assert after["nr_applied"] - before["nr_applied"] == len(mapped)
    assert after["sz_applied"] - before["sz_applied"] == sum(hi - lo for lo, hi in mapped)
    for lo, hi in tried:
        if overlaps(lo, hi, hole):
            for part in ((max(lo, work.cold[0]), hole[0]), (hole[1], min(hi, work.cold[1]))):
                if part[0] < part[1]:
                    assert present_or_swapped(backend, work.pid, *part) == {1}
