"""Guest only: reactor's tiering policy against plain DAMOS migrate_hot/migrate_cold (issue 7).

Runs ``benchmarks.tiering`` in this process with its output in the lane's shared run
directory ``$REACTOR_LANE_OUT`` (the checkout is read-only here); on the host the JSON
lands in ``<lane cache>/runs/<time>-<nonce>/benchmarks/results/tiering.json``.

Bounds, derived before running: this is a measurement, so the asserts are sanity floors.
Both runs sample numa_maps every 0.5 s for 15 s (at least 15 points each: the sampling
loop itself costs well under 0.5 s). Reactor ticks once a second for 15 s (at least 7
ticks even if TCG stretches some). Each run starts with 16 MiB of hot pages on the slow
node, written every ~10 ms; reactor's promotion may move at least 8 MiB per tick, so
it reports migrated bytes > 0 (test_policy_tiering_guest.py bounds it closely). Plain
DAMOS is measured, not asserted: what it moves is the result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import tiering

DURATION = 15


def test_tiering_benchmark_reports_hot_bytes_in_the_fast_tier_over_time(
    kdamonds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both configurations run on the same workload; the JSON and the summary are written."""
    out = Path(os.environ.get("REACTOR_LANE_OUT", "/tmp"))
    assert tiering.main(["--out", str(out), "--duration", str(DURATION)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    print(line)
    result = json.loads((out / "benchmarks" / "results" / "tiering.json").read_text())
    reactor, damos = result["runs"]["reactor"], result["runs"]["damos"]
    for run in (reactor, damos):
        assert len(run["series"]) >= DURATION, run["series"]
    assert reactor["migrated_bytes"] > 0, {k: v for k, v in reactor.items() if k != "series"}
    assert reactor["ticks"] >= DURATION // 2
