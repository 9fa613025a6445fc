"""meminfo: the parser on the verbatim capture and malformed text, and the poller."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from reactor.errors import KernelFormatError
from reactor.signals.meminfo import MeminfoPoller, parse_meminfo
from reactor.testing import FakeKernelFS
from tests.captures import CAPTURED

P = "/proc/meminfo"
KIB = 1024


def test_parse_capture(captured: Callable[[str], str]) -> None:
    """The host capture parses to the file's kB values times 1024, under unit-named fields."""
    m = parse_meminfo(captured("proc_meminfo"), P)
    assert m.mem_total_bytes == 24684084 * KIB == 25276502016
    assert m.mem_free_bytes == 24501208 * KIB
    assert m.mem_available_bytes == 24429876 * KIB
    assert m.cached_bytes == 69048 * KIB
    assert m.active_anon_bytes == 1528 * KIB
    assert m.inactive_anon_bytes == 4636 * KIB
    assert m.active_file_bytes == 25328 * KIB
    assert m.inactive_file_bytes == 37556 * KIB
    assert m.dirty_bytes == 308 * KIB
    assert m.swap_total_bytes == 0 and m.swap_free_bytes == 0
    assert m.anon_huge_pages_bytes == 0 and m.zswap_bytes == 0
    assert m.slab_reclaimable_bytes == 35332 * KIB
    assert m.bytes_by_key["Hugepagesize"] == 2048 * KIB
    assert m.bytes_by_key["VmallocTotal"] == 34359738367 * KIB
    assert dict(m.counts_by_key) == {
        "HugePages_Total": 0,
        "HugePages_Free": 0,
        "HugePages_Rsvd": 0,
        "HugePages_Surp": 0,
    }
    assert len(m.bytes_by_key) + len(m.counts_by_key) == 54
    assert m.available_ratio == pytest.approx(24429876 / 24684084)


def test_summary(captured: Callable[[str], str]) -> None:
    """summary() gives available bytes and ratio, anon and file LRU sizes, swap used."""
    m = parse_meminfo(captured("proc_meminfo"), P)
    assert m.summary() == {
        "mem_available_bytes": 24429876 * KIB,
        "available_ratio": round(24429876 / 24684084, 6),
        "anon_bytes": (1528 + 4636) * KIB,
        "file_bytes": (25328 + 37556) * KIB,
        "swap_used_bytes": 0,
    }


def test_optional_fields_absent(captured: Callable[[str], str]) -> None:
    """Without CONFIG_TRANSPARENT_HUGEPAGE/ZSWAP lines the optional fields are None."""
    text = "".join(
        line + "\n"
        for line in captured("proc_meminfo").splitlines()
        if not line.startswith(("AnonHugePages", "Zswap"))
    )
    m = parse_meminfo(text, P)
    assert m.anon_huge_pages_bytes is None and m.zswap_bytes is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("MemFree:        oops kB", "expected 'Key: integer [kB]'"),
        ("MemFree         12 kB", "expected 'Key: integer [kB]'"),
        ("MemFree:        12 MB", "expected unit kB, got 'MB'"),
        ("MemTotal:       12 kB", "duplicate key 'MemTotal'"),
    ],
)
def test_parse_malformed(captured: Callable[[str], str], bad: str, message: str) -> None:
    """A malformed line raises KernelFormatError naming the file and quoting the line."""
    lines = [ln for ln in captured("proc_meminfo").splitlines() if not ln.startswith("MemFree:")]
    text = "\n".join([*lines, bad]) + "\n"
    with pytest.raises(KernelFormatError, match=rf"^{P}: {re.escape(message)}: ") as info:
        parse_meminfo(text, P)
    assert info.value.line == bad
    assert repr(bad) in str(info.value)


def test_missing_required_key(captured: Callable[[str], str]) -> None:
    """A capture without MemAvailable (pre-3.14 kernel) raises, naming the missing key."""
    text = "\n".join(
        ln for ln in captured("proc_meminfo").splitlines() if not ln.startswith("MemAvailable")
    )
    with pytest.raises(KernelFormatError, match=rf"^{P}: missing MemAvailable \(in kB\)$"):
        parse_meminfo(text, P)


def test_poller_returns_value_on_first_poll(fake_kernel: FakeKernelFS) -> None:
    """meminfo holds levels, so the first poll already returns a value (no baseline)."""
    poller = MeminfoPoller(fake_kernel)
    assert poller.topic == "meminfo"
    m = poller.poll(0.0)
    assert m.mem_total_bytes == 24684084 * KIB
    text = fake_kernel.file_text(P).replace(
        "MemAvailable:   24429876 kB", "MemAvailable:   1000 kB"
    )
    fake_kernel.set_file(P, text)
    assert poller.poll(1.0).mem_available_bytes == 1000 * KIB
    assert fake_kernel.open_count(P) == 1


GUEST = CAPTURED / "guest-debian-7.2"


def test_parse_guest_capture() -> None:
    """The guest kernel's /proc/meminfo (Debian 7.2.12, 1.5 GiB in two nodes, 512 MiB zram
    swap) parses keyed, including keys this host's kernel lacks (Unaccepted, Balloon,
    GPUActive); its numbers agree with the files captured with it."""
    m = parse_meminfo((GUEST / "proc_meminfo").read_text(), P)
    assert m.mem_total_bytes == 1501500 * KIB
    # MemFree is the two nodes' MemFree: 855,164 + 451,624 kB (their meminfo captures)
    assert m.mem_free_bytes == 1306788 * KIB == (855164 + 451624) * KIB
    assert m.mem_available_bytes == 1208684 * KIB
    assert m.active_anon_bytes == 43316 * KIB and m.inactive_anon_bytes == 37256 * KIB
    assert m.active_file_bytes == 0 and m.inactive_file_bytes == 12544 * KIB
    # swap in use: 524,284 - 359,920 = 164,364 kB, the 'Used' column of its /proc/swaps
    assert (m.swap_total_bytes, m.swap_free_bytes) == (524284 * KIB, 359920 * KIB)
    assert m.anon_huge_pages_bytes == 0 and m.zswap_bytes == 0
    assert m.bytes_by_key["GPUActive"] == 0 and m.bytes_by_key["Unaccepted"] == 0
    assert len(m.bytes_by_key) + len(m.counts_by_key) == 60
    assert m.summary() == {
        "mem_available_bytes": 1208684 * KIB,
        "available_ratio": round(1208684 / 1501500, 6),
        "anon_bytes": (43316 + 37256) * KIB,
        "file_bytes": 12544 * KIB,
        "swap_used_bytes": 164364 * KIB,
    }
