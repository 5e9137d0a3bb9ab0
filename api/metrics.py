"""Prometheus metrics of the API: requests by route and status, latency, sockets, caches.

Routes are labelled by their template (``/v1/bars/{symbol}``), never by the raw path, so the
series stay few whatever callers send. With several workers (``--workers``) each counts into
files under ``PROMETHEUS_MULTIPROC_DIR`` (``python -m api`` makes one) and ``/metrics`` sums them.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

REQUESTS: Final = Counter(
    "condvest_api_requests_total", "HTTP requests answered", ("method", "route", "status")
)
LATENCY: Final = Histogram(
    "condvest_api_request_duration_seconds",
    "Time from a request's arrival to the start of its answer's body",
    ("method", "route"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SOCKETS: Final = Gauge(
    "condvest_api_websockets_open", "WebSockets open now", multiprocess_mode="livesum"
)
CACHE: Final = Counter(
    "condvest_api_cache_lookups_total", "Cache lookups by cache and result", ("cache", "result")
)
RATE_LIMITED: Final = Counter("condvest_api_rate_limited_total", "Requests refused with a 429")
WS_MESSAGES: Final = Counter(
    "condvest_api_websocket_messages_total", "Messages sent to WebSocket clients"
)
WS_DROPPED: Final = Counter(
    "condvest_api_websocket_slow_closes_total", "WebSockets closed for not keeping up"
)
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


def cache_lookup(cache: str, *, hit: bool) -> None:
    """Count one lookup in ``cache``."""
    CACHE.labels(cache, "hit" if hit else "miss").inc()


def exposition() -> bytes:
    """Every metric in the text format (summed over workers in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
