"""The :class:`KernelFS` protocol: what reactor needs from kernel files, no more."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Protocol

from reactor.kernelfs.trigger import TriggerHandle

__all__ = (
    "DAMON_SYSFS",
    "KeptFile",
    "KernelFS",
    "check_relative",
    "is_damon_path",
    "normalize_path",
)

#: The DAMON sysfs tree. On this project's machines it belongs to the machine itself.
DAMON_SYSFS = "/sys/kernel/mm/damon"


def normalize_path(path: str) -> str:
    """``path`` as one canonical absolute kernel path: no ``//``, ``.`` or ``..`` parts.

    ``..`` is resolved lexically (``/sys/kernel/mm/x/../damon`` is the DAMON tree), which is
    what the kernel does for every directory that exists. Raises ValueError for a relative
    path: kernel paths are absolute, so a relative one is a bug in the caller.
    """
    if not path.startswith("/"):
        raise ValueError(f"kernel paths are absolute, got {path!r}")
    return "/" + posixpath.normpath(path).lstrip("/")


def check_relative(name: str) -> str:
    """``name`` if it is a relative path that stays below its base (no ``..`` part, not
    empty, not absolute); ValueError otherwise: a caller's bug, like a relative kernel
    path."""
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts or "" in parts:
        raise ValueError(f"expected a relative path below its base, got {name!r}")
    return name


def is_damon_path(path: str) -> bool:
    """True if ``path`` (an absolute kernel path) lies inside the DAMON sysfs tree."""
    norm = normalize_path(path)
    return norm == DAMON_SYSFS or norm.startswith(DAMON_SYSFS + "/")


class KeptFile(Protocol):
    """A kernel file kept open for cheap re-reads on hot paths (pread at offset 0)."""

    @property
    def path(self) -> str: ...

    def read_text(self) -> str:
        """Re-read the whole file from offset 0."""
        ...

    def pread(self, size: int, offset: int) -> bytes: ...

    def read_bytes(self) -> bytes:
        """Re-read the whole file from offset 0 as bytes (procfs hands out about a page
        per read: smaps of thousands of mappings is hundreds of reads, which the real
        implementation loops over in C)."""
        ...

    def close(self) -> None: ...


class KernelFS(Protocol):
    """Read and write kernel files under a root.

    Every method raises :class:`reactor.errors.KernelInterfaceError` (with ``path`` and
    ``errno``) on failure; ``FileNotFoundError`` is not leaked to callers.
    """

    @property
    def root(self) -> str: ...

    def read_text(self, path: str) -> str: ...

    def read_texts(self, base: str, names: Sequence[str]) -> list[str]:
        """The text of each file ``base/<name>``, in the order given: many small files of
        one directory tree at once (a DAMON snapshot reads four or five per region, up to
        thousands of regions). ``name`` is relative and may hold ``/``, never ``..``
        (ValueError). The first file that cannot be read raises, naming it."""
        ...

    def write_text(self, path: str, data: str) -> None:
        """Write ``data`` in one ``write`` call so the kernel's errno surfaces here."""
        ...

    def exists(self, path: str) -> bool: ...

    def is_dir(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted."""
        ...

    def read_bytes(self, path: str, offset: int, size: int) -> bytes: ...

    def keep(self, path: str) -> KeptFile: ...

    def inode(self, path: str) -> int:
        """The path's inode number (on cgroupfs: the cgroup id, which survives renames)."""
        ...

    def open_trigger(self, path: str, spec: str) -> TriggerHandle:
        """Arm a PSI trigger (``"some 150000 2000000"``: µs of stall per µs of window) on
        the PSI file ``path``; the trigger lives until the handle is closed.

        Raises :class:`reactor.kernelfs.trigger.TriggerRefused` (a KernelInterfaceError
        with the kernel's errno and the likely rule) when the kernel will not arm it, so
        the caller can poll the file instead; ValueError for a malformed spec.
        """
        ...
