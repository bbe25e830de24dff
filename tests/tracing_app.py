"""An app for the tracing tests, in the test process or in a worker process.

``tests.tracing_app:app`` is built on each lookup from ``FASTAPI_BUS_TEST_URL``,
``FASTAPI_BUS_TEST_NAMESPACE``, ``FASTAPI_BUS_TEST_SERVICE`` and ``FASTAPI_BUS_TEST_SPANS`` (a
file where the process's finished spans are appended as JSON lines).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_bus import Bus, BusExtension, EventRouter, FastAPI, Message, RetryPolicy, Transport
from fastapi_bus.telemetry import Tracing
from fastapi_bus.telemetry.prometheus import PrometheusMetrics
from tests.dlq_app import broker_transport


class OrderPlaced(BaseModel):
    order_id: str


class StockReserved(BaseModel):
    order_id: str


class Doomed(BaseModel):
    reason: str


class Flaky(BaseModel):
    """Its handler fails on the first delivery, and succeeds on the redelivery."""

    job_id: str


def build_router() -> EventRouter:
    events = EventRouter(retry=RetryPolicy.never())

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced, bus: Bus) -> None:
        await bus.publish(StockReserved(order_id=event.order_id))

    @events.on(StockReserved)
    async def notify(event: StockReserved) -> None:
        pass

    @events.on(Doomed)
    async def doom(event: Doomed) -> None:
        raise ValueError(event.reason)

    @events.on(Flaky, retry=RetryPolicy(attempts=1, delays=(0.01,)))
    async def flaky(event: Flaky, message: Message) -> None:
        if message.attempt == 1:
            raise ConnectionError("try again")

    return events


class ServerSpans:
    """What opentelemetry-instrumentation-fastapi does, in short: each request in a SERVER
    span."""

    def __init__(self, app: ASGIApp, provider: Any) -> None:
        self.app = app
        self.tracer = trace.get_tracer("tests", tracer_provider=provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = f"{scope['method']} {scope['path']}"
        with self.tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER):
            await self.app(scope, receive, send)


def create_app(
    transport: Transport,
    *,
    service: str,
    provider: Any,
    consume: bool | None = None,
    server_spans: bool = True,
) -> FastAPI:
    """Traced by ``provider``, its Prometheus metrics (in a registry of its own) at /metrics;
    ``server_spans``: with a SERVER span around each request (instead of the instrumentation
    package's)."""
    app = FastAPI()
    extension = BusExtension(
        transport=transport,
        service=service,
        routers=[build_router()],
        tracing=Tracing(tracer_provider=provider),
        consume=consume,
        metrics=PrometheusMetrics(CollectorRegistry()),
        metrics_url="/metrics",
    )
    app.include_extension(extension)

    @app.post("/orders/{order_id}")
    async def place(order_id: str, bus: Bus) -> dict[str, str]:
        return {"message_id": await bus.publish(OrderPlaced(order_id=order_id))}

    if server_spans:
        app.add_middleware(ServerSpans, provider=provider)
    return app


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain data."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
    }


class FileExporter(SpanExporter):
    """Appends each finished span to a file, one JSON object a line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as sink:
            for span in spans:
                sink.write(json.dumps(span_record(span)) + "\n")
        return SpanExportResult.SUCCESS


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(name)
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(FileExporter(os.environ["FASTAPI_BUS_TEST_SPANS"]))
    )
    transport = broker_transport(
        os.environ["FASTAPI_BUS_TEST_URL"], os.environ["FASTAPI_BUS_TEST_NAMESPACE"]
    )
    return create_app(transport, service=os.environ["FASTAPI_BUS_TEST_SERVICE"], provider=provider)
