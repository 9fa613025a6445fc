"""Pure control algorithms: no I/O, no clock, no anyio, no reactor imports."""
