"""An app for the dead-letter CLI tests: ``tests.dlq_app:app``, built on each lookup from
``FASTAPI_BUS_TEST_URL``, ``FASTAPI_BUS_TEST_NAMESPACE`` (the exchange or key prefix) and
``FASTAPI_BUS_TEST_SERVICE``."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from fastapi_bus import BusExtension, EventRouter, FastAPI, Reject, RetryPolicy, Transport


class Shipment(BaseModel):
    shipment_id: str


def build_router() -> EventRouter:
    events = EventRouter(retry=RetryPolicy.never())

    @events.on(Shipment)
    async def ship(event: Shipment) -> None:
        if event.shipment_id.startswith("key"):
            raise KeyError(event.shipment_id)
        raise Reject(f"carrier refused {event.shipment_id}")

    return events


def broker_transport(url: str, namespace: str) -> Transport:
    """A transport for a test on a real broker, its names under ``namespace``."""
    if url.startswith("redis"):
        from fastapi_bus.transports.redis import RedisTransport

        return RedisTransport(url, prefix=namespace)
    from fastapi_bus.transports.rabbitmq import RabbitMQTransport

    return RabbitMQTransport(url, exchange=namespace, auto_delete_topology=True)


def create_app() -> FastAPI:
    transport = broker_transport(
        os.environ["FASTAPI_BUS_TEST_URL"], os.environ["FASTAPI_BUS_TEST_NAMESPACE"]
    )
    app = FastAPI()
    app.include_extension(
        BusExtension(
            transport=transport,
            service=os.environ["FASTAPI_BUS_TEST_SERVICE"],
            routers=[build_router()],
        )
    )
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(name)
