"""benchmarks.daemon's comparison against an earlier build (``--baseline``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import daemon
from reactor.kernelfs import RealKernelFS
from reactor.sampler.detect import best_probe, detect_probes


def test_a_baseline_that_is_no_reactor_checkout_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error names the path and what would be accepted; nothing is started."""
    with pytest.raises(SystemExit) as exc:
        daemon.main(["--duration", "1", "--baseline", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "reactor/cli.py" in err and "git worktree add" in err


def test_the_comparison_is_this_build_over_the_baseline(tmp_path: Path) -> None:
    """Ratios are new / baseline (below 1: cheaper); a baseline share of 0 has none."""
    base = {"cpu_share": 0.010, "sampling_share": 0.004, "control_share": 0.0}
    new = {"cpu_share": 0.009, "sampling_share": 0.005, "control_share": 0.004}
    out = daemon._compare(tmp_path, base, new)
    assert out["cpu_ratio"] == pytest.approx(0.9)
    assert out["sampling_ratio"] == pytest.approx(1.25)
    assert out["control_ratio"] is None
    assert out["commit"] is None and out["tree"] == str(tmp_path)  # not a git checkout
    assert out["result"] is base and out["config"] == "slow_sampling"


def test_the_probe_floor_is_measured_on_a_real_process_with_the_daemons_probe() -> None:
    """The twin is a real workload, sampled with the probe a daemon would pick for it;
    every collect walks its page tables, so each cadence's kernel cost is above zero,
    and a cadence not measured has no floor (0, not a guess)."""
    twin = daemon._twin()
    try:
        time.sleep(1.0)  # the generator maps and touches its memory
        probe = daemon._probe()
        floor = daemon._probe_floor(twin.pid, probe, [0.05, 0.1], 0.6)
    finally:
        twin.terminate()
        twin.wait()
    infos = detect_probes(RealKernelFS())
    assert probe == floor.probe == best_probe(infos, cooperating=False).name
    assert set(floor.per_sample_s) == {0.05, 0.1}
    assert all(s > 0 for s in floor.per_sample_s.values()), floor
    assert floor.share(0.1, 20.0) == pytest.approx(20.0 * floor.per_sample_s[0.1])
    assert floor.share(1.0, 2.0) == 0.0


CHILD = """
import sys, threading, time

def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass

burn(0.05)
other = threading.Thread(target=burn, args=(0.1,))
other.start()
other.join()
print(time.thread_time(), flush=True)
sys.stdin.readline()
"""


def test_the_main_threads_cpu_is_read_from_another_process() -> None:
    """``main_thread_share`` reads another process's main thread: a child reports its
    main thread's own CPU clock and then waits; the reading from outside is that much
    (the same kernel counter, read a moment later), and not the 0.1 s the child's
    other thread burned."""
    with subprocess.Popen(
        [sys.executable, "-S", "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        own = float(child.stdout.readline())
        measured = daemon._main_thread_cpu_s(child.pid)
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=10)
    assert own >= 0.05
    # between the child's read and ours: a print and a blocking readline, microseconds
    assert own <= measured < own + 0.01
