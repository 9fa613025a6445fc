"""Obsolete targets: after the kernel drops them, reactor's model and staged tree follow.

The kernel removes a target staged with ``obsolete_target`` Y at ``commit`` and shifts the
later ones down, but leaves the sysfs target directories as they were. A driver that kept
the stale tree would, at the next read-back -> commit (what policies do), remove the new
index 0 and hand one process's regions to another (issue 5 audit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from reactor.config.damon import DamonSection, Kdamond
from reactor.damon.commands import DamonSysfsError
from reactor.damon.driver import DamonDriver
from reactor.damon.sysfs import TargetFilterChange, as_staged, without_obsolete_targets
from reactor.testing import damon_fake
from tests.unit.damon.conftest import base_fs

pytestmark = pytest.mark.anyio

MAPPINGS = {
    1: (0x7F00_0000_0000, 0x7F00_0040_0000),
    2: (0x7E00_0000_0000, 0x7E00_0040_0000),
    3: (0x7D00_0000_0000, 0x7D00_0040_0000),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _kd(targets: list[dict[str, Any]], schemes: list[dict[str, Any]] | None = None) -> Kdamond:
    ctx = {
        "ops": "vaddr",
        "targets": targets,
        "intervals": {"sample_us": 10_000, "aggr_us": 200_000, "ops_update_us": 1_000_000},
        "schemes": schemes or [{"action": "stat"}],
    }
    return DamonSection.model_validate({"kdamonds": [{"contexts": [ctx]}]}).kdamonds[0]


def _target_filter(idx: int) -> dict[str, Any]:
    return {"filter_type": "target", "matching": True, "damon_target_idx": idx}


async def _running(tmp_path: Path, kd: Kdamond) -> tuple[Any, DamonDriver]:
    fs = base_fs(pids=MAPPINGS)
    fake = damon_fake.FakeDamon(fs, kernel="7.2.12")
    for pid, (start, end) in MAPPINGS.items():
        fake.add_process(pid, [(start, end, 1.0)])
    driver = DamonDriver(fs, run_dir=str(tmp_path))
    await driver.open()
    await driver.apply(DamonSection(kdamonds=(kd,)))
    fake.advance(0.5)
    return fake, driver


def _inside(pid: int, regions: Any) -> bool:
    lo, hi = MAPPINGS[pid]
    return bool(regions) and all(lo <= r.start and r.end <= hi for r in regions)


async def test_read_back_commit_after_an_obsolete_commit_keeps_each_pids_regions(
    tmp_path: Path,
) -> None:
    """After target 0 leaves, the read-back commits pids 2 and 3 onto their own regions."""
    fake, driver = await _running(tmp_path, _kd([{"pid": 1}, {"pid": 2}, {"pid": 3}]))
    kept = {t.pid: t for t in fake.context(0).targets}
    removal = await driver.commit(0, _kd([{"pid": 1, "obsolete": True}, {"pid": 2}, {"pid": 3}]))
    assert removal is not None and (removal.removed, removal.pids) == ((0,), (1,))
    fake.advance(0.5)
    assert [t.pid for t in fake.context(0).targets] == [2, 3]
    back = driver.read_back(0)
    assert [(t.pid, t.obsolete) for t in back.contexts[0].targets] == [(2, False), (3, False)]

    assert await driver.commit(0, back) is None  # what a policy does: read back, commit
    fake.advance(0.5)
    targets = fake.context(0).targets
    assert [t.pid for t in targets] == [2, 3]
    assert targets[0] is kept[2] and targets[1] is kept[3]  # monitoring state carried on
    assert all(_inside(t.pid, t.regions) for t in targets), [
        (t.pid, [(hex(r.start), hex(r.end)) for r in t.regions]) for t in targets
    ]
    assert driver.state(0) == "on"


async def test_target_filters_are_renumbered_for_the_kernels_new_array(tmp_path: Path) -> None:
    """A filter naming target 2 names target 1 once target 0 is gone; one naming target 0
    is dropped, and the log and the return value say so."""
    scheme = {
        "action": "stat",
        "filters": [_target_filter(2), {"filter_type": "anon", "matching": True}],
        "core_filters": [_target_filter(0), _target_filter(1)],
    }
    targets: list[dict[str, Any]] = [{"pid": 1}, {"pid": 2}, {"pid": 3}]
    fake, driver = await _running(tmp_path, _kd(targets, [scheme]))
    with structlog.testing.capture_logs() as logs:
        removal = await driver.commit(
            0, _kd([{**targets[0], "obsolete": True}, *targets[1:]], [scheme])
        )
    assert removal is not None
    assert removal.filters == (
        TargetFilterChange(0, "filters", 0, 2, 1),
        TargetFilterChange(0, "core_filters", 0, 0, None),
        TargetFilterChange(0, "core_filters", 1, 1, 0),
    )
    assert removal.dropped_filters == (TargetFilterChange(0, "core_filters", 0, 0, None),)
    committed = fake.context(0).params.schemes[0].core_filters
    assert [(f.type, f.target_idx) for f in committed] == [("target", 0), ("target", 1)]
    staged = driver.read_back(0).contexts[0].schemes[0].core_filters
    assert [f.damon_target_idx for f in staged] == [0, 1]
    (event,) = [e for e in logs if e["event"] == "damon_obsolete_targets_removed"]
    assert event["targets"] == [0] and event["pids"] == [1]
    assert event["filters_dropped"] == ["scheme 0 core_filters[0]: named removed target 0"]


async def test_a_refused_obsolete_commit_leaves_the_callers_staging(tmp_path: Path) -> None:
    """An obsolete target with no running counterpart is EINVAL: nothing is removed, and
    the tree holds what the caller staged (its filter numbering, not the renumbered one)."""
    scheme = {"action": "stat", "core_filters": [_target_filter(1)]}
    fake, driver = await _running(tmp_path, _kd([{"pid": 1}, {"pid": 2}], [scheme]))
    bad = _kd([{"pid": 1, "obsolete": True}, {"pid": 2}, {"pid": 3, "obsolete": True}], [scheme])
    with pytest.raises(DamonSysfsError):
        await driver.commit(0, bad)
    assert [t.pid for t in fake.context(0).targets] == [1, 2]
    assert driver.read_back(0) == as_staged(bad, driver.features)
    assert driver.state(0) == "on"


async def test_a_stopped_kdamond_starts_without_its_obsolete_targets(tmp_path: Path) -> None:
    """At on there is nothing to remove from: apply leaves obsolete targets out."""
    _fake, driver = await _running(
        tmp_path, _kd([{"pid": 1, "obsolete": True}, {"pid": 2}, {"pid": 3}])
    )
    assert [t.pid for t in driver.read_back(0).contexts[0].targets] == [2, 3]


def test_without_obsolete_targets_is_the_identity_when_nothing_is_obsolete() -> None:
    """No obsolete target: the same model and no removal."""
    kd = _kd([{"pid": 1}, {"pid": 2}])
    assert without_obsolete_targets(kd) == (kd, None)
