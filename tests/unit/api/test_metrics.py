"""The Prometheus exporter: names, labels and values over a real ephemeral TCP port."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from reactor.api.metrics import build_registry, parse_listen, serve_metrics

DOC: dict[str, Any] = {
    "schema": 1,
    "version": "9.9.9",
    "pid": 1,
    "uptime_s": 12.5,
    "tick_s": 1.0,
    "dry_run": True,
    "backend": {"requested": "auto", "backend": "native", "usable": True, "reason": "r"},
    "ticks": 12,
    "tick_overruns": 1,
    "sources": {
        "psi.memory": {
            "state": "ready",
            "reason": None,
            "period_s": 1.0,
            "max_age_s": 3.0,
            "published": 12,
            "failures": 0,
            "dropped": 2,
            "overruns": 0,
            "last_sample_age_s": 0.5,
            "stale": False,
            "summary": {"some_share": 0.004, "some_avg10_pct": 0.3, "full_share": 0.001},
        },
        "psi.cgroup.memory": {
            "state": "ready",
            "period_s": 1.0,
            "published": 3,
            "failures": 0,
            "dropped": 0,
            "last_sample_age_s": 0.1,
            "stale": False,
            "summary": {"some_share": 0.02},
        },
        "psi.io": {
            "state": "failed",
            "reason": "gone",
            "period_s": 1.0,
            "published": 5,
            "failures": 7,
            "dropped": 0,
            "last_sample_age_s": 30.0,
            "stale": True,
            "summary": {"some_share": 0.9},
        },
        "meminfo": {
            "state": "ready",
            "period_s": 2.0,
            "published": 6,
            "failures": 0,
            "dropped": 0,
            "last_sample_age_s": 1.0,
            "stale": False,
            "summary": {
                "mem_available_bytes": 8 * 2**30,
                "available_ratio": 0.5,
                "anon_bytes": 2**30,
                "file_bytes": 2**31,
                "swap_used_bytes": 0,
            },
        },
        "vmstat": {
            "state": "ready",
            "period_s": 1.0,
            "published": 11,
            "failures": 0,
            "dropped": 0,
            "last_sample_age_s": 0.2,
            "stale": False,
            "summary": {"pgscan_per_s": 10.5, "pgmajfault_per_s": 1.0},
        },
        "tiers": {
            "state": "ready",
            "period_s": 5.0,
            "published": 2,
            "failures": 0,
            "dropped": 0,
            "last_sample_age_s": 1.0,
            "stale": False,
            "summary": {
                "nodes": 2,
                "tier4_used_bytes": 2**30,
                "tier4_used_ratio": 0.25,
                "demotion_enabled": 1,
            },
        },
        "fragmentation": {
            "state": "ready",
            "period_s": 5.0,
            "published": 2,
            "failures": 0,
            "dropped": 0,
            "last_sample_age_s": 1.0,
            "stale": False,
            "summary": {
                "node0_score": 11,
                "node0_hpage_free_blocks": 3603,
                "max_unusable_hpage": 0.137,
            },
        },
        "cgroup.web": {
            "state": "ready",
            "period_s": 1.0,
            "published": 1,
            "failures": 0,
            "dropped": 0,
            "last_sample_age_s": 0.2,
            "stale": False,
            "summary": {
                "usage_bytes": 4096,
                "limit_hits": 0,
                "pgscan_per_s": 3.0,
                "psi_some_share": 0.01,
            },
        },
    },
    "monitors": [
        {
            "name": "node",
            "backend": "native",
            "state": "running",
            "targets": 2,
            "nr_regions": 40,
            "last_sample_age_s": 0.5,
            "stale": False,
            "summary": {"monitored_bytes": 2**20, "accessed_bytes": 2**18},
            "sampling_cpu_s": 12.5,
            "snapshot_cpu_s": None,
        },
        {
            "name": "app",
            "backend": "damon",
            "state": "running",
            "stale": False,
            "sampling_cpu_s": None,
            "snapshot_cpu_s": 0.75,
        },
    ],
    "policies": [
        {
            "name": "cold",
            "kind": "reclaim",
            "monitor": "node",
            "goals": [
                {
                    "metric": "memory_psi_some",
                    "target": 0.005,
                    "measurement": 0.004,
                    "binding": True,
                },
                {"metric": "free_ratio", "target": 0.1, "measurement": None, "binding": False},
            ],
            "output": 65536.0,
            "output_unit": "bytes",
            "controller": {"p": 1.5, "i": -0.5, "d": None},
            "acted": {"requested_bytes": 1000, "measured_bytes": 800},
            "held": None,
        }
    ],
}


@asynccontextmanager
async def exporter(
    get_status: Callable[[], Mapping[str, Any]] = lambda: DOC,
) -> AsyncIterator[int]:
    """Serve metrics on an ephemeral loopback port for the block; yields the port."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, "127.0.0.1:0", get_status)
        yield port
        tg.cancel_scope.cancel()


async def http(
    port: int, target: str = "/metrics", method: str = "GET", headers: Mapping[str, str] = {}
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 request; the status code, headers (lower-case names) and body."""
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: localhost",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            try:
                data += await stream.receive()
            except anyio.EndOfStream:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    if method != "HEAD":  # HEAD states the length GET would send, and sends nothing
        assert int(parsed["content-length"]) == len(body)
    return int(status_line.split(" ")[1]), parsed, body


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.mark.anyio
async def test_metrics_endpoint_exports_the_status_document() -> None:
    """GET /metrics on an ephemeral port parses back with the expected names, labels, values."""
    async with exporter() as port:
        assert port > 0
        code, headers, body = await http(port)
    assert code == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(body.decode())
    expected = {
        key("reactor_build_info", version="9.9.9"): 1,
        key("reactor_backend_info", backend="native", requested="auto", usable="true"): 1,
        key("reactor_uptime_seconds"): 12.5,
        key("reactor_dry_run"): 1,
        key("reactor_ticks_total"): 12,
        key("reactor_tick_overruns_total"): 1,
        key("reactor_source_up", topic="psi.memory"): 1,
        key("reactor_source_up", topic="psi.io"): 0,
        key("reactor_source_stale", topic="psi.io"): 1,
        key("reactor_source_samples_total", topic="psi.memory"): 12,
        key("reactor_source_failures_total", topic="psi.io"): 7,
        key("reactor_source_dropped_total", topic="psi.memory"): 2,
        key("reactor_source_sample_age_seconds", topic="meminfo"): 1.0,
        key("reactor_source_period_seconds", topic="meminfo"): 2.0,
        key("reactor_psi_some_ratio", resource="memory", scope="node"): 0.004,
        key("reactor_psi_full_ratio", resource="memory", scope="node"): 0.001,
        key("reactor_psi_some_ratio", resource="memory", scope="cgroup"): 0.02,
        key("reactor_memory_available_bytes"): 8 * 2**30,
        key("reactor_memory_available_ratio"): 0.5,
        key("reactor_vmstat_rate", counter="pgscan"): 10.5,
        key("reactor_vmstat_rate", counter="pgmajfault"): 1.0,
        key("reactor_cgroup_memory_usage_bytes", cgroup="web"): 4096,
        key("reactor_tier_used_bytes", tier="4"): 2**30,
        key("reactor_tier_used_ratio", tier="4"): 0.25,
        key("reactor_tier_demotion_enabled"): 1,
        key("reactor_fragmentation_score", node="0"): 11,
        key("reactor_hpage_free_blocks", node="0"): 3603,
        key("reactor_fragmentation_unusable_hpage_ratio"): 0.137,
        key("reactor_cgroup_rate", cgroup="web", counter="pgscan"): 3.0,
        key("reactor_cgroup_memory_psi_some_ratio", cgroup="web"): 0.01,
        key("reactor_swap_used_bytes"): 0,
        key("reactor_monitor_up", monitor="node", backend="native"): 1,
        key("reactor_monitor_regions", monitor="node"): 40,
        key("reactor_monitor_snapshot_age_seconds", monitor="node"): 0.5,
        key("reactor_monitor_accessed_bytes", monitor="node"): 2**18,
        key("reactor_monitor_sampling_cpu_seconds_total", monitor="node"): 12.5,
        key("reactor_monitor_snapshot_cpu_seconds_total", monitor="app"): 0.75,
        key("reactor_policy_info", policy="cold", action="reclaim"): 1,
        key("reactor_policy_output", policy="cold", unit="bytes"): 65536,
        key("reactor_policy_held", policy="cold"): 0,
        key("reactor_policy_controller_component", policy="cold", component="p"): 1.5,
        key("reactor_policy_controller_component", policy="cold", component="i"): -0.5,
        key("reactor_policy_goal_measurement", policy="cold", metric="memory_psi_some"): 0.004,
        key("reactor_policy_goal_target", policy="cold", metric="memory_psi_some"): 0.005,
        key("reactor_policy_goal_target", policy="cold", metric="free_ratio"): 0.1,
        key("reactor_policy_goal_binding", policy="cold", metric="memory_psi_some"): 1,
        key("reactor_policy_goal_binding", policy="cold", metric="free_ratio"): 0,
        key("reactor_policy_acted_bytes_total", policy="cold", kind="requested"): 1000,
        key("reactor_policy_acted_bytes_total", policy="cold", kind="measured"): 800,
    }
    assert {k: got.get(k) for k in expected} == expected
    # unknown or stale values are absent, not zero
    assert key("reactor_psi_some_ratio", resource="io", scope="node") not in got
    assert key("reactor_monitor_snapshot_cpu_seconds_total", monitor="node") not in got
    assert key("reactor_monitor_sampling_cpu_seconds_total", monitor="app") not in got
    assert key("reactor_policy_goal_measurement", policy="cold", metric="free_ratio") not in got
    assert key("reactor_policy_controller_component", policy="cold", component="d") not in got


@pytest.mark.anyio
async def test_types_and_units_follow_prometheus_conventions() -> None:
    """Counters are typed counter and end in _total; every name starts with reactor_."""
    async with exporter() as port:
        _, _, body = await http(port)
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    assert all(name.startswith("reactor_") for name in families)
    assert families["reactor_source_samples"] == "counter"
    assert families["reactor_policy_acted_bytes"] == "counter"
    assert families["reactor_memory_available_bytes"] == "gauge"


@pytest.mark.anyio
@pytest.mark.parametrize("target", ["/", "/metricsx", "/status", "/metrics/extra"])
async def test_other_paths_are_404(target: str) -> None:
    """Any path but /metrics is 404 Not Found."""
    async with exporter() as port:
        code, _, body = await http(port, target)
    assert code == 404
    assert b"/metrics" in body


@pytest.mark.anyio
async def test_other_methods_are_405_and_head_has_no_body() -> None:
    """POST /metrics is 405 with Allow; HEAD /metrics is 200 with a length and no body."""
    async with exporter() as port:
        code, headers, _ = await http(port, method="POST")
        head_code, head_headers, head_body = await http(port, method="HEAD")
        query_code, _, _ = await http(port, "/metrics?name[]=x")
    assert code == 405 and headers["allow"] == "GET, HEAD"
    assert head_code == 200 and head_body == b"" and int(head_headers["content-length"]) > 0
    assert query_code == 200


@pytest.mark.anyio
async def test_gzip_and_openmetrics_are_negotiated() -> None:
    """Accept-Encoding gzip compresses; an OpenMetrics Accept gets OpenMetrics text."""
    accept = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
    async with exporter() as port:
        _, zipped_headers, zipped = await http(port, headers={"Accept-Encoding": "gzip"})
        _, om_headers, om_body = await http(port, headers={"Accept": accept})
    assert zipped_headers["content-encoding"] == "gzip"
    assert key("reactor_ticks_total") in samples(gzip.decompress(zipped).decode())
    assert om_headers["content-type"].startswith("application/openmetrics-text")
    names = {f.name for f in openmetrics_families(om_body.decode())}
    assert "reactor_policy_acted_bytes" in names


@pytest.mark.anyio
async def test_a_failing_provider_is_a_500_and_the_exporter_survives() -> None:
    """If get_status raises, that scrape is a 500 and the next one works."""
    calls = []

    def provide() -> Mapping[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return DOC

    async with exporter(provide) as port:
        first, _, body = await http(port)
        second, _, _ = await http(port)
    assert first == 500 and b"boom" in body
    assert second == 200


@pytest.mark.anyio
async def test_bad_requests_do_not_stop_the_exporter() -> None:
    """Garbage, a client that hangs up, and a huge head each fail alone."""
    async with exporter() as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"hello\r\n\r\n")
            assert (await stream.receive()).startswith(b"HTTP/1.1 400 ")
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /met")
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000)
            assert (await stream.receive()).startswith(b"HTTP/1.1 431 ")
        code, _, _ = await http(port)
    assert code == 200


@pytest.mark.anyio
async def test_two_exporters_in_one_process_do_not_collide() -> None:
    """Each exporter has its own registry: two run side by side with their own documents."""
    other = {**DOC, "ticks": 99}
    async with exporter() as first, exporter(lambda: other) as second:
        assert first != second
        _, _, a = await http(first)
        _, _, b = await http(second)
    assert samples(a.decode())[key("reactor_ticks_total")] == 12
    assert samples(b.decode())[key("reactor_ticks_total")] == 99


def test_registry_collects_lazily_and_on_each_scrape() -> None:
    """Registering the collector does not build a status; each scrape builds one."""
    calls = []

    def provide() -> Mapping[str, Any]:
        calls.append(1)
        return DOC

    registry = build_registry(provide)
    assert calls == []
    generate_latest(registry)
    generate_latest(registry)
    assert len(calls) == 2


def test_empty_document_still_exports_process_metrics() -> None:
    """A minimal document (no sources, monitors or policies) exports valid text."""
    text = generate_latest(build_registry(lambda: {"version": "1", "ticks": 0})).decode()
    got = samples(text)
    assert got[key("reactor_ticks_total")] == 0
    assert got[key("reactor_build_info", version="1")] == 1


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    """host:port and [v6]:port split into a host and a port number."""
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1:99999", "host:", ":80"])
def test_parse_listen_rejects_malformed(listen: str) -> None:
    """A listen address without host, without port or out of range is rejected with it quoted."""
    with pytest.raises(ValueError, match=r"expected host:port .*got '"):
        parse_listen(listen)
