"""reactor.api: how a running reactor reports on itself.

* :mod:`reactor.api.status` — the status document, the root-only Unix socket that serves
  it (``reactor status``) and its client;
* :mod:`reactor.api.metrics` — a Prometheus exporter over the same document;
* :mod:`reactor.api.record` — tick recordings (``--record FILE``) and their reader.

Nothing is re-exported here, so importing one of them does not import the others (the
metrics module pulls in prometheus_client). See docs/observability.md.
"""

from __future__ import annotations

__all__: tuple[str, ...] = ()
