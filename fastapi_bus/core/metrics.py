"""Metrics hooks: what happened to each message, labelled by handler.

Subclass :class:`Metrics` to feed Prometheus, StatsD or logs; the default keeps counters in
memory (``bus.metrics.counts``)::

    class PrometheusMetrics(Metrics):
        def handled(self, handler: str, event: str, seconds: float) -> None:
            HANDLED.labels(handler=handler, event=event).inc()
            LATENCY.labels(handler=handler).observe(seconds)

    BusExtension(..., metrics=PrometheusMetrics())

Hooks are called on the consumer's path: keep them quick and never raise. To feed several
sinks, combine them: ``metrics=MetricsGroup(PrometheusMetrics(), MyHooks())``. A ready
Prometheus exporter is :class:`fastapi_bus.telemetry.prometheus.PrometheusMetrics`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["CounterMetrics", "Metrics", "MetricsGroup", "listener", "times_handling"]


class Metrics:
    """Base class of metrics hooks; every hook does nothing by default."""

    def published(self, event: str, seconds: float) -> None:
        """A message was sent and confirmed by the broker after ``seconds``."""

    def consumed(self, handler: str, event: str) -> None:
        """A message was taken for a handler; it is in flight until :meth:`settled`."""

    def settled(self, handler: str, event: str) -> None:
        """A message taken for a handler is done with, whatever the outcome."""

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

    # The lock's ``acquire`` and ``release`` rather than ``with``: about a tenth of a
    # microsecond less for every message counted.

    def _count(self, outcome: str, handler: str) -> None:
        lock = self._lock
        lock.acquire()
        try:
            self.counts[outcome, handler] += 1
        finally:
            lock.release()

    def handled(self, handler: str, event: str, seconds: float) -> None:
        # ``_count`` written out: called for every message handled.
        lock = self._lock
        lock.acquire()
        try:
            self.counts["handled", handler] += 1
        finally:
            lock.release()

    def failed(self, handler: str, event: str, exception: BaseException) -> None:
        self._count("failed", handler)

    def retried(self, handler: str, event: str, delay: float) -> None:
        self._count("retried", handler)

    def dead_lettered(self, handler: str, event: str, reason: str) -> None:
        self._count("dead_lettered", handler)

    def skipped(self, handler: str, event: str) -> None:
        self._count("skipped", handler)


def listener(metrics: Metrics, hook: str) -> Callable[..., Any] | None:
    """``metrics``' method ``hook``, or ``None`` when it is the base class's, which does nothing
    (in every member of a :class:`MetricsGroup`)."""
    if isinstance(metrics, MetricsGroup):
        if not any(listener(member, hook) for member in metrics.members):
            return None
    elif getattr(type(metrics), hook) is getattr(Metrics, hook):
        return None
    method: Callable[..., Any] = getattr(metrics, hook)
    return method


def times_handling(metrics: Metrics) -> bool:
    """Whether ``metrics``' ``handled`` hook may read its ``seconds`` (the clock is read around
    each handler call only then): not the base class's, nor :class:`CounterMetrics`'."""
    if isinstance(metrics, MetricsGroup):
        return any(times_handling(member) for member in metrics.members)
    return type(metrics).handled not in (Metrics.handled, CounterMetrics.handled)


class MetricsGroup(Metrics):
    """Several metrics hooks told of every outcome, in order."""

    def __init__(self, *members: Metrics) -> None:
        self.members = members

    def published(self, event: str, seconds: float) -> None:
        for member in self.members:
            member.published(event, seconds)

    def consumed(self, handler: str, event: str) -> None:
        for member in self.members:
            member.consumed(handler, event)

    def settled(self, handler: str, event: str) -> None:
        for member in self.members:
            member.settled(handler, event)

    def handled(self, handler: str, event: str, seconds: float) -> None:
        for member in self.members:
            member.handled(handler, event, seconds)

    def failed(self, handler: str, event: str, exception: BaseException) -> None:
        for member in self.members:
            member.failed(handler, event, exception)

    def retried(self, handler: str, event: str, delay: float) -> None:
        for member in self.members:
            member.retried(handler, event, delay)

    def dead_lettered(self, handler: str, event: str, reason: str) -> None:
        for member in self.members:
            member.dead_lettered(handler, event, reason)

    def skipped(self, handler: str, event: str) -> None:
        for member in self.members:
            member.skipped(handler, event)
