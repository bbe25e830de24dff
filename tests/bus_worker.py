"""A worker module built on an ``EventBus`` alone, for ``fastapi-bus worker tests.bus_worker:bus``.

It shares ``tests.worker_app``'s environment variables (broker, exchange, service, log file),
so the web app there publishes what this worker handles. It imports no FastAPI: its handler
logs whether anything in the worker process did.
"""

from __future__ import annotations

import os
import sys

from pydantic import BaseModel

from fastapi_bus import EventBus, EventRouter
from fastapi_bus.transports import Transport, transport_from_url


class OrderPlaced(BaseModel):
    """The web app's event (``tests.worker_app.OrderPlaced``), declared again: importing that
    module would import FastAPI."""

    order_id: str


def record(what: str, ident: str, detail: str) -> None:
    """As ``tests.worker_app.record``: one line in the test's log file."""
    with open(os.environ["FASTAPI_BUS_TEST_LOG"], "a") as log:
        log.write(f"{os.getpid()} {what} {ident} {detail}\n")


events = EventRouter()


@events.on(OrderPlaced)
async def record_order(event: OrderPlaced) -> None:
    record("order", event.order_id, "with-fastapi" if "fastapi" in sys.modules else "no-fastapi")


def _bus() -> EventBus:
    url = os.environ.get("FASTAPI_BUS_TEST_URL", "memory://")
    transport: Transport
    if url.startswith("amqp"):
        from fastapi_bus.transports.rabbitmq import RabbitMQTransport

        transport = RabbitMQTransport(
            url,
            exchange=os.environ.get("FASTAPI_BUS_TEST_EXCHANGE", "fastapi_bus_tests"),
            auto_delete_topology=True,
        )
    else:
        transport = transport_from_url(url)
    service = os.environ.get("FASTAPI_BUS_TEST_SERVICE", "worker-tests")
    return EventBus(transport, service=service, routers=[events])


bus = _bus()
