"""Where each verbatim capture of this host (tests/fixtures/captured/host-6.18) came from.

The shared ``fake_kernel`` fixture and the runtime tests build a fake node from this map,
so the fake holds exactly the files the real machine showed, at their kernel paths.
"""

from __future__ import annotations

from pathlib import Path

from reactor.testing import FakeDamon, FakeKernelFS

CAPTURED = Path(__file__).parent / "fixtures" / "captured"
HOST = CAPTURED / "host-6.18"

_NODE = "/sys/devices/system/node"

#: kernel path -> capture file name. debugfs files are left out: debugfs is not mounted
#: on this host, and reactor never mounts it.
HOST_CAPTURES = {
    "/proc/pressure/memory": "proc_pressure_memory",
    "/proc/pressure/io": "proc_pressure_io",
    "/proc/pressure/cpu": "proc_pressure_cpu",
    "/proc/vmstat": "proc_vmstat",
    "/proc/meminfo": "proc_meminfo",
    "/proc/buddyinfo": "proc_buddyinfo",
    "/proc/zoneinfo": "proc_zoneinfo",
    "/proc/iomem": "proc_iomem",
    "/sys/fs/cgroup/unified/memory.pressure": "cgroup_unified_memory.pressure",
    "/sys/fs/cgroup/unified/cpu.pressure": "cgroup_unified_cpu.pressure",
    "/sys/fs/cgroup/unified/io.pressure": "cgroup_unified_io.pressure",
    f"{_NODE}/possible": "sys_devices_system_node_possible",
    f"{_NODE}/online": "sys_devices_system_node_online",
    f"{_NODE}/has_cpu": "sys_devices_system_node_has_cpu",
    f"{_NODE}/has_memory": "sys_devices_system_node_has_memory",
    f"{_NODE}/has_normal_memory": "sys_devices_system_node_has_normal_memory",
    f"{_NODE}/has_generic_initiator": "sys_devices_system_node_has_generic_initiator",
    f"{_NODE}/node0/cpulist": "sys_devices_system_node_node0_cpulist",
    f"{_NODE}/node0/distance": "sys_devices_system_node_node0_distance",
    f"{_NODE}/node0/meminfo": "sys_devices_system_node_node0_meminfo",
    "/sys/devices/virtual/memory_tiering/memory_tier4/nodelist": (
        "sys_devices_virtual_memory_tiering_memory_tier4_nodelist"
    ),
    "/sys/kernel/mm/numa/demotion_enabled": "sys_kernel_mm_numa_demotion_enabled",
}


def host_node() -> FakeKernelFS:
    """A fresh fake node holding every host capture at its kernel path."""
    fs = FakeKernelFS()
    for path, name in HOST_CAPTURES.items():
        fs.set_file(path, (HOST / name).read_text())
    return fs


#: The process the DAMON-backed fakes simulate: a hot and a cold range.
DAMON_PID = 4242
DAMON_HOT = (0x7F0000000000, 0x7F0000400000)  # 4 MiB, accessed in every sample
DAMON_COLD = (0x7F0001000000, 0x7F0003000000)  # 32 MiB, never accessed


def damon_node() -> tuple[FakeKernelFS, FakeDamon]:
    """This host's captures plus a free DAMON at the guest's version (7.2.12), writable,
    with one simulated process (:data:`DAMON_PID`) holding a hot and a cold range."""
    fs = FakeKernelFS(allow_damon_writes=True)
    for path, name in HOST_CAPTURES.items():
        fs.set_file(path, (HOST / name).read_text())
    fs.set_file("/proc/sys/kernel/osrelease", "7.2.12+deb14-amd64\n")
    fs.set_file("/proc/sys/kernel/random/boot_id", "5eed0000-0000-4000-8000-000000000001\n")
    damon = FakeDamon(fs, kernel="7.2.12")
    damon.add_process(DAMON_PID, [(*DAMON_HOT, 1.0), (*DAMON_COLD, 0.0)])
    return fs, damon
