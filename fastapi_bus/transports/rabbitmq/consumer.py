"""One subscription's deliveries, handed to its consumer callable.

aio-pika calls :meth:`QueueConsumer.on_message` for each delivery; the work happens in a task of
our own, at most ``limit`` at once (the prefetch may be larger). A call that returns acks its
message, one that raises requeues it, and an undecodable message is dead-lettered. Stopping
cancels the broker-side consumer, returns the deliveries that have not started, and gives the
running calls a grace period.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aio_pika.abc
import aio_pika.exceptions

from fastapi_bus.core.exceptions import ConfigurationError, TransportError
from fastapi_bus.core.logs import message_extra
from fastapi_bus.transports.base import Consumer, Subscription
from fastapi_bus.transports.rabbitmq.connection import OPERATION_TIMEOUT
from fastapi_bus.transports.rabbitmq.failover import quiet_attempts
from fastapi_bus.transports.rabbitmq.mapping import decode
from fastapi_bus.transports.rabbitmq.topology import Topology, declare_queue

logger = logging.getLogger("fastapi_bus.rabbitmq")


def _channel_gone(incoming: aio_pika.abc.AbstractIncomingMessage) -> bool:
    """Whether the channel that delivered ``incoming`` is closed (so the broker took it back)."""
    try:
        return incoming.channel.is_closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return True


class QueueConsumer:
    """Hands the deliveries of one queue to one consumer callable, at most ``limit`` at once."""

    def __init__(
        self,
        queue_name: str,
        consumer: Consumer,
        limit: int,
        channel: aio_pika.abc.AbstractRobustChannel,
    ) -> None:
        self.queue_name = queue_name
        self.consumer = consumer
        self.channel = channel
        self.queue: aio_pika.abc.AbstractRobustQueue | None = None
        self.tag: str | None = None
        self.stopping = False
        self._free = limit
        # Deliveries waiting for a free slot, oldest first. Each future answers "go" (True) or
        # "stopping, give it back" (False): unlike cancelling, that reaches a task that has not
        # started yet, and returns the waiting messages in the order they came.
        self._waiting: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[asyncio.Task[None]] = set()

    async def on_message(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        # Called by aio-pika for every delivery; the work happens in a task of our own so that
        # a channel closing under it (a broker restart) does not cancel the consumer call.
        task = asyncio.create_task(self._handle(incoming))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _slot(self) -> bool:
        if self.stopping:
            return False
        if self._free and not self._waiting:
            self._free -= 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            go: bool = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()  # handed a slot just as we were cancelled: pass it on
            raise
        return go

    def _release(self) -> None:
        while self._waiting and not self.stopping:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self._free += 1

    async def _handle(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if not await self._slot():
                await self._settle(incoming, ack=False)
                return
            self._running.add(task)
            try:
                ack = await self._call(incoming)
            finally:
                self._running.discard(task)
                self._release()
        except asyncio.CancelledError:
            await self._settle(incoming, ack=False)
            raise
        if ack is not None:
            await self._settle(incoming, ack=ack)

    async def _call(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> bool | None:
        """Run the consumer: True to ack, False to requeue, None if there is nothing to do."""
        if _channel_gone(incoming):
            # It waited through a reconnection: the broker has put it back already and delivers
            # it again on the new channel, so do not handle it twice.
            return None
        try:
            message = decode(incoming)
        except Exception:
            logger.exception("undecodable message in %r: dead-lettered", self.queue_name)
            with contextlib.suppress(Exception):
                await incoming.reject(requeue=False)
            return None
        try:
            await self.consumer(message)
        except Exception:
            logger.exception(
                "consumer of %r failed; the message goes back",
                self.queue_name,
                extra=message_extra(message),
            )
            return False
        return True

    async def _settle(self, incoming: aio_pika.abc.AbstractIncomingMessage, *, ack: bool) -> None:
        try:
            if ack:
                await incoming.ack()
            else:
                await incoming.nack(requeue=True)
        except Exception as exc:
            # The channel that delivered it is gone, so the broker returns it to the queue.
            logger.info(
                "could not %s a message of %r (%s); RabbitMQ will deliver it again",
                "ack" if ack else "requeue",
                self.queue_name,
                exc or type(exc).__name__,
            )

    def halt(self) -> None:
        """Start no more consumer calls; the deliveries waiting for a slot go back."""
        self.stopping = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(False)

    async def stop(self, grace: float) -> None:
        self.halt()
        # With the connection down there is nobody to tell; the broker forgot us already.
        if self.queue is not None and self.tag is not None and not self.channel.is_closed:
            try:
                await asyncio.wait_for(self.queue.cancel(self.tag), OPERATION_TIMEOUT)
            except Exception as exc:
                logger.info("could not cancel the consumer of %r: %s", self.queue_name, exc)
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(grace, 0))
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Closing the channel returns whatever is still unacknowledged to the queue.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.channel.close(), OPERATION_TIMEOUT)


async def start_consumer(
    connection: aio_pika.abc.AbstractRobustConnection,
    topology: Topology,
    subscription: Subscription,
    consumer: Consumer,
    *,
    url: str,
    scrub: Callable[[str], str],
    consumer_timeout: float | None = None,
) -> QueueConsumer:
    """Consume the queue of ``subscription`` (declared already) on a channel of its own.

    The queue is declared and bound again on that robust channel, so that aio-pika re-declares,
    re-binds and re-consumes it after a reconnection. ``url`` (redacted) and ``scrub`` are for
    the errors. ``consumer_timeout`` (seconds) goes to the broker as the consumer's
    ``x-consumer-timeout``.
    """
    channel = connection.channel(publisher_confirms=False)
    try:
        with quiet_attempts():  # its close callback's complaint when the connection drops
            await asyncio.wait_for(channel.initialize(), OPERATION_TIMEOUT)
    except Exception as exc:
        raise TransportError(f"cannot open a channel on {url}: {scrub(str(exc))}") from None
    name = topology.consumer_queue(subscription)
    runner = QueueConsumer(name, consumer, subscription.max_concurrency, channel)
    try:
        await asyncio.wait_for(
            channel.set_qos(prefetch_count=subscription.prefetch), OPERATION_TIMEOUT
        )
        queue = await declare_queue(channel, topology.queue_spec(subscription))
        assert isinstance(queue, aio_pika.abc.AbstractRobustQueue)
        for pattern in subscription.patterns:
            await asyncio.wait_for(queue.bind(topology.exchange, pattern), OPERATION_TIMEOUT)
        runner.queue = queue
        arguments: dict[str, Any] = {}
        if consumer_timeout is not None:
            arguments["x-consumer-timeout"] = int(consumer_timeout * 1000)
        runner.tag = await asyncio.wait_for(
            queue.consume(runner.on_message, arguments=arguments), OPERATION_TIMEOUT
        )
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT)
        if isinstance(exc, (ConfigurationError, TransportError)) or not isinstance(exc, Exception):
            raise
        raise TransportError(f"cannot consume {name!r}: {scrub(str(exc))}") from None
    return runner
