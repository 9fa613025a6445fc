#!/bin/sh
# Guest-side set-up of the real-kernel lane: runs as root INSIDE the qemu guest only,
# before pytest (started by `.ci/kernel_lane.py guest`). Everything here changes the whole
# machine (swap, THP, sysctls, cgroups), which is allowed only in the guest.
#
# The state it leaves is a contract that tests/kernel/test_guest_environment.py asserts:
#   swap        /dev/zram0, 512 MiB, priority 100 (zstd if the kernel has it)
#   cgroup v2   mounted at /sys/fs/cgroup; +memory +cpu +io in the root's subtree_control
#   THP         enabled=madvise, defrag=madvise
#   sysctls     vm.swappiness=100, kernel.numa_balancing=0 (tests opt in themselves)
#   tiering     /sys/kernel/mm/numa/demotion_enabled=true (reclaim demotes node0 -> node1)
#   DAMON       no kdamond running (damon_stat.enabled=N on the command line)
set -eu

fail() { echo "guest_setup: FAIL: $*" >&2; exit 1; }

# --- the guard: never on the host -----------------------------------------------------
grep -qw 'reactor_lane=1' /proc/cmdline || fail "no reactor_lane=1 on /proc/cmdline: not the lane guest"
host_release=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^reactor_lane_host_release=//p')
[ -n "$host_release" ] && [ "$host_release" != "$(uname -r)" ] || fail "running the host's kernel"

echo "guest_setup: kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime) s"

# --- DAMON: nothing may hold a kdamond (DAMON_STAT's context is exclusive) ---------------
if [ -e /sys/module/damon_stat/parameters/enabled ]; then
    [ "$(cat /sys/module/damon_stat/parameters/enabled)" = N ] || echo N > /sys/module/damon_stat/parameters/enabled
fi
[ "$(cat /sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds)" = 0 ] || fail "kdamonds exist at boot"

# --- cgroup v2 with the memory controller ------------------------------------------------
if ! grep -q '^[^ ]* /sys/fs/cgroup cgroup2 ' /proc/mounts; then
    mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup
fi
for c in memory cpu io; do
    grep -qw "$c" /sys/fs/cgroup/cgroup.controllers || fail "cgroup2 has no $c controller"
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control
done
echo "guest_setup: cgroup2 subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"

# --- zram swap (a swap file cannot work: / is 9p and /tmp an overlay) ---------------------
if ! grep -q '^/dev/zram0 ' /proc/swaps; then
    modprobe zram num_devices=1
    i=0; while [ ! -e /sys/block/zram0/disksize ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    if grep -qw zstd /sys/block/zram0/comp_algorithm; then echo zstd > /sys/block/zram0/comp_algorithm; fi
    echo 512M > /sys/block/zram0/disksize
    i=0; while [ ! -b /dev/zram0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    mkswap /dev/zram0 >/dev/null
    swapon -p 100 /dev/zram0
fi
echo "guest_setup: swaps:"; cat /proc/swaps

# --- THP and sysctls ------------------------------------------------------------------
echo madvise > /sys/kernel/mm/transparent_hugepage/enabled
echo madvise > /sys/kernel/mm/transparent_hugepage/defrag
echo 100 > /proc/sys/vm/swappiness
echo 0 > /proc/sys/kernel/numa_balancing
echo true > /sys/kernel/mm/numa/demotion_enabled

# --- report -----------------------------------------------------------------------------
echo "guest_setup: nodes online $(cat /sys/devices/system/node/online)," \
     "has_cpu $(cat /sys/devices/system/node/has_cpu)," \
     "has_memory $(cat /sys/devices/system/node/has_memory)"
for t in /sys/devices/virtual/memory_tiering/memory_tier*; do
    [ -e "$t/nodelist" ] && echo "guest_setup: $(basename "$t"): nodes $(cat "$t/nodelist")"
done
echo "guest_setup: THP $(cat /sys/kernel/mm/transparent_hugepage/enabled)"
echo "guest_setup: done at uptime $(cut -d' ' -f1 /proc/uptime) s"
