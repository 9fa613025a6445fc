"""The status document and the root-only Unix socket that serves it.

The runtime describes itself in one plain, JSON-serializable document (a
:class:`StatusDocument`): each source, monitor and policy with its state, newest values and
counters. Everything that reports on a running reactor reads that one document: ``reactor
status`` over the socket served here, the Prometheus exporter (:mod:`reactor.api.metrics`)
and tick recordings (:mod:`reactor.api.record`). Policies and monitors have their place in
it already (empty lists until those land), so the readers need no change when they do.

The socket is root-only: mode 0600, in a directory created 0700 if missing. There is no
moment when it is wider: it is bound inside a fresh private directory (mode 0700), made
0600 there, and only then renamed onto its public path (``rename`` is atomic and keeps the
inode, so a client that connects by path reaches it). Changing the umask instead would
change it for the whole process, including an application that embeds reactor.

Protocol: the client connects and sends one line, ``status`` or ``ping``; the server answers
with one JSON document (and a newline) and closes. An unknown request gets
``{"error": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import anyio
import structlog
from anyio.abc import SocketListener, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from reactor._version import __version__
from reactor.errors import ReactorError

if TYPE_CHECKING:
    from reactor.config import MonitorConfig
    from reactor.engine.runtime import Reactor

__all__ = (
    "SCHEMA_VERSION",
    "ActedStatus",
    "BackendStatus",
    "GoalStatus",
    "MonitorStatus",
    "PolicyStatus",
    "SourceStatus",
    "StatusDocument",
    "StatusSocketError",
    "StatusSocketInUse",
    "StatusUnavailable",
    "format_status",
    "query_status",
    "query_status_sync",
    "serve_status",
    "status_document",
    "to_json",
)

_log = structlog.get_logger("reactor.api")

#: Version of the document's shape; bumped when a field changes meaning or goes away
#: (adding a field does not bump it).
SCHEMA_VERSION = 1

#: Longest request line accepted, in bytes: requests are single words.
_MAX_REQUEST_BYTES = 256
#: Longest reply a client accepts, in bytes (a status document is a few KiB).
_MAX_REPLY_BYTES = 16 * 1024 * 1024
#: How long a client may take to send its request, in seconds, before it is dropped:
#: a stuck client must not keep a handler task forever.
_REQUEST_TIMEOUT_S = 5.0
#: How long the start-up check waits for a connection to an existing socket, in seconds.
_LIVENESS_TIMEOUT_S = 1.0
#: sun_path holds 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH_BYTES = 107

_SOCKET_MODE = 0o600
_DIR_MODE = 0o700


# -- the document ---------------------------------------------------------------------


class BackendStatus(TypedDict):
    """The access-monitoring backend: what the config asked for and what runs."""

    requested: str
    backend: str
    usable: bool
    reason: str


class SourceStatus(TypedDict):
    """One signal source (one bus topic).

    ``state`` is ``starting``, ``ready``, ``failed`` or ``vanished``; ``reason`` says why it
    is not ready. ``period_s`` and ``max_age_s`` are seconds; ``published``, ``failures``,
    ``dropped`` (replaced before anyone read them) and ``overruns`` (ticks skipped) count
    since start. ``last_sample_age_s`` is None before the first sample; ``stale`` is true
    when the newest sample is older than ``max_age_s`` (a policy would hold). ``summary``
    is the newest sample's summary (the fields of the ``node_sample`` log), kept when
    stale so a reader sees the last value, together with ``stale``.
    """

    state: str
    reason: str | None
    period_s: float
    max_age_s: float
    published: int
    failures: int
    dropped: int
    overruns: int
    last_sample_age_s: float | None
    stale: bool
    summary: dict[str, float | int] | None


class MonitorStatus(TypedDict):
    """One access monitor (a DAMON context or a native sampler).

    ``state`` is ``running`` (snapshots arrive), ``starting`` (none yet) or ``inactive``
    (``reason`` says why). ``targets`` and ``nr_regions`` come from the newest snapshot
    (None before it); intervals are seconds, the ones it runs with now (a monitoring
    policy tunes them online), not the configured ones. ``stale`` is true when the newest
    snapshot is older than three aggregation intervals or three ticks, whichever is longer
    (snapshots are read once per tick at most). ``summary`` is the newest snapshot's
    summary (monitored and accessed bytes, the hottest region's access count).
    ``sampling_cpu_s``: CPU seconds the native sampler has spent on this monitor since
    start (its probe's system calls with the page walks they cost the kernel, parsing,
    the region engine), in reactor's own process; None on the DAMON backend, where the
    kdamond samples in the kernel. ``snapshot_cpu_s``: on the DAMON backend, CPU seconds
    reactor has spent on this monitor's snapshots (the ``update_schemes_tried_regions``
    command and a few sysfs files per region, every tick or as ``snapshot_cpu`` spaces
    them: what monitoring costs reactor's own process there); None on the native
    backend.
    """

    name: str
    backend: str
    state: str
    reason: str | None
    targets: int | None
    nr_regions: int | None
    sample_interval_s: float | None
    aggregation_interval_s: float | None
    last_sample_age_s: float | None
    stale: bool
    summary: dict[str, float | int] | None
    sampling_cpu_s: float | None
    snapshot_cpu_s: float | None


class GoalStatus(TypedDict):
    """One goal of a policy: ``target`` and ``measurement`` are in the metric's own unit
    (a ratio 0..1 for the ratio metrics, bytes per second for ``refault_rate``).
    ``binding`` is true for the goal that decided the output (goals compose by a rule)."""

    metric: str
    target: float
    measurement: float | None
    binding: bool


class ActedStatus(TypedDict):
    """Bytes a policy acted on since start: what it asked the actuator for, and what
    measurably happened (left RSS or the page cache, changed node)."""

    requested_bytes: int
    measured_bytes: int


class PolicyStatus(TypedDict):
    """One policy: its goals, controller output and components, and what it did.

    ``output`` is in ``output_unit`` (e.g. ``bytes`` of quota per quota interval);
    ``controller`` holds the controller's components (``p``, ``i``, ``d`` and any others it
    reports). ``held`` is the reason the output is held (stale input, dry run), else None.
    ``binding`` names what decided the output at the last tick: a goal's metric (that
    goal is also marked ``binding`` in ``goals``) or a term that is no goal, such as
    ``feedforward`` (the cold-set drain) or ``no_stall_reading``; None before a tick.
    """

    name: str
    kind: str
    monitor: str
    goals: list[GoalStatus]
    binding: str | None
    output: float | None
    output_unit: str
    controller: dict[str, float | None]
    acted: ActedStatus
    held: str | None


class StatusDocument(TypedDict):
    """Everything ``reactor status`` shows; see docs/observability.md.

    ``version`` is reactor's version, ``schema`` the document's (:data:`SCHEMA_VERSION`).
    ``uptime_s`` is seconds since the runtime started (monotonic). ``ticks`` counts report
    ticks and ``tick_overruns`` the ticks they skipped. ``tick_s`` is the configured tick.
    """

    schema: int
    version: str
    pid: int
    uptime_s: float
    tick_s: float
    dry_run: bool
    backend: BackendStatus | None
    sources: dict[str, SourceStatus]
    monitors: list[MonitorStatus]
    policies: list[PolicyStatus]
    ticks: int
    tick_overruns: int


def status_document(
    reactor: Reactor,
    *,
    started_at: float | None = None,
    now: float | None = None,
    monitors: Sequence[MonitorStatus] | None = None,
    policies: Sequence[PolicyStatus] = (),
) -> StatusDocument:
    """The status of a running :class:`~reactor.engine.runtime.Reactor`, read from the loop.

    ``started_at`` and ``now`` are ``anyio.current_time()`` values (seconds, monotonic);
    ``started_at`` defaults to the reactor's ``started_at`` attribute, else ``now`` (uptime
    0). Monitors default to the configured ones with their ``access.<name>`` topics;
    policies are passed in by whoever runs them (none yet). Reading the status does not
    mark bus samples as read when the bus offers ``peek``; otherwise the status read
    counts as a read for the bus's ``dropped`` counter.
    """
    if now is None:
        now = anyio.current_time()
    if started_at is None:
        started_at = getattr(reactor, "started_at", None)
    if started_at is None:
        started_at = now
    backend = reactor.backend
    return StatusDocument(
        schema=SCHEMA_VERSION,
        version=__version__,
        pid=os.getpid(),
        uptime_s=round(max(0.0, now - started_at), 6),
        tick_s=reactor.config.reactor.tick,
        dry_run=reactor.config.reactor.dry_run,
        backend=None
        if backend is None
        else BackendStatus(
            requested=backend.requested,
            backend=backend.backend,
            usable=backend.usable,
            reason=backend.reason,
        ),
        sources={t: _source_status(reactor, t, now) for t in sorted(reactor.runners)},
        monitors=list(monitors) if monitors is not None else _monitor_statuses(reactor, now),
        policies=list(policies),
        ticks=reactor.ticks,
        tick_overruns=int(getattr(reactor, "tick_overruns", 0)),
    )


def _newest(reactor: Reactor, topic: str) -> Any:
    """The topic's newest sample (None: none yet), without counting it as a read."""
    return getattr(reactor.bus, "peek", reactor.bus.latest)(topic)


def _peek(reactor: Reactor, topic: str, now: float) -> tuple[float | None, Any]:
    """(age in seconds, summary) of the topic's newest sample, or (None, None)."""
    sample = _newest(reactor, topic)
    if sample is None:
        return None, None
    make = getattr(sample.value, "summary", None)
    return max(0.0, now - sample.stamp), make() if callable(make) else None


def _source_status(reactor: Reactor, topic: str, now: float) -> SourceStatus:
    runner = reactor.runners[topic]
    stats = reactor.bus.stats(topic)
    age, summary = _peek(reactor, topic, now)
    cfg = runner.spec.cfg
    return SourceStatus(
        state=runner.state,
        reason=runner.reason,
        period_s=cfg.period,
        max_age_s=cfg.max_age,
        published=stats.published,
        failures=stats.failures,
        dropped=stats.dropped,
        overruns=runner.ticker.overruns if runner.ticker is not None else 0,
        last_sample_age_s=None if age is None else round(age, 6),
        stale=age is None or age > cfg.max_age,
        summary=summary,
    )


def _monitor_statuses(reactor: Reactor, now: float) -> list[MonitorStatus]:
    """The configured monitors, as far as the runtime has started them."""
    # in the daemon only: the status client (`reactor status`) stays without numpy
    from reactor.engine.monitors import AccessView, access_max_age

    backend = reactor.backend.backend if reactor.backend is not None else "unknown"
    native = getattr(reactor, "native", None)
    damon = getattr(reactor, "damon", None)
    skipped = getattr(native, "skipped", ())
    out = []
    for k, monitor in enumerate(reactor.config.monitors):
        sample_s, aggregation_s = _live_intervals(reactor, monitor, backend)
        age, summary = _peek(reactor, f"access.{monitor.name}", now)
        view = getattr(_newest(reactor, f"access.{monitor.name}"), "value", None)
        max_age = access_max_age(
            view if isinstance(view, AccessView) else None,
            aggregation_s,
            reactor.config.reactor.tick,
        )
        reason = None
        if native is None and damon is None:
            state, reason = "inactive", f"no monitor runs on the {backend} backend"
        elif monitor.name in skipped:
            state, reason = "inactive", f"ops {monitor.ops} needs the DAMON backend"
        else:
            state = "starting" if age is None else "running"
        out.append(
            MonitorStatus(
                name=monitor.name,
                backend="native" if native is not None else "damon" if damon else backend,
                state=state,
                reason=reason,
                targets=None if summary is None else summary.get("targets"),
                nr_regions=None if summary is None else summary.get("regions"),
                sample_interval_s=sample_s,
                aggregation_interval_s=aggregation_s,
                last_sample_age_s=None if age is None else round(age, 6),
                # judged as the report and the policies judge it
                stale=age is None or age > max_age,
                summary=summary,
                sampling_cpu_s=_sampling_cpu_s(native, monitor.name),
                snapshot_cpu_s=_snapshot_cpu_s(damon, k),
            )
        )
    return out


def _live_intervals(reactor: Reactor, monitor: MonitorConfig, backend: str) -> tuple[float, float]:
    """The intervals the monitor runs with now, in seconds (a monitoring policy tunes
    them online): the native sampler's settings; on DAMON, those of the newest snapshot
    (read back from the kdamond's files with it); the configured ones before either."""
    native = getattr(reactor, "native", None)
    sampler = _sampler(native, monitor.name)
    if sampler is not None:
        return sampler.settings.sample_interval_s, sampler.settings.aggr_interval_s
    sample = _newest(reactor, f"access.{monitor.name}")
    snaps = getattr(getattr(sample, "value", None), "snapshots", None) or {}
    if snaps:
        newest = max(snaps.values(), key=lambda s: s.taken_at)
        return newest.sample_interval_s, newest.aggr_interval_s
    return monitor.intervals("damon" if native is None and backend == "damon" else "native")


def _sampler(native: Any, name: str) -> Any:
    """The native sampler of monitor ``name`` (None off the native backend)."""
    return getattr(native, "samplers", {}).get(name) if native is not None else None


def _sampling_cpu_s(native: Any, name: str) -> float | None:
    sampler = _sampler(native, name)
    return None if sampler is None else round(sampler.cpu_seconds(), 6)


def _snapshot_cpu_s(damon: Any, k: int) -> float | None:
    """CPU seconds spent reading monitor ``k``'s snapshots (kdamond ``k``), DAMON only."""
    driver = getattr(damon, "driver", None)
    return None if driver is None else round(driver.read_cpu_s(k), 6)


def to_json(doc: Mapping[str, Any]) -> str:
    """``doc`` as one line of strict JSON: NaN and infinities (which JSON lacks) become null."""
    return json.dumps(_finite(doc), separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# -- errors -----------------------------------------------------------------------------


class StatusSocketError(ReactorError):
    """The status socket cannot be served at ``path``; ``reason`` says why and what to do."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"status socket {path}: {reason}")


class StatusSocketInUse(StatusSocketError):
    """Another process (most likely another reactor) answers on the status socket."""

    def __init__(self, path: str) -> None:
        super().__init__(
            path,
            "another reactor is already running here (the socket accepts connections); "
            "stop it, or give this one another api.status_socket",
        )


class StatusUnavailable(ReactorError):
    """A client could not get a status: no socket, no permission, no daemon, bad reply."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(reason)


# -- the server -------------------------------------------------------------------------


async def serve_status(
    path: str,
    get_status: Callable[[], Mapping[str, Any]],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``get_status()`` on a root-only Unix socket at ``path`` until cancelled.

    Refuses to start (:class:`StatusSocketError`) when ``path`` exists and is not a
    socket, or is a socket something answers on (:class:`StatusSocketInUse`); a stale
    socket (connection refused: its daemon died) is replaced. The parent directory is
    created with mode 0700 if missing. ``task_status.started()`` is called once the socket
    accepts connections; the socket file is removed when serving stops (if it is still
    the one this call bound).
    """
    await _check_existing(path)
    _ensure_parent(path)
    sock, identity = _bind_private(path)
    try:
        listener = await SocketListener.from_socket(sock)
    except BaseException:
        sock.close()
        _remove_if_ours(path, identity)
        raise
    try:
        async with listener:
            _log.info("status_listening", path=path)
            task_status.started()
            await listener.serve(partial(_handle_client, get_status))
    finally:
        _remove_if_ours(path, identity)


async def _check_existing(path: str) -> None:
    """Refuse a path that is not a socket or that something answers on; allow a stale one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:  # e.g. a path component that is a file
        raise StatusSocketError(path, f"cannot inspect the path: {exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise StatusSocketError(
            path,
            f"exists and is not a socket ({_file_kind(st.st_mode)}); reactor will not "
            "replace it: remove it, or set api.status_socket to another path",
        )
    try:
        with anyio.fail_after(_LIVENESS_TIMEOUT_S):
            stream = await anyio.connect_unix(path)
    except ConnectionRefusedError:
        _log.info("status_socket_stale", path=path, effect="replacing it")
        return
    except FileNotFoundError:  # removed between lstat and connect
        return
    except PermissionError:
        raise StatusSocketError(
            path,
            "a socket exists that this process may not connect to, so reactor cannot tell "
            "whether another reactor serves it; run as root, or remove it if it is stale",
        ) from None
    except TimeoutError:  # something is there but does not accept (backlog full): alive
        raise StatusSocketInUse(path) from None
    await stream.aclose()
    raise StatusSocketInUse(path)


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a socket"


def _ensure_parent(path: str) -> None:
    """Create the socket's directory with mode 0700 if missing; leave an existing one be."""
    parent = Path(path).absolute().parent
    if parent.is_dir():
        return
    try:
        parent.mkdir(mode=_DIR_MODE, parents=True)
        parent.chmod(_DIR_MODE)  # the umask may have narrowed it further
    except FileExistsError:  # created concurrently: fine, it exists now
        pass
    except OSError as exc:
        raise StatusSocketError(path, f"cannot create its directory {parent}: {exc}") from None


def _bind_private(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket at ``path`` that was never reachable with a mode wider than 0600.

    Returns the socket and the (device, inode) of its file, to remove only our own file.
    """
    parent = Path(path).absolute().parent
    _check_length(path, path)
    try:
        private = Path(tempfile.mkdtemp(prefix=".status-", dir=parent))  # mode 0700
    except OSError as exc:
        raise StatusSocketError(path, f"cannot create a file in {parent}: {exc}") from None
    staged = private / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _check_length(path, str(staged))
        sock.bind(str(staged))
        staged.chmod(_SOCKET_MODE)
        sock.listen()
        staged.rename(path)
        st = os.lstat(path)
    except BaseException as exc:
        sock.close()
        staged.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StatusSocketError(path, f"cannot bind: {exc}") from None
        raise
    finally:
        with contextlib.suppress(OSError):
            private.rmdir()
    return sock, (st.st_dev, st.st_ino)


def _check_length(path: str, candidate: str) -> None:
    size = len(os.fsencode(candidate))
    if size > _MAX_SOCKET_PATH_BYTES:
        raise StatusSocketError(
            path,
            f"path too long for a Unix socket ({size} bytes while binding {candidate}; "
            f"Linux allows {_MAX_SOCKET_PATH_BYTES}): choose a shorter api.status_socket",
        )


def _remove_if_ours(path: str, identity: tuple[int, int]) -> None:
    """Remove the socket file, unless someone has replaced it with another file since."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity:
            Path(path).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        _log.warning("status_socket_not_removed", path=path, reason=str(exc))


async def _handle_client(get_status: Callable[[], Mapping[str, Any]], stream: SocketStream) -> None:
    """Read one request line, answer it, close. A misbehaving client only loses its answer."""
    async with stream:
        try:
            with anyio.fail_after(_REQUEST_TIMEOUT_S):
                line = await BufferedByteReceiveStream(stream).receive_until(
                    b"\n", _MAX_REQUEST_BYTES
                )
            reply = _answer(line.decode("utf-8", "replace").strip(), get_status)
            await stream.send(to_json(reply).encode() + b"\n")
        except (
            TimeoutError,
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.DelimiterNotFound,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ) as exc:
            _log.debug("status_client_dropped", reason=type(exc).__name__)


_REQUESTS = ("ping", "status")


def _answer(request: str, get_status: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any]:
    if request == "ping":
        return {"pong": True, "version": __version__, "pid": os.getpid()}
    if request == "status":
        try:
            return get_status()
        # A bug in a status provider must cost one answer, not the daemon: this handler
        # runs in the daemon's task group, where an exception would stop everything.
        except Exception as exc:
            _log.error("status_failed", error=repr(exc), exc_info=True)
            return {"error": f"the daemon could not build its status: {exc!r}"}
    return {"error": f"unknown request {request!r}; expected one of: {', '.join(_REQUESTS)}"}


# -- the client -------------------------------------------------------------------------


async def query_status(
    path: str, request: str = "status", *, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Ask the daemon at ``path`` for ``request`` (``status`` or ``ping``); its JSON reply.

    Raises :class:`StatusUnavailable` with a message for a person: no socket, permission
    denied (the socket is root-only), nobody listening, no answer within ``timeout_s``
    seconds, or an error reply.
    """
    try:
        with anyio.fail_after(timeout_s):
            data = await _exchange(path, request)
    except TimeoutError:
        raise StatusUnavailable(
            path, f"no answer from {path} within {timeout_s:g} s: is the daemon stuck?"
        ) from None
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise StatusUnavailable(path, f"{path} sent a reply that is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StatusUnavailable(path, f"{path} sent {type(doc).__name__}, expected an object")
    if "error" in doc:
        raise StatusUnavailable(path, f"reactor at {path} answered: {doc['error']}")
    return doc


async def _exchange(path: str, request: str) -> bytes:
    try:
        stream = await anyio.connect_unix(path)
    except FileNotFoundError:
        raise StatusUnavailable(path, f"is reactor running? no socket at {path}") from None
    except PermissionError:
        raise StatusUnavailable(
            path,
            f"permission denied on {path}: the status socket is root-only (mode 0600); "
            "run this command as root (sudo reactor status)",
        ) from None
    except ConnectionRefusedError:
        raise StatusUnavailable(
            path, f"no reactor is listening at {path} (a stale socket from a daemon that died)"
        ) from None
    except OSError as exc:
        raise StatusUnavailable(path, f"cannot connect to {path}: {exc}") from None
    async with stream:
        await stream.send(request.encode() + b"\n")
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
            size += len(chunk)
            if size > _MAX_REPLY_BYTES:
                raise StatusUnavailable(path, f"reply from {path} exceeds {_MAX_REPLY_BYTES} B")
            chunks.append(chunk)
    return b"".join(chunks)


def query_status_sync(
    path: str, request: str = "status", *, timeout_s: float = 5.0
) -> dict[str, Any]:
    """:func:`query_status` for synchronous callers (the CLI); runs its own event loop."""
    return anyio.run(partial(query_status, path, request, timeout_s=timeout_s))


# -- for people ---------------------------------------------------------------------------


def format_status(doc: Mapping[str, Any]) -> str:
    """A status document as text for a terminal (``reactor status`` without ``--json``)."""
    lines = [
        f"reactor {doc.get('version', '?')} (pid {doc.get('pid', '?')}), "
        f"up {_fmt_s(doc.get('uptime_s'))}, tick {_fmt_s(doc.get('tick_s'))}, "
        f"{doc.get('ticks', 0)} ticks ({doc.get('tick_overruns', 0)} overruns)"
        + (", DRY RUN" if doc.get("dry_run") else "")
    ]
    backend = doc.get("backend")
    if backend:
        usable = "" if backend.get("usable") else " (not usable)"
        lines.append(
            f"backend: {backend.get('backend')}{usable} (requested "
            f"{backend.get('requested')}): {backend.get('reason')}"
        )
    lines.append("sources:")
    for topic, src in sorted(doc.get("sources", {}).items()):
        lines.append("  " + _fmt_source(topic, src))
    lines.append("monitors:" + ("" if doc.get("monitors") else " none"))
    for mon in doc.get("monitors", []):
        lines.append(
            f"  {mon.get('name')}: {mon.get('backend')} {mon.get('state')}, "
            f"{mon.get('targets')} target(s), {mon.get('nr_regions')} regions"
            + (
                f", sampling CPU {mon['sampling_cpu_s']:.3f} s"
                if mon.get("sampling_cpu_s") is not None
                else ""
            )
            + (
                f", snapshot-read CPU {mon['snapshot_cpu_s']:.3f} s"
                if mon.get("snapshot_cpu_s") is not None
                else ""
            )
            + (f" ({mon['reason']})" if mon.get("reason") else "")
        )
    lines.append("policies:" + ("" if doc.get("policies") else " none"))
    for pol in doc.get("policies", []):
        lines.extend("  " + line for line in _fmt_policy(pol))
    return "\n".join(lines)


def _fmt_source(topic: str, src: Mapping[str, Any]) -> str:
    state = src.get("state", "?")
    if src.get("stale") and state == "ready":
        state = "stale"
    age = src.get("last_sample_age_s")
    text = (
        f"{topic}: {state}, every {_fmt_s(src.get('period_s'))}, age {_fmt_s(age)}, "
        f"{src.get('published', 0)} samples, {src.get('failures', 0)} failures"
    )
    if src.get("reason"):
        text += f" ({src['reason']})"
    summary = src.get("summary")
    if summary:
        text += "\n    " + " ".join(f"{k}={v}" for k, v in summary.items())
    return text


def _fmt_policy(pol: Mapping[str, Any]) -> list[str]:
    acted = pol.get("acted", {})
    out = [
        f"{pol.get('name')} ({pol.get('kind')} on {pol.get('monitor')}): output "
        f"{pol.get('output')} {pol.get('output_unit', '')}".rstrip()
        + (f", HELD: {pol['held']}" if pol.get("held") else "")
    ]
    goals = pol.get("goals", [])
    for goal in goals:
        mark = " <- binding" if goal.get("binding") else ""
        out.append(
            f"  goal {goal.get('metric')}: target {goal.get('target')}, "
            f"measured {goal.get('measurement')}{mark}"
        )
    binding = pol.get("binding")
    if binding and not any(goal.get("binding") for goal in goals):
        out.append(f"  decided by: {binding} (no goal)")
    ctl = pol.get("controller") or {}
    if ctl:
        out.append("  controller " + " ".join(f"{k}={v}" for k, v in ctl.items()))
    out.append(
        f"  acted: {acted.get('requested_bytes', 0)} B requested, "
        f"{acted.get('measured_bytes', 0)} B measured"
    )
    return out


def _fmt_s(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.3g} s"
