"""RabbitMQ restarts under load, and nothing a publish confirmed is lost.

This test stops and starts the shared server (``rabbitmqctl stop_app`` / ``start_app``), so it
restores it before returning. Set ``FASTAPI_BUS_RABBITMQCTL`` (such as
``docker exec rabbitmq rabbitmqctl``) when the server is not local.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from fastapi_bus.core.exceptions import TransportError
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Subscription, dead_letter_queue
from fastapi_bus.transports.rabbitmq import RabbitMQTransport
from tests.utils import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.rabbitmq]

RABBITMQCTL = shlex.split(os.environ.get("FASTAPI_BUS_RABBITMQCTL", "rabbitmqctl"))
TOTAL = 10_000
PUBLISHERS = 32


async def rabbitmqctl(*args: str, timeout: float = 60) -> None:
    process = await asyncio.create_subprocess_exec(
        *RABBITMQCTL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"rabbitmqctl {' '.join(args)} took more than {timeout}s") from None
    if process.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {(err or out).decode()}")


@pytest.fixture
async def restartable(rabbitmq_url: str) -> AsyncIterator[str]:
    """The server URL, with the promise that the server is up again after the test."""
    if shutil.which(RABBITMQCTL[0]) is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{RABBITMQCTL[0]} is needed to restart RabbitMQ (CI=true)")
        pytest.skip(f"{RABBITMQCTL[0]} is not available; set FASTAPI_BUS_RABBITMQCTL")
    try:
        yield rabbitmq_url
    finally:
        await ensure_running()


async def ensure_running() -> None:
    # start_app on a running node does nothing, so this is safe whatever happened.
    await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup")


async def test_every_confirmed_publish_is_handled_across_a_restart(restartable: str) -> None:
    exchange = f"restart-{uuid.uuid4().hex[:12]}"
    queue = f"{exchange}.orders"
    publisher, worker = (
        RabbitMQTransport(
            restartable, exchange=exchange, reconnect_interval=0.2, publish_timeout=60
        )
        for _ in range(2)
    )
    subscription = Subscription(queue=queue, patterns=("orders.placed",), prefetch=200)
    handled: set[int] = set()
    confirmed: set[int] = set()
    failed: set[int] = set()
    confirmed_when_stopped: list[int] = []

    async def handler(message: Message) -> None:
        handled.add(int(message.body))

    numbers = iter(range(TOTAL))

    async def publish_some() -> None:
        for number in numbers:
            try:
                await publisher.publish(Message(name="orders.placed", body=str(number).encode()))
            except TransportError:
                failed.add(number)  # allowed: the caller was told
            else:
                confirmed.add(number)

    async def restart() -> None:
        await wait_until(lambda: len(confirmed) >= TOTAL // 10, timeout=60)
        await rabbitmqctl("stop_app")
        confirmed_when_stopped.append(len(confirmed))
        await rabbitmqctl("start_app")
        await rabbitmqctl("await_startup")

    try:
        await worker.start()
        await publisher.start()
        await worker.consume(subscription, handler)
        await asyncio.gather(restart(), *(publish_some() for _ in range(PUBLISHERS)))
        assert confirmed_when_stopped[0] < TOTAL, "the restart happened while publishing"
        assert len(confirmed) + len(failed) == TOTAL
        await wait_until(lambda: confirmed <= handled, timeout=60, what="every confirmed event")
        # The consumer came back by itself: events published after the restart got handled.
        after = Message(name="orders.placed", body=str(TOTAL).encode())
        await publisher.publish(after)
        await wait_until(lambda: TOTAL in handled, timeout=30)
    finally:
        await ensure_running()
        await publisher.close(grace=1)
        await worker.close(grace=1)
        connection = await aio_pika.connect(restartable)
        try:
            channel = await connection.channel()
            for name in (queue, dead_letter_queue(queue)):
                await channel.queue_delete(name)
            await channel.exchange_delete(exchange)
        finally:
            await connection.close()
