"""Fake-specific tests of reactor.testing.FakeDamon: captures, versions, API, simulation, damo."""

from __future__ import annotations

import errno
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from reactor.errors import KernelInterfaceError
from reactor.kernelfs import RealKernelFS
from reactor.testing.damon_fake import (
    KDAMONDS,
    FakeDamon,
    kstrto,
    kstrtobool,
    parse_kernel_version,
)
from reactor.testing.fakefs import FakeKernelFS
from tests.conformance.damo_oracle import assert_damo_reads_like_reactor
from tests.conformance.damon_sysfs import Sysfs
from tests.unit.damon_fake.test_conformance_fake import FakeBackend, MiB, start_cold_pageout

CAPTURE = Path(__file__).parents[2] / "fixtures" / "captured" / "guest-debian-7.2"


def listing(fake: FakeDamon, fs: FakeKernelFS) -> list[str]:
    """The tree in the lane's listing format (``d <mode> <path>/``, ``f <mode> <path> = …``)."""
    lines: list[str] = []

    def walk(path: str, rel: str) -> None:
        lines.append(f"d {fake.mode(path):o} {rel}")
        for name in fs.listdir(path):
            child = f"{path}/{name}"
            if fs.is_dir(child):
                walk(child, f"{rel if rel != './' else ''}{name}/")
            else:
                value = fs.read_text(child).replace("\n", "\\n")
                lines.append(f"f {fake.mode(child):o} {rel if rel != './' else ''}{name} = {value}")

    walk("/sys/kernel/mm/damon", "./")
    return sorted(lines)


def test_populated_tree_equals_the_guest_capture() -> None:
    """One of every object gives exactly the files, modes and values the 7.2.12 guest showed."""
    backend = FakeBackend("7.2.12+deb14-amd64")
    Sysfs(backend).populate()
    want = (CAPTURE / "sys_kernel_mm_damon.populated.listing").read_text().splitlines()
    assert listing(backend.fake, backend.fs) == sorted(want)


def test_initial_tree_equals_the_guest_capture() -> None:
    """A fresh fake is the tree the guest had at boot."""
    backend = FakeBackend()
    want = (CAPTURE / "sys_kernel_mm_damon.initial.listing").read_text().splitlines()
    assert listing(backend.fake, backend.fs) == sorted(want)


def test_host_6_18_tree_lacks_later_files() -> None:
    """At 6.18 (this host) the 6.19+ files are absent and the 6.18 ones present."""
    backend = FakeBackend("6.18.44-fc-v669")
    s = Sysfs(backend)
    s.populate()
    c, sch = s.ctx(), s.scheme()
    for rel in (f"{c}/addr_unit", "kdamonds/0/refresh_ms", f"{sch}/dests/nr_dests"):
        assert s.exists(rel), rel
    for rel in (
        f"{c}/pause",
        f"{c}/monitoring_attrs/probes",
        f"{c}/targets/0/obsolete_target",
        f"{sch}/quotas/goal_tuner",
        f"{sch}/stats/nr_snapshots",
        f"{sch}/quotas/goals/0/path",
    ):
        assert not s.exists(rel), rel
    s.expect(errno.EINVAL, f"{sch}/action", "collapse")


def test_fake_needs_a_filesystem_that_allows_damon_writes() -> None:
    """Building the fake on a guarded FakeKernelFS is refused with a clear error."""
    with pytest.raises(ValueError, match="allow_damon_writes=True"):
        FakeDamon(FakeKernelFS())


@pytest.mark.parametrize(
    ("text", "want"),
    [("7.2.12", (7, 2, 12)), ("7.2.12+deb14-amd64", (7, 2, 12)), ("6.18", (6, 18, 0))],
)
def test_parse_kernel_version(text: str, want: tuple[int, int, int]) -> None:
    """Kernel release strings reduce to (major, minor, patch)."""
    assert parse_kernel_version(text) == want


def test_parse_kernel_version_rejects_garbage() -> None:
    """A string that is no kernel release raises ValueError naming it."""
    with pytest.raises(ValueError, match="'latest'"):
        parse_kernel_version("latest")


@pytest.mark.parametrize(
    ("text", "bits", "want"),
    [("010", 64, 8), ("0x1F", 64, 31), ("+3\n", 32, 3), ("-010", -32, -8), ("0", 32, 0)],
)
def test_kstrto_parses_base_zero(text: str, bits: int, want: int) -> None:
    """kstrto() follows the kernel's base-0 rules."""
    assert kstrto(text, bits) == want


@pytest.mark.parametrize(
    ("text", "bits", "err"),
    [("08", 64, errno.EINVAL), ("-1", 64, errno.EINVAL), (str(2**32), 32, errno.ERANGE)],
)
def test_kstrto_errors(text: str, bits: int, err: int) -> None:
    """Malformed text is EINVAL, too-large values ERANGE."""
    with pytest.raises(OSError) as info:
        kstrto(text, bits)
    assert info.value.errno == err


def test_kstrtobool_reads_the_first_letters() -> None:
    """kstrtobool() looks at the first character (two for on/off)."""
    assert [kstrtobool(t) for t in ("Yes", "1", "on", "no", "0", "off")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_foreign_kdamond_runs_and_blocks_nr_kdamonds() -> None:
    """start_foreign_kdamond() leaves a running kdamond that makes nr_kdamonds EBUSY."""
    backend = FakeBackend()
    index = backend.fake.start_foreign_kdamond()
    s = Sysfs(backend)
    assert index == 0
    assert s.r("kdamonds/nr_kdamonds") == "1"
    assert s.r("kdamonds/0/state") == "on"
    assert int(s.r("kdamonds/0/pid")) == backend.fake.kdamond_pid(0)
    assert s.r(f"{s.ctx()}/operations") == "paddr"
    s.expect(errno.EBUSY, "kdamonds/nr_kdamonds", "2")
    assert backend.fs.writes[-1:] == ()  # nothing the code under test wrote


def test_write_log_records_staging_in_order() -> None:
    """Accepted writes land in FakeKernelFS.writes, refused ones only in write_attempts."""
    backend = FakeBackend()
    s = Sysfs(backend)
    s.kdamonds(1)
    s.expect(errno.EINVAL, "kdamonds/0/contexts/nr_contexts", "2")
    s.w("kdamonds/0/contexts/nr_contexts", "1")
    assert [w[1] for w in backend.fs.writes] == ["1", "1"]
    assert backend.fs.write_attempts[1].errno == errno.EINVAL


def test_materialized_tree_reads_the_same_through_real_kernelfs(tmp_path: Path) -> None:
    """materialize() gives a directory tree RealKernelFS reads exactly like the fake."""
    backend = FakeBackend()
    s = Sysfs(backend)
    s.kdamonds(1)
    s.stage(pids=(backend.spawn_process().pid,))
    s.state(0, "on")
    backend.fs.materialize(tmp_path)
    real = RealKernelFS(str(tmp_path))
    for rel in ("kdamonds/0/state", "kdamonds/0/pid", f"{s.ctx()}/operations"):
        assert real.read_text(s.p(rel)) == backend.fs.read_text(s.p(rel))


def test_same_seed_gives_the_same_regions() -> None:
    """The simulation is deterministic: two fakes with the same inputs report the same."""

    def run() -> list[tuple[int, int, int, int]]:
        backend = FakeBackend()
        s = Sysfs(backend)
        s.kdamonds(1)
        s.start_vaddr()
        backend.wait(3.0)
        s.state(0, "update_schemes_tried_regions")
        return s.tried()

    assert run() == run()


def test_consist_tuner_doubles_the_quota_while_the_goal_is_unmet() -> None:
    """With current_value 0 the consist tuner doubles esz every charge window (§5.6)."""
    backend = FakeBackend()
    s = Sysfs(backend)
    s.kdamonds(1)
    s.stage(pids=(backend.spawn_process().pid,))
    q = f"{s.scheme()}/quotas"
    s.w(f"{q}/reset_interval_ms", 1)
    s.w(f"{q}/goals/nr_goals", 1)
    s.w(f"{q}/goals/0/target_value", 10000)
    s.state(0, "on")
    seen = []
    for _ in range(6):
        backend.wait(0.2)  # one apply interval = one charge window
        s.state(0, "update_schemes_effective_quotas")
        seen.append(int(s.r(f"{q}/effective_bytes")))
    assert all(b == 2 * a for a, b in itertools.pairwise(seen)), seen


def test_pageout_applies_to_mapped_bytes_and_resets_age() -> None:
    """A cold-region pageout scheme applies to the cold buffer and stops at the quota."""
    backend = FakeBackend()
    s, _ = start_cold_pageout(backend)
    backend.wait(3.0)
    s.state(0, "update_schemes_stats")
    assert 0 < s.stat("sz_applied") <= s.stat("sz_tried")
    assert s.stat("nr_applied") > 0


def test_walk_that_would_hang_on_the_kernel_raises() -> None:
    """All schemes deactivated with interval_us 0 blocks the kernel forever; the fake says so."""
    backend = FakeBackend()
    s = Sysfs(backend)
    s.kdamonds(1)
    s.stage(pids=(backend.spawn_process().pid,))
    s.w(f"{s.scheme()}/watermarks/metric", "free_mem_rate")
    s.state(0, "on")
    with pytest.raises(RuntimeError, match="block forever"):
        s.state(0, "update_schemes_tried_regions")


def test_hold_lock_refuses_state_writes_with_ebusy() -> None:
    """While hold_lock() is active every locked write fails with EBUSY."""
    backend = FakeBackend()
    s = Sysfs(backend)
    with backend.fake.hold_lock():
        with pytest.raises(KernelInterfaceError) as info:
            s.kdamonds(1)
        assert info.value.errno == errno.EBUSY
    s.kdamonds(1)


def test_paddr_kdamond_sees_physical_ranges() -> None:
    """paddr regions count accesses of add_physical_range() memory."""
    backend = FakeBackend()
    backend.fake.add_physical_range(0x1000_0000, 0x1040_0000, 1.0)
    s = Sysfs(backend)
    s.kdamonds(1)
    s.stage(ops="paddr", regions=((0x1000_0000, 0x1800_0000),))
    s.state(0, "on")
    backend.wait(2.0)
    s.state(0, "update_schemes_tried_regions")
    hot = [acc for lo, hi, acc, _ in s.tried() if hi <= 0x1040_0000]
    cold = [acc for lo, hi, acc, _ in s.tried() if lo >= 0x1040_0000]
    assert hot and min(hot) > 0
    assert cold and max(cold) == 0


# ----------------------------------------------------------------------------- damo oracle


@pytest.fixture
def damo(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """damo's sysfs reader, imported in-process with every write and mount lookup disabled."""
    pkg = pytest.importorskip("damo")
    monkeypatch.syspath_prepend(str(Path(pkg.__file__ or "").parent))
    import _damo_fs  # type: ignore[import-not-found]
    import _damon_sysfs  # type: ignore[import-not-found]

    def no_write(path: str, content: str) -> str:
        raise AssertionError(f"damo tried to write {content!r} to {path}")

    def no_mounts(dev: str) -> None:
        raise AssertionError("damo tried to look up the real sysfs mount")

    monkeypatch.setattr(_damo_fs, "write_file", no_write)
    monkeypatch.setattr(_damo_fs, "dev_mount_point", no_mounts)
    yield {"fs": _damo_fs, "sysfs": _damon_sysfs}
    for name in [m for m in sys.modules if m.startswith(("_damo", "_damon"))]:
        del sys.modules[name]


def test_damo_reads_the_materialized_fake_as_reactor_does(
    damo: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """damo, pointed at the materialized fake of a running kdamond (stats, effective quota
    and tried regions updated), reads every field as reactor's read_kdamond(...,
    outputs=True) and read_tried_regions do."""
    backend = FakeBackend()
    s = Sysfs(backend)
    s.kdamonds(1)
    work = backend.spawn_process()
    s.stage(pids=(work.pid,), schemes=2)
    s.w(f"{s.scheme()}/action", "pageout")
    s.w(f"{s.scheme()}/quotas/bytes", 64 * MiB)
    s.w(f"{s.scheme()}/quotas/reset_interval_ms", 100)
    s.w(f"{s.scheme()}/filters/nr_filters", 1)
    s.w(f"{s.scheme()}/filters/0/type", "anon")
    s.w(f"{s.scheme()}/filters/0/matching", "Y")
    s.w(f"{s.scheme()}/core_filters/nr_filters", 1)
    s.w(f"{s.scheme()}/core_filters/0/type", "target")
    s.w(f"{s.scheme()}/core_filters/0/matching", "Y")
    s.w(f"{s.scheme()}/core_filters/0/allow", "Y")
    s.state(0, "on")
    backend.wait(2.0)
    for command in (
        "update_schemes_stats",
        "update_schemes_effective_quotas",
        "update_schemes_tried_regions",
    ):
        s.state(0, command)
    assert s.tried(0, 1), "the match-all scheme tried no region"
    backend.fs.materialize(tmp_path)
    sysfs = damo["sysfs"]
    monkeypatch.setattr(sysfs, "sysfs_root", str(tmp_path / "sys"))
    kdamonds_dir = sysfs.get_kdamonds_dir()
    assert kdamonds_dir.startswith(str(tmp_path)), kdamonds_dir
    kdamonds = sysfs.files_content_to_kdamonds(damo["fs"].read_files(kdamonds_dir))
    assert kdamonds[0].state == "on" and kdamonds[0].contexts[0].schemes[0].stats.nr_tried > 0
    assert assert_damo_reads_like_reactor(kdamonds, backend.fs) > 60
    assert KDAMONDS.endswith("admin/kdamonds")


def test_real_backend_refuses_outside_the_lane() -> None:
    """The guest backend runs only with reactor_lane=1 on the kernel command line."""
    from tests.conformance.real_backend import RealBackend, lane_refusal

    assert lane_refusal("BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet") is not None
    assert lane_refusal("console=ttyS0 reactor_lane=1 reactor_lane_nonce=x") is None
    assert lane_refusal("reactor_lane=10") is not None
    if lane_refusal() is not None:
        with pytest.raises(RuntimeError, match="refusing to drive a real DAMON sysfs"):
            RealBackend()


def test_node_eligible_goal_on_vaddr_commit_is_enomem_with_a_sentence() -> None:
    """As on 7.2.12: on passes, commit is ENOMEM, the kdamond runs on, the driver says why."""
    from reactor.damon.commands import DamonSysfsError, send_state

    backend = FakeBackend()
    s = Sysfs(backend)
    s.kdamonds(1)
    s.stage(pids=(backend.spawn_process().pid,))
    g = f"{s.scheme()}/quotas/goals"
    s.w(f"{g}/nr_goals", 1)
    s.w(f"{g}/0/target_metric", "node_eligible_mem_bp")
    s.w(f"{g}/0/target_value", 5000)
    send_state(backend.fs, 0, "on")
    with pytest.raises(DamonSysfsError) as info:
        send_state(backend.fs, 0, "commit")
    assert info.value.errno == errno.ENOMEM
    assert "node_eligible_mem_bp goal in a context that is not paddr" in str(info.value)
    assert s.running()


def test_empty_write_to_an_nr_file_keeps_the_children() -> None:
    """A 0-byte write never reaches the store: nr_schemes keeps its staged children."""
    backend = FakeBackend()
    s = Sysfs(backend)
    s.kdamonds(1)
    s.w("kdamonds/0/contexts/nr_contexts", 1)
    s.w(f"{s.ctx()}/schemes/nr_schemes", 1)
    s.w(f"{s.scheme()}/action", "pageout")
    s.w(f"{s.ctx()}/schemes/nr_schemes", "")
    assert s.r(f"{s.scheme()}/action") == "pageout"


def test_recording_fs_logs_every_write_it_passes_on() -> None:
    """RecordingKernelFS logs accepted, refused and guard-refused writes, in order, and
    passes reads through untouched."""
    from reactor.errors import UnsafeWrite
    from reactor.testing import RecordingKernelFS
    from reactor.testing.fakefs import WriteAttempt

    inner = FakeKernelFS({"sys/x": "0\n", "sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds": "0\n"})
    rec = RecordingKernelFS(inner)
    rec.write_text("/sys/x", "1")
    with pytest.raises(KernelInterfaceError):
        rec.write_text("/sys/missing", "1")
    with pytest.raises(UnsafeWrite):
        rec.write_text("/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds", "1")
    assert rec.attempts == (
        WriteAttempt("/sys/x", "1", None),
        WriteAttempt("/sys/missing", "1", errno.ENOENT),
        WriteAttempt("/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds", "1", None),
    )
    assert rec.writes_under("/sys/kernel/mm/damon") == rec.attempts[2:]
    assert rec.writes_under("/sys/x") == rec.attempts[:1]
    assert rec.read_text("/sys/x") == "1" and rec.listdir("/sys") == inner.listdir("/sys")


def test_watermarks_switch_off_above_high_and_on_again_only_below_mid() -> None:
    """The free_mem_rate rule (damon-sysfs.md §5.8) without commits: off above high, still
    off between mid and high, on again below mid (the guest cannot move free memory
    deterministically, so this half is checked on the fake only)."""
    backend = FakeBackend()
    s = Sysfs(backend)
    s.kdamonds(1)
    s.stage(pids=(backend.spawn_process().pid,))
    wm = f"{s.scheme()}/watermarks"
    for name, value in (
        ("metric", "free_mem_rate"),
        ("interval_us", 100_000),
        ("high", 600),
        ("mid", 400),
        ("low", 100),
    ):
        s.w(f"{wm}/{name}", value)
    backend.fake.free_memory_permil = 500  # inside [low, high]: active since creation
    s.state(0, "on")
    walks = []
    for free in (500, 700, 500, 300):
        backend.fake.free_memory_permil = free
        backend.wait(0.5)
        walks.append(errno_name(s.err("kdamonds/0/state", "update_schemes_tried_regions")))
    assert walks == ["success", "ECANCELED", "ECANCELED", "success"]


def errno_name(err: int | None) -> str:
    return "success" if err is None else errno.errorcode[err]
