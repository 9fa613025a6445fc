"""PSI: the parser on verbatim captures and malformed text, and the poller's rates."""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable

import pytest

from reactor.errors import KernelFormatError, KernelInterfaceError, TargetVanished
from reactor.signals.psi import Psi, PsiLine, PsiPoller, parse_psi, psi_topic
from reactor.testing import FakeKernelFS
from tests.captures import CAPTURED

P = "/proc/pressure/memory"


def psi_text(some_us: int, full_us: int | None = 0, avg10: str = "0.00") -> str:
    text = f"some avg10={avg10} avg60=0.00 avg300=0.00 total={some_us}\n"
    if full_us is not None:
        text += f"full avg10=0.00 avg60=0.00 avg300=0.00 total={full_us}\n"
    return text


# -- parser on captures ---------------------------------------------------------------------


def test_parse_capture_io(captured: Callable[[str], str]) -> None:
    """The host's /proc/pressure/io capture parses to the values printed in the file."""
    psi = parse_psi(captured("proc_pressure_io"), "/proc/pressure/io")
    assert psi == Psi(
        some=PsiLine(avg10_pct=0.0, avg60_pct=0.14, avg300_pct=0.17, total_us=1311688),
        full=PsiLine(avg10_pct=0.0, avg60_pct=0.13, avg300_pct=0.16, total_us=1230930),
    )


def test_parse_capture_cpu_has_zero_full(captured: Callable[[str], str]) -> None:
    """System-wide cpu prints a full line of zeros (5.13+), parsed as such."""
    psi = parse_psi(captured("proc_pressure_cpu"), "/proc/pressure/cpu")
    assert psi.some == PsiLine(0.81, 0.32, 0.29, 2433116)
    assert psi.full == PsiLine(0.0, 0.0, 0.0, 0)


def test_parse_capture_memory_and_cgroup(captured: Callable[[str], str]) -> None:
    """The idle memory capture is all zeros; the cgroup root's cpu.pressure parses alike."""
    assert parse_psi(captured("proc_pressure_memory"), P).some.total_us == 0
    cg = parse_psi(captured("cgroup_unified_cpu.pressure"), "/sys/fs/cgroup/unified/cpu.pressure")
    assert cg.some.total_us == 2433908 and cg.some.avg10_pct == 0.81


GUEST = CAPTURED / "guest-debian-7.2"


def test_parse_guest_captures() -> None:
    """The guest kernel's /proc/pressure files (7.2.12, captured right after a workload
    swapped to zram under a memory limit) parse to the values printed: memory and io
    stalled nearly always fully (full close to some), cpu has a full line of zeros."""
    memory = parse_psi((GUEST / "proc_pressure_memory").read_text(), P)
    assert memory == Psi(
        some=PsiLine(avg10_pct=18.05, avg60_pct=3.97, avg300_pct=0.86, total_us=2561023),
        full=PsiLine(avg10_pct=17.82, avg60_pct=3.91, avg300_pct=0.84, total_us=2542986),
    )
    io = parse_psi((GUEST / "proc_pressure_io").read_text(), "/proc/pressure/io")
    assert io.some == PsiLine(4.36, 2.22, 0.55, 1681420)
    assert io.full == PsiLine(4.36, 2.22, 0.55, 1673850)
    cpu = parse_psi((GUEST / "proc_pressure_cpu").read_text(), "/proc/pressure/cpu")
    assert cpu.some == PsiLine(2.94, 0.99, 0.24, 865754)
    assert cpu.full == PsiLine(0.0, 0.0, 0.0, 0)


def test_parse_without_full_line() -> None:
    """A file without a full line (cpu before 5.13) parses with full=None."""
    assert parse_psi(psi_text(5, None), "/proc/pressure/cpu").full is None


def test_parse_tolerates_unknown_keys_and_labels() -> None:
    """Extra keys and unknown labels from a later kernel are ignored; order does not matter."""
    text = (
        "full total=7 avg300=0.00 avg60=0.00 avg10=0.00 max=3\n"
        "some avg10=1.50 avg60=0.00 avg300=0.00 total=9 newkey=1\n"
        "other avg10=0.00\n"
    )
    psi = parse_psi(text, P)
    assert psi.some == PsiLine(1.5, 0.0, 0.0, 9)
    assert psi.full is not None and psi.full.total_us == 7


# -- parser on malformed text ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        (
            "some avg10=0.00 avg60=0.00 total=5\n",
            "missing avg300",
            "some avg10=0.00 avg60=0.00 total=5",
        ),
        ("some avg10=x avg60=0.00 avg300=0.00 total=5\n", "avg10 is not a percentage", None),
        ("some avg10=nan avg60=0.00 avg300=0.00 total=5\n", "avg10 is not a percentage", None),
        ("some avg10=0.00 avg60=0.00 avg300=0.00 total=-5\n", "total is not a count", None),
        ("some avg10=0.00 avg60=0.00 avg300=0.00 total=1.5\n", "total is not a count", None),
        ("some 0.00 0.00 0.00 5\n", "expected key=value, got '0.00'", "some 0.00 0.00 0.00 5"),
        (psi_text(1) + psi_text(2, None), "duplicate 'some' line", None),
        ("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", "no 'some' line", None),
        ("", "no 'some' line", None),
    ],
)
def test_parse_malformed(text: str, message: str, line: str | None) -> None:
    """Malformed PSI text raises KernelFormatError naming the file and quoting the line."""
    with pytest.raises(KernelFormatError, match=rf"^{P}: {message}") as info:
        parse_psi(text, P)
    assert info.value.path == P
    if line is not None:
        assert info.value.line == line
        assert repr(line) in str(info.value)


def test_results_are_frozen() -> None:
    """Parsed values are frozen dataclasses (they are logged and exported as they are)."""
    psi = parse_psi(psi_text(1), P)
    with pytest.raises(dataclasses.FrozenInstanceError):
        psi.some.total_us = 2  # type: ignore[misc]


# -- topics ---------------------------------------------------------------------------------


def test_topic_scheme() -> None:
    """System files are psi.<resource>, a cgroup's <resource>.pressure psi.cgroup.<resource>."""
    assert psi_topic("memory") == "psi.memory"
    assert psi_topic("io", "/proc/pressure/io") == "psi.io"
    assert psi_topic("memory", "/sys/fs/cgroup/unified/app/memory.pressure") == (
        "psi.cgroup.memory"
    )
    fs = FakeKernelFS({"sys/fs/cgroup/app/cpu.pressure": psi_text(0)})
    assert PsiPoller.for_cgroup(fs, "/sys/fs/cgroup/app/", "cpu").topic == "psi.cgroup.cpu"
    assert PsiPoller.for_cgroup(fs, "/sys/fs/cgroup/app", "cpu", topic="t").topic == "t"


def test_unknown_resource() -> None:
    """An unknown resource name is refused with the accepted ones."""
    with pytest.raises(ValueError, match=r"expected a PSI resource in .*got 'mem'"):
        PsiPoller(FakeKernelFS(), "mem")


# -- poller ---------------------------------------------------------------------------------


def make(some_us: int = 1_000_000, full_us: int | None = 400_000) -> tuple[FakeKernelFS, PsiPoller]:
    fs = FakeKernelFS({"proc/pressure/memory": psi_text(some_us, full_us)})
    return fs, PsiPoller(fs, "memory")


def test_first_poll_is_baseline() -> None:
    """The first poll has no previous total to compare with and returns None."""
    _, poller = make()
    assert poller.topic == "psi.memory"
    assert poller.poll(10.0) is None


def test_share_from_total_delta() -> None:
    """total grows by 250000 µs over 0.5 s: some_share is 0.5; full grows 100000 µs: 0.2."""
    fs, poller = make()
    poller.poll(10.0)
    fs.set_file(P, psi_text(1_250_000, 500_000, avg10="3.25"))
    sample = poller.poll(10.5)
    assert sample is not None
    assert sample.some_share == pytest.approx(0.5)
    assert sample.full_share == pytest.approx(0.2)
    assert (sample.some_stall_us, sample.full_stall_us) == (250_000, 100_000)
    assert sample.interval_s == pytest.approx(0.5)
    assert sample.psi.some.avg10_pct == 3.25
    assert sample.summary() == {"some_share": 0.5, "full_share": 0.2, "some_avg10_pct": 3.25}


def test_rates_chain_from_previous_poll() -> None:
    """Each poll's rate is over the interval since the previous poll, not since the first."""
    fs, poller = make(0, 0)
    poller.poll(0.0)
    fs.set_file(P, psi_text(1_000_000, 0))
    first = poller.poll(2.0)
    fs.set_file(P, psi_text(1_100_000, 0))
    second = poller.poll(3.0)
    assert first is not None and first.some_share == pytest.approx(0.5)
    assert second is not None and second.some_share == pytest.approx(0.1)


def test_share_is_clamped_to_one() -> None:
    """A stall slightly longer than our interval (two clocks) still reports a share of 1."""
    fs, poller = make(0, 0)
    poller.poll(0.0)
    fs.set_file(P, psi_text(1_000_010, 0))
    sample = poller.poll(1.0)
    assert sample is not None and sample.some_share == 1.0 and sample.some_stall_us == 1_000_010


def test_counter_backwards_rebaselines() -> None:
    """A total that went backwards (recreated cgroup) yields None, then rates from the new
    baseline."""
    fs, poller = make(5_000_000, 0)
    poller.poll(0.0)
    fs.set_file(P, psi_text(100, 0))
    assert poller.poll(1.0) is None
    fs.set_file(P, psi_text(300_100, 0))
    sample = poller.poll(2.0)
    assert sample is not None and sample.some_share == pytest.approx(0.3)


def test_nonpositive_interval_returns_none() -> None:
    """A poll at the same instant returns None and keeps the older baseline."""
    fs, poller = make(0, 0)
    poller.poll(1.0)
    fs.set_file(P, psi_text(100_000, 0))
    assert poller.poll(1.0) is None
    fs.set_file(P, psi_text(200_000, 0))
    sample = poller.poll(2.0)
    assert sample is not None and sample.some_share == pytest.approx(0.2)


def test_missing_full_line_gives_no_full_share() -> None:
    """Without a full line the sample's full_share is None and the summary leaves it out."""
    fs = FakeKernelFS({"proc/pressure/cpu": psi_text(0, None)})
    poller = PsiPoller(fs, "cpu")
    poller.poll(0.0)
    fs.set_file("/proc/pressure/cpu", psi_text(100_000, None))
    sample = poller.poll(1.0)
    assert sample is not None and sample.full_share is None and sample.full_stall_us is None
    assert "full_share" not in sample.summary()


def test_poller_keeps_its_descriptor() -> None:
    """Polling re-reads a kept descriptor: the file is opened once for many polls."""
    fs, poller = make()
    for t in range(5):
        poller.poll(float(t))
    assert fs.open_count(P) == 1


def test_read_failure_raises_and_recovers() -> None:
    """A failed read raises KernelInterfaceError with the errno; the next poll reopens the
    file and starts a new baseline."""
    fs, poller = make(0, 0)
    poller.poll(0.0)
    fs.inject_fault(P, errno.EIO)
    with pytest.raises(KernelInterfaceError) as info:
        poller.poll(1.0)
    assert info.value.errno == errno.EIO
    assert poller.poll(2.0) is None  # reopened: baseline again
    fs.set_file(P, psi_text(100_000, 0))
    sample = poller.poll(3.0)
    assert sample is not None and sample.some_share == pytest.approx(0.1)


def test_vanishing_cgroup() -> None:
    """A cgroup whose pressure file vanishes with it raises TargetVanished (a normal event,
    not a KernelInterfaceError) naming the group, on every poll while it is gone; once a
    group exists there again, polling resumes from a new baseline."""
    path = "/sys/fs/cgroup/app/memory.pressure"
    fs = FakeKernelFS({"sys/fs/cgroup/app/memory.pressure": psi_text(9_000_000, 0)})
    poller = PsiPoller(fs, "memory", path=path)
    assert poller.topic == "psi.cgroup.memory"
    poller.poll(0.0)
    fs.remove("/sys/fs/cgroup/app")
    for t in (1.0, 2.0):
        with pytest.raises(TargetVanished, match=r"^target /sys/fs/cgroup/app has vanished$"):
            poller.poll(t)
    assert not issubclass(TargetVanished, KernelInterfaceError)
    fs.set_file(path, psi_text(0, 0))
    assert poller.poll(3.0) is None
    fs.set_file(path, psi_text(500_000, 0))
    sample = poller.poll(4.0)
    assert sample is not None and sample.some_share == pytest.approx(0.5)


def test_cgroup_recreated_between_polls_is_a_new_baseline() -> None:
    """A group removed and created again between two polls: the kept file of the old group
    fails (ENODEV), the new file is opened in the same poll, and that poll is a baseline
    (no rate across two groups' counters, no failure)."""
    path = "/sys/fs/cgroup/app/memory.pressure"
    fs = FakeKernelFS({"sys/fs/cgroup/app/memory.pressure": psi_text(9_000_000, 0)})
    poller = PsiPoller.for_cgroup(fs, "/sys/fs/cgroup/app", "memory")
    poller.poll(0.0)
    fs.remove("/sys/fs/cgroup/app")
    fs.set_file(path, psi_text(100, 0))
    assert poller.poll(1.0) is None
    fs.set_file(path, psi_text(200_100, 0))
    sample = poller.poll(2.0)
    assert sample is not None and sample.some_stall_us == 200_000


def test_missing_pressure_file_in_an_existing_group_is_a_failed_read() -> None:
    """A pressure file that is gone while its directory stays (not a removed group) is a
    KernelInterfaceError, as is a missing file when the poller is built."""
    path = "/sys/fs/cgroup/app/memory.pressure"
    fs = FakeKernelFS({"sys/fs/cgroup/app/memory.pressure": psi_text(1, 0)})
    poller = PsiPoller(fs, "memory", path=path)
    fs.remove(path)
    with pytest.raises(KernelInterfaceError, match=r"^/sys/fs/cgroup/app/memory.pressure: "):
        poller.poll(0.0)
    with pytest.raises(KernelInterfaceError, match=r"^/sys/fs/cgroup/b/io.pressure: cannot open"):
        PsiPoller.for_cgroup(fs, "/sys/fs/cgroup/b", "io")


def test_malformed_file_raises_format_error() -> None:
    """A poll of a malformed file raises KernelFormatError naming the file."""
    fs, poller = make()
    fs.set_file(P, "garbage\n")
    with pytest.raises(KernelFormatError, match=rf"^{P}: "):
        poller.poll(0.0)


def test_poller_on_fake_kernel_captures(fake_kernel: FakeKernelFS) -> None:
    """Pollers run on the shared fake built from the host captures."""
    poller = PsiPoller(fake_kernel, "io")
    assert poller.poll(0.0) is None
    text = fake_kernel.file_text("/proc/pressure/io").replace("total=1311688", "total=1411688")
    fake_kernel.set_file("/proc/pressure/io", text)
    sample = poller.poll(1.0)
    assert sample is not None and sample.some_share == pytest.approx(0.1)
    assert sample.full_share == 0.0
