"""Signal sources: PSI, vmstat, meminfo, tiers, fragmentation, cgroups."""
