"""Publishing while RabbitMQ blocks publishers (a memory alarm), on a node of the test's own:
an alarm on a shared broker would stop everyone else's publishers too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from fastapi_bus import Message, TransportError
from fastapi_bus.transports.base import Subscription
from fastapi_bus.transports.rabbitmq import RabbitMQTransport
from fastapi_bus.transports.rabbitmq.blocking import is_blocked
from tests.rabbitmq_nodes import RabbitNode
from tests.utils import wait_until, wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]


@pytest.fixture
def node(own_rabbitmq: RabbitNode) -> RabbitNode:
    return own_rabbitmq


@pytest.fixture
async def transports(node: RabbitNode) -> AsyncIterator[list[RabbitMQTransport]]:
    made: list[RabbitMQTransport] = []
    yield made
    node.ctl("set_vm_memory_high_watermark", "0.4")  # whatever happened, lift the alarm
    for transport in made:
        await transport.close(grace=1)


async def started(
    node: RabbitNode, made: list[RabbitMQTransport], publish_timeout: float
) -> tuple[RabbitMQTransport, str]:
    """A started transport of its own exchange, and the queue its pings go to."""
    suffix = uuid.uuid4().hex[:8]
    transport = RabbitMQTransport(
        node.url, exchange=f"x{suffix}", publish_timeout=publish_timeout, auto_delete_topology=True
    )
    made.append(transport)
    await transport.start()
    await transport.declare(Subscription(queue=f"q{suffix}", patterns=("Ping",)))
    return transport, f"q{suffix}"


def ping(n: int) -> Message:
    return Message(name="Ping", body=b"{}", id=f"ping-{n}")


async def test_a_blocked_publisher_gets_a_clear_error_at_its_deadline(
    node: RabbitNode, transports: list[RabbitMQTransport]
) -> None:
    transport, queue = await started(node, transports, publish_timeout=1.5)
    await transport.publish(ping(1))
    node.ctl("set_vm_memory_high_watermark", "0")
    # The first publish is sent, and the broker stops reading: no confirm comes.
    with pytest.raises(TransportError, match=r"connection\.blocked.*may or may not have been"):
        await transport.publish(ping(2))
    # Now the connection is known to be blocked: the next one waits, and is never sent.
    with pytest.raises(TransportError, match=r"connection\.blocked.*it was not sent"):
        await transport.publish(ping(3))
    node.ctl("set_vm_memory_high_watermark", "0.4")
    await transport.publish(ping(4))
    await wait_until_async(lambda: transport.browse(queue), 3)
    ids = [message.id for message in await transport.browse(queue)]
    assert ids == ["ping-1", "ping-2", "ping-4"], "the one held by the broker was kept"


async def test_a_publish_waits_for_the_alarm_to_clear_within_its_deadline(
    node: RabbitNode, transports: list[RabbitMQTransport]
) -> None:
    transport, queue = await started(node, transports, publish_timeout=60)
    node.ctl("set_vm_memory_high_watermark", "0")
    publishing = asyncio.create_task(transport.publish(ping(1)))
    await wait_until(
        lambda: is_blocked(transport._connection), timeout=30, what="the broker to block us"
    )
    assert not publishing.done(), "it waits while the broker blocks publishers"
    node.ctl("set_vm_memory_high_watermark", "0.4")
    await asyncio.wait_for(publishing, 30)
    assert [m.id for m in await transport.browse(queue)] == ["ping-1"]
