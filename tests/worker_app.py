"""An app for the worker tests, configured by environment variables when it is looked up.

``tests.worker_app:app`` is built anew on every lookup (a module ``__getattr__``), so one test
process can load it with different settings. The variables:

* ``FASTAPI_BUS_TEST_URL``: the broker (default ``memory://``);
* ``FASTAPI_BUS_TEST_EXCHANGE`` and ``FASTAPI_BUS_TEST_SERVICE``: unique per test;
* ``FASTAPI_BUS_TEST_LOG``: a file where the app appends ``<pid> <what> <id> <detail>`` lines;
* ``FASTAPI_BUS_TEST_RELEASE``: a directory; ``slow_job`` waits for a file named after its
  job id (or ``all``) to appear there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_bus import Bus, BusExtension, EventRouter, Metrics
from fastapi_bus.transports import Transport, transport_from_url


class OrderPlaced(BaseModel):
    order_id: str


class SlowJob(BaseModel):
    job_id: str


class Invoiced(BaseModel):
    invoice_id: str


def record(what: str, ident: str, detail: str = "-") -> None:
    """Append one line to the log file; one short write, so processes do not interleave."""
    path = os.environ.get("FASTAPI_BUS_TEST_LOG")
    if path:
        with open(path, "a") as log:
            log.write(f"{os.getpid()} {what} {ident} {detail}\n")


class LifespanMarker:
    """ASGI middleware that notes the lifespan going through it (it must, under a worker)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            record("middleware", "lifespan")
        await self.app(scope, receive, send)


def _transport() -> Transport:
    url = os.environ.get("FASTAPI_BUS_TEST_URL", "memory://")
    if not url.startswith("amqp"):
        return transport_from_url(url)
    from fastapi_bus.transports.rabbitmq import RabbitMQTransport

    return RabbitMQTransport(
        url,
        exchange=os.environ.get("FASTAPI_BUS_TEST_EXCHANGE", "fastapi_bus_tests"),
        auto_delete_topology=True,
    )


def _metrics() -> Metrics | None:
    """Prometheus metrics where the test asks for them (worker processes only: the registry
    is global to a process)."""
    if os.environ.get("FASTAPI_BUS_TEST_METRICS") != "1":
        return None
    from fastapi_bus.telemetry.prometheus import PrometheusMetrics

    return PrometheusMetrics()


def create_app(consume: bool | None = None) -> FastAPI:
    """A web app whose handlers record what they handle."""
    resources: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources["token"] = "from-lifespan"
        record("startup", "-")
        yield
        record("shutdown", "-")

    events = EventRouter()
    events.publishes("billing.invoiced", Invoiced, description="An invoice was sent.")

    @events.on(OrderPlaced, tags=["orders"])
    async def record_order(event: OrderPlaced) -> None:
        # Fails (and so never records) unless the app's lifespan ran first.
        record("order", event.order_id, resources["token"])

    @events.on(SlowJob, tags=["slow"], prefetch=10)
    async def slow_job(event: SlowJob) -> None:
        record("job", event.job_id, "start")
        release = Path(os.environ["FASTAPI_BUS_TEST_RELEASE"])
        # The test releases a job by creating a file, from another process: poll for it.
        while not ((release / event.job_id).exists() or (release / "all").exists()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        record("job", event.job_id, "done")

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(LifespanMarker)
    extension = BusExtension(
        transport=_transport(),
        service=os.environ.get("FASTAPI_BUS_TEST_SERVICE", "worker-tests"),
        routers=[events],
        consume=consume,
        metrics=_metrics(),
    )
    extension.install(app)

    @app.post("/orders/{order_id}")
    async def place_order(order_id: str, bus: Bus) -> dict[str, str]:
        return {"message_id": await bus.publish(OrderPlaced(order_id=order_id))}

    @app.post("/jobs/{job_id}")
    async def start_job(job_id: str, bus: Bus) -> dict[str, str]:
        return {"message_id": await bus.publish(SlowJob(job_id=job_id))}

    return app


async def delete_topology(url: str, exchange: str, service: str) -> None:
    """Delete what this app declared on RabbitMQ (``auto_delete_topology`` would, later)."""
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for handler in ("record_order", "slow_job"):
            await channel.queue_delete(f"{service}.{handler}")
            await channel.queue_delete(f"{service}.{handler}.dlq")
        # The one delay level the tests use (0.1 s), then the bus's exchange.
        delayed = f"{exchange}.delay.100ms.classic"
        await channel.queue_delete(delayed)
        await channel.exchange_delete(delayed)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


#: An app without fastapi-bus, for the CLI's error.
plain_app = FastAPI()


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
