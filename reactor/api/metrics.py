"""Prometheus metrics over the status document, served on a small HTTP endpoint.

The exporter reads the same :class:`~reactor.api.status.StatusDocument` that ``reactor
status`` shows, through a custom collector, at scrape time: nothing is copied into metric
objects between scrapes, so the two views cannot disagree. Each exporter has its own
``CollectorRegistry`` (never prometheus_client's global one, which would register at
import and make two exporters in one process, or two tests, collide).

The HTTP side is a minimal HTTP/1.1 server on an anyio TCP listener (``GET``/``HEAD
/metrics``; anything else 404, other methods 405), one request per connection. It runs as a
task in reactor's own task group, so it starts with readiness and stops with everything
else; prometheus_client's ``start_http_server`` would run a thread outside that group, and
its collection would race the event loop that owns the bus.

Names follow Prometheus conventions: base units in the name (``_bytes``, ``_seconds``,
``_ratio`` for 0..1), ``_total`` for counters. Values from a stale sample are left out
(a missing series is how Prometheus says "unknown"); ``reactor_source_up`` and
``reactor_source_sample_age_seconds`` say why. The full list is in docs/observability.md.
"""

from __future__ import annotations

import contextlib
import gzip
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

__all__ = ("StatusCollector", "build_registry", "parse_listen", "serve_metrics")

_log = structlog.get_logger("reactor.api")

GetStatus = Callable[[], Mapping[str, Any]]

#: Longest request head accepted, in bytes (Prometheus sends a few hundred).
_MAX_HEAD_BYTES = 16 * 1024
#: Seconds a client may take to send its request head before it is dropped.
_REQUEST_TIMEOUT_S = 10.0

_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")


# -- the collector ----------------------------------------------------------------------


class StatusCollector:
    """A prometheus_client collector that turns one status document into metric families.

    ``get_status`` is called once per scrape, on the thread that scrapes: with
    :func:`serve_metrics` that is the event loop, where the bus may be read safely.
    """

    def __init__(self, get_status: GetStatus) -> None:
        self._get_status = get_status

    def collect(self) -> Iterator[Metric]:
        doc = self._get_status()
        yield from _process_metrics(doc)
        yield from _source_metrics(doc.get("sources", {}))
        yield from _signal_metrics(doc.get("sources", {}))
        yield from _monitor_metrics(doc.get("monitors", []))
        yield from _policy_metrics(doc.get("policies", []))


def build_registry(get_status: GetStatus) -> CollectorRegistry:
    """A fresh registry holding one :class:`StatusCollector` (nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(get_status))
    return registry


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _num(value: Any) -> float | None:
    """A number to export, or None (absent, not a number, or a bool that is not meant)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _process_metrics(doc: Mapping[str, Any]) -> Iterator[Metric]:
    info = _gauge("reactor_build_info", "reactor's version (value 1)", ["version"])
    info.add_metric([str(doc.get("version", ""))], 1)
    yield info
    backend = doc.get("backend")
    if backend:
        fam = _gauge(
            "reactor_backend_info",
            "The access-monitoring backend in use and the one requested (value 1)",
            ["backend", "requested", "usable"],
        )
        labels = [str(backend.get("backend")), str(backend.get("requested"))]
        fam.add_metric([*labels, str(bool(backend.get("usable"))).lower()], 1)
        yield fam
    for name, key, help_text in (
        ("reactor_uptime_seconds", "uptime_s", "Seconds since the runtime started"),
        ("reactor_tick_seconds", "tick_s", "Configured report tick, in seconds"),
    ):
        value = _num(doc.get(key))
        if value is not None:
            fam = _gauge(name, help_text)
            fam.add_metric([], value)
            yield fam
    dry = _gauge("reactor_dry_run", "1 when decisions are computed and logged but not applied")
    dry.add_metric([], 1 if doc.get("dry_run") else 0)
    yield dry
    for name, key, help_text in (
        ("reactor_ticks_total", "ticks", "Report ticks run since start"),
        ("reactor_tick_overruns_total", "tick_overruns", "Report ticks skipped (ran late)"),
    ):
        count = _counter(name, help_text)
        count.add_metric([], _num(doc.get(key)) or 0.0)
        yield count


def _source_metrics(sources: Mapping[str, Any]) -> Iterator[Metric]:
    up = _gauge("reactor_source_up", "1 when the source's last read succeeded", ["topic"])
    stale = _gauge(
        "reactor_source_stale", "1 when the newest sample is older than its max age", ["topic"]
    )
    age = _gauge(
        "reactor_source_sample_age_seconds", "Age of the newest sample, in seconds", ["topic"]
    )
    period = _gauge("reactor_source_period_seconds", "Sampling period, in seconds", ["topic"])
    counters = {
        "published": _counter(
            "reactor_source_samples_total", "Samples published to the bus", ["topic"]
        ),
        "failures": _counter("reactor_source_failures_total", "Failed reads", ["topic"]),
        "dropped": _counter(
            "reactor_source_dropped_total",
            "Samples replaced on the bus before anyone read them",
            ["topic"],
        ),
        "overruns": _counter(
            "reactor_source_overruns_total", "Sampling ticks skipped (ran late)", ["topic"]
        ),
    }
    for topic, src in sorted(sources.items()):
        up.add_metric([topic], 1 if src.get("state") == "ready" else 0)
        stale.add_metric([topic], 1 if src.get("stale") else 0)
        if (value := _num(src.get("last_sample_age_s"))) is not None:
            age.add_metric([topic], value)
        if (value := _num(src.get("period_s"))) is not None:
            period.add_metric([topic], value)
        for key, fam in counters.items():
            fam.add_metric([topic], _num(src.get(key)) or 0.0)
    yield from (up, stale, age, period, *counters.values())


# -- signals: one family per meaning, fed from the fresh sources' summaries -------------

#: meminfo summary key -> (metric name, help)
_MEMINFO = {
    "mem_available_bytes": ("reactor_memory_available_bytes", "MemAvailable, in bytes"),
    "available_ratio": ("reactor_memory_available_ratio", "MemAvailable / MemTotal (0..1)"),
    "anon_bytes": ("reactor_memory_anon_bytes", "Anonymous LRU memory, in bytes"),
    "file_bytes": ("reactor_memory_file_bytes", "File LRU memory (page cache), in bytes"),
    "swap_used_bytes": ("reactor_swap_used_bytes", "Swap in use, in bytes"),
}

_TIER_KEY = re.compile(r"tier(\d+)_used_(bytes|ratio)")
_NODE_KEY = re.compile(r"node(\d+)_(score|hpage_free_blocks)")


class _Families:
    """Families created on first use, yielded in creation order."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = _gauge(name, doc, labels)
        assert isinstance(fam, GaugeMetricFamily)
        return fam

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


def _signal_metrics(sources: Mapping[str, Any]) -> Iterator[Metric]:
    fams = _Families()
    for topic, src in sorted(sources.items()):
        summary = src.get("summary")
        if not summary or src.get("stale"):
            continue
        if topic.startswith("psi."):
            _psi(fams, topic, summary)
        elif topic == "meminfo":
            _meminfo(fams, summary)
        elif topic == "vmstat":
            _vmstat(fams, summary)
        elif topic == "tiers":
            _tiers(fams, summary)
        elif topic == "fragmentation":
            _fragmentation(fams, summary)
        elif topic.startswith("cgroup."):
            _cgroup(fams, topic.removeprefix("cgroup."), summary)
    yield from fams


def _psi(fams: _Families, topic: str, summary: Mapping[str, Any]) -> None:
    # psi.<resource> is the node; psi.cgroup.<resource> the configured cgroup's file.
    parts = topic.split(".")
    scope, resource = ("cgroup", parts[2]) if len(parts) == 3 else ("node", parts[1])
    for key, name, kind in (
        ("some_share", "reactor_psi_some_ratio", "some"),
        ("full_share", "reactor_psi_full_ratio", "full"),
    ):
        if (value := _num(summary.get(key))) is not None:
            fams.gauge(
                name,
                f"Share of the last sample interval in which {kind} tasks stalled on the "
                "resource (0..1), from PSI total= counters",
                ["resource", "scope"],
            ).add_metric([resource, scope], value)


def _meminfo(fams: _Families, summary: Mapping[str, Any]) -> None:
    for key, (name, help_text) in _MEMINFO.items():
        if (value := _num(summary.get(key))) is not None:
            fams.gauge(name, help_text).add_metric([], value)


def _vmstat(fams: _Families, summary: Mapping[str, Any]) -> None:
    for key, raw in sorted(summary.items()):
        if key.endswith("_per_s") and (value := _num(raw)) is not None:
            fams.gauge(
                "reactor_vmstat_rate",
                "/proc/vmstat counter rate over the last sample interval, per second, in the "
                "counter's own unit (pages; faults for pgmajfault)",
                ["counter"],
            ).add_metric([key.removesuffix("_per_s")], value)


def _tiers(fams: _Families, summary: Mapping[str, Any]) -> None:
    for key, raw in sorted(summary.items()):
        value = _num(raw)
        match = _TIER_KEY.fullmatch(key)
        if value is None or match is None:
            continue
        tier, unit = match.groups()
        help_text = "Memory used in the tier, in bytes" if unit == "bytes" else "Tier used (0..1)"
        fams.gauge(f"reactor_tier_used_{unit}", help_text, ["tier"]).add_metric([tier], value)
    if (value := _num(summary.get("demotion_enabled"))) is not None:
        fams.gauge(
            "reactor_tier_demotion_enabled", "1 when the kernel demotes to slower tiers"
        ).add_metric([], value)


def _fragmentation(fams: _Families, summary: Mapping[str, Any]) -> None:
    for key, raw in sorted(summary.items()):
        value = _num(raw)
        match = _NODE_KEY.fullmatch(key)
        if value is None or match is None:
            continue
        node, what = match.groups()
        if what == "score":
            fam = fams.gauge(
                "reactor_fragmentation_score",
                "The node's fragmentation score as proactive compaction computes it (0..100)",
                ["node"],
            )
        else:
            fam = fams.gauge(
                "reactor_hpage_free_blocks",
                "Free blocks of huge page size on the node",
                ["node"],
            )
        fam.add_metric([node], value)
    if (value := _num(summary.get("max_unusable_hpage"))) is not None:
        fams.gauge(
            "reactor_fragmentation_unusable_hpage_ratio",
            "Worst zone's unusable free space index at the huge page order (0..1)",
        ).add_metric([], value)


def _cgroup(fams: _Families, name: str, summary: Mapping[str, Any]) -> None:
    if (value := _num(summary.get("usage_bytes"))) is not None:
        fams.gauge(
            "reactor_cgroup_memory_usage_bytes", "The cgroup's memory usage, in bytes", ["cgroup"]
        ).add_metric([name], value)
    if (value := _num(summary.get("limit_hits"))) is not None:
        fams.gauge(
            "reactor_cgroup_limit_hits",
            "Times usage hit the limit during the last sample interval",
            ["cgroup"],
        ).add_metric([name], value)
    if (value := _num(summary.get("psi_some_share"))) is not None:
        fams.gauge(
            "reactor_cgroup_memory_psi_some_ratio",
            "Share of the last sample interval in which some of the cgroup's tasks stalled "
            "on memory (0..1)",
            ["cgroup"],
        ).add_metric([name], value)
    for key, raw in sorted(summary.items()):
        if key.endswith("_per_s") and (value := _num(raw)) is not None:
            fams.gauge(
                "reactor_cgroup_rate",
                "memory.stat counter rate over the last sample interval, per second",
                ["cgroup", "counter"],
            ).add_metric([name, key.removesuffix("_per_s")], value)


# -- monitors and policies ----------------------------------------------------------------


def _monitor_metrics(monitors: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
    up = _gauge("reactor_monitor_up", "1 when the monitor runs", ["monitor", "backend"])
    regions = _gauge("reactor_monitor_regions", "Regions the monitor tracks", ["monitor"])
    targets = _gauge("reactor_monitor_targets", "Targets the monitor watches", ["monitor"])
    age = _gauge(
        "reactor_monitor_snapshot_age_seconds",
        "Age of the newest snapshot, in seconds",
        ["monitor"],
    )
    sizes = {
        "monitored_bytes": _gauge(
            "reactor_monitor_monitored_bytes", "Bytes the monitor's regions cover", ["monitor"]
        ),
        "accessed_bytes": _gauge(
            "reactor_monitor_accessed_bytes",
            "Bytes in regions seen accessed in the newest snapshot",
            ["monitor"],
        ),
    }
    cpu = _counter(
        "reactor_monitor_sampling_cpu_seconds",
        "CPU seconds reactor's native sampler spent on the monitor (probe system calls "
        "with their page walks, parsing, region engine); absent on the DAMON backend",
        ["monitor"],
    )
    snapshot_cpu = _counter(
        "reactor_monitor_snapshot_cpu_seconds",
        "CPU seconds reactor spent reading the monitor's DAMON snapshots (a few sysfs "
        "files per region each tick); absent on the native backend",
        ["monitor"],
    )
    for mon in monitors:
        name = str(mon.get("name"))
        up.add_metric([name, str(mon.get("backend"))], 1 if mon.get("state") == "running" else 0)
        if (value := _num(mon.get("sampling_cpu_s"))) is not None:
            cpu.add_metric([name], value)
        if (value := _num(mon.get("snapshot_cpu_s"))) is not None:
            snapshot_cpu.add_metric([name], value)
        if (value := _num(mon.get("last_sample_age_s"))) is not None:
            age.add_metric([name], value)
        if mon.get("stale"):
            continue
        if (value := _num(mon.get("nr_regions"))) is not None:
            regions.add_metric([name], value)
        if (value := _num(mon.get("targets"))) is not None:
            targets.add_metric([name], value)
        summary = mon.get("summary") or {}
        for key, fam in sizes.items():
            if (value := _num(summary.get(key))) is not None:
                fam.add_metric([name], value)
    yield from (up, regions, targets, age, cpu, snapshot_cpu, *sizes.values())


def _policy_metrics(policies: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
    labels = ["policy", "metric"]
    info = _gauge(
        "reactor_policy_info", "A policy's action and monitor (value 1)", ["policy", "action"]
    )
    output = _gauge(
        "reactor_policy_output",
        "Controller output, in the policy's output unit (see reactor status)",
        ["policy", "unit"],
    )
    held = _gauge("reactor_policy_held", "1 while the policy holds its output", ["policy"])
    component = _gauge(
        "reactor_policy_controller_component",
        "Controller terms (p, i, d, ...) in output units",
        ["policy", "component"],
    )
    measurement = _gauge(
        "reactor_policy_goal_measurement", "Goal metric as measured (metric's unit)", labels
    )
    target = _gauge("reactor_policy_goal_target", "Goal target (metric's unit)", labels)
    binding = _gauge(
        "reactor_policy_goal_binding", "1 for the goal that decided the output", labels
    )
    acted = _counter(
        "reactor_policy_acted_bytes_total",
        "Bytes acted on since start: requested of the actuator, and measured to have moved",
        ["policy", "kind"],
    )
    for pol in policies:
        name = str(pol.get("name"))
        info.add_metric([name, str(pol.get("kind"))], 1)
        if (value := _num(pol.get("output"))) is not None:
            output.add_metric([name, str(pol.get("output_unit", ""))], value)
        held.add_metric([name], 1 if pol.get("held") else 0)
        for term, raw in sorted((pol.get("controller") or {}).items()):
            if (value := _num(raw)) is not None:
                component.add_metric([name, term], value)
        for goal in pol.get("goals", []):
            key = [name, str(goal.get("metric"))]
            if (value := _num(goal.get("measurement"))) is not None:
                measurement.add_metric(key, value)
            if (value := _num(goal.get("target"))) is not None:
                target.add_metric(key, value)
            binding.add_metric(key, 1 if goal.get("binding") else 0)
        done = pol.get("acted") or {}
        acted.add_metric([name, "requested"], _num(done.get("requested_bytes")) or 0.0)
        acted.add_metric([name, "measured"], _num(done.get("measured_bytes")) or 0.0)
    yield from (info, output, held, component, measurement, target, binding, acted)


# -- HTTP -------------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port); port 0 asks for any free port."""
    match = _LISTEN.fullmatch(listen)
    if match is None or int(match.group("port")) > 65535:
        raise ValueError(f"expected host:port such as 127.0.0.1:9464 or [::1]:9464, got {listen!r}")
    return match.group("host").strip("[]"), int(match.group("port"))


async def serve_metrics(
    listen: str,
    get_status: GetStatus,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` on ``listen`` (``host:port``) until cancelled.

    ``task_status.started(port)`` reports the bound port once connections are accepted
    (the ephemeral one when ``listen`` asks for port 0). Each scrape builds the status
    document once, on the event loop.
    """
    host, port = parse_listen(listen)
    registry = build_registry(get_status)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = listener.listeners[0].extra(SocketAttribute.local_port)
        _log.info("metrics_listening", listen=listen, port=bound)
        task_status.started(bound)
        await listener.serve(partial(_handle_http, registry))


async def _handle_http(registry: CollectorRegistry, stream: SocketStream) -> None:
    """Answer one request and close; a client that misbehaves only loses its answer."""
    async with stream:
        try:
            with anyio.fail_after(_REQUEST_TIMEOUT_S):
                head = await BufferedByteReceiveStream(stream).receive_until(
                    b"\r\n\r\n", _MAX_HEAD_BYTES
                )
            await stream.send(_respond(head, registry))
        except anyio.DelimiterNotFound:
            await _send_quietly(stream, _response(431, "request head too large\n"))
        except (
            TimeoutError,
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ) as exc:
            _log.debug("metrics_client_dropped", reason=type(exc).__name__)


async def _send_quietly(stream: SocketStream, data: bytes) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.send(data)


def _respond(head: bytes, registry: CollectorRegistry) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response(400, "expected an HTTP/1.x request line\n")
    method, target, _ = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if target.split("?", 1)[0] != "/metrics":
        return _response(404, "not found: reactor serves /metrics\n")
    if method not in ("GET", "HEAD"):
        return _response(405, "method not allowed\n", extra={"Allow": "GET, HEAD"})
    encoder, content_type = choose_encoder(headers.get("accept", ""))
    try:
        body = encoder(registry)
    # A bug in a status provider must cost one scrape, not the daemon (this handler runs
    # in the daemon's task group); Prometheus records the failed scrape as up == 0.
    except Exception as exc:
        _log.error("metrics_failed", error=repr(exc), exc_info=True)
        return _response(500, f"collecting metrics failed: {exc!r}\n")
    extra = {}
    if "gzip" in headers.get("accept-encoding", ""):
        body = gzip.compress(body)
        extra["Content-Encoding"] = "gzip"
    return _response(200, body, content_type=content_type, extra=extra, head=method == "HEAD")


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def _response(
    code: int,
    body: bytes | str,
    *,
    content_type: str = "text/plain; charset=utf-8",
    extra: Mapping[str, str] | None = None,
    head: bool = False,
) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    fields = {
        "Content-Type": content_type,
        "Content-Length": str(len(data)),
        "Connection": "close",
        **(extra or {}),
    }
    lines = [f"HTTP/1.1 {code} {_REASONS[code]}", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else data)
