"""Prometheus metrics of a bus (the ``prometheus`` extra).

```python
from fastapi_bus.telemetry.prometheus import PrometheusMetrics

app.include_extension(
    BusExtension(url=..., service="shop", routers=[events], metrics=PrometheusMetrics(),
                 metrics_url="/metrics")
)
```

The metrics (``handler`` and ``event`` labels; ``event`` alone for publishing):

| metric | type | what |
|---|---|---|
| ``fastapi_bus_published_total`` | counter | messages sent and confirmed by the broker |
| ``fastapi_bus_publish_duration_seconds`` | histogram | time to send one message |
| ``fastapi_bus_consumed_total`` | counter | messages taken for a handler |
| ``fastapi_bus_handled_total`` | counter | handler calls that returned |
| ``fastapi_bus_handling_duration_seconds`` | histogram | time of a successful handler call |
| ``fastapi_bus_failed_total`` | counter | handler calls that raised (label ``exception``) |
| ``fastapi_bus_retried_total`` | counter | messages sent back to be delivered again |
| ``fastapi_bus_dead_lettered_total`` | counter | messages moved to a dead-letter queue |
| ``fastapi_bus_skipped_total`` | counter | duplicates an idempotent handler skipped |
| ``fastapi_bus_in_flight`` | gauge | messages taken and not yet settled |
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from fastapi_bus.core.metrics import Metrics

__all__ = ["MULTIPROCESS_DIR", "MultiProcessMetrics", "PrometheusMetrics"]

#: The variable that puts prometheus-client in its multiprocess mode: each process writes its
#: values to files in that directory, and one reader adds them up.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: Histogram buckets in seconds, from a millisecond to a minute.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LABELS = ("handler", "event")


class PrometheusMetrics(Metrics):
    """The :class:`~fastapi_bus.Metrics` hooks as Prometheus counters, histograms and a gauge.

    Args:
        registry: where the metrics are registered (default: prometheus-client's global
            registry, which ``prometheus_client.start_http_server`` and ``make_asgi_app``
            serve too). One ``PrometheusMetrics`` per registry and ``namespace``.
        namespace: the prefix of every name.
        buckets: the histograms' buckets, in seconds.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "fastapi_bus",
        buckets: Sequence[float] = BUCKETS,
    ) -> None:
        self.registry = REGISTRY if registry is None else registry

        def counter(name: str, doc: str, labels: Sequence[str] = _LABELS) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=self.registry)

        def histogram(name: str, doc: str, labels: Sequence[str] = _LABELS) -> Histogram:
            return Histogram(
                name, doc, labels, namespace=namespace, registry=self.registry, buckets=buckets
            )

        self.published_total = counter("published", "Messages sent and confirmed", ("event",))
        self.publish_seconds = histogram(
            "publish_duration_seconds", "Time to send one message", ("event",)
        )
        self.consumed_total = counter("consumed", "Messages taken for a handler")
        self.handled_total = counter("handled", "Handler calls that returned")
        self.handling_seconds = histogram(
            "handling_duration_seconds", "Time of a successful handler call"
        )
        self.failed_total = counter(
            "failed", "Handler calls that raised", ("handler", "event", "exception")
        )
        self.retried_total = counter("retried", "Messages sent back to be delivered again")
        self.dead_lettered_total = counter("dead_lettered", "Messages moved to a dead-letter queue")
        self.skipped_total = counter("skipped", "Duplicates an idempotent handler skipped")
        self.in_flight = Gauge(
            "in_flight",
            "Messages taken for a handler and not yet settled",
            _LABELS,
            namespace=namespace,
            registry=self.registry,
            # Under several processes: the sum over the processes that are alive.
            multiprocess_mode="livesum",
        )

    def published(self, event: str, seconds: float) -> None:
        self.published_total.labels(event).inc()
        self.publish_seconds.labels(event).observe(seconds)

    def consumed(self, handler: str, event: str) -> None:
        self.consumed_total.labels(handler, event).inc()
        self.in_flight.labels(handler, event).inc()

    def settled(self, handler: str, event: str) -> None:
        self.in_flight.labels(handler, event).dec()

    def handled(self, handler: str, event: str, seconds: float) -> None:
        self.handled_total.labels(handler, event).inc()
        self.handling_seconds.labels(handler, event).observe(seconds)

    def failed(self, handler: str, event: str, exception: BaseException) -> None:
        self.failed_total.labels(handler, event, type(exception).__name__).inc()

    def retried(self, handler: str, event: str, delay: float) -> None:
        self.retried_total.labels(handler, event).inc()

    def dead_lettered(self, handler: str, event: str, reason: str) -> None:
        self.dead_lettered_total.labels(handler, event).inc()

    def skipped(self, handler: str, event: str) -> None:
        self.skipped_total.labels(handler, event).inc()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the text format a scraper asked for (its ``Accept`` header), and
        the content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class MultiProcessMetrics:
    """The metrics of several processes, added up: what ``fastapi-bus worker --processes N``
    serves at ``GET /metrics`` on its health port.

    The workers write their values to files under ``directory`` (prometheus-client's
    multiprocess mode, turned on by the :data:`MULTIPROCESS_DIR` variable in their
    environment); counters and histograms keep what exited workers counted, and the in-flight
    gauge counts the living ones only.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=self.directory)  # type: ignore[no-untyped-call]

    def process_exited(self, pid: int) -> None:
        """Forget the live gauges of a worker that exited."""
        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The sum over the workers, in the text format a scraper asked for, and its content
        type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
