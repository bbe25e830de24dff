"""The app's ``/metrics`` route: the bus's metrics, for a Prometheus scraper."""

from __future__ import annotations

import fastapi
from fastapi import Request, Response

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.core.metrics import Metrics
from fastapi_bus.telemetry import Exposition, find_exposition

__all__ = ["install_metrics_route", "scrapable"]


def scrapable(metrics: Metrics, path: str) -> Exposition:
    """The part of ``metrics`` a scraper can read; fails naming ``metrics_url`` if none."""
    exposition = find_exposition(metrics)
    if exposition is None:
        raise ConfigurationError(
            f"metrics_url={path!r} needs metrics a scraper can read, such as "
            "metrics=PrometheusMetrics() from fastapi_bus.telemetry.prometheus "
            f"(pip install 'fastapi-bus[prometheus]'); got {metrics!r}"
        )
    return exposition


def install_metrics_route(app: fastapi.FastAPI, exposition: Exposition, path: str) -> None:
    """Serve ``GET path`` with the metrics, in the format the scraper accepts."""

    async def metrics(request: Request) -> Response:
        body, content_type = exposition.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    app.add_api_route(path, metrics, methods=["GET"], include_in_schema=False)
