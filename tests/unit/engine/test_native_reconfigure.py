"""Native monitors take reloaded intervals and region bounds online (no restart)."""

from __future__ import annotations

from reactor.config import load_config_text
from reactor.config.model import MonitorConfig
from reactor.engine.bus import Bus
from reactor.engine.monitors import NativeMonitors, native_targets, sampler_settings
from reactor.sampler import NativeSampler
from reactor.testing import FakeKernelFS

BASE = (
    "monitors:\n  - name: app\n    targets: {{pids: [{pid}]}}\n"
    "    sample: {sample}\n    aggregation: 2s\n"
)


def monitors(pid: int = 4242, sample: str = "100ms") -> tuple[MonitorConfig, ...]:
    return load_config_text(BASE.format(pid=pid, sample=sample), "t.yaml").monitors


def test_new_intervals_reach_the_running_sampler() -> None:
    """A reload with a new sampling interval stages it on the running sampler (adopted at
    its next aggregation boundary); new targets cannot be taken online and change nothing."""
    fs = FakeKernelFS()
    old = monitors()
    nm = NativeMonitors(old, fs, Bus())
    (mon,) = old
    sampler = NativeSampler(fs, native_targets(mon), sampler_settings(mon))
    nm.samplers["app"] = sampler
    new = monitors(sample="250ms")
    assert nm.reconfigure(new) is None
    assert sampler._pending is not None and sampler._pending.sample_interval_s == 0.25
    sampler._pending = None
    why = nm.reconfigure(monitors(pid=4243, sample="1s"))
    assert why is not None and "retargeted" in why
    assert sampler._pending is None and nm.monitors == new
