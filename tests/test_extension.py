from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import fastapi
import pytest
from fastapi.testclient import TestClient

from fastapi_bus import (
    Bus,
    BusExtension,
    BusState,
    ConfigurationError,
    EventBus,
    EventRouter,
    FastAPI,
    MemoryTransport,
    Message,
    get_bus,
)
from fastapi_bus.testing import drain
from tests.helpers import OrderPlaced
from tests.utils import wait_until_sync


def test_lifespan_order_keeps_the_users_own() -> None:
    log: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def handle(event: OrderPlaced) -> None:
        log.append("handled")

    extension = BusExtension(routers=[events], service="shop")
    bus = extension.bus

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[dict[str, str]]:
        log.append(f"user startup, bus {bus.state.value}")
        # The bus is up before user startup code: it can publish already.
        await bus.publish(OrderPlaced(order_id="from-startup", total=1))
        yield {"pool": "ready"}
        log.append(f"user shutdown, bus {bus.state.value}")

    app = FastAPI(lifespan=lifespan)
    app.include_extension(extension)

    @app.get("/state")
    async def state(request: fastapi.Request) -> dict[str, str]:
        return {"pool": request.state.pool}

    with TestClient(app) as client:
        assert client.get("/state").json() == {"pool": "ready"}
        assert bus.state is BusState.CONSUMING
        drain(client)
    assert log == ["user startup, bus started", "handled", "user shutdown, bus started"]
    assert bus.state.value == "closed"


def test_install_on_a_plain_fastapi_app() -> None:
    seen: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def handle(event: OrderPlaced) -> None:
        seen.append(event.order_id)

    app = fastapi.FastAPI()
    BusExtension(routers=[events], service="shop").install(app)

    @app.post("/orders")
    async def place(order: OrderPlaced, bus: Bus) -> None:
        await bus.publish(order)

    with TestClient(app) as client:
        client.post("/orders", json={"order_id": "7", "total": 2})
        drain(client)
    assert seen == ["7"]
    assert isinstance(get_bus(app).service, str)


def test_installing_twice_is_an_error() -> None:
    app = FastAPI()
    extension = BusExtension(service="shop")
    app.include_extension(extension)
    with pytest.raises(ConfigurationError, match="already installed"):
        app.include_extension(extension)
    with pytest.raises(ConfigurationError, match="already has a fastapi-bus"):
        app.include_extension(BusExtension(service="other"))
    with pytest.raises(ConfigurationError, match="not an extension"):
        app.include_extension(object())  # type: ignore[arg-type]


def test_installing_after_startup_is_an_error() -> None:
    app = FastAPI()
    with TestClient(app), pytest.raises(ConfigurationError, match="before the app starts"):
        app.include_extension(BusExtension(service="shop"))


def test_adding_handlers_after_startup_is_an_error() -> None:
    events = EventRouter()
    app = FastAPI()
    app.include_extension(BusExtension(routers=[events], service="shop"))
    with TestClient(app), pytest.raises(ConfigurationError, match="before the app starts"):
        events.add_handler("Late", lambda: None)


def test_publish_only_process_does_not_consume() -> None:
    seen: list[Message] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def handle(msg: Message) -> None:
        seen.append(msg)

    # The web process only publishes; a worker on the same broker runs the handler.
    web = FastAPI()
    web.include_extension(
        BusExtension("memory://publish-only", routers=[events], service="shop", consume=False)
    )
    worker = FastAPI()
    worker.include_extension(
        BusExtension("memory://publish-only", routers=[events], service="shop")
    )

    @web.post("/orders")
    async def place(bus: Bus) -> None:
        await bus.publish(OrderPlaced(order_id="1", total=1))

    with TestClient(web) as web_client:
        assert get_bus(web).state is BusState.STARTED
        web_client.post("/orders")
        assert seen == []
        with TestClient(worker) as worker_client:
            drain(worker_client)
    assert [m.name for m in seen] == ["OrderPlaced"]


def test_a_broadcast_only_process_runs_only_its_broadcast_handlers() -> None:
    durable: list[str] = []
    fanned_out: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def charge(event: OrderPlaced) -> None:
        durable.append(event.order_id)

    @events.on(OrderPlaced, broadcast=True)
    async def push(event: OrderPlaced) -> None:
        fanned_out.append(event.order_id)

    # A web process pushes to its own WebSockets; the worker runs the durable handler.
    web = FastAPI()
    web.include_extension(
        BusExtension("memory://fan-out", routers=[events], service="shop", consume="broadcast")
    )
    worker = FastAPI()
    worker.include_extension(BusExtension("memory://fan-out", routers=[events], service="shop"))

    @web.post("/orders")
    async def place(bus: Bus) -> None:
        await bus.publish(OrderPlaced(order_id="1", total=1))

    with TestClient(web) as web_client:
        assert get_bus(web).consuming == {"push"}
        web_client.post("/orders")
        # The durable handler's message waits in its queue: the web process does not take it.
        wait_until_sync(lambda: fanned_out == ["1"], 10, "the broadcast handler")
        assert durable == []
        with TestClient(worker) as worker_client:
            drain(worker_client)
    # The worker's own broadcast queue was made after the event: it sees only the durable one.
    assert (durable, fanned_out) == (["1"], ["1"])


def test_the_bus_dependency_without_the_extension_is_explained() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(bus: Bus) -> None:
        pass

    with TestClient(app) as client, pytest.raises(ConfigurationError, match="include_extension"):
        client.get("/")


def test_extension_repr_names_service_and_broker() -> None:
    extension = BusExtension("memory://", service="shop")
    assert "shop" in repr(extension) and "memory://" in repr(extension)


@pytest.mark.anyio
async def test_in_flight_handlers_finish_before_user_shutdown_code() -> None:
    log: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()
    events = EventRouter()

    @events.on(OrderPlaced)
    async def slow(event: OrderPlaced) -> None:
        started.set()
        await release.wait()
        log.append("handler finished")

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        yield
        log.append("user shutdown")

    app = FastAPI(lifespan=lifespan)
    extension = BusExtension(routers=[events], service="shop", shutdown_grace=30)
    app.include_extension(extension)
    lifespan_cm = app.router.lifespan_context(app)
    await lifespan_cm.__aenter__()
    await extension.bus.publish(OrderPlaced(order_id="1", total=1))
    await asyncio.wait_for(started.wait(), 10)
    shutdown = asyncio.create_task(lifespan_cm.__aexit__(None, None, None))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(shutdown, 30)
    assert log == ["handler finished", "user shutdown"]


def test_an_unknown_bus_option_is_refused() -> None:
    options: dict[str, Any] = {"service": "shop", "prefech": 5, "retries": 3}
    for build in (lambda: EventBus(MemoryTransport(), **options), lambda: BusExtension(**options)):
        with pytest.raises(ConfigurationError, match=r"unknown bus option\(s\): prefech, retries"):
            build()
