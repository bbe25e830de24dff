"""Idempotent handlers, Fault events and metrics hooks."""

from __future__ import annotations

import concurrent.futures

from fastapi.testclient import TestClient

from fastapi_bus import (
    Bus,
    BusExtension,
    CounterMetrics,
    EventRouter,
    FastAPI,
    Fault,
    Message,
    Metrics,
    MetricsGroup,
    Reject,
    RetryPolicy,
    get_bus,
)
from fastapi_bus.testing import drain, publish
from tests.helpers import OrderPlaced


def test_idempotent_handler_skips_a_message_it_already_processed() -> None:
    calls: dict[str, list[str]] = {"idempotent": [], "plain": []}
    events = EventRouter()

    @events.on(OrderPlaced, idempotent=True)
    async def idempotent(event: OrderPlaced, msg: Message) -> None:
        calls["idempotent"].append(msg.id)

    @events.on(OrderPlaced)
    async def plain(event: OrderPlaced, msg: Message) -> None:
        calls["plain"].append(msg.id)

    app = FastAPI()
    app.include_extension(BusExtension(routers=[events], service="shop"))
    with TestClient(app) as client:
        bus = get_bus(app)
        message = bus.encode(OrderPlaced(order_id="1", total=1))
        for _ in range(3):  # the broker delivers the same message three times
            client.portal.call(bus.transport.publish, message)
        other = publish(client, OrderPlaced(order_id="2", total=1))
        drain(client)
    assert calls["idempotent"] == [message.id, other]
    assert calls["plain"] == [message.id] * 3 + [other]
    assert isinstance(bus.metrics, CounterMetrics)
    assert bus.metrics.counts["skipped", "idempotent"] == 2


def test_a_failed_attempt_is_not_remembered_as_processed() -> None:
    calls: list[int] = []
    events = EventRouter()

    @events.on(OrderPlaced, idempotent=True, retry=RetryPolicy(attempts=2, backoff=0, delays=()))
    async def flaky(event: OrderPlaced) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError

    app = FastAPI()
    app.include_extension(BusExtension(routers=[events], service="shop"))
    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
    assert len(calls) == 2


def test_dead_lettering_publishes_a_fault() -> None:
    faults: list[tuple[Fault, Message]] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced) -> None:
        raise Reject("out of stock")

    @events.on(Fault)
    async def alert(fault: Fault, msg: Message) -> None:
        faults.append((fault, msg))
        raise Reject("a failing fault handler must not start a loop")

    app = FastAPI()
    app.include_extension(BusExtension(routers=[events], service="shop"))
    with TestClient(app) as client:
        message_id = publish(client, OrderPlaced(order_id="1", total=1), correlation_id="c-1")
        drain(client)
    assert len(faults) == 1
    fault, msg = faults[0]
    assert (fault.message_id, fault.event, fault.service, fault.handler, fault.queue) == (
        message_id,
        "OrderPlaced",
        "shop",
        "reserve",
        "shop.reserve",
    )
    assert fault.reason == "rejected by the handler: out of stock"
    assert fault.exception_type == "fastapi_bus.core.exceptions.Reject"
    assert fault.attempts == 1
    assert (msg.name, msg.correlation_id, msg.causation_id) == ("Fault", "c-1", message_id)


def test_metrics_count_each_outcome_per_handler() -> None:
    events = EventRouter(retry=RetryPolicy(attempts=2, backoff=0, delays=(0.01,)))

    @events.on(OrderPlaced)
    async def fine(event: OrderPlaced) -> None:
        pass

    @events.on(OrderPlaced)
    async def broken(event: OrderPlaced) -> None:
        raise ConnectionError

    metrics = CounterMetrics()
    app = FastAPI()
    app.include_extension(BusExtension(routers=[events], service="shop", metrics=metrics))
    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        publish(client, OrderPlaced(order_id="2", total=1))
        drain(client)
    assert metrics.counts == {
        ("handled", "fine"): 2,
        ("failed", "broken"): 8,  # 2 messages x 2 deliveries x 2 calls
        ("retried", "broken"): 2,
        ("dead_lettered", "broken"): 2,
    }


def test_a_hook_overridden_in_a_group_member_is_called() -> None:
    # The bus leaves out the hooks that nobody overrides; one member that does is enough.
    class InFlight(Metrics):
        def __init__(self) -> None:
            self.log: list[tuple[str, str, str]] = []

        def consumed(self, handler: str, event: str) -> None:
            self.log.append(("consumed", handler, event))

        def settled(self, handler: str, event: str) -> None:
            self.log.append(("settled", handler, event))

    events = EventRouter()

    @events.on(OrderPlaced)
    async def fine(event: OrderPlaced) -> None:
        pass

    counter, in_flight = CounterMetrics(), InFlight()
    app = FastAPI()
    metrics = MetricsGroup(counter, in_flight)
    app.include_extension(BusExtension(routers=[events], service="shop", metrics=metrics))
    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
    assert in_flight.log == [
        ("consumed", "fine", "OrderPlaced"),
        ("settled", "fine", "OrderPlaced"),
    ]
    assert counter.counts == {("handled", "fine"): 1}


def test_counter_metrics_count_exactly_from_several_threads() -> None:
    counter = CounterMetrics()
    per_thread = 5_000

    def count(_: int) -> None:
        for _ in range(per_thread):
            counter.handled("fine", "OrderPlaced", 0.0)
            counter.failed("fine", "OrderPlaced", RuntimeError())

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(count, range(4)))
    assert counter.counts == {
        ("handled", "fine"): 4 * per_thread,
        ("failed", "fine"): 4 * per_thread,
    }


def test_counter_metrics_counts_are_a_live_view() -> None:
    counter = CounterMetrics()
    counts = counter.counts  # kept, as a test or a health check would
    assert counts["handled", "fine"] == 0 and ("handled", "fine") not in counts
    for _ in range(3):
        counter.handled("fine", "OrderPlaced", 0.0)
    counter.dead_lettered("broken", "OrderPlaced", "boom")
    assert counts["handled", "fine"] == 3 and ("handled", "fine") in counts
    assert counts == {("handled", "fine"): 3, ("dead_lettered", "broken"): 1}
    assert counts.most_common(1) == [(("handled", "fine"), 3)]
    assert counts.total() == 4 and len(counts) == 2


def test_the_published_hook_is_told_of_every_event_sent() -> None:
    """Whether sent one by one or a request's events together, each is reported once."""

    class Published(Metrics):
        def __init__(self) -> None:
            self.events: list[str] = []

        def published(self, event: str, seconds: float) -> None:
            assert seconds >= 0
            self.events.append(event)

    events = EventRouter()

    @events.on(OrderPlaced)
    async def fine(event: OrderPlaced) -> None:
        pass

    hook = Published()
    app = FastAPI()
    app.include_extension(BusExtension(routers=[events], service="shop", metrics=hook))

    @app.post("/two")
    async def two(bus: Bus) -> None:
        await bus.publish(OrderPlaced(order_id="1", total=1))
        await bus.publish(OrderPlaced(order_id="2", total=2))

    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="0", total=0))
        assert client.post("/two").status_code == 200
        drain(client)
    assert hook.events == ["OrderPlaced"] * 3
