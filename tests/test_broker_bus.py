"""The bus on real brokers (RabbitMQ, Redis): services and replicas, retries, dead letters and
their tools."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from fastapi_bus import EventBus, EventRouter, Message, RetryPolicy
from fastapi_bus.transports.base import dead_letter_queue
from tests.dlq_app import Shipment, broker_transport, build_router
from tests.helpers import OrderPlaced
from tests.utils import wait_until, wait_until_async

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def broker_url(request: pytest.FixtureRequest) -> str:
    """The URL of a real broker: each test runs on RabbitMQ and on Redis."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def names(broker_url: str) -> Iterator[tuple[str, str]]:
    """A namespace (exchange or key prefix) and a service name of the test's own."""
    suffix = uuid.uuid4().hex[:10]
    namespace = f"test-failures-{suffix}"
    yield namespace, f"svc{suffix}"
    if broker_url.startswith("redis"):
        import redis

        with redis.Redis.from_url(broker_url) as client:
            keys = list(client.scan_iter(match="{" + namespace + "}*", count=1000))
            if keys:
                client.delete(*keys)


def make_bus(url: str, names: tuple[str, str], *routers: EventRouter) -> EventBus:
    namespace, service = names
    return EventBus(broker_transport(url, namespace), service=service, routers=list(routers))


async def start(bus: EventBus, running: list[EventBus]) -> EventBus:
    await bus.start()
    running.append(bus)
    await bus.start_consuming()
    return bus


async def test_services_get_their_own_queues_and_replicas_share_one(
    broker_url: str, names: tuple[str, str], running: list[EventBus]
) -> None:
    exchange, service = names
    shop, billing = f"{service}shop", f"{service}billing"
    seen: dict[str, list[str]] = {"shop-1": [], "shop-2": [], "billing": []}

    def router(replica: str) -> EventRouter:
        events = EventRouter()

        @events.on(OrderPlaced, name="on_order")  # the same handler name in both services
        async def on_order(event: OrderPlaced) -> None:
            seen[replica].append(event.order_id)

        return events

    shop_1 = await start(make_bus(broker_url, (exchange, shop), router("shop-1")), running)
    await start(make_bus(broker_url, (exchange, shop), router("shop-2")), running)
    await start(make_bus(broker_url, (exchange, billing), router("billing")), running)
    for n in range(40):
        await shop_1.publish(OrderPlaced(order_id=str(n), total=1))
    everything = [str(n) for n in range(40)]
    await wait_until(lambda: len(seen["shop-1"]) + len(seen["shop-2"]) == 40, timeout=30)
    await wait_until(lambda: len(seen["billing"]) == 40, timeout=30)
    assert sorted(seen["shop-1"] + seen["shop-2"], key=int) == everything
    assert sorted(seen["billing"], key=int) == everything


async def test_broadcast_only_web_processes_and_a_worker(
    broker_url: str, names: tuple[str, str], running: list[EventBus]
) -> None:
    """consume="broadcast": each web process runs its broadcast handler; only the worker runs
    the durable one."""
    seen: dict[str, list[str]] = {"web-1": [], "web-2": [], "worker": [], "durable": []}

    def router(process: str) -> EventRouter:
        events = EventRouter()

        @events.on(OrderPlaced, broadcast=True)
        async def push(event: OrderPlaced) -> None:
            seen[process].append(event.order_id)

        @events.on(OrderPlaced)
        async def charge(event: OrderPlaced) -> None:
            seen["durable"].append(f"{process}:{event.order_id}")

        return events

    webs = []
    for process in ("web-1", "web-2"):
        bus = make_bus(broker_url, names, router(process))
        bus.consume = "broadcast"
        webs.append(await start(bus, running))
        assert bus.consuming == {"push"}
    await start(make_bus(broker_url, names, router("worker")), running)
    for n in range(5):
        await webs[n % 2].publish(OrderPlaced(order_id=str(n), total=1))
    everything = [str(n) for n in range(5)]
    for process in ("web-1", "web-2", "worker"):
        await wait_until(lambda p=process: len(seen[p]) == 5, timeout=30)  # type: ignore[misc]
        assert sorted(seen[process]) == everything
    await wait_until(lambda: len(seen["durable"]) == 5, timeout=30)
    assert sorted(seen["durable"]) == [f"worker:{n}" for n in everything]


async def test_delayed_redelivery_then_dead_letter(
    broker_url: str, names: tuple[str, str], running: list[EventBus]
) -> None:
    deliveries: list[tuple[str, int]] = []
    events = EventRouter(retry=RetryPolicy(attempts=2, backoff=0, delays=(0.2, 0.4)))

    @events.on(OrderPlaced)
    async def broken(event: OrderPlaced, msg: Message) -> None:
        deliveries.append((msg.id, msg.attempt))
        raise ConnectionError("payment service down")

    bus = await start(make_bus(broker_url, names, events), running)
    message_id = await bus.publish(OrderPlaced(order_id="1", total=1), headers={"tenant": "a"})
    dlq = dead_letter_queue(bus.queue_for(bus.routes[0]))
    await wait_until_async(lambda: bus.transport.browse(dlq), 1, timeout=30)
    assert deliveries == [(message_id, n) for n in (1, 1, 2, 2, 3, 3)]
    (letter,) = await bus.dead_letters.list()
    assert letter.message.id == message_id
    assert letter.attempts == 3
    assert letter.exception_type == "builtins.ConnectionError"
    assert letter.message.headers["tenant"] == "a"
    assert await bus.transport.browse(bus.queue_for(bus.routes[0])) == []


async def test_a_poison_message_does_not_stall_the_stream(
    broker_url: str, names: tuple[str, str], running: list[EventBus]
) -> None:
    handled: list[str] = []
    events = EventRouter()

    @events.on(OrderPlaced, prefetch=1, retry=RetryPolicy(attempts=1, delays=(3600.0,)))
    async def picky(event: OrderPlaced) -> None:
        if event.order_id == "poison":
            raise ValueError("cannot handle this one")
        handled.append(event.order_id)

    bus = await start(make_bus(broker_url, names, events), running)
    await bus.publish(OrderPlaced(order_id="poison", total=1))
    for n in range(100):
        await bus.publish(OrderPlaced(order_id=str(n), total=1))
    # With one message at a time, a consumer that waited out the hour would handle nothing.
    await wait_until(lambda: len(handled) == 100, timeout=30)
    assert handled == [str(n) for n in range(100)]
    assert await bus.dead_letters.list() == []


async def test_replay_sends_dead_letters_back_with_their_ids(
    broker_url: str, names: tuple[str, str], running: list[EventBus]
) -> None:
    healed: set[str] = set()
    handled: list[tuple[str, int]] = []
    events = EventRouter(retry=RetryPolicy.never())

    @events.on(OrderPlaced)
    async def reserve(event: OrderPlaced, msg: Message) -> None:
        if event.order_id not in healed:
            raise ConnectionError(event.order_id)
        handled.append((msg.id, msg.attempt))

    bus = await start(make_bus(broker_url, names, events), running)
    ids = [await bus.publish(OrderPlaced(order_id=str(n), total=1)) for n in range(5)]
    dlq = dead_letter_queue(bus.queue_for(bus.routes[0]))
    await wait_until_async(lambda: bus.transport.browse(dlq), 5, timeout=30)
    healed.update({"1", "3"})
    progress: list[int] = []
    moved = await bus.dead_letters.replay(message_ids=[ids[1], ids[3]], progress=progress.append)
    assert moved == 2
    assert progress == [1, 2]
    await wait_until(lambda: len(handled) == 2, timeout=30)
    assert sorted(handled) == sorted([(ids[1], 1), (ids[3], 1)])
    # Handlers run concurrently, so the dead letters may be in any order.
    assert sorted(letter.message.id for letter in await bus.dead_letters.list()) == sorted(
        [ids[0], ids[2], ids[4]]
    )
    assert await bus.dead_letters.purge(older_than=None) == 3


@pytest.fixture
def cli_env(broker_url: str, names: tuple[str, str]) -> dict[str, str]:
    namespace, service = names
    env = {
        **os.environ,
        "FASTAPI_BUS_TEST_URL": broker_url,
        "FASTAPI_BUS_TEST_NAMESPACE": namespace,
        "FASTAPI_BUS_TEST_SERVICE": service,
        "COLUMNS": "200",
    }
    return env


def cli(env: dict[str, str], command: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "fastapi_bus.cli", "dlq", command, "tests.dlq_app:app", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def test_the_dlq_command_line(
    broker_url: str, names: tuple[str, str], running: list[EventBus], cli_env: dict[str, str]
) -> None:
    bus = await start(make_bus(broker_url, names, build_router()), running)
    ids = [await bus.publish(Shipment(shipment_id=name)) for name in ("a", "key-b", "c")]
    queue = bus.queue_for(bus.routes[0])
    await wait_until_async(lambda: bus.transport.browse(dead_letter_queue(queue)), 3, timeout=30)
    await bus.stop_consuming(grace=1)

    async def run(*args: str) -> str:
        return await asyncio.to_thread(cli, cli_env, *args)

    listed = await run("list")
    assert all(message_id in listed for message_id in ids)
    assert "3 dead letter(s)" in listed
    only_keys = await run("list", "--exception", "KeyError")
    assert ids[1] in only_keys
    assert ids[0] not in only_keys
    shown = await run("show", ids[0])
    assert "carrier refused a" in shown
    assert "traceback" in shown
    replayed = await run("replay", "--id", ids[2])
    assert "replayed 1 message(s)" in replayed
    back = await bus.transport.browse(queue)
    assert [m.id for m in back] == [ids[2]], "the replayed message waits in the handler's queue"
    purged = await run("purge", "--yes")
    assert "purged 2 message(s)" in purged
    assert await bus.transport.browse(dead_letter_queue(queue)) == []
