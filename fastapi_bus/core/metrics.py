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
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["CounterMetrics", "Counts", "Metrics", "MetricsGroup", "listener", "times_handling"]


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


class Counts(Mapping[tuple[str, str], int]):
    """The live, read-only counts of a :class:`CounterMetrics`, by ``(outcome, handler)``:
    ``counts["handled", "reserve_stock"]`` (0 when there is none), ``dict(counts)`` for a
    copy, ``counts.most_common()`` and ``counts.total()`` as on a ``Counter``."""

    __slots__ = ("_metrics",)

    def __init__(self, metrics: CounterMetrics) -> None:
        self._metrics = metrics

    def __getitem__(self, key: tuple[str, str]) -> int:
        return self._metrics._current()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._metrics._current()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._metrics._current()))

    def __len__(self) -> int:
        return len(self._metrics._current())

    def most_common(self, n: int | None = None) -> list[tuple[tuple[str, str], int]]:
        return self._metrics._current().most_common(n)

    def total(self) -> int:
        return sum(self._metrics._current().values())

    def __repr__(self) -> str:
        return f"Counts({dict(self._metrics._current())!r})"


class CounterMetrics(Metrics):
    """Counts per (outcome, handler), in memory: ``metrics.counts["handled", "reserve_stock"]``
    (a live view: see :class:`Counts`). Safe to share between threads."""

    #: How many handled calls wait, at most, to be added to the counts.
    _BATCH = 4096

    def __init__(self) -> None:
        self._counted: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()
        #: The handlers of the calls handled since the counts were last brought up to date:
        #: counting one is then an append, one atomic step without a lock (it is done for
        #: every message), and they are added up when read, or every ``_BATCH``.
        self._handled: collections.deque[str] = collections.deque()
        self.counts = Counts(self)

    def _current(self) -> collections.Counter[tuple[str, str]]:
        """The counts, up to date."""
        with self._lock:
            self._add_handled()
            return self._counted

    def _add_handled(self) -> None:
        handled = self._handled
        # Taken with ``popleft`` (atomic: a call counted meanwhile, in another thread, stays
        # for the next time), and added up by handler, without a Python step per call.
        taken = itertools.islice(iter(handled.popleft, None), len(handled))
        for handler, count in collections.Counter(taken).items():
            self._counted["handled", handler] += count

    def _count(self, outcome: str, handler: str) -> None:
        with self._lock:
            self._counted[outcome, handler] += 1

    def handled(self, handler: str, event: str, seconds: float) -> None:
        handled = self._handled
        handled.append(handler)
        if len(handled) >= self._BATCH:
            with self._lock:
                self._add_handled()

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
