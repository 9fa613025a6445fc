"""A kept descriptor that reopens itself after a failure (for pollers on hot paths)."""

from __future__ import annotations

from reactor.errors import KernelInterfaceError
from reactor.kernelfs.base import KeptFile, KernelFS

__all__ = ("KeptReader",)


class KeptReader:
    """Re-reads one kernel file through a kept descriptor (a pread, not an open, per read).

    The descriptor is opened at construction, so a wrong path fails at once. After a
    failed read it is closed and the next read opens the path again: a cgroup that was
    removed and created again has new files, and its old descriptor would fail with
    ENODEV for ever. :attr:`generation` counts the opens, so a caller holding counters
    from the old file knows to drop its baseline (the new file's counters start afresh).
    """

    def __init__(self, fs: KernelFS, path: str) -> None:
        self._fs = fs
        self._path = path
        self._kept: KeptFile | None = None
        self._generation = 0
        self._open()

    @property
    def path(self) -> str:
        return self._path

    @property
    def generation(self) -> int:
        """Number of times the file was opened; it changes after every reopen."""
        return self._generation

    def read_text(self) -> str:
        """The whole file; raises KernelInterfaceError (and reopens next time) on failure."""
        kept = self._kept if self._kept is not None else self._open()
        try:
            return kept.read_text()
        except KernelInterfaceError:
            self.close()
            raise

    def close(self) -> None:
        if self._kept is not None:
            kept, self._kept = self._kept, None
            kept.close()

    def _open(self) -> KeptFile:
        self._kept = self._fs.keep(self._path)
        self._generation += 1
        return self._kept
