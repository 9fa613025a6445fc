"""reactor's exceptions.

The hierarchy::

    ReactorError                      base of everything reactor raises on purpose
    ├── ConfigError                   a config file (or reload) is invalid; carries every issue
    ├── KernelInterfaceError          a kernel file could not be read, written or parsed
    │   ├── KernelFormatError         a kernel file's text is not in the expected format
    │   ├── damon.commands.DamonSysfsError   a DAMON sysfs write or state command failed
    │   │   └── KdamondNotRunning            an update command needs a running kdamond
    │   ├── damon.driver.DamonTimeout        a DAMON write missed its deadline
    │   └── damon.memory.IomemHidden         /proc/iomem addresses read as 0 (not root)
    ├── UnsupportedKernel             a feature this kernel lacks (names the version that has it)
    ├── TargetVanished                a process or cgroup that was monitored is gone (normal)
    ├── SourceFailed                  a signal source could not produce its first sample
    ├── UnsafeWrite                   a write that the machine rules forbid was refused
    │   └── damon.ownership.ForeignKdamond   a kdamond reactor does not own is in the way
    ├── api.status.StatusSocketError  the status socket cannot be served
    │   └── StatusSocketInUse         another reactor serves that socket
    ├── api.status.StatusUnavailable  `reactor status` cannot reach a daemon
    └── api.record.RecordingError     a tick recording is malformed (names file:line)

Every exception carries its data as attributes as well as in its message, so callers
and tests can act on the values rather than on text.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = (
    "CommandNotFound",
    "ConfigError",
    "ConfigIssue",
    "KernelFormatError",
    "KernelInterfaceError",
    "ReactorError",
    "SourceFailed",
    "StartupTimeout",
    "TargetVanished",
    "UnsafeWrite",
    "UnsupportedKernel",
)


class ReactorError(Exception):
    """Base class of every error reactor raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file.

    ``line`` and ``column`` are 1-based; 0 means unknown (for example a missing key,
    which is reported at its parent mapping).
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(ReactorError):
    """A config file is invalid. ``issues`` holds every problem found, in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class KernelInterfaceError(ReactorError):
    """A kernel file could not be read or written.

    ``errno`` is the OS error number (or None when the failure is not an OS error),
    ``value`` what was being written, if anything.
    """

    def __init__(
        self,
        path: str,
        message: str,
        *,
        errno: int | None = None,
        value: str | None = None,
    ) -> None:
        self.path = path
        self.errno = errno
        self.value = value
        detail = message
        if errno is not None:
            name = errno_mod.errorcode.get(errno, str(errno))
            detail = f"{message} ({name}: {os.strerror(errno)})"
        if value is not None:
            detail = f"{detail}; value written: {value!r}"
        super().__init__(f"{path}: {detail}")


class KernelFormatError(KernelInterfaceError):
    """A kernel file's text does not have the expected format; quotes the line."""

    def __init__(self, path: str, message: str, *, line: str | None = None) -> None:
        self.line = line
        text = message if line is None else f"{message}: {line!r}"
        super().__init__(path, text)


class UnsupportedKernel(ReactorError):
    """A feature the running kernel lacks."""

    def __init__(self, feature: str, since: str | None, kernel: str | None = None) -> None:
        self.feature = feature
        self.since = since
        self.kernel = kernel
        msg = f"this kernel does not support {feature}"
        if kernel:
            msg += f" (running {kernel})"
        if since:
            msg += f"; it needs Linux {since} or newer"
        super().__init__(msg)


class CommandNotFound(ReactorError, FileNotFoundError):
    """A command reactor was asked to start is not on PATH or not executable (ENOENT;
    a FileNotFoundError too, for callers that catch the OS error)."""


class StartupTimeout(ReactorError):
    """A part of the daemon (the monitors, a policy) did not report started in time."""


class TargetVanished(ReactorError):
    """A monitored process or cgroup no longer exists. A normal event, not a crash."""

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"target {target} has vanished")


class SourceFailed(ReactorError):
    """A signal source could not produce its first good sample in time."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"source {source!r} failed: {reason}")


class UnsafeWrite(ReactorError):
    """A write the machine rules forbid (for example to a DAMON tree reactor does not own)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"refused to write {path}: {reason}")
