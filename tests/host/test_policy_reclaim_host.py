"""The reclaim policy in `reactor serve` on the native backend, on this machine (root).

reactor starts the workload generator as its monitor's command: a 128 MiB ext4 file
mapped MAP_SHARED in 2 MiB VMAs (``--split-vmas``, so the ``referenced`` probe, one
count per mapping, sees each chunk apart), the first 10 % read every 20 ms. There is no
swap here, so only the file pages can leave.

Bounds, derived before running:

* hot: the middle 10 % of 128 MiB, 12.8 MiB at 57.6..70.4 MiB, in chunks 28..35
  (16 MiB); cold: the other 56 chunks, 112 MiB. The hot loop touches only hot
  offsets, which are never paged out, so nothing faults on the cold chunks: neither
  readahead nor fault-around brings any of them back (host-capabilities.md: the refill
  it measured came from paging out the hot set too).
* time: a chunk is cold after ``min_age`` 3 s. The controller is the cold-set feedforward
  (controllers/feedforward.py; tick 1 s = ``quota.per``, so a tick may use its whole
  quota): quota = 0.9 x cold + refill + excess, ``cold`` the pageable cold pieces the
  tick found (C: the cold chunks holding anything, at most 112 MiB, plus the workload's
  other cold file mappings, its interpreter's libraries), the excess held at its 4 MiB
  start while the drain runs (a tick is informative only once what the last one left,
  0.1 x cold, is at most a tenth of the excess). Tick 1 with cold pieces issues
  0.9 C + 4 MiB of them; the rest, at most 0.1 C - 4 MiB, is issued at tick 2 (0.9 x
  rest + 4 MiB >= rest while rest <= 40 MiB, i.e. for any C <= 440 MiB); the one piece
  the tick-1 budget cut in two is issued again min_age = 3 s later. So every cold
  chunk is issued within 2 ticks + 3 s of the first cold snapshot, about 3 s (start-up:
  probe detection, first snapshot) + 3 s (age) + 2 + 3 s = 11 s of the 22 s run. (The
  PSI-only composite it replaces needed 7 probing ticks from 4 MiB: 5.6 + 7.8 + ... + 42
  MiB = 133 MiB > 112 MiB.) Once drained the cold reading is ~0 and each tick's
  budget, 0.9 x cold + 4 MiB or more, outlasts the pieces it found: the quota did not
  limit the act, the next tick hears so (``feedforward.quota_bound`` false) and its
  stall readings may only lower the excess. A tick whose budget did run out first
  (tick 1) read cold > 10 x (refill + excess), too much left for its readings to be
  informative. So the excess never rises above its 4 MiB start (no probing into
  memory that is not there), and at least one tick reports the quota unbound.
* the workload's populate loop writes every page (dirty file pages cannot be paged
  out): the test fsyncs the file once the workload says it is ready.
* splitting the mapping into VMAs at a page offset (the workload's guard page) makes the
  kernel unmap the file's PMD-mapped large folios that straddle a cut (measured: about
  53 of the 128 MiB stay mapped after start-up, 40 MiB of it cold). process_madvise
  walks page tables, so only mapped pages can be paged out: the bounds are on the cold
  chunks' mapped RSS at the start (``cold0``), measured per VMA from smaps.
* so at the end the cold chunks' RSS must be at most a quarter of ``cold0`` (slack for
  timing), the hot chunks must keep at least 0.9 x 12.8 MiB (reclaim took cold memory,
  not hot), and the page cache (mincore on the test's own untouched mapping of the file)
  must have lost at least 0.75 x ``cold0``.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reactor.testing.workload import WorkloadSpec, hot_pages

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
SIZE = 128 * MIB
CHUNK = 2 * MIB
#: The workload's hot set (its own truth: the middle 10 % of the pages).
HOT_PAGES = hot_pages(WorkloadSpec(size_bytes=SIZE, hot_fraction=0.1, pattern="contiguous"))
HOT_LO, HOT_HI = int(HOT_PAGES[0]) * 4096, (int(HOT_PAGES[-1]) + 1) * 4096
HOT = HOT_HI - HOT_LO
PAGE = os.sysconf("SC_PAGE_SIZE")

pytestmark = pytest.mark.root  # process_madvise on another process needs root


def config(tmp: Path, data: Path) -> Path:
    """A native reclaim config whose monitor runs the workload on ``data``."""
    path = tmp / "reclaim.yaml"
    path.write_text(
        f"""
reactor: {{backend: native, tick: 1s}}
signals:
  psi: {{period: 1s, resources: [memory]}}
  vmstat: {{period: 1s}}
  meminfo: {{period: 1s}}
  tiers: {{enabled: false}}
  fragmentation: {{enabled: false}}
monitors:
  - name: work
    targets:
      command: [{sys.executable}, -m, reactor.testing.workload, --file, {data},
                --size, 128M, --hot, 10%, --pattern, contiguous, --split-vmas,
                --chunk, 2M]
    sample: 100ms
    aggregation: 1s
policies:
  - name: cold
    kind: reclaim
    monitor: work
    min_age: 3s
    goals: [{{metric: memory_psi_some, target: 0.5%}}]
    quota: {{max: 256 MiB, per: 1s}}
"""
    )
    return path


def file_rss(pid: int, data: Path) -> tuple[int, int] | None:
    """(hot, cold) Rss of the workload's mappings of ``data`` in bytes, by chunk: a chunk
    is hot when it holds any hot page. None once the workload has exited."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    hot = cold = 0
    base = start = None
    for line in text.splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            start = None
            if len(head) >= 6 and head[-1] == str(data) and head[1] != "---s":
                start = int(head[0].split("-")[0], 16)
                base = start if base is None else min(base, start)
        elif start is not None and base is not None and line.startswith("Rss:"):
            offset = start - base
            if offset + CHUNK > HOT_LO and offset < HOT_HI:
                hot += int(head[1]) * 1024
            else:
                cold += int(head[1]) * 1024
    return hot, cold


def cached(data: Path) -> int:
    """Bytes of ``data`` in the page cache (mincore on a mapping that touches nothing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with data.open("r+b") as f, mmap.mmap(f.fileno(), SIZE) as m:
        vec = (ctypes.c_ubyte * (SIZE // PAGE))()
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        try:
            if libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(SIZE), vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
            return sum(b & 1 for b in vec) * PAGE
        finally:
            del addr


def serve(
    tmp: Path, data: Path, *extra: str
) -> tuple[list[dict[str, Any]], list[tuple[int, int]], list[int]]:
    """Run the daemon for 22 s; return its log events, the file's mapped RSS and its
    page-cache bytes sampled by the test while the workload ran (the last ones are
    taken just before the daemon stops it)."""
    log = tmp / "log.jsonl"
    argv = [sys.executable, "-m", "reactor.cli", "serve", str(config(tmp, data))]
    argv += ["--duration", "22", "--log-format", "json", "--run-dir", str(tmp / "run"), *extra]
    rss: list[tuple[int, int]] = []
    cache: list[int] = []
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            pid = None
            deadline = time.monotonic() + 15
            while pid is None and time.monotonic() < deadline and proc.poll() is None:
                for line in log.read_text().splitlines():
                    if '\\"event\\": \\"ready\\"' in line:
                        pid = json.loads(line)["pid"]
                time.sleep(0.1)
            assert pid is not None, log.read_text()[-3000:]
            fd = os.open(data, os.O_RDONLY)
            try:
                os.fsync(fd)  # the populate loop dirtied every page
            finally:
                os.close(fd)
            while proc.poll() is None:
                value = file_rss(pid, data)
                if value is None:
                    break
                rss.append(value)
                cache.append(cached(data))
                time.sleep(0.5)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    # the last reading may race the workload's exit (smaps of a dying process reads 0)
    return events, rss[:-1], cache[:-1]


def test_reclaim_pages_out_the_cold_file_memory_and_keeps_the_hot_set(tmp_path: Path) -> None:
    """The workload's cold file pages leave its RSS and the page cache; the hot set stays;
    every controller_tick shows requested vs measured bytes."""
    data = tmp_path / "work.bin"
    events, rss, cache = serve(tmp_path, data)
    ticks = [e for e in events if e["event"] == "controller_tick"]
    assert len(ticks) >= 15
    (hot0, cold0), (hot1, cold1) = rss[0], rss[-1]
    assert cold0 >= 16 * MIB, f"too little of the cold set mapped to test: {cold0 / MIB:.1f}"
    assert cold1 <= 0.25 * cold0, f"cold RSS {cold0 / MIB:.1f} -> {cold1 / MIB:.1f} MiB"
    assert hot1 >= 0.9 * HOT, f"hot set left too: {hot1 / MIB:.1f} MiB"
    assert cache[0] - min(cache[-3:]) >= 0.75 * cold0
    requested = sum(t["requested_bytes"] for t in ticks)
    measured = sum(t["measured_bytes"] for t in ticks)
    assert measured >= 0.75 * cold0
    assert requested >= measured * 0.9
    assert all(t["output_unit"] == "bytes" for t in ticks)
    assert any(t["controller"]["feedforward.quota_bound"] is False for t in ticks)
    excess = [t["controller"]["feedforward.excess"] for t in ticks]
    assert max(excess) <= 4 * MIB * (1 + 1e-9), excess
    print(
        f"file RSS hot {hot0 / MIB:.1f} -> {hot1 / MIB:.1f} MiB, cold {cold0 / MIB:.1f} -> "
        f"{cold1 / MIB:.1f} MiB; page cache {cache[0] / MIB:.1f} -> {cache[-1] / MIB:.1f} "
        f"MiB; requested {requested / MIB:.1f} MiB, measured {measured / MIB:.1f} MiB"
    )


def test_dry_run_logs_decisions_and_changes_nothing(tmp_path: Path) -> None:
    """With --dry-run the policy plans page-outs each tick and the RSS stays."""
    data = tmp_path / "work.bin"
    events, rss, _ = serve(tmp_path, data, "--dry-run")
    ticks = [e for e in events if e["event"] == "controller_tick"]
    assert ticks and all(t["dry_run"] for t in ticks)
    planned = sum(t["requested_bytes"] for t in ticks)
    assert planned >= 0.5 * rss[0][1], "the dry run should still plan the cold set"
    assert sum(t["measured_bytes"] for t in ticks) == 0
    assert min(cold for _, cold in rss) >= 0.95 * rss[0][1]
    assert any(e["event"] == "actuator_dry_run" for e in events)
