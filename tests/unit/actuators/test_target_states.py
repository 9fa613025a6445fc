"""TargetStates: one reading of a process shared for a tick; smaps totals; lazy mapping counts."""

from __future__ import annotations

import pytest

from reactor.actuators import Limits, MadviseActuator
from reactor.actuators._procfs import parse_rollup, parse_smaps, smaps_totals
from reactor.actuators.madvise import TargetStates
from reactor.testing import FakeKernelFS
from tests.unit.actuators.fakes import MIB, FakeMapping, FakeProcess

pytestmark = pytest.mark.anyio

PID = 4321
FILE_AT = 0x7F0000000000
ANON_AT = 0x7E0000000000


class Clock:
    """A settable clock for the readings' ages."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(fs: FakeKernelFS) -> FakeProcess:
    maps = [
        FakeMapping(FILE_AT, 16 * MIB, "file", "/var/tmp/data.bin"),
        FakeMapping(ANON_AT, 8 * MIB, "anon"),
    ]
    return FakeProcess(fs, PID, maps)


def test_a_reading_is_kept_for_max_age(fake_kernel: FakeKernelFS) -> None:
    """Within max_age the kept reading answers; after it, the process is read again."""
    make(fake_kernel)
    clock = Clock()
    states = TargetStates(fake_kernel, max_age_s=0.5, clock=clock)
    first = states.get(PID)
    clock.now += 0.4
    assert states.get(PID) is first
    clock.now += 0.2
    assert states.get(PID) is not first
    assert (states.reads, states.hits) == (2, 1)


def test_max_age_zero_always_reads(fake_kernel: FakeKernelFS) -> None:
    """A lone actuator's states (max_age 0) read the process afresh every time."""
    make(fake_kernel)
    states = TargetStates(fake_kernel, clock=lambda: 5.0)
    states.get(PID)
    states.get(PID)
    assert (states.reads, states.hits) == (2, 0)


def test_totals_are_what_smaps_rollup_says(fake_kernel: FakeKernelFS) -> None:
    """Rss, Anonymous and Swap summed from smaps equal smaps_rollup's, without reading it."""
    make(fake_kernel)
    rollup = parse_rollup(fake_kernel.file_text(f"/proc/{PID}/smaps_rollup"), "rollup")
    totals = smaps_totals(fake_kernel.file_text(f"/proc/{PID}/smaps"))
    for name in ("Rss", "Anonymous", "Swap", "AnonHugePages"):
        assert totals[name] == rollup[name], name
    state = TargetStates(fake_kernel).read(PID)
    assert state.rollup["Rss"] == rollup["Rss"] == 24 * MIB


def test_one_count_is_read_without_parsing_the_rest(fake_kernel: FakeKernelFS) -> None:
    """Vma.get answers one count before the mapping's fields are parsed, and the same after."""
    make(fake_kernel)
    vmas = parse_smaps(fake_kernel.file_text(f"/proc/{PID}/smaps"), "smaps")
    anon = next(v for v in vmas if v.start == ANON_AT)
    assert anon.rss == 8 * MIB and "fields" not in anon.__dict__
    assert anon.get("Swap") == 0 and anon.get("NoSuchField") == 0
    assert anon.fields["Rss"] == anon.get("Rss") == 8 * MIB


async def test_a_dry_run_uses_the_policys_reading(fake_kernel: FakeKernelFS) -> None:
    """An actuator given shared states plans from the kept reading instead of reading again."""
    proc = make(fake_kernel)
    states = TargetStates(fake_kernel, max_age_s=10.0)
    states.get(PID)
    act = MadviseActuator(fake_kernel, calls=proc, limits=Limits(dry_run=True), states=states)
    out = await act.advise(PID, [(FILE_AT, 16 * MIB)], "pageout")
    assert out.status == "dry_run"
    assert out.rss_before_bytes == 24 * MIB
    assert (states.reads, states.hits) == (1, 1)


async def test_an_action_stores_the_reading_after_it(fake_kernel: FakeKernelFS) -> None:
    """A real action drops the kept reading and keeps the one measured after it."""
    proc = make(fake_kernel)
    states = TargetStates(fake_kernel, max_age_s=10.0)
    before = states.get(PID)
    act = MadviseActuator(fake_kernel, calls=proc, states=states)
    out = await act.advise(PID, [(FILE_AT, 16 * MIB)], "pageout")
    assert out.status == "applied" and out.rss_delta_bytes == -16 * MIB
    after = states.peek(PID)
    assert after is not None and after is not before
    assert after.rollup["Rss"] == 8 * MIB
