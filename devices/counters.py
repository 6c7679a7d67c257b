"""What this server process counted on the device path, as Prometheus counters.

The device consumer and the frame limits increment them; `walle_web/metrics.py` exposes
`REGISTRY` next to the database-wide gauges and the socket registry's numbers. Counters are per process: a scrape of each
server process (or a sum over them) gives the fleet's total.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics

# A counter's *_created sample says when this process started counting; the uptime of the
# process says the same, and the extra series only doubles what Prometheus stores.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)


def _counter(name: str, help_text: str) -> Counter:
    # The client adds the _total suffix of a counter.
    return Counter(f"walle_process_{name}", help_text, registry=REGISTRY)


REPORTS_RECEIVED = _counter("reports_received", "Deployment reports received by this process.")
UPLOADS_RECEIVED = _counter("uploads_received", "Tunnel items received by this process.")
FRAMES_REJECTED = _counter(
    "frames_rejected", "Device frames answered with an error by this process."
)
MESSAGES_DEFERRED = _counter(
    "messages_deferred",
    "Device messages answered 'busy, retry_after' because the ingest queue was full.",
)
HANDSHAKES_DEFERRED = _counter(
    "handshakes_deferred", "Device handshakes closed with 1013 (try again later) under overload."
)
NOTICE_FANOUT_SECONDS = _counter(
    "notice_fanout_seconds",
    "Wall seconds this process spent writing notices to its sockets, first frame to last.",
)
