"""Fixtures for the DAMON driver tests.

``mini_damon`` is a deliberately small stand-in for the kernel's sysfs *layout*: ``nr_*``
writes recreate children with the kernel's defaults (even at the same value), ``state``
``on``/``off`` flip state and pid, and files missing from older kernels can be hidden.
It has no monitoring and no validation; tests that need kernel semantics (errnos from
``on``/``commit``, stats that move) use the shared fake, reactor.testing.damon_fake,
when it is available.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from reactor.testing import FakeKernelFS

CAPTURED = Path(__file__).resolve().parents[2] / "fixtures" / "captured"
BOOT_ID = "5f3c8a2e-0d1b-4c1e-9a55-2b7f0c3e9d11"
ADMIN = "/sys/kernel/mm/damon/admin"
KD = ADMIN + "/kdamonds"

FILTER = {
    "type": "anon",
    "matching": "N",
    "allow": "N",
    "memcg_path": "",
    "addr_start": "0",
    "addr_end": "0",
    "damon_target_idx": "0",
    "min": "0",
    "max": "0",
}
SCHEME: dict[str, Any] = {
    "action": "stat",
    "target_nid": "-1",
    "apply_interval_us": "0",
    "access_pattern": {
        "sz": {"min": "0", "max": "0"},
        "nr_accesses": {"min": "0", "max": "0"},
        "age": {"min": "0", "max": "0"},
    },
    "quotas": {
        "ms": "0",
        "bytes": "0",
        "reset_interval_ms": "0",
        "effective_bytes": "0",
        "goal_tuner": "consist",
        "fail_charge_num": "0",
        "fail_charge_denom": "0",
        "weights": {"sz_permil": "0", "nr_accesses_permil": "0", "age_permil": "0"},
        "goals": {"nr_goals": "0"},
    },
    "watermarks": {"metric": "none", "interval_us": "0", "high": "0", "mid": "0", "low": "0"},
    "filters": {"nr_filters": "0"},
    "core_filters": {"nr_filters": "0"},
    "ops_filters": {"nr_filters": "0"},
    "dests": {"nr_dests": "0"},
    "stats": {
        "nr_tried": "0",
        "sz_tried": "0",
        "nr_applied": "0",
        "sz_applied": "0",
        "sz_ops_filter_passed": "0",
        "qt_exceeds": "0",
        "nr_snapshots": "0",
        "max_nr_snapshots": "0",
    },
    "tried_regions": {"total_bytes": "0"},
}
CONTEXT: dict[str, Any] = {
    "avail_operations": "vaddr\nfvaddr\npaddr\n",
    "operations": "vaddr",
    "addr_unit": "1",
    "pause": "N",
    "monitoring_attrs": {
        "intervals": {
            "sample_us": "5000",
            "aggr_us": "100000",
            "update_us": "60000000",
            "intervals_goal": {
                "access_bp": "0",
                "aggrs": "0",
                "min_sample_us": "0",
                "max_sample_us": "0",
            },
        },
        "nr_regions": {"min": "10", "max": "1000"},
        "probes": {"nr_probes": "0"},
    },
    "targets": {"nr_targets": "0"},
    "schemes": {"nr_schemes": "0"},
}
TEMPLATES: dict[str, Any] = {
    "nr_kdamonds": {
        "state": "off",
        "pid": "-1",
        "refresh_ms": "0",
        "contexts": {"nr_contexts": "0"},
    },
    "nr_contexts": CONTEXT,
    "nr_targets": {"pid_target": "0", "obsolete_target": "N", "regions": {"nr_regions": "0"}},
    "nr_regions": {"start": "0", "end": "0"},
    "nr_schemes": SCHEME,
    "nr_goals": {
        "target_metric": "user_input",
        "target_value": "0",
        "current_value": "0",
        "nid": "0",
        "path": "",
    },
    "nr_filters": FILTER,
    "nr_dests": {"id": "0", "weight": "0"},
    "nr_probes": {"filters": {"nr_filters": "0"}},
}
PROBE_FILTER = {"type": "anon", "matching": "N", "allow": "N", "path": ""}

#: Files each kernel lacks, relative to their level (reference/damon-sysfs.md §8).
HIDDEN: dict[str, tuple[str, ...]] = {
    "7.2": (),
    # The 6.18 host's own tree shows none of these (read-only look, 2026-11-27).
    "6.18": (
        "pause",
        "probes",
        "obsolete_target",
        "goal_tuner",
        "fail_charge_num",
        "fail_charge_denom",
        "nr_snapshots",
        "max_nr_snapshots",
        "path",
    ),
    "6.14": (
        "pause",
        "probes",
        "obsolete_target",
        "goal_tuner",
        "fail_charge_num",
        "fail_charge_denom",
        "nr_snapshots",
        "max_nr_snapshots",
        "path",
        "addr_unit",
        "refresh_ms",
        "dests",
        "nid",
        "core_filters",
        "ops_filters",
        "intervals_goal",
        "min",
        "max",
    ),
}


def _prune(tree: dict[str, Any], hidden: Iterable[str], *, keep_minmax: bool) -> dict[str, Any]:
    drop = set(hidden)
    out: dict[str, Any] = {}
    for name, value in tree.items():
        if name in drop and not (keep_minmax and name in ("min", "max")):
            continue
        out[name] = (
            _prune(value, drop, keep_minmax=keep_minmax) if isinstance(value, dict) else value
        )
    return out


class MiniDamon:
    """Layout-only DAMON sysfs on a FakeKernelFS (see the module docs)."""

    def __init__(self, fs: FakeKernelFS, version: str = "7.2") -> None:
        self.fs = fs
        self.hidden = HIDDEN[version]
        self.next_pid = 4242
        fs.add_tree(KD, {"nr_kdamonds": "0"})
        fs.add_write_hook(ADMIN, self._write)

    def _template(self, path: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if name == "nr_filters" and "/probes/" in path:
            tree: dict[str, Any] = PROBE_FILTER
        else:
            tree = TEMPLATES[name]
        # min/max of access patterns and nr_regions exist everywhere; only filter min/max
        # (hugepage_size, 6.15) are hidden on older kernels.
        keep = name != "nr_filters"
        return _prune(tree, self.hidden, keep_minmax=keep)

    def _write(self, fs: FakeKernelFS, path: str, data: str) -> None:
        name = path.rsplit("/", 1)[1]
        parent = path.rsplit("/", 1)[0]
        if name in TEMPLATES:
            n = int(data.strip(), 0)
            if n < 0:
                raise OSError(errno.EINVAL, "negative count")
            if name == "nr_contexts" and n > 1:
                raise OSError(errno.EINVAL, "nr_contexts > 1")
            if name == "nr_kdamonds" and any(
                fs.file_text(f"{KD}/{k}/state") == "on" for k in self.indices()
            ):
                raise OSError(errno.EBUSY, "running")
            for child in [c for c in fs.listdir(parent) if c.isdigit()]:
                fs.remove(f"{parent}/{child}")
            for i in range(n):
                fs.add_tree(f"{parent}/{i}", self._template(path))
            fs.default_write(path, str(n))
            return
        if name == "state":
            self._state(fs, parent, data.strip())
            return
        fs.default_write(path, data)

    def _state(self, fs: FakeKernelFS, kdir: str, command: str) -> None:
        running = fs.file_text(kdir + "/state") == "on"
        if command == "on":
            if running:
                raise OSError(errno.EBUSY, "running")
            fs.set_file(kdir + "/state", "on")
            fs.set_file(kdir + "/pid", str(self.next_pid))
            self.next_pid += 1
        elif command == "off":
            if not running:
                raise OSError(errno.EINVAL, "not running")
            fs.set_file(kdir + "/state", "off")
            fs.set_file(kdir + "/pid", "-1")
        elif not running and command != "clear_schemes_tried_regions":
            raise OSError(errno.EINVAL, "not running")

    def indices(self) -> list[int]:
        return sorted(int(c) for c in self.fs.listdir(KD) if c.isdigit())


def base_fs(kernel: str = "7.2.12+deb14-amd64", pids: Iterable[int] = ()) -> FakeKernelFS:
    """A FakeKernelFS with osrelease, boot_id, the captured /proc/iomem and some /proc/<pid>."""
    fs = FakeKernelFS(allow_damon_writes=True)
    fs.set_file("/proc/sys/kernel/osrelease", kernel + "\n")
    fs.set_file("/proc/sys/kernel/random/boot_id", BOOT_ID + "\n")
    fs.set_file("/proc/iomem", (CAPTURED / "host-6.18" / "proc_iomem").read_text())
    for pid in pids:
        fs.add_tree(f"/proc/{pid}", {"status": "Name:\ttest\n"})
    return fs


@pytest.fixture
def mini() -> Callable[..., MiniDamon]:
    """Build a MiniDamon: ``mini(version="7.2", kernel=..., pids=(...))``."""

    def build(
        version: str = "7.2", kernel: str | None = None, pids: Iterable[int] = (4000,)
    ) -> MiniDamon:
        release = (
            kernel
            or {"7.2": "7.2.12+deb14-amd64", "6.18": "6.18.44-fc-v669", "6.14": "6.14.3"}[version]
        )
        return MiniDamon(base_fs(release, pids), version)

    return build
