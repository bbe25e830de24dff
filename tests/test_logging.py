"""The bus says when it starts and stops, and its lines show under an app server."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from fastapi_bus import EventBus, EventRouter
from fastapi_bus.web.logs import server_logging
from tests.helpers import OrderPlaced, OrderShipped, make_app
from tests.utils import wait_until_sync


def two_handlers() -> EventRouter:
    events = EventRouter()

    @events.on("OrderPlaced")
    async def reserve_stock(event: OrderPlaced) -> None: ...

    @events.on("OrderShipped")
    async def notify(event: OrderShipped) -> None: ...

    return events


def bus_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fastapi_bus"]


def test_one_line_at_start_and_one_at_stop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_bus")
    app, _ = make_app(two_handlers(), service="shop")
    with TestClient(app):
        started = bus_lines(caplog)
    assert started == [
        "fastapi-bus started: service 'shop' on memory://, 2 handler(s), "
        "queues: shop.reserve_stock, shop.notify"
    ]
    assert bus_lines(caplog)[1:] == ["fastapi-bus stopped: service 'shop' on memory://"]


@pytest.mark.rabbitmq
@pytest.mark.anyio
async def test_the_broker_url_is_logged_without_its_password(
    rabbitmq_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi_bus.transports.rabbitmq import RabbitMQTransport

    caplog.set_level(logging.INFO, logger="fastapi_bus")
    suffix = uuid.uuid4().hex[:10]
    transport = RabbitMQTransport(
        rabbitmq_url, exchange=f"test-logs-{suffix}", auto_delete_topology=True
    )
    bus = EventBus(transport, service=f"svc{suffix}", routers=[two_handlers()])
    await bus.start()
    await bus.close(grace=0)
    password = urlsplit(rabbitmq_url).password
    assert password, "the test broker URL has a password"
    lines = bus_lines(caplog)
    assert len(lines) == 2 and ":***@" in lines[0] and ":***@" in lines[1]
    assert all(f":{password}@" not in line for line in lines)


APP = """
from fastapi_bus import BusExtension, EventRouter, FastAPI
from pydantic import BaseModel

class OrderPlaced(BaseModel):
    order_id: str

events = EventRouter()

@events.on("OrderPlaced")
async def reserve_stock(event: OrderPlaced) -> None: ...

app = FastAPI()
app.include_extension(BusExtension("memory://", service="shop", routers=[events]))
"""


def test_the_lines_show_under_uvicorns_default_logging(tmp_path: Path) -> None:
    (tmp_path / "logged_app.py").write_text(textwrap.dedent(APP))
    output = tmp_path / "stderr.txt"
    with output.open("w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "logged_app:app", "--port", "0"],
            cwd=tmp_path,
            stderr=stderr,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_until_sync(
                lambda: "Application startup complete" in output.read_text(), what="startup"
            )
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    lines = output.read_text().splitlines()
    started = lines.index(
        "INFO:     fastapi-bus started: service 'shop' on memory://, 1 handler(s), "
        "queues: shop.reserve_stock"
    )
    stopped = lines.index("INFO:     fastapi-bus stopped: service 'shop' on memory://")
    assert lines[started + 1] == "INFO:     Application startup complete."
    assert started < stopped


def test_configured_logging_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    # Under pytest the root logger has handlers: the bus must not add uvicorn's.
    ours, server = logging.getLogger("fastapi_bus"), logging.getLogger("uvicorn.error")
    handler = logging.NullHandler()
    server.addHandler(handler)
    try:
        with server_logging():
            assert handler not in ours.handlers
    finally:
        server.removeHandler(handler)


@pytest.mark.parametrize("holder", ["uvicorn", "uvicorn.error"])
def test_unconfigured_logging_borrows_the_servers_handlers_until_the_end(
    holder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn's own config puts its handler on "uvicorn"; gunicorn's workers on "uvicorn.error".
    ours, server = logging.getLogger("fastapi_bus"), logging.getLogger(holder)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(server, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "level", logging.WARNING)
    level, own = ours.level, list(ours.handlers)  # the bus's NullHandler, nothing else
    with server_logging(), server_logging():  # two apps in one process
        assert ours.handlers == own + server.handlers
        assert ours.level == logging.WARNING
    assert ours.handlers == own and ours.level == level
