"""docs/observability.md stays in step with the exporter and the status document."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reactor.api.metrics import build_registry
from reactor.api.status import MonitorStatus, PolicyStatus, SourceStatus, StatusDocument
from tests.unit.api.test_metrics import DOC

TEXT = (Path(__file__).parents[3] / "docs" / "observability.md").read_text()


def exported_names() -> set[str]:
    """Every metric name the exporter writes for a document with every section filled."""
    text = generate_latest(build_registry(lambda: DOC)).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def documented_names() -> set[str]:
    """Every reactor_* name in the metrics table of the docs."""
    table = TEXT.split("## Prometheus metrics", 1)[1].split("## Recordings", 1)[0]
    return set(re.findall(r"`(reactor_[a-z_]+)`", table))


def test_every_exported_metric_is_documented() -> None:
    """Each metric name the exporter writes appears in docs/observability.md."""
    missing = exported_names() - documented_names()
    assert not missing, f"undocumented metrics: {sorted(missing)}"


def test_every_documented_metric_is_exported() -> None:
    """Each metric name in the docs' table is written for a full document (no stale docs)."""
    stale = documented_names() - exported_names()
    assert not stale, f"documented but never exported: {sorted(stale)}"


def test_every_status_field_is_documented() -> None:
    """Each field of the status document's types is named in the docs."""
    fields = (
        set(StatusDocument.__annotations__)
        | set(SourceStatus.__annotations__)
        | set(MonitorStatus.__annotations__)
        | set(PolicyStatus.__annotations__)
    )
    missing = {
        f for f in fields if f"`{f}" not in TEXT and f"{f}`" not in TEXT and f'"{f}"' not in TEXT
    }
    assert not missing, f"undocumented status fields: {sorted(missing)}"
