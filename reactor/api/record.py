"""Tick recordings: one JSON line per tick, for analysis after the run (``--record FILE``).

A recording is JSON Lines. Its first line is a header (``"type": "header"``: format name
and version, reactor's version, a digest of the config, the start time), then one
``"type": "tick"`` line per report tick: the monotonic stamp (seconds, the runtime's own
clock: the one to compute intervals with), the wall time (for lining the run up with other
data, never for arithmetic), each source's state, age and summary, and every policy's
status. Appending to an existing file starts a new session with its own header.

Each line is flushed to the kernel as it is written, so a crash of reactor loses at most
the line being written (a power loss can lose what the page cache held: no fsync, which
would make every tick wait on the disk). :func:`read_recording` reads a file back and
skips a last line cut short by a crash.

This is the only module of reactor/api that opens files: the recording is the user's
file, not a kernel file. Disk writes can stall under the memory pressure reactor exists to
relieve (dirty throttling), so the daemon does not write on the event loop:
:meth:`TickRecorder.submit` hands the record to :meth:`TickRecorder.run`, a task that
writes in a worker thread, and drops (and counts) records when the writer falls behind
rather than delay a tick.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus

from reactor._version import __version__
from reactor.api.status import to_json
from reactor.errors import ReactorError
from reactor.log import repeat_logged

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from reactor.config import Config

__all__ = (
    "RECORDING_FORMAT",
    "RECORDING_VERSION",
    "RecordingError",
    "TickRecorder",
    "config_digest",
    "read_recording",
    "tick_record",
)

_log = structlog.get_logger("reactor.api")

RECORDING_FORMAT = "reactor-recording"
#: Bumped when a field changes meaning or goes away; readers refuse newer versions.
RECORDING_VERSION = 1

#: Records waiting for the writer; beyond this, new ones are dropped (and counted).
_QUEUE = 16


class RecordingError(ReactorError):
    """A recording cannot be read (or written); ``path`` and ``line`` (1-based, 0 for the
    file as a whole) say where."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {reason}")


def config_digest(config: Config) -> str:
    """``sha256:<hex>`` of the config's canonical JSON: equal configs, equal digests."""
    canonical = json.dumps(
        config.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    ).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def tick_record(
    doc: Mapping[str, Any], *, stamp: float, dt_s: float | None = None
) -> dict[str, Any]:
    """The slim per-tick record of a status document.

    ``stamp`` is the tick's ``anyio.current_time()`` (seconds, monotonic), ``dt_s`` the
    true time since the previous tick. Counters that only grow (published, failures) are
    left out; the status document has them.
    """
    return {
        "type": "tick",
        "tick": doc.get("ticks"),
        "stamp": stamp,
        "dt_s": dt_s,
        "wall": time.time(),
        "sources": {
            topic: {
                "state": src.get("state"),
                "stale": src.get("stale"),
                "age_s": src.get("last_sample_age_s"),
                "summary": src.get("summary"),
            }
            for topic, src in doc.get("sources", {}).items()
        },
        "monitors": doc.get("monitors", []),
        "policies": doc.get("policies", []),
    }


class TickRecorder:
    """Appends records to ``path`` as JSON lines, one flush per line.

    Use it as a context manager with :meth:`write` (blocking, one line), or in the daemon
    as a task: ``await tg.start(recorder.run)`` then :meth:`submit` each tick (never
    blocks). The file is created with mode 0600, like the status socket it mirrors.
    """

    def __init__(self, path: str, *, config_digest: str | None = None) -> None:
        self.path = path
        self.config_digest = config_digest
        self.written = 0
        self.dropped = 0
        self._file: IO[str] | None = None
        self._send: MemoryObjectSendStream[Mapping[str, Any]] | None = None

    # -- blocking use -----------------------------------------------------------------
    def open(self) -> None:
        """Open (create or append) and write the session header."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise RecordingError(self.path, 0, f"cannot open for writing: {exc}") from None
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self.write(
            {
                "type": "header",
                "format": RECORDING_FORMAT,
                "format_version": RECORDING_VERSION,
                "reactor_version": __version__,
                "config_digest": self.config_digest,
                "pid": os.getpid(),
                "started_wall": time.time(),
            }
        )

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line and flush it to the kernel."""
        if self._file is None:
            raise RecordingError(self.path, 0, "the recorder is not open")
        self._file.write(to_json(record) + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TickRecorder:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- in the daemon ----------------------------------------------------------------
    def submit(self, record: Mapping[str, Any]) -> bool:
        """Queue a record for :meth:`run`; False (and counted in ``dropped``) when the
        writer lags :data:`_QUEUE` records behind or is not running."""
        if self._send is None:
            self.dropped += 1
            return False
        try:
            self._send.send_nowait(record)
        except anyio.WouldBlock:
            self.dropped += 1
            if repeat_logged(self.dropped):
                _log.warning("record_dropped", path=self.path, dropped=self.dropped)
            return False
        return True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open the file, report ready, then write submitted records until cancelled.

        Writes run in a worker thread, one at a time; the file is closed on the way out.
        """
        send, receive = anyio.create_memory_object_stream[Mapping[str, Any]](_QUEUE)
        try:
            await anyio.to_thread.run_sync(self.open)
            self._send = send
            task_status.started()
            await self._drain(receive)
        finally:
            self._send = None
            send.close()
            receive.close()
            self.close()
            _log.info("record_closed", path=self.path, written=self.written, dropped=self.dropped)

    async def _drain(self, receive: MemoryObjectReceiveStream[Mapping[str, Any]]) -> None:
        async for record in receive:
            await anyio.to_thread.run_sync(self.write, record)


def read_recording(path: str) -> Iterator[dict[str, Any]]:
    """Every record of a recording, headers included, in file order.

    Raises :class:`RecordingError` for a file that is not a recording, a newer format, or
    a broken line in the middle; a last line cut short (no newline: the writer crashed)
    is skipped.
    """
    try:
        file = open(path, encoding="utf-8")  # noqa: SIM115 (a generator keeps it open)
    except OSError as exc:
        raise RecordingError(path, 0, f"cannot open: {exc}") from None
    with file:
        for number, line in enumerate(file, start=1):
            try:
                record = json.loads(line)
            except ValueError as exc:
                if not line.endswith("\n"):  # the last line, cut short by a crash
                    return
                raise RecordingError(path, number, f"not a JSON line: {exc}") from None
            if not isinstance(record, dict):
                raise RecordingError(path, number, "expected a JSON object per line")
            if number == 1 or record.get("type") == "header":
                _check_header(path, number, record)
            yield record


def _check_header(path: str, number: int, record: dict[str, Any]) -> None:
    if record.get("type") != "header" or record.get("format") != RECORDING_FORMAT:
        raise RecordingError(
            path, number, f"not a reactor recording (no {RECORDING_FORMAT} header)"
        )
    version = record.get("format_version")
    if not isinstance(version, int) or version > RECORDING_VERSION:
        raise RecordingError(
            path,
            number,
            f"recording format version {version!r}; this reactor reads up to "
            f"{RECORDING_VERSION}: use a newer reactor",
        )
