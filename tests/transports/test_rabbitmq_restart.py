"""RabbitMQ restarts under load, and nothing a publish confirmed is lost.

The test restarts a RabbitMQ node of its own (``rabbitmqctl stop_app`` / ``start_app``), never
a server that other work on the machine may be using.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Iterator

import pytest

from fastapi_bus.core.exceptions import TransportError
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Subscription
from fastapi_bus.transports.rabbitmq import RabbitMQTransport
from tests.rabbitmq_nodes import RabbitNode, own_node, rabbitmq_installed
from tests.utils import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]

#: Confirmed publishes before the restart, and again after it, before the publishers stop.
EACH_SIDE = 500
PUBLISHERS = 32


@pytest.fixture
def node() -> Iterator[RabbitNode]:
    if not rabbitmq_installed():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("rabbitmq-server is not installed (CI=true)")
        pytest.skip("rabbitmq-server is not installed here")
    with own_node() as started:
        yield started


async def test_every_confirmed_publish_is_handled_across_a_restart(node: RabbitNode) -> None:
    exchange = f"restart-{uuid.uuid4().hex[:12]}"
    queue = f"{exchange}.orders"
    publisher, worker = (
        RabbitMQTransport(node.url, exchange=exchange, reconnect_interval=0.2, publish_timeout=60)
        for _ in range(2)
    )
    subscription = Subscription(queue=queue, patterns=("orders.placed",), prefetch=200)
    handled: set[int] = set()
    confirmed: set[int] = set()
    failed: set[int] = set()
    confirmed_when_stopped: list[int] = []

    async def handler(message: Message) -> None:
        handled.add(int(message.body))

    numbers = itertools.count()
    attempted: list[int] = []
    # The publishers go on until the node is back and confirms again: however fast they are,
    # the restart happens while they publish.
    enough = asyncio.Event()

    async def publish_some() -> None:
        for number in numbers:
            if enough.is_set():
                return
            attempted.append(number)
            try:
                await publisher.publish(Message(name="orders.placed", body=str(number).encode()))
            except TransportError:
                failed.add(number)  # allowed: the caller was told
            else:
                confirmed.add(number)

    async def restart() -> None:
        try:
            await wait_until(lambda: len(confirmed) >= EACH_SIDE, timeout=60)
            await asyncio.to_thread(node.stop_app)
            confirmed_when_stopped.append(len(confirmed))
            await asyncio.to_thread(node.start_app)
            await wait_until(
                lambda: len(confirmed) >= confirmed_when_stopped[0] + EACH_SIDE, timeout=120
            )
        finally:
            enough.set()

    try:
        await worker.start()
        await publisher.start()
        await worker.consume(subscription, handler)
        await asyncio.gather(restart(), *(publish_some() for _ in range(PUBLISHERS)))
        total = len(attempted)
        assert confirmed_when_stopped[0] < len(confirmed), "confirmed after the restart too"
        assert len(confirmed) + len(failed) == total, "every publish confirmed or refused"
        await wait_until(lambda: confirmed <= handled, timeout=60, what="every confirmed event")
        # The consumer came back by itself: events published after the restart got handled.
        after = Message(name="orders.placed", body=str(total).encode())
        await publisher.publish(after)
        await wait_until(lambda: total in handled, timeout=30)
    finally:
        await publisher.close(grace=1)
        await worker.close(grace=1)
