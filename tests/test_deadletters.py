from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import pytest
from fastapi.testclient import TestClient

from fastapi_bus import ConfigurationError, EventRouter, Message, RetryPolicy, get_bus
from fastapi_bus.runtime.deadletters import DeadLetterQueue
from fastapi_bus.testing import dead_letters, drain, publish
from tests.helpers import OrderPlaced, make_app

T = TypeVar("T")


def build() -> tuple[EventRouter, list[tuple[str, int]]]:
    calls: list[tuple[str, int]] = []
    events = EventRouter(retry=RetryPolicy.never())
    healed: set[str] = set()

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced, msg: Message) -> None:
        calls.append((event.order_id, msg.attempt))
        if event.order_id in healed:
            return
        if event.order_id.startswith("key"):
            raise KeyError(event.order_id)
        raise ConnectionError(event.order_id)

    @events.on(OrderPlaced)
    async def invoice(event: OrderPlaced) -> None:
        pass

    events.healed = healed  # type: ignore[attr-defined]
    return events, calls


def run(client: TestClient, work: Callable[[DeadLetterQueue], Awaitable[T]]) -> T:
    queue = get_bus(client.app).dead_letters  # type: ignore[arg-type]

    async def call() -> T:
        return await work(queue)

    result: T = client.portal.call(call)  # type: ignore[union-attr]
    return result


def test_list_filters_show_replay_and_purge() -> None:
    events, calls = build()
    app, _ = make_app(events)
    with TestClient(app) as client:
        ids = [
            publish(client, OrderPlaced(order_id=name, total=1))
            for name in ("conn-1", "key-1", "conn-2", "key-2")
        ]
        drain(client)
        assert len(dead_letters(client, "reserve")) == 4

        every = run(client, lambda q: q.list())
        assert [letter.message.id for letter in every] == ids
        assert {letter.handler for letter in every} == {"reserve"}
        keys = run(client, lambda q: q.list(exception_type="KeyError"))
        assert [letter.message.id for letter in keys] == [ids[1], ids[3]]
        full = run(client, lambda q: q.list(exception_type="builtins.ConnectionError"))
        assert [letter.message.id for letter in full] == [ids[0], ids[2]]
        assert run(client, lambda q: q.list(older_than=timedelta(hours=1))) == []
        assert len(run(client, lambda q: q.list(newer_than=timedelta(hours=1)))) == 4
        assert len(run(client, lambda q: q.list(limit=3))) == 3

        shown = run(client, lambda q: q.show(ids[1]))
        assert shown is not None
        assert shown.exception_type == "builtins.KeyError"
        assert shown.attempts == 1
        assert "KeyError" in (shown.traceback or "")
        assert run(client, lambda q: q.show("nope")) is None

        # The fix is deployed: replay the connection errors only.
        events.healed.update({"conn-1", "conn-2"})  # type: ignore[attr-defined]
        progress: list[int] = []
        moved = run(
            client, lambda q: q.replay(exception_type="ConnectionError", progress=progress.append)
        )
        assert moved == 2
        assert progress == [1, 2]
        drain(client)
        assert [letter.message.id for letter in run(client, lambda q: q.list())] == [ids[1], ids[3]]
        assert calls.count(("conn-1", 1)) == 2, "replayed with the same id, attempts from 1"

        assert run(client, lambda q: q.purge(message_ids=[ids[3]])) == 1
        assert [letter.message.id for letter in run(client, lambda q: q.list())] == [ids[1]]
        assert run(client, lambda q: q.purge(handler="reserve")) == 1
        assert run(client, lambda q: q.list()) == []


def test_replayed_messages_lose_the_failure_headers() -> None:
    events, _ = build()
    app, _ = make_app(events)
    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="conn", total=1), headers={"tenant": "a"})
        drain(client)
        letter = run(client, lambda q: q.list())[0]
        replayed = letter.for_replay()
    assert replayed.id == letter.message.id
    assert replayed.headers == {"tenant": "a", "x-bus-replayed": "1"}
    assert replayed.attempt == 1


def test_unknown_handler_is_named() -> None:
    events, _ = build()
    app, _ = make_app(events)
    with TestClient(app) as client, pytest.raises(ConfigurationError, match="invoice, reserve"):
        run(client, lambda q: q.list(handler="nope"))


def dead_lettered(client: TestClient, count: int) -> list[str]:
    """Publish ``count`` orders that ``reserve`` dead-letters; their message ids."""
    ids = [publish(client, OrderPlaced(order_id=f"conn-{n}", total=1)) for n in range(count)]
    drain(client)
    return ids


class Interrupted(Exception):
    pass


def test_an_interrupted_replay_loses_nothing() -> None:
    events, _ = build()
    app, _ = make_app(events)
    with TestClient(app) as client:
        ids = dead_lettered(client, 6)
        bus = get_bus(app)

        async def stop_after_two() -> None:
            def progress(done: int) -> None:
                if done == 2:
                    raise Interrupted

            await bus.transport.stop_consuming(grace=1)  # keep replayed messages in the queue
            with pytest.raises(Interrupted):
                await bus.dead_letters.replay(progress=progress)

        client.portal.call(stop_after_two)

        async def where() -> tuple[list[str], list[str]]:
            queue = [m.id for m in await bus.transport.browse("shop.reserve")]
            dlq = [m.id for m in await bus.transport.browse("shop.reserve.dlq")]
            return queue, dlq

        queue, dlq = client.portal.call(where)
    assert queue == ids[:2]
    assert dlq == ids[2:], "the rest stay dead letters, in order"


def test_list_takes_message_ids_and_every_tool_refuses_an_unknown_filter() -> None:
    events, _ = build()
    app, _ = make_app(events)
    with TestClient(app) as client:
        ids = dead_lettered(client, 3)
        picked = run(client, lambda q: q.list(message_ids=[ids[0], ids[2]]))
        assert [letter.message.id for letter in picked] == [ids[0], ids[2]]
        for tool in ("list", "replay", "purge"):

            async def call(q: DeadLetterQueue, tool: str = tool) -> object:
                return await getattr(q, tool)(exception="ConnectionError")

            with pytest.raises(TypeError, match=rf"{tool}\(\) got .* 'exception'"):
                run(client, call)
        assert picked[0].matches(handler="reserve", exception_type="ConnectionError")
        assert not picked[0].matches(handler="invoice")
        with pytest.raises(TypeError, match=r"matches\(\) got .* 'exception'"):
            picked[0].matches(exception="ConnectionError")  # type: ignore[call-arg]
        assert len(dead_letters(client, "reserve")) == 3
