"""A worker built on ``EventBus`` whose handlers use no FastAPI feature never imports FastAPI
(nor Starlette): the bus looks FastAPI's markers up only once something imported them.

Each test runs a fresh interpreter: this one has imported FastAPI already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def run(code: str, *args: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


HANDLE_WITHOUT_FASTAPI = """
    import asyncio, json, sys, uuid

    from pydantic import BaseModel

    from fastapi_bus import EventBus, EventRouter, Message, MemoryTransport

    class OrderPlaced(BaseModel):
        order_id: int

    events = EventRouter()
    seen = []
    done = asyncio.Event()

    def check() -> None:
        if len(seen) == 2:
            done.set()

    @events.on(OrderPlaced)
    async def record(event: OrderPlaced, message: Message, prefix: str = "async") -> None:
        seen.append(f"{prefix}:{event.order_id}:{message.name}")
        check()

    @events.on(OrderPlaced)
    def record_in_a_thread(event: OrderPlaced, prefix: str = "sync") -> None:
        seen.append(f"{prefix}:{event.order_id}")
        loop.call_soon_threadsafe(check)

    async def main(url: str) -> None:
        global loop
        loop = asyncio.get_running_loop()
        tag = uuid.uuid4().hex[:10]
        if url == "memory://":
            transport = MemoryTransport()
        else:  # the rabbitmq extra (not on every Python this suite runs on)
            from fastapi_bus.transports.rabbitmq import RabbitMQTransport

            transport = RabbitMQTransport(
                url, exchange=f"test-lean-{tag}", auto_delete_topology=True
            )
        bus = EventBus(transport, service=f"lean{tag}", routers=[events])
        await bus.start()
        try:
            await bus.start_consuming()
            await bus.publish(OrderPlaced(order_id=7))
            await asyncio.wait_for(done.wait(), 30)
        finally:
            await bus.close()

    asyncio.run(main(sys.argv[1]))
    web = {name.partition(".")[0] for name in sys.modules} & {"fastapi", "starlette"}
    print(json.dumps({"seen": sorted(seen), "imported": sorted(web)}))
"""


def test_a_worker_whose_handlers_use_no_fastapi_feature_never_imports_fastapi() -> None:
    answer = run(HANDLE_WITHOUT_FASTAPI, "memory://")
    assert answer["seen"] == ["async:7:OrderPlaced", "sync:7"]
    assert answer["imported"] == []


@pytest.mark.rabbitmq
def test_a_rabbitmq_worker_whose_handlers_use_no_fastapi_feature_never_imports_fastapi(
    rabbitmq_url: str,
) -> None:
    answer = run(HANDLE_WITHOUT_FASTAPI, rabbitmq_url)
    assert answer["seen"] == ["async:7:OrderPlaced", "sync:7"]
    assert answer["imported"] == []


def test_fastapi_markers_imported_after_the_bus_are_recognised() -> None:
    # The bus is imported first, FastAPI afterwards: Depends, Security and the request types
    # must still be told apart (they are looked up when a handler is read, not at import).
    answer = run("""
        import asyncio, json, sys

        from pydantic import BaseModel

        from fastapi_bus import ConfigurationError, EventBus, EventRouter, MemoryTransport
        before = "fastapi" in sys.modules

        from fastapi import Depends, Query, Request, Security

        class Ping(BaseModel):
            n: int

        def prefix() -> str:
            return "got"

        events = EventRouter()
        seen = []

        @events.on(Ping)
        async def handle(
            event: Ping, word: str = Depends(prefix), again: str = Security(prefix)
        ) -> None:
            seen.append(f"{word}:{again}:{event.n}")

        async def wants_a_request(event: Ping, request: Request) -> None: ...

        async def wants_a_query(event: Ping, limit: int = Query(1)) -> None: ...

        refused = []
        for bad in (wants_a_request, wants_a_query):
            try:
                EventRouter().on(Ping)(bad)
            except ConfigurationError as exc:
                refused.append("HTTP requests" in str(exc))

        async def main() -> None:
            bus = EventBus(MemoryTransport(), service="late", routers=[events])
            await bus.start()
            try:
                await bus.start_consuming()
                await bus.publish(Ping(n=1))
                await bus.wait_idle(timeout=30)
            finally:
                await bus.close()

        asyncio.run(main())
        print(json.dumps({"before": before, "seen": seen, "refused": refused}))
    """)
    assert answer == {"before": False, "seen": ["got:got:1"], "refused": [True, True]}


def test_the_fastapi_exports_load_on_first_use() -> None:
    answer = run("""
        import json, sys

        import fastapi_bus

        names = ("Bus", "BusExtension", "Extension", "FastAPI", "get_bus")
        before = sorted(name for name in names if name in vars(fastapi_bus))
        web_before = "fastapi" in sys.modules
        listed = all(name in dir(fastapi_bus) and name in fastapi_bus.__all__ for name in names)

        from fastapi_bus import FastAPI, get_bus
        import fastapi

        try:
            fastapi_bus.NoSuchThing
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({
            "before": before,
            "web_before": web_before,
            "listed": listed,
            "subclass": issubclass(FastAPI, fastapi.FastAPI),
            "same": fastapi_bus.get_bus is get_bus,
            "missing": missing,
        }))
    """)
    assert answer == {
        "before": [],
        "web_before": False,
        "listed": True,
        "subclass": True,
        "same": True,
        "missing": "module 'fastapi_bus' has no attribute 'NoSuchThing'",
    }
