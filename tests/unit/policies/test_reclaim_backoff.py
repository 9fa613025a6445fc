"""Native reclaim: back-off on mappings whose pageout freed nothing; what a reading yields.

Every decision is made twice: from the policy's own smaps reading and from the mappings
a ``referenced`` monitor sampled (the sampler's parser over the same smaps text); both
must choose the same pieces.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest

from reactor.actuators.madvise import TargetStates
from reactor.policies.reclaim import BACKOFF_MAX_FACTOR, NativeReclaim, _Resident
from reactor.policies.regions import Candidate
from reactor.sampler.procfs import parse_smaps_bytes
from reactor.testing import FakeKernelFS
from tests.unit.actuators.fakes import MIB, FakeMapping, FakeProcess

PID = 4321
LIB_AT = 0x7F0000000000  # a file mapping other processes share: pageout frees nothing
DATA_AT = 0x7F0001000000  # a file mapping only the target maps
ANON_AT = 0x7E0000000000
MIN_AGE = 3.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def policy(fs: FakeKernelFS) -> NativeReclaim:
    """A NativeReclaim with just what _pieces and _judge use (no runtime around it)."""
    p = NativeReclaim.__new__(NativeReclaim)
    p.cfg = SimpleNamespace(min_age=MIN_AGE)  # type: ignore[assignment]
    p.states = TargetStates(fs)
    p._fruitless = {}
    p._issued = {}
    return p


def process(fs: FakeKernelFS) -> FakeProcess:
    return FakeProcess(
        fs,
        PID,
        [
            FakeMapping(LIB_AT, 4 * MIB, "file", "/usr/lib/libshared.so"),
            FakeMapping(DATA_AT, 4 * MIB, "file", "/var/tmp/data.bin"),
            FakeMapping(ANON_AT, 4 * MIB, "anon"),
        ],
    )


def cand(start: int) -> Candidate:
    return Candidate(PID, start, 4 * MIB, 0, 10.0)


View = Callable[[NativeReclaim], _Resident]


@pytest.fixture(params=["smaps", "sampled"])
def view(request: pytest.FixtureRequest, fake_kernel: FakeKernelFS) -> View:
    """How the policy sees the target's mappings now: its own reading, or a sample's."""
    if request.param == "smaps":
        return lambda p: _Resident.of_state(p.states.read(PID))
    path = f"/proc/{PID}/smaps"
    return lambda p: _Resident.of_mappings(
        parse_smaps_bytes(fake_kernel.read_text(path).encode(), path)
    )


def test_a_mapping_that_freed_nothing_backs_off_and_doubles(
    fake_kernel: FakeKernelFS, view: View
) -> None:
    """Rss unchanged after a pageout: skipped for 2, then 4 min_ages; the freed one is not."""
    proc = process(fake_kernel)
    p = policy(fake_kernel)
    before = view(p)
    proc.mappings[1].resident[:] = False  # the data file left, the shared library did not
    proc.render()
    after = p.states.read(PID)
    issued = [(LIB_AT, 4 * MIB), (DATA_AT, 4 * MIB)]
    p._judge(PID, issued, before, after, now=100.0)
    assert p._fruitless[(PID, LIB_AT, LIB_AT + 4 * MIB)].until == 100.0 + 2 * MIN_AGE
    assert (PID, DATA_AT, DATA_AT + 4 * MIB) not in p._fruitless
    pieces, anon, empty = p._pieces(PID, [cand(LIB_AT)], False, 101.0, before)
    assert (pieces, anon, empty) == ([], 0, [cand(LIB_AT)])
    p._judge(PID, issued[:1], before, after, now=110.0)
    assert p._fruitless[(PID, LIB_AT, LIB_AT + 4 * MIB)].until == 110.0 + 4 * MIN_AGE
    pieces, _, _ = p._pieces(PID, [cand(LIB_AT)], False, 110.0 + 4 * MIN_AGE, before)
    assert pieces == [(LIB_AT, 4 * MIB)]


def test_back_off_is_capped_and_forgiven(fake_kernel: FakeKernelFS, view: View) -> None:
    """Strikes stop growing the wait at BACKOFF_MAX_FACTOR min_ages; freeing bytes clears it."""
    proc = process(fake_kernel)
    p = policy(fake_kernel)
    before = view(p)
    same = p.states.read(PID)
    key = (PID, LIB_AT, LIB_AT + 4 * MIB)
    for _ in range(12):
        p._judge(PID, [(LIB_AT, 4 * MIB)], before, same, now=0.0)
    assert p._fruitless[key].until == BACKOFF_MAX_FACTOR * MIN_AGE
    proc.mappings[0].resident[:256] = False
    proc.render()
    p._judge(PID, [(LIB_AT, 4 * MIB)], before, p.states.read(PID), now=1.0)
    assert key not in p._fruitless


def test_anonymous_without_swap_yields_nothing(fake_kernel: FakeKernelFS, view: View) -> None:
    """Without swap an anonymous candidate gives no piece: counted as anon, listed as empty."""
    process(fake_kernel)
    p = policy(fake_kernel)
    state = view(p)
    pieces, anon, empty = p._pieces(PID, [cand(ANON_AT), cand(DATA_AT)], False, 0.0, state)
    assert pieces == [(DATA_AT, 4 * MIB)]
    assert anon == 4 * MIB and empty == [cand(ANON_AT)]
    pieces, anon, empty = p._pieces(PID, [cand(ANON_AT)], True, 0.0, state)
    assert pieces == [(ANON_AT, 4 * MIB)] and anon == 0 and not empty


@pytest.mark.anyio
async def test_a_sampled_view_needs_no_reading_of_the_target(fake_kernel: FakeKernelFS) -> None:
    """With the monitor's sampled mappings the decision reads nothing (no page walk);
    without them, one smaps reading serves the decision age."""
    process(fake_kernel)
    p = policy(fake_kernel)
    p.ctx = SimpleNamespace(config=SimpleNamespace(reactor=SimpleNamespace(tick=1.0)))  # type: ignore[assignment]
    path = f"/proc/{PID}/smaps"
    sampled = parse_smaps_bytes(fake_kernel.read_text(path).encode(), path)
    res = await p._resident(PID, sampled)
    assert res.state is None and p.states.reads == 0
    assert p._pieces(PID, [cand(DATA_AT)], False, 0.0, res)[0] == [(DATA_AT, 4 * MIB)]
    await p._resident(PID, None)
    await p._resident(PID, None)
    assert (p.states.reads, p.states.hits) == (1, 1)
