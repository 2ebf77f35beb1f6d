"""Prometheus metrics of the service (prometheus_client, one registry per application).

| metric | type | labels |
|---|---|---|
| ``medseg_http_requests_total`` | counter | method, route (the route template, or ``other``), status |
| ``medseg_http_request_duration_seconds`` | histogram | route |
| ``medseg_requests_in_flight`` | gauge | |
| ``medseg_queue_depth`` | gauge | (jobs waiting for a worker) |
| ``medseg_queue_rejected_total`` | counter | (answered 503 because the queue was full) |
| ``medseg_batch_size`` | histogram | (images per model call; > 1 only with micro-batching) |
| ``medseg_inference_duration_seconds`` | histogram | (one model call, post-processing excluded) |
| ``medseg_model_ready`` | gauge | (1 once loaded and warmed) |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class ServeMetrics:
    """The service's metrics in their own registry (several apps in one process do not collide)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("medseg_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("medseg_http_request_duration_seconds", "HTTP request latency",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("medseg_requests_in_flight", "HTTP requests being answered", registry=r)
        self.queue_depth = Gauge("medseg_queue_depth", "jobs waiting for a worker", registry=r)
        self.rejected = Counter("medseg_queue_rejected", "requests answered 503 because the queue was full",
                                registry=r)
        self.batch_size = Histogram("medseg_batch_size", "images per model call", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.inference = Histogram("medseg_inference_duration_seconds", "duration of one model call",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.ready = Gauge("medseg_model_ready", "1 when the model is loaded and warmed", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
