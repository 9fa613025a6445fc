"""Shared fixtures: the fake kernel tree and the verbatim captures it is built from."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from reactor.testing import FakeKernelFS

CAPTURED = Path(__file__).parent / "fixtures" / "captured"

#: This host's captures (tests/fixtures/captured/host-6.18) by the kernel path they came from.
HOST_CAPTURES = {
    "/proc/pressure/memory": "proc_pressure_memory",
    "/proc/pressure/io": "proc_pressure_io",
    "/proc/pressure/cpu": "proc_pressure_cpu",
    "/proc/vmstat": "proc_vmstat",
    "/proc/meminfo": "proc_meminfo",
    "/sys/fs/cgroup/unified/memory.pressure": "cgroup_unified_memory.pressure",
    "/sys/fs/cgroup/unified/cpu.pressure": "cgroup_unified_cpu.pressure",
    "/sys/fs/cgroup/unified/io.pressure": "cgroup_unified_io.pressure",
}


@pytest.fixture
def captured() -> Callable[[str], str]:
    """Text of a verbatim capture, by file name under tests/fixtures/captured/host-6.18."""

    def read(name: str) -> str:
        return (CAPTURED / "host-6.18" / name).read_text()

    return read


@pytest.fixture
def fake_kernel(captured: Callable[[str], str]) -> FakeKernelFS:
    """A fresh in-memory kernel tree holding this host's captures at their kernel paths."""
    fs = FakeKernelFS()
    for path, name in HOST_CAPTURES.items():
        fs.set_file(path, captured(name))
    return fs


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults (a CLI test may have configured it)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``root`` need root (CI runs as root); elsewhere they say why they skip."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (marker 'root'); CI runs as root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
