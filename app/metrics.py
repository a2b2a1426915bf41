"""Prometheus metrics, in a registry of their own per app (tests build many apps per process)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("handspring_requests", "HTTP requests answered, by route, method and status",
                                ("route", "method", "status"), registry=r)
        self.request_seconds = Histogram("handspring_request_seconds", "HTTP request latency by route",
                                         ("route",), buckets=SECONDS_BUCKETS, registry=r)
        self.items = Counter("handspring_items", "Inputs embedded, by modality", ("modality",), registry=r)
        self.batch_size = Histogram("handspring_batch_size", "Inputs per model forward pass, by modality",
                                    ("modality",), buckets=BATCH_BUCKETS, registry=r)
        self.inference_seconds = Histogram("handspring_inference_seconds", "Seconds per model forward pass, by modality",
                                           ("modality",), buckets=SECONDS_BUCKETS, registry=r)
        self.encode_errors = Counter("handspring_encode_errors", "Model forward passes that raised, by modality",
                                     ("modality",), registry=r)
        self.queue_depth = Gauge("handspring_queue_depth", "Prepared inputs waiting for the model or in it", registry=r)
        self.preparing = Gauge("handspring_preparing", "Inputs being decoded or preprocessed, or waiting for it",
                               registry=r)
        self.ready = Gauge("handspring_ready", "1 once the model is loaded and serving", registry=r)
        self.load_seconds = Gauge("handspring_model_load_seconds", "Seconds the model took to load", registry=r)
        self.queue_wait = Histogram("handspring_queue_wait_seconds",
                                    "Seconds a prepared input waited for its forward pass, by modality",
                                    ("modality",), buckets=SECONDS_BUCKETS, registry=r)
        self.first_forward = Histogram("handspring_time_to_first_forward_seconds",
                                       "Seconds from a request's arrival to its first forward pass",
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.rejected = Counter("handspring_rejected_requests", "Requests refused at once (429), by reason",
                                ("reason",), registry=r)
        self.timed_out = Counter("handspring_timed_out_requests",
                                 "Requests not done within HANDSPRING_REQUEST_TIMEOUT_S (answered 503)", registry=r)
        self.abandoned = Counter("handspring_abandoned_requests",
                                 "Requests whose client went away before the answer; their work was dropped",
                                 registry=r)
        self.in_flight = Gauge("handspring_requests_in_flight", "Vectorize requests taken in and not yet answered",
                               registry=r)
        self.max_in_flight = Gauge("handspring_max_concurrent_requests", "HANDSPRING_MAX_CONCURRENT_REQUESTS",
                                   registry=r)
        self.prepared_bytes = Gauge("handspring_prepared_bytes",
                                    "Memory reserved for decoded inputs (being decoded, queued or in a forward pass)",
                                    registry=r)
        self.prepared_budget = Gauge("handspring_prepared_budget_bytes", "HANDSPRING_MAX_PREPARED_MB, in bytes",
                                     registry=r)
        self.budget_waiting = Gauge("handspring_prepared_budget_waiting",
                                    "Inputs waiting for room in the memory budget before they are decoded",
                                    registry=r)
        self._queue_source: Callable[[], int] = lambda: 0
        self._preparing_source: Callable[[], int] = lambda: 0
        self.queue_depth.set_function(lambda: self._queue_source())
        self.preparing.set_function(lambda: self._preparing_source())

    def watch_limits(self, admission, budget) -> None:
        self.in_flight.set_function(lambda: admission.in_flight)
        self.max_in_flight.set(admission.max_in_flight)
        self.prepared_bytes.set_function(lambda: budget.used)
        self.prepared_budget.set(budget.capacity)
        self.budget_waiting.set_function(lambda: budget.waiting)

    def watch_engine(self, engine) -> None:
        self._queue_source = lambda: engine.queue_depth
        self._preparing_source = lambda: engine.preparing

    # engine Observer
    def on_batch(self, modality: str, size: int, seconds: float) -> None:
        self.batch_size.labels(modality).observe(size)
        self.inference_seconds.labels(modality).observe(seconds)

    def on_encode_error(self, modality: str, size: int) -> None:
        self.encode_errors.labels(modality).inc()

    def on_queue_wait(self, modality: str, seconds: float) -> None:
        self.queue_wait.labels(modality).observe(seconds)

    def on_first_forward(self, seconds: float) -> None:
        self.first_forward.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP response by route template (not raw path: unknown paths share one label)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, scope.get("method", ""), str(status)).inc()
            self.metrics.request_seconds.labels(label).observe(time.perf_counter() - started)
