"""vmstat: the parser on the verbatim capture and malformed text, and the rate poller."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reactor.errors import KernelFormatError
from reactor.signals.vmstat import VmstatPoller, is_gauge, parse_vmstat
from reactor.testing import FakeKernelFS
from tests.captures import CAPTURED

P = "/proc/vmstat"


def vmstat(**values: int) -> str:
    return "".join(f"{k} {v}\n" for k, v in values.items())


def test_parse_capture(captured: Callable[[str], str]) -> None:
    """The host capture parses to 192 entries keyed by name, with the file's values."""
    stat = parse_vmstat(captured("proc_vmstat"), P)
    assert len(stat) == 192
    assert stat["pgfault"] == 785771
    assert stat["pgmajfault"] == 342
    assert stat["nr_free_pages"] == 993193
    assert stat["workingset_refault_file"] == 43703
    assert stat["pgscan_proactive"] == 0
    assert "pgpromote_success" in stat and "damon_foo" not in stat
    assert list(stat)[:2] == ["nr_free_pages", "nr_free_pages_blocks"]


def test_parsed_mapping_is_read_only(captured: Callable[[str], str]) -> None:
    """The parsed mapping cannot be changed (it is published as it is)."""
    stat = parse_vmstat(captured("proc_vmstat"), P)
    with pytest.raises(TypeError):
        stat["pgfault"] = 0


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("pgfault 1\npgmajfault\n", "expected 'name integer'", "pgmajfault"),
        ("pgfault 1.5\n", "expected 'name integer'", "pgfault 1.5"),
        ("pgfault 1 2\n", "expected 'name integer'", "pgfault 1 2"),
        ("pgfault: 1\n", "expected 'name integer'", "pgfault: 1"),
        ("pgfault 1\npgfault 2\n", "duplicate entry 'pgfault'", "pgfault 2"),
        ("", "no entries", ""),
    ],
)
def test_parse_malformed(text: str, message: str, line: str) -> None:
    """A line that is not 'name integer' raises KernelFormatError naming the file and
    quoting the line."""
    with pytest.raises(KernelFormatError, match=rf"^{P}: {message}") as info:
        parse_vmstat(text, P)
    assert info.value.line == line


def test_gauges_and_counters() -> None:
    """nr_* entries are gauges except the event counts; workingset_nodes is a gauge."""
    assert is_gauge("nr_free_pages") and is_gauge("nr_dirty") and is_gauge("workingset_nodes")
    assert not is_gauge("nr_dirtied") and not is_gauge("nr_written")
    assert not is_gauge("pgscan_kswapd") and not is_gauge("pgfault")


RECLAIM_COUNTERS = """
    pgscan_kswapd pgscan_direct pgscan_khugepaged pgscan_proactive pgscan_anon pgscan_file
    pgscan_direct_throttle pgsteal_kswapd pgsteal_direct pgsteal_proactive pgdemote_kswapd
    pgdemote_direct workingset_refault_anon workingset_refault_file pswpin pswpout nr_dirtied
"""


def test_first_poll_is_baseline() -> None:
    """The first poll returns None: a rate needs two readings."""
    fs = FakeKernelFS({"proc/vmstat": vmstat(pgfault=1)})
    assert VmstatPoller(fs).poll(0.0) is None


def test_rates_and_groups() -> None:
    """Counter deltas over 0.5 s become per-second rates; pgscan/pgsteal/pgdemote totals sum
    the reclaimer split, not the anon/file split nor direct_throttle."""
    before = dict.fromkeys(RECLAIM_COUNTERS.split(), 0) | {"pgfault": 1000, "nr_free_pages": 500}
    after = before | {
        "pgfault": 1500, "pgscan_kswapd": 100, "pgscan_direct": 20, "pgscan_khugepaged": 5,
        "pgscan_proactive": 25, "pgscan_anon": 50, "pgscan_file": 100,
        "pgscan_direct_throttle": 7, "pgsteal_kswapd": 40, "pgsteal_direct": 10,
        "pgsteal_proactive": 5, "pgdemote_kswapd": 3, "pgdemote_direct": 1,
        "workingset_refault_file": 12, "pswpout": 8, "nr_free_pages": 400, "nr_dirtied": 20,
    }  # fmt: skip
    fs = FakeKernelFS({"proc/vmstat": vmstat(**before)})
    poller = VmstatPoller(fs)
    assert poller.topic == "vmstat"
    poller.poll(100.0)
    fs.set_file(P, vmstat(**after))
    r = poller.poll(100.5)
    assert r is not None
    assert r.interval_s == pytest.approx(0.5)
    assert r.pgfault_per_s == pytest.approx(1000.0)
    assert r.pgscan_per_s == pytest.approx(300.0)  # (100+20+5+25)/0.5
    assert r.pgscan_kswapd_per_s == pytest.approx(200.0)
    assert r.pgscan_anon_per_s == pytest.approx(100.0)
    assert r.pgsteal_per_s == pytest.approx(110.0)  # khugepaged absent: not invented
    assert r.pgsteal_khugepaged_per_s is None
    assert r.pgdemote_per_s == pytest.approx(8.0)
    assert r.workingset_refault_file_per_s == pytest.approx(24.0)
    assert r.pswpout_per_s == pytest.approx(16.0)
    assert r.rates_per_s["pgscan_direct_throttle"] == pytest.approx(14.0)
    assert r.rates_per_s["nr_dirtied"] == pytest.approx(40.0)
    assert "nr_free_pages" not in r.rates_per_s and r.gauges["nr_free_pages"] == 400
    assert r.summary()["pgscan_per_s"] == 300.0


def test_absent_counters_stay_absent() -> None:
    """Counters this kernel lacks are absent from rates and their fields are None."""
    fs = FakeKernelFS({"proc/vmstat": vmstat(pgfault=1)})
    poller = VmstatPoller(fs)
    poller.poll(0.0)
    fs.set_file(P, vmstat(pgfault=3))
    r = poller.poll(1.0)
    assert r is not None
    assert dict(r.rates_per_s) == {"pgfault": 2.0}
    assert r.pgscan_per_s is None and r.pswpin_per_s is None and r.pgdemote_per_s is None
    assert r.summary() == {}


def test_counter_backwards_rebaselines_only_that_counter() -> None:
    """A counter that went backwards is left out of that poll (its group too) and gets a
    rate again from its new value; other counters keep their rates."""
    fs = FakeKernelFS({"proc/vmstat": vmstat(pgfault=100, pgscan_kswapd=500, pgscan_direct=0)})
    poller = VmstatPoller(fs)
    poller.poll(0.0)
    fs.set_file(P, vmstat(pgfault=200, pgscan_kswapd=10, pgscan_direct=4))
    r = poller.poll(1.0)
    assert r is not None
    assert r.pgfault_per_s == 100.0
    assert "pgscan_kswapd" not in r.rates_per_s and r.pgscan_kswapd_per_s is None
    assert r.pgscan_direct_per_s == 4.0
    assert r.pgscan_per_s is None  # a partial sum would under-report
    fs.set_file(P, vmstat(pgfault=300, pgscan_kswapd=30, pgscan_direct=4))
    r = poller.poll(2.0)
    assert r is not None and r.pgscan_kswapd_per_s == 20.0 and r.pgscan_per_s == 20.0


def test_new_counter_gets_rate_from_next_poll() -> None:
    """A counter that appears between polls has no rate until it has a baseline."""
    fs = FakeKernelFS({"proc/vmstat": vmstat(pgfault=1)})
    poller = VmstatPoller(fs)
    poller.poll(0.0)
    fs.set_file(P, vmstat(pgfault=1, pswpin=5))
    r = poller.poll(1.0)
    assert r is not None and "pswpin" not in r.rates_per_s


def test_same_instant_returns_none() -> None:
    """A poll at the same instant as the baseline returns None."""
    fs = FakeKernelFS({"proc/vmstat": vmstat(pgfault=1)})
    poller = VmstatPoller(fs)
    poller.poll(5.0)
    assert poller.poll(5.0) is None
    fs.set_file(P, vmstat(pgfault=11))
    r = poller.poll(6.0)
    assert r is not None and r.pgfault_per_s == 10.0


def test_poller_on_capture(fake_kernel: FakeKernelFS) -> None:
    """On the host capture, a pgfault increase of 1000 over 2 s reads 500 faults/s and every
    counter of the capture has a rate."""
    poller = VmstatPoller(fake_kernel)
    poller.poll(0.0)
    text = fake_kernel.file_text(P).replace("pgfault 785771\n", "pgfault 786771\n")
    fake_kernel.set_file(P, text)
    r = poller.poll(2.0)
    assert r is not None and r.pgfault_per_s == 500.0
    assert r.pgscan_per_s == 0.0 and r.pgdemote_per_s == 0.0
    assert len(r.rates_per_s) + len(r.gauges) == 192
    assert fake_kernel.open_count(P) == 1


GUEST = CAPTURED / "guest-debian-7.2"


def test_parse_guest_capture() -> None:
    """The guest kernel's /proc/vmstat (Debian 7.2.12, zram swap, two tiers) parses keyed
    to the values the capture's workload left: demotion to the slow node by direct and
    proactive reclaim, and swap-out to zram (its README gives these as the workload's
    deltas: pgdemote_direct 58,893, pgdemote_proactive 13,621, pgmigrate_success 72,514,
    pswpin 3, pswpout 41,092)."""
    stat = parse_vmstat((GUEST / "proc_vmstat").read_text(), P)
    assert len(stat) == 198
    assert stat["pgdemote_direct"] == 58893 and stat["pgdemote_proactive"] == 13621
    assert stat["pgdemote_kswapd"] == 0 and stat["pgdemote_khugepaged"] == 0
    assert stat["pgmigrate_success"] == 72514 == 58893 + 13621  # every migration a demotion
    assert (stat["pswpin"], stat["pswpout"]) == (3, 41092)
    assert stat["pgsteal_direct"] == 121790 and stat["pgscan_direct"] == 132724
    assert stat["pgsteal_anon"] == 138184 and stat["pgsteal_file"] == 0
    assert stat["workingset_refault_file"] == 0 and stat["pgpromote_success"] == 0
    assert stat["nr_free_pages"] == 326697


def test_guest_capture_rates_group_demotion_by_reclaimer() -> None:
    """From a baseline with the workload's counters at zero to the guest capture 10 s
    later, pgdemote_per_s sums the four reclaimers (58,893 + 13,621 over 10 s) and pswpout
    is a rate of its own."""
    text = (GUEST / "proc_vmstat").read_text()
    workload = ("pgdemote_direct", "pgdemote_proactive", "pgmigrate_success", "pswpin", "pswpout")
    before = "".join(
        f"{name} 0\n" if name in workload else f"{name} {value}\n"
        for name, value in (line.split(" ") for line in text.splitlines())
    )
    fs = FakeKernelFS({"proc/vmstat": before})
    poller = VmstatPoller(fs)
    assert poller.poll(0.0) is None
    fs.set_file(P, text)
    r = poller.poll(10.0)
    assert r is not None
    assert r.pgdemote_per_s == pytest.approx((58893 + 13621) / 10)
    assert r.pswpout_per_s == pytest.approx(4109.2) and r.pswpin_per_s == pytest.approx(0.3)
    assert r.pgmigrate_success_per_s == pytest.approx(7251.4)
    assert r.pgpromote_success_per_s == 0.0
