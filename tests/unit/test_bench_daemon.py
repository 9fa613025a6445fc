"""benchmarks.daemon's comparison against an earlier build (``--baseline``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import daemon


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
