"""Metrics that can be scraped: what the ``/metrics`` endpoints serve."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from fastapi_bus.core.metrics import Metrics, MetricsGroup

__all__ = ["Exposition", "find_exposition"]


@runtime_checkable
class Exposition(Protocol):
    """Metrics that render themselves for a scraper (``PrometheusMetrics`` does)."""

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and its content type, for a request's ``Accept`` header."""
        ...


def find_exposition(metrics: Metrics) -> Exposition | None:
    """``metrics`` itself, or the first member of a :class:`MetricsGroup`, that can be
    scraped; ``None`` if none can."""
    if isinstance(metrics, Exposition):
        return metrics
    if isinstance(metrics, MetricsGroup):
        for member in metrics.members:
            found = find_exposition(member)
            if found is not None:
                return found
    return None
