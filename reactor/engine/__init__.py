"""The runtime: one task group, ticks on absolute deadlines, the bus, reload, shutdown."""
