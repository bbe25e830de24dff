"""Prometheus metrics: counted per handler and event, scraped from the app and the worker."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fastapi_bus import (
    BusExtension,
    ConfigurationError,
    EventBus,
    EventRouter,
    MemoryTransport,
    MetricsGroup,
    get_bus,
)
from fastapi_bus.ops.health import HealthServer
from fastapi_bus.telemetry.prometheus import PrometheusMetrics
from tests.helpers import OrderPlaced
from tests.tracing_app import Doomed, Flaky, create_app
from tests.utils import wait_until, wait_until_sync

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_app_serves_what_happened_to_each_message() -> None:
    app = create_app(MemoryTransport(), service="shop", provider=TracerProvider())
    with TestClient(app) as client:
        assert client.post("/orders/7").status_code == 200
        bus = get_bus(app)
        client.portal.call(bus.publish, Doomed(reason="no stock"))
        client.portal.call(bus.publish, Flaky(job_id="1"))

        def scrape() -> Samples:
            response = client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            return parse(response.text)

        done = [
            ("fastapi_bus_handled_total", "notify", "StockReserved"),
            ("fastapi_bus_dead_lettered_total", "doom", "Doomed"),
            ("fastapi_bus_handled_total", "flaky", "Flaky"),
        ]

        def settled(samples: Samples) -> bool:
            return all(value(samples, name, handler=h, event=e) == 1 for name, h, e in done)

        wait_until_sync(lambda: settled(scrape()), what="the handlers to settle")
        samples = scrape()
    order = {"handler": "reserve", "event": "OrderPlaced"}
    assert value(samples, "fastapi_bus_published_total", event="OrderPlaced") == 1
    assert value(samples, "fastapi_bus_published_total", event="StockReserved") == 1
    assert value(samples, "fastapi_bus_publish_duration_seconds_count", event="OrderPlaced") == 1
    assert value(samples, "fastapi_bus_consumed_total", **order) == 1
    assert value(samples, "fastapi_bus_handled_total", **order) == 1
    assert value(samples, "fastapi_bus_handling_duration_seconds_count", **order) == 1
    assert value(samples, "fastapi_bus_in_flight", **order) == 0
    doom = {"handler": "doom", "event": "Doomed"}
    assert value(samples, "fastapi_bus_failed_total", exception="ValueError", **doom) == 1
    assert value(samples, "fastapi_bus_handled_total", **doom) == 0
    flaky = {"handler": "flaky", "event": "Flaky"}
    assert value(samples, "fastapi_bus_consumed_total", **flaky) == 2
    assert value(samples, "fastapi_bus_retried_total", **flaky) == 1
    assert value(samples, "fastapi_bus_failed_total", exception="ConnectionError", **flaky) == 1


@pytest.mark.anyio
async def test_in_flight_counts_the_messages_being_handled() -> None:
    registry = CollectorRegistry()
    events = EventRouter()
    release = asyncio.Event()

    @events.on(OrderPlaced)
    async def slow(event: OrderPlaced) -> None:
        await release.wait()

    bus = EventBus(
        MemoryTransport(), service="shop", routers=[events], metrics=PrometheusMetrics(registry)
    )
    labels = {"handler": "slow", "event": "OrderPlaced"}

    def in_flight() -> float | None:
        return registry.get_sample_value("fastapi_bus_in_flight", labels)

    await bus.start()
    await bus.start_consuming()
    try:
        await bus.publish(OrderPlaced(order_id="1", total=1))
        await bus.publish(OrderPlaced(order_id="2", total=1))
        await wait_until(lambda: in_flight() == 2)
        release.set()
        await wait_until(lambda: in_flight() == 0)
    finally:
        await bus.close()


def test_a_metrics_url_needs_metrics_a_scraper_can_read() -> None:
    with pytest.raises(ConfigurationError, match=r"metrics_url='/metrics' needs metrics"):
        BusExtension(service="shop", metrics_url="/metrics")
    # In a group, the member that can be scraped is served.
    group = MetricsGroup(PrometheusMetrics(CollectorRegistry()))
    assert BusExtension(service="shop", metrics=group, metrics_url="/metrics")


def test_the_health_server_serves_metrics_when_it_has_them() -> None:
    metrics = PrometheusMetrics(CollectorRegistry())
    metrics.published("OrderPlaced", 0.01)
    server = HealthServer(lambda: (True, {}), metrics=metrics)
    method, status, body, content_type = server.answer(["GET", "/metrics"])
    assert (method, status) == ("GET", 200)
    assert content_type.startswith("text/plain")
    assert value(parse(body.decode()), "fastapi_bus_published_total", event="OrderPlaced") == 1
    bare = HealthServer(lambda: (True, {}))
    assert bare.answer(["GET", "/metrics"])[1] == 404
