"""RealKernelFS over a temporary root: reads, errnos, and the DAMON write guard.

None of these tests touches the machine's own /sys/kernel/mm/damon: they use a fake root,
or assert that the refusal happens before any file is opened.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from reactor.errors import KernelInterfaceError, UnsafeWrite
from reactor.kernelfs import RealKernelFS
from reactor.kernelfs.base import is_damon_path, normalize_path
from reactor.kernelfs.kept import KeptReader
from reactor.testing import FakeKernelFS

NR = "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return FakeKernelFS(
        {
            "sys/kernel/mm/damon/admin/kdamonds": {"nr_kdamonds": "0\n"},
            "sys/fs/cgroup/app": {"memory.reclaim": ""},
            "proc/vmstat": "pgfault 1\n",
        }
    ).materialize(tmp_path)


@pytest.mark.parametrize(
    "path",
    [NR, "/sys/kernel/mm//damon/admin/kdamonds/nr_kdamonds", "/sys/kernel/mm/x/../damon/a"],
)
def test_damon_write_refused_under_fake_root(root: Path, path: str) -> None:
    """A write into the (fake root's) DAMON tree raises UnsafeWrite and leaves it unchanged."""
    fs = RealKernelFS(root=str(root))
    with pytest.raises(UnsafeWrite, match=r"^refused to write .*allow_damon_writes"):
        fs.write_text(path, "1")
    assert (root / NR.lstrip("/")).read_text() == "0\n"


def test_damon_write_refused_through_symlink(root: Path) -> None:
    """A path that reaches the DAMON tree through a symlink is refused too."""
    (root / "sys/fs/cgroup/app/link").symlink_to(root / NR.lstrip("/"))
    fs = RealKernelFS(root=str(root))
    with pytest.raises(UnsafeWrite, match="resolves to"):
        fs.write_text("/sys/fs/cgroup/app/link", "1")
    assert (root / NR.lstrip("/")).read_text() == "0\n"


def test_damon_write_allowed_when_asked_under_fake_root(root: Path) -> None:
    """allow_damon_writes=True lets the DAMON backend write (here into a temporary tree)."""
    RealKernelFS(root=str(root), allow_damon_writes=True).write_text(NR, "1")
    assert (root / NR.lstrip("/")).read_text() == "1"


def test_real_root_damon_refusal_happens_before_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """On root '/', the refusal is raised before any open: os.open is replaced by a tripwire,
    so not even a failed guard could reach the machine's DAMON tree."""
    opened: list[str] = []

    def tripwire(path: str, *args: object, **kwargs: object) -> int:
        opened.append(path)
        raise AssertionError(f"os.open({path!r}) called")

    fs = RealKernelFS("/")
    monkeypatch.setattr(os, "open", tripwire)
    with pytest.raises(UnsafeWrite):
        fs.write_text(NR, "1")
    monkeypatch.undo()
    assert opened == []


def test_write_and_read_back(root: Path) -> None:
    """A write outside the DAMON tree is one write call whose data reads back."""
    fs = RealKernelFS(root=str(root))
    fs.write_text("/sys/fs/cgroup/app/memory.reclaim", "16M")
    assert fs.read_text("/sys/fs/cgroup/app/memory.reclaim") == "16M"


def test_missing_file_errno(root: Path) -> None:
    """A missing file raises KernelInterfaceError with ENOENT, for reads, writes and keep."""
    fs = RealKernelFS(root=str(root))
    for call in (
        lambda: fs.read_text("/proc/nope"),
        lambda: fs.write_text("/proc/nope", "1"),
        lambda: fs.keep("/proc/nope"),
        lambda: fs.listdir("/proc/nope"),
    ):
        with pytest.raises(KernelInterfaceError) as info:
            call()
        assert info.value.errno == errno.ENOENT
        assert info.value.path == "/proc/nope"


def test_dotdot_cannot_escape_root(root: Path) -> None:
    """'..' in a kernel path is resolved inside the root, never above it."""
    fs = RealKernelFS(root=str(root))
    assert fs.host_path("/../../proc/vmstat") == str(root / "proc/vmstat")
    assert fs.read_text("/../proc/vmstat") == "pgfault 1\n"


def test_kept_file_sees_updates(root: Path) -> None:
    """A kept descriptor re-reads from offset 0 and sees the file's new content."""
    fs = RealKernelFS(root=str(root))
    kept = fs.keep("/proc/vmstat")
    (root / "proc/vmstat").write_text("pgfault 22\n")
    assert kept.read_text() == "pgfault 22\n"
    kept.close()


def test_normalize_and_damon_path() -> None:
    """normalize_path resolves '.', '..' and '//' lexically; is_damon_path uses it."""
    assert normalize_path("//sys/./kernel/mm/x/../damon/") == "/sys/kernel/mm/damon"
    assert is_damon_path("/sys/kernel/mm/x/../damon/admin")
    assert not is_damon_path("/sys/kernel/mm/damon_other")
    assert not is_damon_path("/sys/kernel/mm")


def test_kept_reader_reopens_after_failure() -> None:
    """KeptReader reopens its path after a failed read and bumps its generation."""
    fs = FakeKernelFS({"sys/fs/cgroup/app/memory.pressure": "a"})
    reader = KeptReader(fs, "/sys/fs/cgroup/app/memory.pressure")
    assert (reader.read_text(), reader.generation) == ("a", 1)
    fs.remove("/sys/fs/cgroup/app")
    fs.set_file("/sys/fs/cgroup/app/memory.pressure", "b")
    with pytest.raises(KernelInterfaceError):
        reader.read_text()  # the old descriptor is dead (ENODEV)
    assert (reader.read_text(), reader.generation) == ("b", 2)
    assert fs.open_count("/sys/fs/cgroup/app/memory.pressure") == 2


def test_read_texts_reads_each_file_below_the_base_in_the_order_given(tmp_path: Path) -> None:
    """Files relative to one directory, nested names too, in the caller's order; a file
    longer than the first read (8 KiB) comes back whole."""
    long = "x" * 20000 + "\n"
    root = FakeKernelFS(
        {"sys/t": {"0": {"start": "4096\n", "end": "8192\n"}, "1": {"start": "1\n"}, "big": long}}
    ).materialize(tmp_path)
    fs = RealKernelFS(root=str(root))
    got = fs.read_texts("/sys/t", ["1/start", "0/end", "0/start", "big"])
    assert got == ["1\n", "8192\n", "4096\n", long]
    assert fs.read_texts("/sys/t", []) == []


def test_read_texts_names_the_file_it_cannot_read(root: Path) -> None:
    """The first unreadable file raises with its own kernel path and errno; a missing
    base names the base."""
    fs = RealKernelFS(root=str(root))
    with pytest.raises(KernelInterfaceError) as info:
        fs.read_texts("/proc", ["vmstat", "nope/start"])
    assert (info.value.path, info.value.errno) == ("/proc/nope/start", errno.ENOENT)
    with pytest.raises(KernelInterfaceError) as info:
        fs.read_texts("/proc/none", ["vmstat"])
    assert (info.value.path, info.value.errno) == ("/proc/none", errno.ENOENT)


@pytest.mark.parametrize("name", ["../vmstat", "/proc/vmstat", "a/../../x", "", "a//b"])
def test_read_texts_refuses_names_that_leave_the_base(root: Path, name: str) -> None:
    """A name must stay below its base (the root's no-climb rule holds for it too), on
    the real and the fake filesystem alike."""
    for fs in (RealKernelFS(root=str(root)), FakeKernelFS({"proc/vmstat": "pgfault 1\n"})):
        with pytest.raises(ValueError, match="relative path below its base"):
            fs.read_texts("/proc", [name])
