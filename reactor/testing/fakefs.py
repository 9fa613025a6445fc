"""An in-memory :class:`~reactor.kernelfs.KernelFS` for tests (reactor's and yours).

Build it from a nested dict literal, the way the kernel tree looks::

    fs = FakeKernelFS({
        "proc": {
            "pressure": {"memory": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\\n"},
            "vmstat": "pgfault 10\\n",
        },
        "sys/fs/cgroup/app": {"memory.pressure": "..."},   # keys may hold several parts
    })

A ``str`` or ``bytes`` value is a file, a mapping is a directory (``{}`` is an empty one).

What it offers beyond the protocol, for tests:

- :attr:`FakeKernelFS.writes`: the ordered log of accepted writes, ``(path, data)``;
  :attr:`FakeKernelFS.write_attempts` also holds refused ones with their errno.
- :meth:`FakeKernelFS.inject_fault`: the next N (or all) reads, writes or listings of a path
  fail with an errno, as :class:`~reactor.errors.KernelInterfaceError` chained from
  ``OSError(errno, os.strerror(errno))``, exactly as :class:`RealKernelFS` reports them.
- :meth:`FakeKernelFS.set_file`, :meth:`FakeKernelFS.remove`, :meth:`FakeKernelFS.mkdir`:
  change the tree while a test runs (a counter grows, a cgroup vanishes).
- :meth:`FakeKernelFS.add_write_hook`: kernel write semantics per path prefix (the DAMON
  fake plugs in here: ``nr_*`` files that recreate children, ``state`` commands with
  their errno). Without a hook a write replaces the file's content, as a plain sysfs
  attribute that echoes what was stored.
- :meth:`FakeKernelFS.materialize`: write the tree into a real directory, for code that
  needs real paths (then ``RealKernelFS(root=that_dir)`` reads the same content).
- :class:`RecordingKernelFS` wraps any KernelFS (a real one included) and logs every write
  the code under test attempts, so a test on a real kernel can assert what was never
  written without comparing file contents.
- :meth:`FakeKernelFS.open_count`: how many times a path was opened, to check that a hot
  path keeps its descriptor instead of reopening.
- PSI triggers: :meth:`FakeKernelFS.open_trigger` arms a :class:`FakeTrigger` with the
  kernel's rules (window 0.5..10 s; a multiple of 2 s unless the fake was built with
  ``privileged_triggers=True``, as without CAP_SYS_RESOURCE; threshold in (0, window]);
  refusals are :class:`~reactor.kernelfs.trigger.TriggerRefused` with EINVAL, and
  ``inject_fault(path, err, ops=("trigger",))`` refuses with any errno.
  :meth:`FakeKernelFS.fire_trigger` fires every live trigger on a path (what the kernel
  does when stall crosses the threshold); removing the path makes waiters raise
  :class:`~reactor.kernelfs.trigger.TriggerGone`, as kernfs does for a removed cgroup.

Errors follow the kernel: a missing file is ENOENT, reading a directory EISDIR, listing a
file ENOTDIR, writing a file that does not exist ENOENT (sysfs files are never created by
a write). A kept file reads the current content of its path on every pread (as procfs
does) and fails with ENODEV once the path is removed (as kernfs does for a removed
cgroup's open files), even if the path is created again.

Writes under ``/sys/kernel/mm/damon`` raise :class:`~reactor.errors.UnsafeWrite` unless
the fake was built with ``allow_damon_writes=True``, exactly like the real filesystem, so
code that passes its tests on the fake does not write the machine's DAMON tree either.

The fake is guarded by a lock, so code under test may use it from worker threads.
"""

from __future__ import annotations

import errno as errno_mod
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from reactor.errors import KernelInterfaceError, UnsafeWrite
from reactor.kernelfs.base import (
    DAMON_SYSFS,
    KeptFile,
    KernelFS,
    check_relative,
    is_damon_path,
    normalize_path,
)
from reactor.kernelfs.trigger import (
    UNPRIVILEGED_WINDOW_STEP_US,
    WINDOW_MAX_US,
    WINDOW_MIN_US,
    TriggerGone,
    TriggerHandle,
    TriggerRefused,
    WaitResult,
    parse_trigger_spec,
    refusal_reason,
)

__all__ = (
    "FakeFile",
    "FakeKernelFS",
    "FakeTree",
    "FakeTrigger",
    "Fault",
    "Op",
    "RecordingKernelFS",
    "WriteAttempt",
    "WriteHook",
)

#: A nested dict literal: a ``str``/``bytes`` value is a file, a mapping a directory.
FakeTree: TypeAlias = Mapping[str, "FakeTree | str | bytes"]

#: The operations a fault can hit. ``read`` covers read_text, read_bytes, keep and kept
#: reads; ``write`` covers write_text; ``list`` covers listdir; ``trigger`` open_trigger
#: (only when named: the default ``ops`` leave triggers alone).
Op: TypeAlias = Literal["read", "write", "list", "trigger"]

#: Kernel write semantics for a path prefix: ``hook(fs, path, data)`` performs the write
#: (usually through ``fs.set_file`` and friends) or raises ``OSError(errno, ...)`` to
#: refuse it with the kernel's errno. The most specific prefix wins.
WriteHook: TypeAlias = Callable[["FakeKernelFS", str, str], None]


@dataclass(frozen=True)
class WriteAttempt:
    """One write as the code under test issued it; ``errno`` is None if it was accepted."""

    path: str
    data: str
    errno: int | None = None


@dataclass
class Fault:
    """An injected failure: ``remaining`` calls left (None: every call), then it is gone."""

    path: str
    errno: int
    ops: frozenset[str]
    remaining: int | None
    subtree: bool

    def matches(self, path: str, op: str) -> bool:
        if op not in self.ops:
            return False
        return path == self.path or (self.subtree and path.startswith(self.path + "/"))


def _os_error(err: int, path: str) -> OSError:
    return OSError(err, os.strerror(err), path)


class FakeFile:
    """A kept file of the fake: each read sees the path's current content, like procfs."""

    def __init__(self, fs: FakeKernelFS, path: str, generation: int) -> None:
        self._fs = fs
        self._path = path
        self._generation = generation
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    def pread(self, size: int, offset: int) -> bytes:
        sparse = self._fs._sparse.get(self._path)
        if sparse is not None:
            self._content()  # the same checks: closed, removed, faults
            return sparse(offset, size)
        return self._content()[offset : offset + size]

    def read_bytes(self) -> bytes:
        return self._content()

    def read_text(self) -> str:
        return self._content().decode("utf-8", errors="replace")

    def _content(self) -> bytes:
        if self._closed:
            raise KernelInterfaceError(self._path, "read after close")
        return self._fs._kept_read(self._path, self._generation)

    def close(self) -> None:
        self._closed = True


class FakeTrigger:
    """A fake PSI trigger: :meth:`fire` does what the kernel does when stall crosses the
    threshold (wakes one waiter, or the next one: a firing is kept until it is seen)."""

    def __init__(self, path: str, spec: str) -> None:
        self._path = path
        self._spec = spec
        self._cond = threading.Condition()
        self._fired = 0
        self._interrupts = 0
        self._gone = False
        self.closed = False
        #: How many times the trigger fired (seen or not), for assertions.
        self.fired_count = 0

    @property
    def path(self) -> str:
        return self._path

    @property
    def spec(self) -> str:
        return self._spec

    def fileno(self) -> int:
        """-1: the fake holds no descriptor (the real trigger's fd is only diagnostics)."""
        return -1

    def fire(self) -> None:
        with self._cond:
            self._fired += 1
            self.fired_count += 1
            self._cond.notify_all()

    def vanish(self) -> None:
        with self._cond:
            self._gone = True
            self._cond.notify_all()

    def wait(self, timeout_s: float | None) -> WaitResult:
        with self._cond:
            self._cond.wait_for(
                lambda: self._fired or self._interrupts or self._gone or self.closed, timeout_s
            )
            if self._interrupts or self.closed:
                self._interrupts = 0
                return "interrupted"
            if self._gone:
                raise TriggerGone(self._path, "trigger's file went away", errno=errno_mod.ENODEV)
            if self._fired:
                self._fired = 0  # the kernel signals once per window, not once per crossing
                return "fired"
            return "timeout"

    def interrupt(self) -> None:
        with self._cond:
            self._interrupts += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class FakeKernelFS:
    """An in-memory kernel tree implementing the KernelFS protocol (see module docs)."""

    def __init__(
        self,
        tree: FakeTree | None = None,
        *,
        allow_damon_writes: bool = False,
        privileged_triggers: bool = False,
    ) -> None:
        self._allow_damon_writes = allow_damon_writes
        self._privileged_triggers = privileged_triggers
        self._triggers: list[FakeTrigger] = []
        self._lock = threading.RLock()
        self._files: dict[str, bytes] = {}
        #: files whose bytes are made on each positional read (pagemap: 8 bytes a page of
        #: a 128 TiB address space cannot be stored): ``(offset, size) -> bytes``
        self._sparse: dict[str, Callable[[int, int], bytes]] = {}
        # A file's generation changes when it is removed, so kept files of a removed path
        # fail with ENODEV even after a new file appears at the same path.
        self._generations: dict[str, int] = {}
        self._next_generation = 1
        self._dirs: dict[str, set[str]] = {"/": set()}
        self._faults: list[Fault] = []
        self._hooks: dict[str, WriteHook] = {}
        self._attempts: list[WriteAttempt] = []
        self._opens: Counter[str] = Counter()
        # Inode numbers, given out on first ask and forgotten on remove, so a directory
        # created again at the same path has a new one (as a re-created cgroup does).
        self._inodes: dict[str, int] = {}
        self._next_inode = 1000
        if tree is not None:
            self.add_tree("/", tree)

    # -- the KernelFS protocol -------------------------------------------------------------

    @property
    def root(self) -> str:
        """Not a host path: the fake lives in memory (use :meth:`materialize` for one)."""
        return "<fake>"

    def read_text(self, path: str) -> str:
        return self._read(path, "cannot read").decode("utf-8", errors="replace")

    def read_texts(self, base: str, names: Sequence[str]) -> list[str]:
        for name in names:
            check_relative(name)
        return [self.read_text(f"{base}/{name}") for name in names]

    def read_bytes(self, path: str, offset: int, size: int) -> bytes:
        content = self._read(path, "cannot open")
        sparse = self._sparse.get(normalize_path(path))
        if sparse is not None:
            return sparse(offset, size)
        return content[offset : offset + size]

    def write_text(self, path: str, data: str) -> None:
        norm = normalize_path(path)
        if is_damon_path(norm) and not self._allow_damon_writes:
            raise UnsafeWrite(
                path,
                f"writes under {DAMON_SYSFS} need a DAMON backend that owns the kdamond "
                "(this filesystem was built without allow_damon_writes)",
            )
        with self._lock:
            try:
                self._take_fault(norm, "write")
                hook = self._hook_for(norm)
                if hook is not None:
                    hook(self, norm, data)
                else:
                    self._default_write(norm, data)
            except OSError as exc:
                self._attempts.append(WriteAttempt(norm, data, exc.errno))
                raise KernelInterfaceError(
                    path, "write refused", errno=exc.errno, value=data
                ) from exc
            self._attempts.append(WriteAttempt(norm, data))

    def exists(self, path: str) -> bool:
        norm = normalize_path(path)
        with self._lock:
            return norm in self._files or norm in self._dirs

    def is_dir(self, path: str) -> bool:
        with self._lock:
            return normalize_path(path) in self._dirs

    def listdir(self, path: str) -> list[str]:
        norm = normalize_path(path)
        with self._lock:
            try:
                self._take_fault(norm, "list")
                if norm in self._files:
                    raise _os_error(errno_mod.ENOTDIR, norm)
                if norm not in self._dirs:
                    raise _os_error(errno_mod.ENOENT, norm)
            except OSError as exc:
                raise KernelInterfaceError(path, "cannot list", errno=exc.errno) from exc
            return sorted(self._dirs[norm])

    def keep(self, path: str) -> FakeFile:
        norm = normalize_path(path)
        with self._lock:
            self._read(norm, "cannot open")
            return FakeFile(self, norm, self._generations[norm])

    def open_trigger(self, path: str, spec: str) -> FakeTrigger:
        """Arm a fake trigger with the kernel's rules (see the module docs)."""
        norm = normalize_path(path)
        parsed = parse_trigger_spec(spec)
        with self._lock:
            err: int | None = None
            try:
                self._take_fault(norm, "trigger")
                if norm not in self._files:
                    raise _os_error(errno_mod.ENOENT, norm)
            except OSError as exc:
                err = exc.errno
            window = parsed.window_us
            step = 1 if self._privileged_triggers else UNPRIVILEGED_WINDOW_STEP_US
            if err is None and not (
                WINDOW_MIN_US <= window <= WINDOW_MAX_US and window % step == 0
            ):
                err = errno_mod.EINVAL
            if err is not None:
                raise TriggerRefused(norm, parsed.text(), err, refusal_reason(err, parsed))
            trigger = FakeTrigger(norm, parsed.text())
            self._triggers.append(trigger)
            return trigger

    def fire_trigger(self, path: str) -> int:
        """Fire every open trigger on ``path``; returns how many fired."""
        norm = normalize_path(path)
        with self._lock:
            live = [t for t in self._triggers if t.path == norm and not t.closed]
        for trigger in live:
            trigger.fire()
        return len(live)

    def triggers(self, path: str | None = None) -> tuple[FakeTrigger, ...]:
        """The triggers armed so far (on ``path``, or all), open or closed, in order."""
        with self._lock:
            norm = None if path is None else normalize_path(path)
            return tuple(t for t in self._triggers if norm is None or t.path == norm)

    # -- changing the tree while a test runs -----------------------------------------------

    def add_tree(self, at: str, tree: FakeTree) -> None:
        """Add a nested dict literal under directory ``at`` (created if missing)."""
        base = normalize_path(at)
        with self._lock:
            self.mkdir(base)
            for name, value in tree.items():
                path = normalize_path(base.rstrip("/") + "/" + name.strip("/"))
                if isinstance(value, str | bytes):
                    self.set_file(path, value)
                else:
                    self.add_tree(path, value)

    def set_file(self, path: str, content: str | bytes) -> None:
        """Create or replace a file (parents are created); kept files see the new content."""
        norm = normalize_path(path)
        raw = content.encode() if isinstance(content, str) else bytes(content)
        with self._lock:
            if norm in self._dirs:
                raise IsADirectoryError(errno_mod.EISDIR, os.strerror(errno_mod.EISDIR), norm)
            parent, name = norm.rsplit("/", 1)
            self.mkdir(parent or "/")
            self._dirs[parent or "/"].add(name)
            if norm not in self._files:
                self._generations[norm] = self._next_generation
                self._next_generation += 1
            self._files[norm] = raw
            self._sparse.pop(norm, None)

    def set_sparse_file(self, path: str, read: Callable[[int, int], bytes]) -> None:
        """A file whose positional reads (``pread``, ``read_bytes``) return
        ``read(offset, size)``; a whole read (``read_text``) sees it empty."""
        self.set_file(path, b"")
        with self._lock:
            self._sparse[normalize_path(path)] = read

    def mkdir(self, path: str) -> None:
        """Create a directory and its parents (no error if it exists)."""
        norm = normalize_path(path)
        with self._lock:
            if norm in self._dirs:
                return
            if norm in self._files:
                raise NotADirectoryError(errno_mod.ENOTDIR, os.strerror(errno_mod.ENOTDIR), norm)
            parent, name = norm.rsplit("/", 1)
            self.mkdir(parent or "/")
            self._dirs[parent or "/"].add(name)
            self._dirs[norm] = set()

    def inode(self, path: str) -> int:
        """The path's inode number: stable while it exists, new once it is re-created."""
        norm = normalize_path(path)
        with self._lock:
            if norm not in self._files and norm not in self._dirs:
                err = _os_error(errno_mod.ENOENT, norm)
                raise KernelInterfaceError(norm, "cannot stat", errno=err.errno) from err
            if norm not in self._inodes:
                self._inodes[norm] = self._next_inode
                self._next_inode += 1
            return self._inodes[norm]

    def remove(self, path: str) -> None:
        """Remove a file or a whole directory (a vanished cgroup); missing is an error."""
        norm = normalize_path(path)
        with self._lock:
            if norm == "/":
                raise ValueError("cannot remove the root of the fake tree")
            if norm not in self._files and norm not in self._dirs:
                raise FileNotFoundError(errno_mod.ENOENT, os.strerror(errno_mod.ENOENT), norm)
            parent, name = norm.rsplit("/", 1)
            self._dirs[parent or "/"].discard(name)
            prefix = norm + "/"
            for file in [f for f in self._files if f == norm or f.startswith(prefix)]:
                del self._files[file]
                del self._generations[file]
                self._sparse.pop(file, None)
            for d in [d for d in self._dirs if d == norm or d.startswith(prefix)]:
                del self._dirs[d]
            for known in [i for i in self._inodes if i == norm or i.startswith(prefix)]:
                del self._inodes[known]
            for trigger in self._triggers:
                if trigger.path == norm or trigger.path.startswith(prefix):
                    trigger.vanish()

    def file_text(self, path: str) -> str:
        """A file's current content, for assertions: no fault, no open counted."""
        with self._lock:
            return self._files[normalize_path(path)].decode("utf-8", errors="replace")

    # -- faults, hooks, logs ---------------------------------------------------------------

    def inject_fault(
        self,
        path: str,
        err: int,
        *,
        times: int | None = 1,
        ops: Iterable[Op] = ("read", "write", "list"),
        subtree: bool = False,
    ) -> Fault:
        """Make the next ``times`` matching calls (None: all of them) fail with ``err``.

        ``subtree`` extends the fault to every path below ``path``. Returns the fault, whose
        ``remaining`` shows how many calls it still has; :meth:`clear_faults` removes it.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 or None, got {times}")
        fault = Fault(normalize_path(path), err, frozenset(ops), times, subtree)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    def add_write_hook(self, prefix: str, hook: WriteHook) -> None:
        """Give writes at or below ``prefix`` the semantics ``hook`` implements."""
        with self._lock:
            self._hooks[normalize_path(prefix)] = hook

    def default_write(self, path: str, data: str) -> None:
        """The plain-attribute semantics (replace the content), for hooks to fall back on."""
        self._default_write(normalize_path(path), data)

    @property
    def writes(self) -> tuple[tuple[str, str], ...]:
        """Accepted writes in order, as ``(path, data)`` with normalized paths."""
        with self._lock:
            return tuple((a.path, a.data) for a in self._attempts if a.errno is None)

    @property
    def write_attempts(self) -> tuple[WriteAttempt, ...]:
        """Every write that reached the fake (accepted or refused with an errno), in order.

        Writes refused by the DAMON guard raise UnsafeWrite before this point and are not
        listed: they never reach a kernel.
        """
        with self._lock:
            return tuple(self._attempts)

    def open_count(self, path: str) -> int:
        """How many times ``path`` was opened (read_text, read_bytes and keep each count)."""
        with self._lock:
            return self._opens[normalize_path(path)]

    def materialize(self, directory: str | os.PathLike[str]) -> Path:
        """Write the tree under ``directory`` (which may exist) and return it as a Path."""
        root = Path(directory)
        with self._lock:
            for d in self._dirs:
                (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
            for f, raw in self._files.items():
                (root / f.lstrip("/")).write_bytes(raw)
        return root

    # -- internals -------------------------------------------------------------------------

    def _read(self, path: str, message: str) -> bytes:
        norm = normalize_path(path)
        with self._lock:
            try:
                self._take_fault(norm, "read")
                if norm in self._dirs:
                    raise _os_error(errno_mod.EISDIR, norm)
                if norm not in self._files:
                    raise _os_error(errno_mod.ENOENT, norm)
            except OSError as exc:
                raise KernelInterfaceError(path, message, errno=exc.errno) from exc
            self._opens[norm] += 1
            return self._files[norm]

    def _kept_read(self, path: str, generation: int) -> bytes:
        with self._lock:
            try:
                self._take_fault(path, "read")
                if self._generations.get(path) != generation:
                    raise _os_error(errno_mod.ENODEV, path)
            except OSError as exc:
                raise KernelInterfaceError(path, "cannot read", errno=exc.errno) from exc
            return self._files[path]

    def _take_fault(self, path: str, op: str) -> None:
        for fault in self._faults:
            if fault.matches(path, op):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                raise _os_error(fault.errno, path)

    def _hook_for(self, path: str) -> WriteHook | None:
        best: str | None = None
        for prefix in self._hooks:
            inside = prefix in ("/", path) or path.startswith(prefix + "/")
            if inside and (best is None or len(prefix) > len(best)):
                best = prefix
        return None if best is None else self._hooks[best]

    def _default_write(self, path: str, data: str) -> None:
        if path in self._dirs:
            raise _os_error(errno_mod.EISDIR, path)
        if path not in self._files:
            raise _os_error(errno_mod.ENOENT, path)
        self._files[path] = data.encode()


class RecordingKernelFS:
    """A :class:`~reactor.kernelfs.KernelFS` that logs every write, then passes it on.

    Everything is delegated to ``inner`` (a :class:`~reactor.kernelfs.RealKernelFS` in
    the real-kernel lane, or a fake); each ``write_text`` is logged in :attr:`attempts`,
    with its normalized path and the errno it failed with (None when accepted, and for a
    write the DAMON guard refused with UnsafeWrite: it is logged all the same). A test then
    asserts that nothing was written under a path, which a comparison of file contents
    cannot show (a write of the value a file already holds changes nothing, yet on DAMON
    an ``nr_*`` write of the same value still resets every child).
    """

    def __init__(self, inner: KernelFS) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._attempts: list[WriteAttempt] = []

    @property
    def attempts(self) -> tuple[WriteAttempt, ...]:
        """Every write attempted through this filesystem, in order."""
        with self._lock:
            return tuple(self._attempts)

    def writes_under(self, prefix: str) -> tuple[WriteAttempt, ...]:
        """The attempts at ``prefix`` or below it (accepted or not)."""
        norm = normalize_path(prefix)
        return tuple(
            a for a in self.attempts if a.path == norm or a.path.startswith(norm.rstrip("/") + "/")
        )

    @property
    def root(self) -> str:
        return self.inner.root

    def write_text(self, path: str, data: str) -> None:
        norm = normalize_path(path)
        err: int | None = None
        try:
            self.inner.write_text(path, data)
        except KernelInterfaceError as exc:
            err = exc.errno
            raise
        finally:
            with self._lock:
                self._attempts.append(WriteAttempt(norm, data, err))

    def read_text(self, path: str) -> str:
        return self.inner.read_text(path)

    def read_texts(self, base: str, names: Sequence[str]) -> list[str]:
        return self.inner.read_texts(base, names)

    def exists(self, path: str) -> bool:
        return self.inner.exists(path)

    def is_dir(self, path: str) -> bool:
        return self.inner.is_dir(path)

    def listdir(self, path: str) -> list[str]:
        return self.inner.listdir(path)

    def read_bytes(self, path: str, offset: int, size: int) -> bytes:
        return self.inner.read_bytes(path, offset, size)

    def keep(self, path: str) -> KeptFile:
        return self.inner.keep(path)

    def inode(self, path: str) -> int:
        return self.inner.inode(path)

    def open_trigger(self, path: str, spec: str) -> TriggerHandle:
        return self.inner.open_trigger(path, spec)
