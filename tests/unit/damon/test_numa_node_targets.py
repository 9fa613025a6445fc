"""paddr targets per NUMA node: ``numa_node`` gives a target that node's System RAM.

The fake machine: this host's captured /proc/iomem (System RAM 4 KiB-640 KiB, 1 MiB-3 GiB,
4 GiB-25 GiB) with two nodes of 128 MiB memory blocks, node 0 the low 3 GiB and node 1
the memory above 4 GiB, one of node 1's blocks offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reactor.config import ConfigError, json_schema, load_config_text
from reactor.config.damon import DamonSection
from reactor.damon.driver import DamonDriver
from reactor.damon.features import probe_features
from reactor.damon.memory import node_ram_ranges, read_system_ram
from reactor.damon.sysfs import as_staged
from reactor.errors import KernelInterfaceError
from reactor.testing import FakeKernelFS, damon_fake
from tests.unit.damon.conftest import base_fs

pytestmark = pytest.mark.anyio

GiB = 1 << 30
BLOCK = 128 << 20
NODE0 = ((0x1000, 0x9FC00), (0x100000, 3 * GiB))
NODE1 = ((4 * GiB, 20 * GiB), (20 * GiB + BLOCK, 0x640000000))  # one block offline


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def two_nodes() -> FakeKernelFS:
    """base_fs (captured iomem) plus node0/node1 memory blocks."""
    fs = base_fs()
    fs.set_file("/sys/devices/system/memory/block_size_bytes", f"{BLOCK:x}\n")
    for m in range(3 * GiB // BLOCK):
        fs.add_tree(f"/sys/devices/system/node/node0/memory{m}", {"state": "online\n"})
    for m in range(4 * GiB // BLOCK, 25 * GiB // BLOCK):
        state = "offline\n" if m == 20 * GiB // BLOCK else "online\n"
        fs.add_tree(f"/sys/devices/system/node/node1/memory{m}", {"state": state})
    return fs


def paddr(target: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "contexts": [
            {
                "ops": "paddr",
                "targets": [] if target is None else [target],
                "intervals": {"sample_us": 10_000, "aggr_us": 200_000, "ops_update_us": 1_000_000},
                "schemes": [{"action": "stat"}],
            }
        ]
    }


def regions(kd: Any) -> tuple[tuple[int, int], ...]:
    (target,) = kd.contexts[0].targets
    return tuple((r.start, r.end) for r in target.regions)


def test_the_fake_machine_has_two_nodes() -> None:
    """The layout the other tests rely on, read by reactor.damon.memory."""
    fs = two_nodes()
    assert node_ram_ranges(fs, 0) == NODE0
    assert node_ram_ranges(fs, 1) == NODE1


async def test_each_paddr_target_gets_its_own_nodes_ram(tmp_path: Path) -> None:
    """Three paddr kdamonds side by side: node 1's, node 0's, and all System RAM."""
    fs = two_nodes()
    fake = damon_fake.FakeDamon(fs, kernel="7.2.12")
    section = DamonSection.model_validate(
        {"kdamonds": [paddr({"numa_node": 1}), paddr({"numa_node": 0}), paddr(None)]}
    )
    driver = DamonDriver(fs, run_dir=str(tmp_path))
    await driver.open()
    await driver.apply(section)
    assert regions(driver.read_back(0)) == NODE1
    assert regions(driver.read_back(1)) == NODE0
    assert regions(driver.read_back(2)) == read_system_ram(fs)
    fake.advance(0.5)
    ctx = fake.context(0)
    assert ctx is not None
    committed = [(r.start, r.end) for r in ctx.targets[0].regions]
    assert ctx.running and committed[0][0] == NODE1[0][0] and committed[-1][1] == NODE1[-1][1]
    # the read-back (what policies commit) keeps the ranges: no numa_node needed any more
    assert await driver.commit(0, driver.read_back(0)) is None
    assert regions(driver.read_back(0)) == NODE1


async def test_a_node_without_memory_is_refused_before_any_write(tmp_path: Path) -> None:
    """numa_node 5 has no memory block: the error names the node; nothing was written."""
    fs = two_nodes()
    fs.mkdir("/sys/devices/system/node/node5")
    damon_fake.FakeDamon(fs, kernel="7.2.12")
    driver = DamonDriver(fs, run_dir=str(tmp_path))
    await driver.open()
    before = len(fs.write_attempts)
    with pytest.raises(KernelInterfaceError, match=r"numa_node 5 needs that node's System RAM"):
        await driver.apply(DamonSection.model_validate({"kdamonds": [paddr({"numa_node": 5})]}))
    assert len(fs.write_attempts) == before


def test_as_staged_takes_each_nodes_ranges_in_addr_units() -> None:
    """Staged regions come from node_ram[n], divided by addr_unit like all paddr ranges."""
    fs = two_nodes()
    damon_fake.FakeDamon(fs, kernel="7.2.12")
    kd = DamonSection.model_validate({"kdamonds": [paddr({"numa_node": 1})]}).kdamonds[0]
    kd4 = kd.model_copy(
        update={"contexts": (kd.contexts[0].model_copy(update={"addr_unit": 4096}),)}
    )
    features = probe_features(fs)
    assert regions(as_staged(kd, features, (), {1: NODE1})) == NODE1
    assert regions(as_staged(kd4, features, (), {1: NODE1})) == tuple(
        (s // 4096, -(-e // 4096)) for s, e in NODE1
    )


def _config(target: str, ops: str = "paddr") -> str:
    return (
        "damon:\n  kdamonds:\n    - contexts:\n"
        f"        - ops: {ops}\n          targets:\n            - {target}\n"
    )


@pytest.mark.parametrize(
    ("target", "ops", "message"),
    [
        ("{numa_node: -1}", "paddr", r"k\.yaml:6:27: .*numa_node: expected a value >= 0, got -1"),
        ("{numa_node: '1'}", "paddr", r"k\.yaml:6:27: .*numa_node: expected a whole number"),
        ("{numa_nod: 1}", "paddr", r"unknown key 'numa_nod'.*did you mean 'numa_node'"),
        (
            "{pid: 42, numa_node: 1}",
            "vaddr",
            r"k\.yaml:6:36: .*numa_node is for paddr targets .* got ops vaddr",
        ),
        (
            "{numa_node: 1, regions: [{start: 0, end: 4096}]}",
            "paddr",
            r"numa_node 1 chooses the regions .* give numa_node or regions, got both",
        ),
    ],
)
def test_numa_node_config_errors_name_the_file_position_and_the_rule(
    target: str, ops: str, message: str
) -> None:
    """Bad numa_node values fail at load with file:line:column and what is accepted."""
    with pytest.raises(ConfigError, match=message):
        load_config_text(_config(target, ops), "k.yaml")


def test_numa_node_loads_and_is_in_the_json_schema() -> None:
    """A paddr target with numa_node loads; the schema offers it as an integer >= 0."""
    config = load_config_text(_config("{numa_node: 1}"), "k.yaml")
    assert config.damon.kdamonds[0].contexts[0].targets[0].numa_node == 1
    schema = json.dumps(json_schema())
    assert '"numa_node": {"anyOf": [{"minimum": 0, "type": "integer"}, {"type": "null"}]' in schema


async def test_a_node_that_does_not_exist_is_named(tmp_path: Path) -> None:
    """numa_node 9 has no node directory: the error names the node and what to check."""
    fs = two_nodes()
    damon_fake.FakeDamon(fs, kernel="7.2.12")
    driver = DamonDriver(fs, run_dir=str(tmp_path))
    await driver.open()
    with pytest.raises(KernelInterfaceError, match=r"numa_node 9 needs that node's memory blocks"):
        await driver.apply(DamonSection.model_validate({"kdamonds": [paddr({"numa_node": 9})]}))
    assert fs.write_attempts == ()
