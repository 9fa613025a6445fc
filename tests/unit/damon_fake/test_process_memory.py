"""The fake's simulated processes: what a pageout moves, pagemap and /proc/PID/status."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from reactor.testing.damon_fake import PAGE_SIZE, PROC_PID_STATUS_TEMPLATE, FakeDamon
from reactor.testing.fakefs import FakeKernelFS
from tests.unit.damon_fake.test_conformance_fake import FakeBackend, MiB, start_cold_pageout

STATUS_CAPTURE = Path(__file__).parents[2] / "fixtures/captured/host-6.18/proc_pid_status"
#: The status lines the fake fills in (the process's pid and memory); all others stay.
SUBSTITUTED = {
    "Name",
    "Tgid",
    "Pid",
    "NStgid",
    "NSpid",
    "VmPeak",
    "VmSize",
    "VmHWM",
    "VmRSS",
    "RssAnon",
    "RssFile",
    "RssShmem",
    "VmData",
    "VmStk",
    "VmExe",
    "VmLib",
    "VmSwap",
}
PID = 4242
HOT = (0x7F00_0000_0000, 0x7F00_0040_0000)  # 4 MiB, accessed
COLD = (0x7F00_0040_1000, 0x7F00_0240_1000)  # 32 MiB, never accessed
WARM = (0x7F00_1000_0000, 0x7F00_1010_0000)  # 1 MiB, sometimes accessed
PRESENT, SWAPPED = 1 << 63, 1 << 62


def fake_with_process() -> tuple[FakeKernelFS, FakeDamon]:
    fs = FakeKernelFS(allow_damon_writes=True)
    damon = FakeDamon(fs)
    damon.add_process(PID, [(*HOT, 1.0), (*COLD, 0.0), (*WARM, 0.3)])
    return fs, damon


def status(fs: FakeKernelFS, pid: int = PID) -> dict[str, int]:
    """The kB lines of /proc/PID/status, in bytes."""
    text = fs.read_text(f"/proc/{pid}/status")
    return {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\t *(\d+) kB$", text, re.M)}


def pagemap(fs: FakeKernelFS, lo: int, hi: int, pid: int = PID) -> list[int]:
    n = (hi - lo) // PAGE_SIZE
    data = fs.read_bytes(f"/proc/{pid}/pagemap", lo // PAGE_SIZE * 8, n * 8)
    return list(struct.unpack(f"<{n}Q", data))


def test_status_template_is_the_capture_verbatim() -> None:
    """The template constant is the captured file, byte for byte."""
    assert STATUS_CAPTURE.read_text() == PROC_PID_STATUS_TEMPLATE


def test_status_has_the_captures_lines_differing_only_in_substituted_values() -> None:
    """Same keys in the same order as the capture; only the pid and memory lines differ,
    and those keep the kernel's ``Key:\\t%8lu kB`` format."""
    fs, damon = fake_with_process()
    texts = [fs.read_text(f"/proc/{PID}/status")]
    damon.pageout("vaddr", PID, *COLD)
    texts.append(fs.read_text(f"/proc/{PID}/status"))
    assert texts[0] != texts[1]
    captured = STATUS_CAPTURE.read_text().splitlines()
    for text in texts:
        assert text.endswith("\n")
        lines = text.splitlines()
        assert [line.split(":\t")[0] for line in lines] == [
            line.split(":\t")[0] for line in captured
        ]
        for got, want in zip(lines, captured, strict=True):
            key = want.split(":\t")[0]
            if key not in SUBSTITUTED:
                assert got == want
            elif want.endswith(" kB"):
                assert re.fullmatch(rf"{key}:\t[ \d]{{8}} kB|{key}:\t\d{{9,}} kB", got), got
    values = dict(line.split(":\t", 1) for line in fs.read_text(f"/proc/{PID}/status").splitlines())
    assert values["Pid"] == values["Tgid"] == values["NSpid"] == str(PID)


def test_status_counts_the_ranges_as_resident_anonymous_memory() -> None:
    """At first every page is resident: VmRSS = RssAnon = the ranges; no file, shmem, swap."""
    fs, _ = fake_with_process()
    mapped = (HOT[1] - HOT[0]) + (COLD[1] - COLD[0]) + (WARM[1] - WARM[0])
    got = status(fs)
    assert got["VmRSS"] == got["RssAnon"] == got["VmSize"] == got["VmHWM"] == mapped
    assert got["RssFile"] == got["RssShmem"] == got["VmSwap"] == 0
    assert all(e == PRESENT for e in pagemap(fs, *COLD))


def test_pageout_swaps_only_the_never_accessed_part_of_a_region() -> None:
    """A region over the hot buffer's end and half the cold one: the cold half goes to
    swap (pagemap bit 62 alone, VmSwap up, RssAnon down as much); the hot pages are
    faulted straight back; the rest of the cold buffer stays."""
    fs, damon = fake_with_process()
    before = status(fs)
    half = COLD[0] + 16 * MiB
    damon.pageout("vaddr", PID, HOT[1] - MiB, half)
    after = status(fs)
    assert after["VmSwap"] == 16 * MiB == damon.swapped_bytes(PID)
    assert before["RssAnon"] - after["RssAnon"] == 16 * MiB
    assert after["VmRSS"] == after["RssAnon"]
    assert after["VmHWM"] == before["VmRSS"]
    assert set(pagemap(fs, COLD[0], half)) == {SWAPPED}
    assert set(pagemap(fs, half, COLD[1])) == {PRESENT}
    assert set(pagemap(fs, *HOT)) == {PRESENT}
    # the guard page between the buffers is not mapped: neither present nor swapped
    assert pagemap(fs, HOT[1], COLD[0]) == [0]


def test_pageout_of_warm_memory_or_on_paddr_changes_nothing() -> None:
    """Pages with an access chance refault at once; paddr pageouts touch no process."""
    fs, damon = fake_with_process()
    before = fs.read_text(f"/proc/{PID}/status")
    damon.pageout("vaddr", PID, *WARM)
    damon.pageout("paddr", None, *COLD)
    damon.pageout("fvaddr", PID + 1, *COLD)  # no such process
    assert fs.read_text(f"/proc/{PID}/status") == before
    assert set(pagemap(fs, *WARM)) == {PRESENT}


def test_swapped_pages_stay_swapped_and_pieces_join() -> None:
    """Two pieces then the gap between them: one swapped span; paging out swapped pages
    again moves nothing."""
    fs, damon = fake_with_process()
    lo = COLD[0]
    damon.pageout("fvaddr", PID, lo, lo + MiB)
    damon.pageout("fvaddr", PID, lo + 2 * MiB, lo + 3 * MiB)
    assert damon.swapped_bytes(PID) == 2 * MiB
    damon.pageout("fvaddr", PID, lo + MiB, lo + 2 * MiB)
    damon.pageout("fvaddr", PID, lo, lo + 3 * MiB)
    assert damon.swapped_bytes(PID) == 3 * MiB
    assert status(fs)["VmSwap"] == 3 * MiB
    assert set(pagemap(fs, lo, lo + 3 * MiB)) == {SWAPPED}


def test_kept_status_file_reads_the_current_counters() -> None:
    """A kept /proc/PID/status descriptor sees the pageout (procfs regenerates on read)."""
    fs, damon = fake_with_process()
    kept = fs.keep(f"/proc/{PID}/status")
    damon.pageout("vaddr", PID, *COLD)
    assert "VmSwap:\t   32768 kB\n" in kept.read_text()


def test_remove_process_removes_its_proc_files() -> None:
    fs, damon = fake_with_process()
    damon.remove_process(PID)
    for name in ("maps", "pagemap", "status"):
        assert not fs.exists(f"/proc/{PID}/{name}")
    assert damon.swapped_bytes(PID) == 0


def test_pageout_scheme_moves_the_cold_buffer_and_sz_applied_keeps_growing() -> None:
    """A cold-region vaddr pageout scheme swaps the whole cold buffer, nothing else; once
    it is out, sz_applied keeps growing by the regions applied again (damos_madvise
    counts the whole length, resident or not) while nothing more leaves."""
    backend = FakeBackend()
    s, work = start_cold_pageout(backend)
    backend.wait(3.0)
    cold = work.cold[1] - work.cold[0]
    assert backend.fake.swapped_bytes(work.pid) == cold
    s.state(0, "update_schemes_stats")
    applied = s.stat("sz_applied")
    assert applied >= cold
    backend.wait(2.0)
    s.state(0, "update_schemes_stats")
    assert s.stat("sz_applied") > applied
    assert backend.fake.swapped_bytes(work.pid) == cold
    got = status(backend.fs, work.pid)
    assert got["VmSwap"] == cold
    assert set(pagemap(backend.fs, *work.hot, pid=work.pid)) == {PRESENT}
