"""Where each verbatim capture of this host (tests/fixtures/captured/host-6.18) came from.

The shared ``fake_kernel`` fixture and the runtime tests build a fake node from this map,
so the fake holds exactly the files the real machine showed, at their kernel paths.
"""

from __future__ import annotations

from pathlib import Path

from reactor.testing import FakeKernelFS

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
