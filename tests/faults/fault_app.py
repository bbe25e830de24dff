"""The app that the fault tests run in ``fastapi-bus worker`` processes and publish from.

Configured by environment variables, read when the module is imported:

* ``FAULTS_URL``: the broker(s), a multi-host URL for a cluster;
* ``FAULTS_EXCHANGE`` and ``FAULTS_SERVICE``: the names of this run;
* ``FAULTS_OUT``: a directory; each process appends the key of every event it handles to
  ``handled-<pid>.txt``, one line per call (duplicates included), so the test counts by key.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_bus import BusExtension, EventRouter
from fastapi_bus.transports.rabbitmq import RabbitMQTransport


class Tick(BaseModel):
    """One event of the stream; ``key`` is ``<publisher>-<sequence number>``."""

    key: str


events = EventRouter()
_out: int | None = None


@events.on(Tick, prefetch=20)
async def record_tick(event: Tick) -> None:
    global _out
    if _out is None:
        path = Path(os.environ["FAULTS_OUT"]) / f"handled-{os.getpid()}.txt"
        _out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # One short write per event: lines never interleave, and the line is on disk (in the
    # page cache) before the handler returns and the message is acknowledged.
    os.write(_out, f"{event.key}\n".encode())


def transport(url: str | None = None) -> RabbitMQTransport:
    return RabbitMQTransport(
        url or os.environ["FAULTS_URL"],
        exchange=os.environ.get("FAULTS_EXCHANGE", "faults"),
        reconnect_interval=0.5,
        publish_timeout=60,
        connect_timeout=60,
    )


def create_app() -> FastAPI:
    app = FastAPI()
    BusExtension(
        transport=transport(),
        service=os.environ.get("FAULTS_SERVICE", "faults"),
        routers=[events],
        shutdown_grace=5,
    ).install(app)
    return app


app = create_app() if "FAULTS_URL" in os.environ else FastAPI()
