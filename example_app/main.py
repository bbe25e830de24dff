"""The example: a shop whose orders are processed in the background, and a real-time chat.

Run it with ``./scripts/run-example`` (or ``uvicorn example_app.main:app``), then open
http://127.0.0.1:8000/. Settings, from the environment:

* ``FASTAPI_BUS_URL``: the broker, default ``memory://`` (in-process); ``amqp://...`` for
  RabbitMQ or ``redis://...`` for Redis, where the web processes and
  ``fastapi-bus worker example_app.main:app`` share it;
* ``FASTAPI_BUS_CONSUME``: ``broadcast`` in web processes whose other handlers run in workers;
* ``EXAMPLE_DATABASE_URL``: default ``sqlite+aiosqlite:///example.db``;
* ``EXAMPLE_PAYMENT_FAILURE_RATE``: how often the simulated payment gateway is unavailable
  (default ``0.2``);
* ``EXAMPLE_SERVICE`` and ``EXAMPLE_EXCHANGE``: the service's name (default ``shop``) and, on
  RabbitMQ, the exchange's (on Redis, the key prefix; default ``fastapi_bus``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from example_app import live, orders
from example_app.db import Database, get_database
from example_app.events import catalog
from example_app.hub import Hub
from example_app.payments import payments
from fastapi_bus import BusExtension, FastAPI, Tracing, get_bus
from fastapi_bus.transports import transport_from_url

STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    url: str | None = None,
    *,
    database_url: str | None = None,
    tracing: bool | Tracing = False,
) -> FastAPI:
    """A new app with its own bus, database connection and hub (a bus runs once, so tests
    make one app per test); ``tracing``: trace it with OpenTelemetry (docs/observability.md)."""
    database = Database(database_url)
    hub = Hub(maxsize=100)
    process_id = uuid.uuid4().hex

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.create()
        try:
            yield
        finally:
            hub.close()
            await live.forget_process(database, process_id)
            await database.close()

    app = FastAPI(title="fastapi-bus example: shop and chat", lifespan=lifespan)
    app.state.process_id = process_id
    app.dependency_overrides[get_database] = lambda: database
    app.dependency_overrides[live.get_hub] = lambda: hub
    app.include_router(orders.api)
    app.include_router(live.api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    add_pages(app)
    url = url or os.environ.get("FASTAPI_BUS_URL", "memory://")
    options: dict[str, Any] = {}
    if url.startswith("amqp"):
        options["exchange"] = os.environ.get("EXAMPLE_EXCHANGE", "fastapi_bus")
        # Queues and exchanges that remove themselves once unused (the tests use this).
        options["auto_delete_topology"] = os.environ.get("EXAMPLE_AUTO_DELETE") == "1"
    elif url.startswith("redis"):
        options["prefix"] = os.environ.get("EXAMPLE_EXCHANGE", "fastapi_bus")
    app.include_extension(
        BusExtension(
            transport=transport_from_url(url, **options),
            service=os.environ.get("EXAMPLE_SERVICE", "shop"),
            routers=[
                catalog,
                orders.inventory,
                payments,
                orders.notifications,
                orders.failures,
                orders.history,
                live.live,
            ],
            tracing=tracing,
        )
    )
    return app


def add_pages(app: FastAPI) -> None:
    def page(name: str) -> Any:
        async def serve() -> FileResponse:
            return FileResponse(STATIC / name)

        return serve

    app.get("/", include_in_schema=False)(page("index.html"))
    app.get("/shop", include_in_schema=False)(page("shop.html"))
    app.get("/chat", include_in_schema=False)(page("chat.html"))

    @app.get("/health", tags=["health"])
    def health(request: Request) -> dict[str, str]:
        return {"status": "ok", "bus": get_bus(request.app).state.value}


app = create_app()
