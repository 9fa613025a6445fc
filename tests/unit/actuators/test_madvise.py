"""MadviseActuator on a fake process: classification, refusals, limits, chunking, vanishing."""

from __future__ import annotations

import errno
import os
import re

import pytest
from structlog.testing import capture_logs

from reactor.actuators import ANON_PAGEOUT_NO_SWAP, Limits, MadviseActuator, RefusedAction
from reactor.actuators.madvise import NOHUGEPAGE_COLLAPSE
from reactor.testing import FakeKernelFS
from tests.unit.actuators.fakes import (
    ADV_COLLAPSE,
    ADV_PAGEOUT,
    HUGE,
    MIB,
    FakeMapping,
    FakeProcess,
)

pytestmark = pytest.mark.anyio

PID = 4321
FILE_AT = 0x7F0000000000
ANON_AT = 0x7E0000000000


def cached(fs: FakeKernelFS) -> int:
    match = re.search(r"^Cached:\s+(\d+) kB$", fs.file_text("/proc/meminfo"), re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def make(fs: FakeKernelFS, file_mib: int = 256, anon_mib: int = 64, **kw: object) -> FakeProcess:
    maps = [
        FakeMapping(FILE_AT, file_mib * MIB, "file", "/var/tmp/data.bin"),
        FakeMapping(ANON_AT, anon_mib * MIB, "anon"),
    ]
    return FakeProcess(fs, PID, maps, **kw)  # type: ignore[arg-type]


def set_swap(fs: FakeKernelFS, total_kb: int, free_kb: int) -> None:
    text = fs.file_text("/proc/meminfo")
    text = re.sub(r"^SwapTotal:.*$", f"SwapTotal: {total_kb} kB", text, flags=re.MULTILINE)
    text = re.sub(r"^SwapFree:.*$", f"SwapFree: {free_kb} kB", text, flags=re.MULTILINE)
    fs.set_file("/proc/meminfo", text)


async def test_file_pageout_reports_the_measured_rss_and_cache_drop(
    fake_kernel: FakeKernelFS,
) -> None:
    """PAGEOUT of a clean file range reports RSS and Cached falling by the range."""
    proc = make(fake_kernel)
    act = MadviseActuator(fake_kernel, calls=proc)
    out = await act.advise(PID, [(FILE_AT, 256 * MIB)], "pageout", reason="cold file")
    assert out.status == "applied"
    assert out.applied_bytes == out.issued_bytes == 256 * MIB
    assert out.rss_delta_bytes == -256 * MIB
    assert out.file_cache_delta_bytes == -256 * MIB
    assert out.measured["mapped_rss_after_bytes"] == 0
    assert out.swap_out_pages == 0
    assert out.reason == "cold file"
    assert not proc.open_fds


async def test_anonymous_pageout_without_swap_is_not_issued(fake_kernel: FakeKernelFS) -> None:
    """Anonymous PAGEOUT with SwapTotal 0 is skipped with the reason and makes no call."""
    proc = make(fake_kernel)
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(ANON_AT, 64 * MIB)], "pageout"
    )
    assert out.status == "skipped"
    assert out.skipped == ANON_PAGEOUT_NO_SWAP
    assert out.issued_bytes == 0
    assert proc.calls == []
    assert out.measured["skipped_bytes"] == 64 * MIB


async def test_mixed_pageout_issues_only_the_file_part(fake_kernel: FakeKernelFS) -> None:
    """A request over file and anonymous memory issues the file part and says why not the rest."""
    proc = make(fake_kernel)
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(ANON_AT, 64 * MIB), (FILE_AT, 256 * MIB)], "pageout"
    )
    assert out.status == "partial"
    assert out.issued_bytes == 256 * MIB
    assert out.skipped == ANON_PAGEOUT_NO_SWAP
    issued = [s for _, spans, _ in proc.calls for s in spans]
    assert all(FILE_AT <= s < FILE_AT + 256 * MIB for s, _ in issued)


async def test_anonymous_pageout_with_swap_is_issued(fake_kernel: FakeKernelFS) -> None:
    """With swap configured and free, anonymous PAGEOUT goes to the kernel."""
    set_swap(fake_kernel, 1 << 20, 1 << 20)
    proc = make(fake_kernel)
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(ANON_AT, 64 * MIB)], "pageout"
    )
    assert out.issued_bytes == 64 * MIB
    assert out.skipped is None


async def test_anonymous_pageout_with_full_swap_is_not_issued(fake_kernel: FakeKernelFS) -> None:
    """With swap full, anonymous PAGEOUT is skipped with its own reason."""
    set_swap(fake_kernel, 1 << 20, 0)
    proc = make(fake_kernel)
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(ANON_AT, 64 * MIB)], "pageout"
    )
    assert out.status == "skipped"
    assert out.skipped is not None and out.skipped.startswith("anonymous pageout with swap full")


async def test_shmem_counts_as_anonymous_for_pageout(fake_kernel: FakeKernelFS) -> None:
    """A file on tmpfs (/dev/shm) needs swap to leave, so PAGEOUT skips it without swap."""
    proc = FakeProcess(fake_kernel, PID, [FakeMapping(FILE_AT, 8 * MIB, "shmem", "/dev/shm/x")])
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(FILE_AT, 8 * MIB)], "pageout"
    )
    assert out.skipped == ANON_PAGEOUT_NO_SWAP
    assert proc.calls == []


async def test_dirty_file_pages_are_reported_not_freed(fake_kernel: FakeKernelFS) -> None:
    """Dirty file pages stay; the outcome counts them and says only clean pages leave."""
    proc = make(fake_kernel, file_mib=16)
    proc.mappings[0].dirty[: (4 * MIB) // 4096] = True
    proc.render()
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(FILE_AT, 16 * MIB)], "pageout"
    )
    assert out.measured["dirty_file_bytes"] == 4 * MIB
    assert out.rss_delta_bytes == -12 * MIB
    assert any("only clean pages" in n for n in out.notes)


async def test_large_requests_are_chunked_into_64_mib_calls(fake_kernel: FakeKernelFS) -> None:
    """A 256 MiB PAGEOUT is four process_madvise calls of at most 64 MiB each."""
    proc = make(fake_kernel)
    await MadviseActuator(fake_kernel, calls=proc).advise(PID, [(FILE_AT, 256 * MIB)], "pageout")
    sizes = [sum(n for _, n in spans) for _, spans, _ in proc.calls]
    assert sizes == [64 * MIB] * 4


async def test_willneed_pieces_respect_the_readahead_cap(fake_kernel: FakeKernelFS) -> None:
    """WILLNEED is cut into 8 MiB pieces, so the page cache gets the whole range back."""
    proc = make(fake_kernel, file_mib=64)
    act = MadviseActuator(fake_kernel, calls=proc)
    await act.advise(PID, [(FILE_AT, 64 * MIB)], "pageout")
    out = await act.advise(PID, [(FILE_AT, 64 * MIB)], "willneed")
    assert all(n <= 8 * MIB for _, spans, _ in proc.calls[1:] for _, n in spans)
    assert out.file_cache_delta_bytes == 64 * MIB
    assert out.rss_delta_bytes == 0  # WILLNEED fills the page cache; it maps nothing


async def test_unchunked_willneed_would_read_only_the_cap(fake_kernel: FakeKernelFS) -> None:
    """With 64 MiB pieces the same WILLNEED reads only 8 MiB: why the pieces exist."""
    proc = make(fake_kernel, file_mib=64)
    act = MadviseActuator(fake_kernel, calls=proc, willneed_piece_bytes=64 * MIB)
    await act.advise(PID, [(FILE_AT, 64 * MIB)], "pageout")
    out = await act.advise(PID, [(FILE_AT, 64 * MIB)], "willneed")
    assert out.file_cache_delta_bytes == 8 * MIB


async def test_willneed_piece_follows_the_device_readahead(fake_kernel: FakeKernelFS) -> None:
    """The piece size is the backing device's read_ahead_kb when it is smaller than 8 MiB."""
    fake_kernel.set_file("/sys/class/bdi/254:0/read_ahead_kb", "128\n")
    proc = make(fake_kernel, file_mib=4)
    await MadviseActuator(fake_kernel, calls=proc).advise(PID, [(FILE_AT, 4 * MIB)], "willneed")
    assert {n for _, spans, _ in proc.calls for _, n in spans} == {128 * 1024}


async def test_anonymous_willneed_without_swap_is_not_issued(fake_kernel: FakeKernelFS) -> None:
    """Anonymous WILLNEED without swap has nothing to read back and is skipped."""
    proc = make(fake_kernel)
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(ANON_AT, 8 * MIB)], "willneed"
    )
    assert out.status == "skipped"
    assert proc.calls == []


async def test_collapse_is_trimmed_to_aligned_blocks(fake_kernel: FakeKernelFS) -> None:
    """COLLAPSE is issued on whole 2 MiB blocks only and AnonHugePages growth is measured."""
    proc = make(fake_kernel)
    start = ANON_AT + 1 * MIB
    out = await MadviseActuator(fake_kernel, calls=proc).advise(PID, [(start, 8 * MIB)], "collapse")
    spans = [s for _, sp, adv in proc.calls if adv == ADV_COLLAPSE for s in sp]
    assert spans == [(ANON_AT + 2 * MIB, 6 * MIB)]
    assert all(s % HUGE == 0 and n % HUGE == 0 for s, n in spans)
    assert out.measured["anon_huge_delta_bytes"] == 6 * MIB
    assert out.measured["skipped_bytes"] == 2 * MIB


async def test_collapse_skips_nohugepage_mappings(fake_kernel: FakeKernelFS) -> None:
    """A mapping with VmFlags nh (MADV_NOHUGEPAGE) is not issued: the kernel says EINVAL."""
    proc = FakeProcess(
        fake_kernel, PID, [FakeMapping(ANON_AT, 8 * MIB, "anon", vmflags="rd wr mr mw me nh")]
    )
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(ANON_AT, 8 * MIB)], "collapse"
    )
    assert out.skipped == NOHUGEPAGE_COLLAPSE
    assert proc.calls == []


async def test_cold_leaves_rss_unchanged(fake_kernel: FakeKernelFS) -> None:
    """COLD is issued on anonymous and file memory alike; RSS does not change."""
    proc = make(fake_kernel)
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(ANON_AT, 64 * MIB), (FILE_AT, 64 * MIB)], "cold"
    )
    assert out.status == "applied"
    assert out.issued_bytes == 128 * MIB
    assert out.rss_delta_bytes == 0


async def test_unmapped_parts_are_not_issued(fake_kernel: FakeKernelFS) -> None:
    """Bytes that lie in no mapping are cut and reported (the kernel would say ENOMEM)."""
    proc = make(fake_kernel, file_mib=4)
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(FILE_AT - 4 * MIB, 8 * MIB)], "cold"
    )
    assert out.issued_bytes == 4 * MIB
    assert out.status == "partial"
    assert out.skipped is not None and "lies in no mapping" in out.skipped


async def test_dry_run_plans_and_logs_but_never_calls(fake_kernel: FakeKernelFS) -> None:
    """A dry run opens no pidfd, makes no call, and logs the plan."""
    proc = make(fake_kernel)
    act = MadviseActuator(fake_kernel, calls=proc, limits=Limits(dry_run=True))
    with capture_logs() as logs:
        out = await act.advise(PID, [(FILE_AT, 256 * MIB)], "pageout")
    assert out.status == "dry_run" and out.dry_run
    assert out.measured["planned_calls"] == 4
    assert out.measured["planned_bytes"] == 256 * MIB
    assert proc.calls == [] and proc._next_fd == 100
    assert [entry["event"] for entry in logs] == ["actuator_dry_run"]


async def test_a_dry_run_asked_again_plans_the_same_without_piling_up_cuts(
    fake_kernel: FakeKernelFS,
) -> None:
    """A dry run plans from its kept reading, so the same ranges asked tick after tick
    get the plan made once; each outcome has its own cut, not the earlier ones too."""
    proc = make(fake_kernel)
    limits = Limits(dry_run=True, max_bytes_per_action=32 * MIB)
    act = MadviseActuator(fake_kernel, calls=proc, limits=limits)
    outs = [await act.advise(PID, [(FILE_AT, 256 * MIB)], "pageout") for _ in range(3)]
    assert [o.measured["planned_bytes"] for o in outs] == [32 * MIB] * 3
    assert [o.measured["skipped_bytes"] for o in outs] == [224 * MIB] * 3
    assert len({o.skipped for o in outs}) == 1 and "max_bytes_per_action" in str(outs[0].skipped)
    assert len({o.measured["mapped_rss_before_bytes"] for o in outs}) == 1
    assert proc.calls == []


async def test_max_bytes_per_action_cuts_the_request(fake_kernel: FakeKernelFS) -> None:
    """A request over max_bytes_per_action is cut to it and says so."""
    proc = make(fake_kernel)
    act = MadviseActuator(fake_kernel, calls=proc, limits=Limits(max_bytes_per_action=32 * MIB))
    out = await act.advise(PID, [(FILE_AT, 256 * MIB)], "pageout")
    assert out.issued_bytes == 32 * MIB
    assert out.status == "partial"
    assert out.skipped is not None and "max_bytes_per_action" in out.skipped


async def test_rate_limit_spreads_actions_over_time(fake_kernel: FakeKernelFS) -> None:
    """With a 16 MiB burst, the first action gets 16 MiB and the next, at once, nothing."""
    proc = make(fake_kernel)
    limits = Limits(rate_bytes_per_s=1.0, burst_bytes=16 * MIB)
    act = MadviseActuator(fake_kernel, calls=proc, limits=limits)
    first = await act.advise(PID, [(FILE_AT, 64 * MIB)], "cold")
    second = await act.advise(PID, [(FILE_AT, 64 * MIB)], "cold")
    assert first.issued_bytes == 16 * MIB
    assert second.status == "skipped" and second.issued_bytes == 0
    assert second.skipped is not None and second.skipped.startswith("rate limit")


async def test_a_rate_limit_cut_falls_on_a_page_boundary(fake_kernel: FakeKernelFS) -> None:
    """A bucket holding 2.5 pages grants 2 whole pages: the kernel rounds a madvise
    length up to a page, so a 2.5-page span would act on 3 pages, past the limit."""
    proc = make(fake_kernel)
    limits = Limits(rate_bytes_per_s=1.0, burst_bytes=2 * 4096 + 2048)
    out = await MadviseActuator(fake_kernel, calls=proc, limits=limits).advise(
        PID, [(FILE_AT, 64 * 4096)], "cold"
    )
    assert out.issued_bytes == 2 * 4096, out
    assert [s for _, spans, _ in proc.calls for s in spans] == [(FILE_AT, 2 * 4096)]


@pytest.mark.parametrize(
    ("pid", "message"),
    [
        (1, r"^refused to act on pid 1: pid 1 \(init\)"),
        (0, r"^refused to act on pid 0: pid 1 \(init\) and pids below it"),
        (os.getpid(), rf"^refused to act on pid {os.getpid()}: reactor's own process"),
    ],
)
async def test_refuses_init_and_itself(fake_kernel: FakeKernelFS, pid: int, message: str) -> None:
    """pid 1 and reactor's own process are refused with a clear error."""
    with pytest.raises(RefusedAction, match=message):
        await MadviseActuator(fake_kernel, calls=make(fake_kernel)).advise(pid, [(0, 1)], "cold")


async def test_refuses_kernel_threads(fake_kernel: FakeKernelFS) -> None:
    """A kernel thread (PF_KTHREAD in /proc/PID/stat) is refused, and its pidfd closed."""
    proc = make(fake_kernel, kernel_thread=True)
    with pytest.raises(RefusedAction, match=r"kernel thread"):
        await MadviseActuator(fake_kernel, calls=proc).advise(PID, [(FILE_AT, 4096)], "cold")
    assert not proc.open_fds


async def test_refuses_advice_that_process_madvise_rejects(fake_kernel: FakeKernelFS) -> None:
    """Only COLD, PAGEOUT, WILLNEED and COLLAPSE are accepted."""
    from reactor.actuators import Action

    act = MadviseActuator(fake_kernel, calls=make(fake_kernel))
    with pytest.raises(RefusedAction, match=r"accepts only cold, pageout, willneed, collapse"):
        await act.apply(Action("move_pages", PID, ((FILE_AT, 4096),)))


async def test_target_gone_before_the_action_is_a_vanished_outcome(
    fake_kernel: FakeKernelFS,
) -> None:
    """A process that has exited gives status 'vanished', logged at info, not an exception."""
    proc = make(fake_kernel)
    proc.vanish()
    with capture_logs() as logs:
        out = await MadviseActuator(fake_kernel, calls=proc).advise(
            PID, [(FILE_AT, 4096)], "pageout"
        )
    assert out.vanished
    assert logs[0]["log_level"] == "info"


async def test_target_gone_during_the_action_is_a_vanished_outcome(
    fake_kernel: FakeKernelFS,
) -> None:
    """A process that exits between two calls reports what was applied, and vanished."""
    proc = make(fake_kernel)
    proc.vanish_after_calls = 2
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(FILE_AT, 256 * MIB)], "pageout"
    )
    assert out.vanished
    assert out.applied_bytes == 128 * MIB
    assert out.rss_after_bytes is None


async def test_eperm_fails_with_the_capability_named(fake_kernel: FakeKernelFS) -> None:
    """EPERM stops the action, and the error says CAP_SYS_NICE is needed."""
    proc = make(fake_kernel)
    proc.fail_next = errno.EPERM
    out = await MadviseActuator(fake_kernel, calls=proc).advise(
        PID, [(FILE_AT, 256 * MIB)], "pageout"
    )
    assert out.status == "failed"
    assert len(proc.calls) == 1
    assert "CAP_SYS_NICE" in out.errors[0]
    assert [adv for _, _, adv in proc.calls] == [ADV_PAGEOUT]
