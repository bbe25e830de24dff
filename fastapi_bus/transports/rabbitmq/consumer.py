"""One subscription's deliveries, handed to its consumer callable.

aiormq calls :meth:`QueueConsumer.on_delivery` for each delivery, which only puts it in line: a
fixed pool of ``limit`` workers of our own (the prefetch may be larger) takes the deliveries in
order, so that a channel closing under a call (a broker restart) does not cancel it. The consumer
is registered through aio-pika (which restores it after a reconnection); its first delivery on a
channel makes aiormq hand over the next ones directly, without an aio-pika message object and
task per delivery. A call that returns acks its message, one that raises requeues it, and an
undecodable message is dead-lettered. Stopping cancels the broker-side consumer, returns the
deliveries that have not started, and gives the running calls a grace period.

Acknowledgements of calls that return together go in one frame where that is provably safe: see
:class:`_ChannelAcks`. Requeues and rejections are sent one by one, at once.
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
import aiormq
from aiormq.abc import DeliveredMessage
from pamqp.header import ContentHeader

from fastapi_bus.core.exceptions import ConfigurationError, TransportError
from fastapi_bus.core.logs import message_extra
from fastapi_bus.transports.base import Consumer, Subscription
from fastapi_bus.transports.rabbitmq.connection import OPERATION_TIMEOUT
from fastapi_bus.transports.rabbitmq.failover import quiet_attempts
from fastapi_bus.transports.rabbitmq.mapping import decode_delivered
from fastapi_bus.transports.rabbitmq.topology import Topology, declare_queue

logger = logging.getLogger("fastapi_bus.rabbitmq")

#: Tags settled one by one above a tag still unsettled that a channel keeps count of. Past this,
#: the channel's acks go one by one: a run could only start once that call returns.
MAX_SETTLED = 10_000


def _channel_of(delivery: DeliveredMessage) -> Any:
    """The (AMQP) channel that delivered ``delivery``, or None if it is closed (so the broker
    took the message back)."""
    channel = delivery.channel
    return None if channel.is_closed else channel


def _delivered(incoming: aio_pika.abc.AbstractIncomingMessage, channel: Any) -> DeliveredMessage:
    """aiormq's delivery for aio-pika's message ``incoming``, delivered on ``channel``."""
    deliver = aiormq.spec.Basic.Deliver(
        consumer_tag=incoming.consumer_tag,
        delivery_tag=incoming.delivery_tag,
        redelivered=bool(incoming.redelivered),
        exchange=incoming.exchange or "",
        routing_key=incoming.routing_key or "",
    )
    header = ContentHeader(body_size=len(incoming.body), properties=incoming.properties)
    return DeliveredMessage(delivery=deliver, header=header, body=incoming.body, channel=channel)


class _ChannelAcks:
    """The acknowledgements still to send on one AMQP channel.

    A channel numbers its deliveries 1, 2, 3... (a new channel after a reconnection starts again
    at 1, which is why there is one of these per channel). ``basic.ack`` with ``multiple`` acks
    every tag up to the one given that is still unsettled on the channel, so it is sent only for
    a run that starts just above ``base`` (every tag up to ``base`` is settled) and in which every
    tag is either a message whose call has returned (``ready``) or one settled already, by a frame
    sent before (``settled``). Nothing else can be swept up by it. A ready message outside such a
    run is acked on its own.
    """

    __slots__ = ("base", "channel", "ready", "settled")

    def __init__(self, channel: Any) -> None:
        self.channel = channel  # kept alive, so that its id is not reused
        self.base = 0
        self.ready: set[int] = set()
        self.settled: set[int] = set()

    def note(self, tag: int) -> None:
        """Note that ``tag`` is settled on its own (its frame is sent)."""
        if self.base >= 0:
            self.settled.add(tag)

    async def flush(self) -> None:
        """Send the acks of what is ready: the run as one frame, the rest one by one.

        The frames go to the connection's writer in this order without waiting for each to be
        written (``wait=False``): an ack is a promise about a call that has returned already,
        and if the connection fails before it is written, the broker delivers again."""
        ready, self.ready = self.ready, set()
        top = self.base
        run = covered = 0
        while True:
            tag = top + 1
            if tag in ready:
                run = tag
                covered += 1
            elif tag in self.settled:
                self.settled.discard(tag)
            else:
                break
            top = tag
        self.base = top
        channel = self.channel
        if run:
            await channel.basic_ack(run, multiple=covered > 1, wait=False)
        for tag in ready:
            if tag > top:
                await channel.basic_ack(tag, wait=False)
                self.note(tag)
        if len(self.settled) > MAX_SETTLED:
            # A call that never ends holds the run back: stop keeping count above it.
            self.base = -1
            self.settled.clear()


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
        self._limit = limit
        #: Deliveries waiting for a worker, oldest first.
        self._deliveries: collections.deque[DeliveredMessage] = collections.deque()
        #: The channel and the delivery tag of the last delivery put in line, and how many
        #: deliveries wait for their turn to be put in line (see :meth:`on_delivery`).
        self._channel: Any = None
        self._last = 0
        self._deferred = 0
        #: Workers waiting for a delivery: each is woken by setting its future.
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waking = 0  # workers woken that have not run yet
        self._workers: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()
        #: Per AMQP channel (by id), the acknowledgements to send.
        self._acks: dict[int, _ChannelAcks] = {}
        self._flush: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the workers (before the first delivery)."""
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._limit)]

    async def on_message(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        """aio-pika's consumer callback: called for the deliveries of a channel until the first
        of them made aiormq call :meth:`on_delivery` instead (:meth:`take_over`)."""
        try:
            channel = incoming.channel
        except aio_pika.exceptions.ChannelInvalidStateError:
            return  # closed: the broker took it back
        if incoming.consumer_tag is not None:
            self.take_over(channel, incoming.consumer_tag)
        delivery = _delivered(incoming, channel)
        if self.stopping:
            await self._requeue(delivery)
            return
        # aio-pika's task per delivery makes this one loop step later than on_delivery would
        # have been: so it is in line before what on_delivery deferred meanwhile.
        self._line_up(delivery)

    def take_over(self, channel: Any, consumer_tag: str) -> None:
        """Have aiormq's ``channel`` call :meth:`on_delivery` for consumer ``consumer_tag``
        (registered through aio-pika, which registers it again after a reconnection)."""
        consumers = getattr(channel, "consumers", None)
        if isinstance(consumers, dict) and consumer_tag in consumers:
            consumers[consumer_tag] = self.on_delivery

    async def on_delivery(self, delivery: DeliveredMessage) -> None:
        """aiormq's consumer callback (in a task of its own per delivery)."""
        if self.stopping:
            await self._requeue(delivery)
            return
        if (
            delivery.channel is self._channel
            and delivery.delivery_tag == self._last + 1
            and not self._deferred
        ):
            self._line_up(delivery)
            return
        # Deliveries before this one on its channel may still be on their way through
        # on_message, a loop step behind: put this one in line a step later, after them.
        self._deferred += 1
        asyncio.get_running_loop().call_soon(self._line_up_deferred, delivery)

    def _line_up_deferred(self, delivery: DeliveredMessage) -> None:
        self._deferred -= 1
        self._line_up(delivery)

    def _line_up(self, delivery: DeliveredMessage) -> None:
        self._channel = delivery.channel
        self._last = delivery.delivery_tag or 0
        self._deliveries.append(delivery)
        if not self._waking:
            self._wake()

    def _wake(self) -> None:
        """Wake one idle worker, if any. One is woken at a time: a worker takes a delivery and,
        if more are waiting, wakes the next before it handles its own. Calls that return without
        waiting on anything thus run one after the other in one worker, and each that waits lets
        one more worker start."""
        idle = self._idle
        while idle:
            worker = idle.popleft()
            if not worker.done():
                worker.set_result(None)
                self._waking += 1
                return

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        deliveries = self._deliveries
        while not self.stopping:
            if not deliveries:
                idle = loop.create_future()
                self._idle.append(idle)
                try:
                    await idle
                finally:
                    if idle.done() and not idle.cancelled():
                        self._waking -= 1
                continue
            delivery = deliveries.popleft()
            if deliveries and not self._waking:
                self._wake()
            self._running.add(task)
            try:
                await self._handle(delivery)
            finally:
                self._running.discard(task)

    async def _handle(self, delivery: DeliveredMessage) -> None:
        try:
            ack = await self._call(delivery)
        except asyncio.CancelledError:
            await self._requeue(delivery)
            raise
        if ack:
            self._ack(delivery)
        elif ack is not None:
            await self._requeue(delivery)

    async def _call(self, delivery: DeliveredMessage) -> bool | None:
        """Run the consumer: True to ack, False to requeue, None if there is nothing to do."""
        channel = _channel_of(delivery)
        if channel is None:
            # It waited through a reconnection: the broker has put it back already and delivers
            # it again on the new channel, so do not handle it twice.
            return None
        try:
            message = decode_delivered(delivery)
        except Exception:
            logger.exception("undecodable message in %r: dead-lettered", self.queue_name)
            with contextlib.suppress(Exception):
                await channel.basic_reject(delivery.delivery_tag, requeue=False)
                self._settled(delivery)
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

    # acknowledgements

    def _ack(self, delivery: DeliveredMessage) -> None:
        """Ack ``delivery`` (its call has returned) soon, with the others that return in the
        same moment."""
        channel = _channel_of(delivery)
        tag = delivery.delivery_tag
        if channel is None or tag is None:
            return  # the broker took it back with its channel
        acks = self._acks.get(id(channel))
        if acks is None:
            acks = self._acks[id(channel)] = _ChannelAcks(channel)
        acks.ready.add(tag)
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_acks())

    def _settled(self, delivery: DeliveredMessage) -> None:
        """Note that ``delivery`` was settled on its own (its frame is sent)."""
        channel = _channel_of(delivery)
        tag = delivery.delivery_tag
        if channel is not None and tag is not None:
            acks = self._acks.get(id(channel))
            if acks is None:
                acks = self._acks[id(channel)] = _ChannelAcks(channel)
            acks.note(tag)

    async def _flush_acks(self) -> None:
        # One flush at a time, so that the frames of one never overtake those of another.
        try:
            await asyncio.sleep(0)  # let the calls returning now add theirs
            while True:
                for key in [k for k, acks in self._acks.items() if acks.channel.is_closed]:
                    # Its deliveries went back to the queue with it; tags do not carry over.
                    del self._acks[key]
                due = [(key, acks) for key, acks in self._acks.items() if acks.ready]
                if not due:
                    return
                for key, acks in due:
                    await self._flush_channel(key, acks)
        finally:
            self._flush = None

    async def _flush_channel(self, key: int, acks: _ChannelAcks) -> None:
        if acks.channel.is_closed:
            # Its deliveries went back to the queue with it; tags do not carry over.
            self._acks.pop(key, None)
            return
        try:
            await acks.flush()
        except Exception as exc:
            self._acks.pop(key, None)
            logger.info(
                "could not ack messages of %r (%s); RabbitMQ will deliver them again",
                self.queue_name,
                exc or type(exc).__name__,
            )

    async def _requeue(self, delivery: DeliveredMessage) -> None:
        channel: Any = delivery.channel
        try:
            await channel.basic_nack(delivery.delivery_tag, requeue=True)
        except Exception as exc:
            # The channel that delivered it is gone, so the broker returns it to the queue.
            logger.info(
                "could not requeue a message of %r (%s); RabbitMQ will deliver it again",
                self.queue_name,
                exc or type(exc).__name__,
            )
        else:
            self._settled(delivery)

    # stopping

    def halt(self) -> None:
        """Start no more consumer calls; the deliveries waiting for a worker go back when
        stopping."""
        self.stopping = True
        for task in self._workers:
            if task not in self._running:
                task.cancel()

    async def stop(self, grace: float) -> None:
        self.halt()
        # With the connection down there is nobody to tell; the broker forgot us already.
        if self.queue is not None and self.tag is not None and not self.channel.is_closed:
            try:
                await asyncio.wait_for(self.queue.cancel(self.tag), OPERATION_TIMEOUT)
            except Exception as exc:
                logger.info("could not cancel the consumer of %r: %s", self.queue_name, exc)
        busy = [task for task in self._workers if not task.done()]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=max(grace, 0))
            for task in pending:
                task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        # What returned is acked; what never started goes back, in the order it came.
        if self._flush is not None:
            await asyncio.gather(self._flush, return_exceptions=True)
        while self._deliveries:
            await self._requeue(self._deliveries.popleft())
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
        runner.start()
        arguments: dict[str, Any] = {}
        if consumer_timeout is not None:
            arguments["x-consumer-timeout"] = int(consumer_timeout * 1000)
        runner.tag = await asyncio.wait_for(
            queue.consume(runner.on_message, arguments=arguments), OPERATION_TIMEOUT
        )
        runner.take_over(await channel.get_underlay_channel(), runner.tag)
    except BaseException as exc:
        runner.halt()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT)
        if isinstance(exc, (ConfigurationError, TransportError)) or not isinstance(exc, Exception):
            raise
        raise TransportError(f"cannot consume {name!r}: {scrub(str(exc))}") from None
    return runner
