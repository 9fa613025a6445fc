"""FakeKernelFS: the in-memory kernel tree shipped in reactor.testing."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from reactor.errors import KernelInterfaceError, UnsafeWrite
from reactor.kernelfs import KernelFS, RealKernelFS
from reactor.testing import FakeKernelFS
from reactor.testing.fakefs import FakeTree

TREE: FakeTree = {
    "proc": {
        "pressure": {"memory": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"},
        "vmstat": "pgfault 10\n",
    },
    "sys/fs/cgroup/app": {"memory.pressure": "x\n", "cgroup.procs": ""},
    "sys/kernel/mm/damon/admin": {"kdamonds": {"nr_kdamonds": "1\n"}},
    "empty": {},
    "bin": b"\x00\x01\x02\x03",
}


def test_is_a_kernelfs() -> None:
    """The fake satisfies the KernelFS protocol, so code under test takes it unchanged."""
    fs: KernelFS = FakeKernelFS(TREE)
    assert fs.read_text("/proc/vmstat") == "pgfault 10\n"


def test_tree_literal_builds_files_and_dirs() -> None:
    """Nested dicts become directories, strings and bytes files, slashed keys several levels."""
    fs = FakeKernelFS(TREE)
    assert fs.listdir("/") == ["bin", "empty", "proc", "sys"]
    assert fs.listdir("/sys/fs/cgroup/app") == ["cgroup.procs", "memory.pressure"]
    assert fs.is_dir("/empty") and fs.listdir("/empty") == []
    assert fs.exists("/proc/pressure/memory") and not fs.is_dir("/proc/pressure/memory")
    assert fs.read_bytes("/bin", 1, 2) == b"\x01\x02"
    assert not fs.exists("/proc/nothing")


def test_paths_are_normalized() -> None:
    """Double slashes, '.' and '..' name the same file, as they do in the kernel."""
    fs = FakeKernelFS(TREE)
    assert fs.read_text("//proc/./pressure/../vmstat") == "pgfault 10\n"


def test_relative_path_is_a_bug() -> None:
    """A relative kernel path raises ValueError: kernel paths are absolute."""
    with pytest.raises(ValueError, match=r"^kernel paths are absolute, got 'proc/vmstat'$"):
        FakeKernelFS(TREE).read_text("proc/vmstat")


@pytest.mark.parametrize(
    ("call", "err"),
    [
        (lambda fs: fs.read_text("/proc/missing"), errno.ENOENT),
        (lambda fs: fs.read_text("/proc"), errno.EISDIR),
        (lambda fs: fs.listdir("/proc/vmstat"), errno.ENOTDIR),
        (lambda fs: fs.listdir("/nope"), errno.ENOENT),
        (lambda fs: fs.keep("/nope"), errno.ENOENT),
        (lambda fs: fs.write_text("/proc/new_file", "1"), errno.ENOENT),
        (lambda fs: fs.write_text("/proc", "1"), errno.EISDIR),
    ],
)
def test_kernel_errnos(call: object, err: int) -> None:
    """Missing files, directories read as files and files listed as directories fail with
    the kernel's errno, as KernelInterfaceError."""
    fs = FakeKernelFS(TREE)
    with pytest.raises(KernelInterfaceError) as info:
        call(fs)  # type: ignore[operator]
    assert info.value.errno == err
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == err


def test_write_log_records_accepted_writes_in_order() -> None:
    """Accepted writes are logged as (path, data) in the order they were issued."""
    fs = FakeKernelFS(TREE)
    fs.write_text("/sys/fs/cgroup/app/cgroup.procs", "123")
    fs.write_text("/proc/vmstat", "pgfault 11\n")
    fs.write_text("/sys/fs/cgroup/app/cgroup.procs", "456")
    assert fs.writes == (
        ("/sys/fs/cgroup/app/cgroup.procs", "123"),
        ("/proc/vmstat", "pgfault 11\n"),
        ("/sys/fs/cgroup/app/cgroup.procs", "456"),
    )
    assert fs.file_text("/sys/fs/cgroup/app/cgroup.procs") == "456"


def test_refused_writes_are_attempts_not_writes() -> None:
    """A write refused with an errno shows in write_attempts with that errno, not in writes."""
    fs = FakeKernelFS(TREE)
    fs.inject_fault("/proc/vmstat", errno.EBUSY, ops=("write",))
    with pytest.raises(KernelInterfaceError) as info:
        fs.write_text("/proc/vmstat", "on")
    assert info.value.errno == errno.EBUSY and info.value.value == "on"
    assert str(info.value) == (
        "/proc/vmstat: write refused (EBUSY: Device or resource busy); value written: 'on'"
    )
    fs.write_text("/proc/vmstat", "on")
    assert fs.writes == (("/proc/vmstat", "on"),)
    assert [a.errno for a in fs.write_attempts] == [errno.EBUSY, None]


@pytest.mark.parametrize("err", [errno.EINVAL, errno.EBUSY, errno.ENOENT, errno.EACCES])
def test_fault_for_n_calls(err: int) -> None:
    """A fault with times=2 fails the next two matching calls with its errno, then clears."""
    fs = FakeKernelFS(TREE)
    fault = fs.inject_fault("/proc/vmstat", err, times=2)
    for left in (1, 0):
        with pytest.raises(KernelInterfaceError) as info:
            fs.read_text("/proc/vmstat")
        assert info.value.errno == err
        assert info.value.path == "/proc/vmstat"
        assert os.strerror(err) in str(info.value)
        assert fault.remaining == left
    assert fs.read_text("/proc/vmstat") == "pgfault 10\n"


def test_fault_always_until_cleared() -> None:
    """A fault with times=None fails every call until clear_faults."""
    fs = FakeKernelFS(TREE)
    fs.inject_fault("/proc/vmstat", errno.EACCES, times=None)
    for _ in range(5):
        with pytest.raises(KernelInterfaceError):
            fs.read_text("/proc/vmstat")
    fs.clear_faults()
    assert fs.read_text("/proc/vmstat") == "pgfault 10\n"


def test_fault_only_hits_its_ops_and_path() -> None:
    """A write-only fault leaves reads alone, and other paths are never affected."""
    fs = FakeKernelFS(TREE)
    fs.inject_fault("/proc/vmstat", errno.EINVAL, times=None, ops=("write",))
    assert fs.read_text("/proc/vmstat") == "pgfault 10\n"
    assert fs.read_text("/proc/pressure/memory").startswith("some")
    with pytest.raises(KernelInterfaceError):
        fs.write_text("/proc/vmstat", "x")


def test_subtree_fault() -> None:
    """A subtree fault hits every path below its directory (a cgroup going away)."""
    fs = FakeKernelFS(TREE)
    fs.inject_fault("/sys/fs/cgroup/app", errno.ENODEV, times=None, subtree=True)
    with pytest.raises(KernelInterfaceError) as info:
        fs.read_text("/sys/fs/cgroup/app/memory.pressure")
    assert info.value.errno == errno.ENODEV
    with pytest.raises(KernelInterfaceError):
        fs.listdir("/sys/fs/cgroup/app")
    assert fs.read_text("/proc/vmstat") == "pgfault 10\n"


def test_fault_reaches_kept_files() -> None:
    """A read fault also fails preads on a descriptor kept before the fault was injected."""
    fs = FakeKernelFS(TREE)
    kept = fs.keep("/proc/vmstat")
    fs.inject_fault("/proc/vmstat", errno.EINVAL)
    with pytest.raises(KernelInterfaceError) as info:
        kept.read_text()
    assert info.value.errno == errno.EINVAL
    assert kept.read_text() == "pgfault 10\n"


def test_invalid_fault_count() -> None:
    """times=0 is refused: a fault that never fires is a mistake in the test."""
    with pytest.raises(ValueError, match="times must be at least 1 or None, got 0"):
        FakeKernelFS(TREE).inject_fault("/proc/vmstat", errno.EINVAL, times=0)


@pytest.mark.parametrize(
    "path",
    [
        "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds",
        "/sys/kernel/mm/damon",
        "/sys/kernel/mm//damon/admin/kdamonds/nr_kdamonds",
        "/sys/kernel/mm/x/../damon/admin/kdamonds/nr_kdamonds",
    ],
)
def test_damon_writes_refused(path: str) -> None:
    """Writes into the DAMON tree raise UnsafeWrite, however the path is spelled, and do
    nothing."""
    fs = FakeKernelFS(TREE)
    with pytest.raises(UnsafeWrite, match=r"allow_damon_writes"):
        fs.write_text(path, "1")
    assert fs.file_text("/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds") == "1\n"
    assert fs.write_attempts == ()


def test_damon_writes_allowed_when_asked() -> None:
    """With allow_damon_writes=True the fake accepts DAMON writes (the fake DAMON's case)."""
    fs = FakeKernelFS(TREE, allow_damon_writes=True)
    fs.write_text("/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds", "2")
    assert fs.writes == (("/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds", "2"),)


def test_write_hook_by_most_specific_prefix() -> None:
    """A write hook gives writes under its prefix their semantics; the longest prefix wins
    and an OSError from the hook becomes the write's errno."""
    fs = FakeKernelFS(TREE, allow_damon_writes=True)
    calls: list[str] = []

    def recreate_children(f: FakeKernelFS, path: str, data: str) -> None:
        calls.append("nr")
        f.default_write(path, data)
        base = path.rsplit("/", 1)[0]
        for i in range(int(data)):
            f.mkdir(f"{base}/{i}")

    def refuse(f: FakeKernelFS, path: str, data: str) -> None:
        calls.append("outer")
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    fs.add_write_hook("/sys/kernel/mm/damon", refuse)
    fs.add_write_hook("/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds", recreate_children)
    fs.write_text("/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds", "2")
    assert fs.listdir("/sys/kernel/mm/damon/admin/kdamonds") == ["0", "1", "nr_kdamonds"]
    with pytest.raises(KernelInterfaceError) as info:
        fs.write_text("/sys/kernel/mm/damon/admin/kdamonds/0", "x")
    assert info.value.errno == errno.EINVAL
    assert calls == ["nr", "outer"]


def test_set_file_updates_kept_descriptors() -> None:
    """A counter replaced with set_file is what the next pread of a kept file returns."""
    fs = FakeKernelFS(TREE)
    kept = fs.keep("/proc/vmstat")
    fs.set_file("/proc/vmstat", "pgfault 99\n")
    assert kept.read_text() == "pgfault 99\n"
    assert kept.pread(4, 2) == b"faul"


def test_removed_file_fails_kept_descriptor_with_enodev() -> None:
    """A kept file whose path was removed fails with ENODEV, even after the path returns
    (a removed cgroup's open files stay dead)."""
    fs = FakeKernelFS(TREE)
    kept = fs.keep("/sys/fs/cgroup/app/memory.pressure")
    fs.remove("/sys/fs/cgroup/app")
    assert not fs.exists("/sys/fs/cgroup/app/memory.pressure")
    assert fs.listdir("/sys/fs/cgroup") == []
    with pytest.raises(KernelInterfaceError) as info:
        kept.read_text()
    assert info.value.errno == errno.ENODEV
    fs.set_file("/sys/fs/cgroup/app/memory.pressure", "new\n")
    with pytest.raises(KernelInterfaceError):
        kept.read_text()
    assert fs.keep("/sys/fs/cgroup/app/memory.pressure").read_text() == "new\n"


def test_vanished_file_reads_enoent() -> None:
    """A removed file read by path fails with ENOENT."""
    fs = FakeKernelFS(TREE)
    fs.remove("/proc/vmstat")
    with pytest.raises(KernelInterfaceError) as info:
        fs.read_text("/proc/vmstat")
    assert info.value.errno == errno.ENOENT


def test_kept_file_after_close() -> None:
    """Reading a closed kept file is an error, as it is for a real descriptor."""
    fs = FakeKernelFS(TREE)
    kept = fs.keep("/proc/vmstat")
    kept.close()
    with pytest.raises(KernelInterfaceError, match="read after close"):
        kept.read_text()


def test_open_count_distinguishes_kept_reads() -> None:
    """open_count counts opens (read_text, keep) but not preads on a kept descriptor."""
    fs = FakeKernelFS(TREE)
    kept = fs.keep("/proc/vmstat")
    for _ in range(3):
        kept.read_text()
    fs.read_text("/proc/vmstat")
    assert fs.open_count("/proc/vmstat") == 2


def test_materialize_round_trips_through_real_kernelfs(tmp_path: Path) -> None:
    """A materialized tree reads back identically through RealKernelFS rooted at it."""
    fs = FakeKernelFS(TREE)
    root = fs.materialize(tmp_path)
    real = RealKernelFS(root=str(root))
    for path in ("/proc/vmstat", "/proc/pressure/memory", "/sys/fs/cgroup/app/cgroup.procs"):
        assert real.read_text(path) == fs.read_text(path)
    assert real.read_bytes("/bin", 0, 4) == b"\x00\x01\x02\x03"
    assert real.listdir("/") == fs.listdir("/")
    assert real.is_dir("/empty") and real.listdir("/empty") == []
    assert real.keep("/proc/vmstat").read_text() == "pgfault 10\n"


def test_usable_from_threads() -> None:
    """Concurrent writes from worker threads all land in the log (the fake is locked)."""
    fs = FakeKernelFS(TREE)

    def writer(n: int) -> None:
        for i in range(200):
            fs.write_text("/proc/vmstat", f"{n}:{i}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fs.writes) == 800


def test_fake_kernel_fixture_holds_host_captures(fake_kernel: FakeKernelFS) -> None:
    """The shared fake_kernel fixture serves the host captures at their kernel paths."""
    assert fake_kernel.read_text("/proc/pressure/io").startswith("some avg10=")
    assert "MemTotal:" in fake_kernel.read_text("/proc/meminfo")
    assert fake_kernel.listdir("/proc/pressure") == ["cpu", "io", "memory"]
