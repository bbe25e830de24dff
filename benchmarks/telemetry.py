"""The CPU cost of tracing and metrics: publish and handle N events on memory://, and serve N
HTTP requests that publish one event each, with each telemetry setting; report CPU time per
message and the extra over the baseline (tracing off, the default in-memory counters).

    .venv/bin/python benchmarks/telemetry.py --events 20000 --requests 3000 --rounds 3
    .venv/bin/python benchmarks/telemetry.py --url redis://127.0.0.1:6379/0 --events 5000
    .venv/bin/python benchmarks/telemetry.py --url amqp://guest:guest@localhost/ --events 5000

Settings: ``off`` (baseline), ``noop`` (tracing=True with the API's no-op tracer provider),
``sdk`` (the OpenTelemetry SDK with a batch processor and an exporter that drops the spans),
``prometheus`` (PrometheusMetrics, tracing off) and ``sdk+prometheus``. The best of
``--rounds`` runs counts, to reduce the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import MutableMapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from fastapi_bus import (
    Bus,
    BusExtension,
    EventBus,
    EventRouter,
    FastAPI,
    MemoryTransport,
    Tracing,
    Transport,
)
from fastapi_bus.core.metrics import Metrics
from fastapi_bus.telemetry.prometheus import PrometheusMetrics

SETTINGS = ("off", "noop", "sdk", "prometheus", "sdk+prometheus")


class Tick(BaseModel):
    n: int
    payload: str


class Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def transport(url: str, name: str) -> Transport:
    """A transport of its own (queues, keys named after ``name``) on the broker at ``url``."""
    if url.startswith("redis"):
        from fastapi_bus.transports.redis import RedisTransport

        return RedisTransport(url, prefix=name)
    if url.startswith("amqp"):
        from fastapi_bus.transports.rabbitmq import RabbitMQTransport

        return RabbitMQTransport(url, exchange=name, auto_delete_topology=True)
    return MemoryTransport()


async def cleanup(url: str, prefix: str) -> None:
    """Remove a Redis transport's keys (RabbitMQ's topology deletes itself)."""
    if url.startswith("redis"):
        import redis.asyncio

        async with redis.asyncio.Redis.from_url(url) as client:
            keys = [key async for key in client.scan_iter(match=f"{{{prefix}}}*")]
            if keys:
                await client.delete(*keys)


def options(setting: str) -> dict[str, Any]:
    tracing: Tracing | None = None
    if setting == "noop":
        tracing = Tracing(tracer_provider=NoOpTracerProvider())
    elif setting.startswith("sdk"):
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        tracing = Tracing(tracer_provider=provider)
    metrics: Metrics | None = None
    if setting.endswith("prometheus"):
        metrics = PrometheusMetrics(CollectorRegistry())
    return {"tracing": tracing, "metrics": metrics}


def router(events: int, done: asyncio.Event) -> EventRouter:
    handled = 0
    events_router = EventRouter()

    @events_router.on(Tick)
    async def count(event: Tick) -> None:
        nonlocal handled
        handled += 1
        if handled >= events:
            done.set()

    return events_router


async def consume(url: str, setting: str, events: int) -> float:
    """CPU seconds per event, published and handled."""
    done = asyncio.Event()
    name = f"bench-{uuid.uuid4().hex[:8]}"
    used = transport(url, name)
    bus = EventBus(used, service="bench", routers=[router(events, done)], **options(setting))
    await bus.start()
    await bus.start_consuming()
    body = "x" * 200
    start = time.process_time()
    for n in range(events):
        await bus.publish(Tick(n=n, payload=body))
    await asyncio.wait_for(done.wait(), timeout=600)
    cpu = time.process_time() - start
    await bus.close(grace=5)
    await cleanup(url, name)
    return cpu / events


async def http_publish(url: str, setting: str, requests: int) -> float:
    """CPU seconds per HTTP request that publishes one event (and its handling)."""
    done = asyncio.Event()
    app = FastAPI()
    name = f"bench-{uuid.uuid4().hex[:8]}"
    used = transport(url, name)
    routers = [router(requests, done)]
    app.include_extension(
        BusExtension(transport=used, service="bench", routers=routers, **options(setting))
    )

    @app.post("/ticks/{n}")
    async def tick(n: int, bus: Bus) -> None:
        await bus.publish(Tick(n=n, payload="x"))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    async with app.router.lifespan_context(app):
        start = time.process_time()
        for n in range(requests):
            path = f"/ticks/{n}"
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }
            await app(scope, receive, send)
        await asyncio.wait_for(done.wait(), timeout=600)
        cpu = time.process_time() - start
    await cleanup(url, name)
    return cpu / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name, scenario, count in (
        ("consume", consume, args.events),
        ("http publish", http_publish, args.requests),
    ):
        print(f"{name} on {args.url.split('@')[-1]} ({count} per round, best of {args.rounds}):")
        baseline = None
        for setting in SETTINGS:
            runs = (asyncio.run(scenario(args.url, setting, count)) for _ in range(args.rounds))
            best = min(runs)
            baseline = baseline or best
            extra = (best / baseline - 1) * 100
            print(f"  {setting:<15} {best * 1e6:8.1f} us CPU/message  {extra:+6.1f}%")


if __name__ == "__main__":
    main()
