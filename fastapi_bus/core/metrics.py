"""Metrics hooks: what happened to each message, labelled by handler.

Subclass :class:`Metrics` to feed Prometheus, StatsD or logs; the default keeps counters in
memory (``bus.metrics.counts``)::

    class PrometheusMetrics(Metrics):
        def handled(self, handler: str, event: str, seconds: float) -> None:
            HANDLED.labels(handler=handler, event=event).inc()
            LATENCY.labels(handler=handler).observe(seconds)

    BusExtension(..., metrics=PrometheusMetrics())

Hooks are called on the consumer's path: keep them quick and never raise.
"""

from __future__ import annotations

import collections
import threading

__all__ = ["CounterMetrics", "Metrics"]


class Metrics:
    """Base class of metrics hooks; every hook does nothing by default."""

    def handled(self, handler: str, event: str, seconds: float) -> None:
        """A handler returned successfully after ``seconds``."""

    def failed(self, handler: str, event: str, exception: BaseException) -> None:
        """One call of a handler raised."""

    def retried(self, handler: str, event: str, delay: float) -> None:
        """A message was sent back to its queue, to be delivered again after ``delay``."""

    def dead_lettered(self, handler: str, event: str, reason: str) -> None:
        """A message was moved to its handler's dead-letter queue."""

    def skipped(self, handler: str, event: str) -> None:
        """An idempotent handler skipped a message it had already processed."""


class CounterMetrics(Metrics):
    """Counts per (outcome, handler): ``counts["handled", "reserve_stock"]``."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()

    def _count(self, outcome: str, handler: str) -> None:
        with self._lock:
            self.counts[outcome, handler] += 1

    def handled(self, handler: str, event: str, seconds: float) -> None:
        self._count("handled", handler)

    def failed(self, handler: str, event: str, exception: BaseException) -> None:
        self._count("failed", handler)

    def retried(self, handler: str, event: str, delay: float) -> None:
        self._count("retried", handler)

    def dead_lettered(self, handler: str, event: str, reason: str) -> None:
        self._count("dead_lettered", handler)

    def skipped(self, handler: str, event: str) -> None:
        self._count("skipped", handler)
