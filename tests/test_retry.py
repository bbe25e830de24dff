from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fastapi_bus import (
    BusExtension,
    ConfigurationError,
    EventRouter,
    FastAPI,
    Message,
    Retry,
    RetryPolicy,
)
from fastapi_bus.testing import dead_letters, drain, publish
from tests.helpers import OrderPlaced
from tests.utils import wait_until_sync

FAST = RetryPolicy(attempts=3, backoff=0, delays=(0.01, 0.01))


def app_with(events: EventRouter, retry: RetryPolicy | None = None) -> FastAPI:
    app = FastAPI()
    app.include_extension(BusExtension(routers=[events], service="shop", retry=retry))
    return app


def test_in_process_retries_then_success() -> None:
    calls: list[int] = []
    events = EventRouter()

    @events.on(OrderPlaced, retry=RetryPolicy(attempts=3, backoff=0, delays=()))
    async def flaky(event: OrderPlaced, msg: Message) -> None:
        calls.append(msg.attempt)
        if len(calls) < 3:
            raise ConnectionError("database restarting")

    with TestClient(app_with(events)) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
        assert dead_letters(client) == []
    assert calls == [1, 1, 1], "three calls within one delivery"


def test_delayed_redelivery_then_dead_letter_with_the_story() -> None:
    calls: list[tuple[str, int]] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def broken(event: OrderPlaced, msg: Message) -> None:
        calls.append((msg.id, msg.attempt))
        raise ConnectionError(f"still down ({msg.attempt})")

    with TestClient(
        app_with(events, RetryPolicy(attempts=2, backoff=0, delays=(0.01, 0.02)))
    ) as client:
        message_id = publish(client, OrderPlaced(order_id="1", total=1), headers={"tenant": "a"})
        drain(client)
        dead = dead_letters(client, "broken")
    assert calls == [
        (message_id, 1),
        (message_id, 1),
        (message_id, 2),
        (message_id, 2),
        (message_id, 3),
        (message_id, 3),
    ]
    assert [m.id for m in dead] == [message_id], "the message id is kept to the end"
    headers = dead[0].headers
    assert headers["tenant"] == "a", "original headers are kept"
    assert headers["x-bus-attempts"] == "3"
    assert headers["x-bus-handler"] == "broken"
    assert headers["x-bus-queue"] == "shop.broken"
    assert headers["x-bus-exception-type"] == "builtins.ConnectionError"
    assert headers["x-bus-exception-message"] == "still down (3)"
    assert "redeliveries are used up" in headers["x-bus-dead-letter-reason"]
    assert headers["x-bus-first-failure-at"] <= headers["x-bus-last-failure-at"]
    assert "ConnectionError" in headers["x-bus-traceback"]
    assert dead[0].body == b'{"order_id":"1","total":1.0}'


def test_exceptions_the_policy_does_not_name_go_straight_to_the_dead_letters() -> None:
    calls: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced, retry=RetryPolicy(attempts=5, backoff=0, retry_on=(ConnectionError,)))
    async def picky(event: OrderPlaced) -> None:
        calls.append(event.order_id)
        raise KeyError("no such product")

    with TestClient(app_with(events)) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
        dead = dead_letters(client)
    assert calls == ["1"]
    assert "KeyError is not retried" in dead[0].headers["x-bus-dead-letter-reason"]


def test_handler_can_ask_for_a_later_attempt() -> None:
    calls: list[int] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def later(event: OrderPlaced, msg: Message) -> None:
        calls.append(msg.attempt)
        if msg.attempt == 1:
            raise Retry(delay=0.01, reason="payment not settled yet")

    with TestClient(app_with(events, FAST)) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
        assert dead_letters(client) == []
    assert calls == [1, 2], "Retry skips in-process attempts and redelivers"


def test_the_nearest_policy_wins() -> None:
    calls: dict[str, int] = {"handler": 0, "router": 0, "extension": 0}
    inner = EventRouter(retry=RetryPolicy(attempts=2, backoff=0, delays=()))
    outer = EventRouter()

    @inner.on(OrderPlaced, name="handler", retry=RetryPolicy(attempts=4, backoff=0, delays=()))
    async def by_handler(event: OrderPlaced) -> None:
        calls["handler"] += 1
        raise ConnectionError

    @inner.on(OrderPlaced, name="router")
    async def by_router(event: OrderPlaced) -> None:
        calls["router"] += 1
        raise ConnectionError

    @outer.on(OrderPlaced, name="extension")
    async def by_extension(event: OrderPlaced) -> None:
        calls["extension"] += 1
        raise ConnectionError

    outer.include_router(inner)
    with TestClient(app_with(outer, RetryPolicy(attempts=3, backoff=0, delays=()))) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
        assert len(dead_letters(client)) == 3
    assert calls == {"handler": 4, "router": 2, "extension": 3}


def test_a_poison_message_does_not_stall_its_queue() -> None:
    handled: list[str] = []
    events = EventRouter()

    # One message at a time: if the consumer waited out the retry delay, nothing else could
    # be handled until it had passed.
    @events.on(OrderPlaced, prefetch=1, retry=RetryPolicy(attempts=1, delays=(60.0,)))
    async def picky(event: OrderPlaced) -> None:
        if event.order_id == "poison":
            raise ValueError("cannot handle this one")
        handled.append(event.order_id)

    with TestClient(app_with(events)) as client:
        publish(client, OrderPlaced(order_id="poison", total=1))
        for n in range(50):
            publish(client, OrderPlaced(order_id=str(n), total=1))
        wait_until_sync(lambda: len(handled) == 50, what="the steady stream")
        transport = client.app.state.fastapi_bus.transport
        assert transport.pending() == 1, "the poison message waits for its redelivery"
    assert handled == [str(n) for n in range(50)]


def test_policy_values_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(attempts=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(delays=(-1,))
    assert RetryPolicy.never() == RetryPolicy(attempts=1, delays=())


def _chained_failure() -> BaseException:
    def inner() -> None:
        raise ValueError("inner")

    try:
        try:
            inner()
        except ValueError as exc:
            raise RuntimeError("outer") from exc
    except RuntimeError as exc:
        return exc
    raise AssertionError("unreachable")


def test_traceback_header_reads_like_pythons_own() -> None:
    import traceback

    from fastapi_bus.pipeline.failures import format_traceback

    exc = _chained_failure()
    python = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    markers = set("^~")
    without_markers = [line for line in python.splitlines() if set(line.strip()) - markers]
    ours = format_traceback(exc)
    assert [line for line in ours.splitlines() if line] == without_markers
    assert ours.count("\n\n") == python.count("\n\n") == 2
    assert "direct cause" in format_traceback(exc)


def test_a_long_traceback_keeps_its_innermost_frames() -> None:
    from fastapi_bus.pipeline.delivery import Delivery
    from fastapi_bus.pipeline.failures import MAX_HEADER_TEXT, dead_letter_headers

    def recurse(depth: int) -> None:
        if depth == 0:
            raise KeyError("deep down")
        recurse(depth - 1)

    try:
        recurse(200)
    except KeyError as exc:
        error = exc
    events = EventRouter()

    @events.on(OrderPlaced)
    async def handle(event: OrderPlaced) -> None: ...

    delivery = Delivery(Message(name="OrderPlaced", body=b"{}"), events.routes[0], "shop.handle")
    text = dead_letter_headers(delivery, "failed", error)["x-bus-traceback"]
    assert len(text) <= 2 * MAX_HEADER_TEXT
    assert text.startswith("...")
    assert text.endswith("KeyError: 'deep down'\n")


def test_in_process_backoff_doubles_up_to_its_cap_and_stretches_by_the_jitter() -> None:
    policy = RetryPolicy(backoff=0.1, max_backoff=0.35, jitter=0.5)
    for retry, base in [(1, 0.1), (2, 0.2), (3, 0.35), (10, 0.35)]:
        waits = [policy.backoff_for(retry) for _ in range(200)]
        assert all(base <= wait <= base * 1.5 for wait in waits), (retry, min(waits), max(waits))
    assert RetryPolicy(backoff=0.1, jitter=0).backoff_for(2) == 0.2
