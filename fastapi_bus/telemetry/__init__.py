"""Observability: OpenTelemetry traces across publish and consume, and Prometheus metrics.

* :class:`Tracing` switches tracing on (``BusExtension(..., tracing=True)``); its spans are made
  by :mod:`fastapi_bus.telemetry.otel`, which needs the ``otel`` extra and is imported only
  when tracing is on.
* :class:`~fastapi_bus.telemetry.prometheus.PrometheusMetrics` implements the
  :class:`~fastapi_bus.Metrics` hooks with ``prometheus-client`` (the ``prometheus`` extra);
  import it from :mod:`fastapi_bus.telemetry.prometheus`.

This package knows only the vocabulary (``core``); the bus calls it through
:class:`~fastapi_bus.telemetry.observer.Observer`.
"""

from fastapi_bus.telemetry.exposition import Exposition, find_exposition
from fastapi_bus.telemetry.observer import Observer
from fastapi_bus.telemetry.tracer import MessageTracer
from fastapi_bus.telemetry.tracing import Tracing

__all__ = ["Exposition", "MessageTracer", "Observer", "Tracing", "find_exposition"]
