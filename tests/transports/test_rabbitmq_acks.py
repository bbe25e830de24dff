"""The RabbitMQ consumer's batched acknowledgements: ``basic.ack`` with ``multiple`` may only
cover messages whose calls have returned, on the channel that delivered them.

A model broker checks every frame as RabbitMQ would (an ack of a tag that is not outstanding
closes the channel) and that a multiple ack sweeps up nothing but returned messages, whatever the
order in which calls return, fail and are flushed. And the deliveries reach the workers in the
order of their tags, also while aiormq takes over from aio-pika's callback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest
from aiormq.abc import DeliveredMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.header import ContentHeader

from fastapi_bus.core.messages import Message
from fastapi_bus.transports.rabbitmq.consumer import QueueConsumer, _ChannelAcks
from tests.transports.test_rabbitmq import Broker, sub
from tests.utils import wait_until


@pytest.fixture
async def broker(rabbitmq_url: str) -> AsyncIterator[Broker]:
    made = Broker(rabbitmq_url)
    yield made
    await made.cleanup()


class ModelChannel:
    """The broker's view of one channel: the outstanding delivery tags."""

    is_closed = False

    def __init__(self, deliveries: int) -> None:
        self.outstanding = set(range(1, deliveries + 1))
        self.returned: set[int] = set()  # calls that returned: these may be acked
        self.acked: set[int] = set()
        self.requeued: set[int] = set()

    def ack(self, tag: int, multiple: bool) -> None:
        assert tag in self.outstanding, f"ack of tag {tag}, which is not outstanding"
        swept = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        assert swept <= self.returned, f"ack {tag} multiple={multiple} sweeps {swept}"
        self.outstanding -= swept
        self.acked |= swept

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.ack(delivery_tag, multiple)

    def nack(self, tag: int) -> None:
        assert tag in self.outstanding
        self.outstanding.discard(tag)
        self.requeued.add(tag)


def run(deliveries: int, order: list[int], fails: set[int], flushes: set[int]) -> ModelChannel:
    channel = ModelChannel(deliveries)
    acks = _ChannelAcks(channel)

    async def main() -> None:
        for step, tag in enumerate(order):
            if tag in fails:
                channel.nack(tag)  # sent at once, then noted
                acks.note(tag)
            else:
                channel.returned.add(tag)
                acks.ready.add(tag)
            if step in flushes:
                await acks.flush()
        await acks.flush()

    asyncio.run(main())
    return channel


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_multiple_ack_covers_only_returned_calls(data: st.DataObject) -> None:
    deliveries = data.draw(st.integers(1, 30))
    order = data.draw(st.permutations(range(1, deliveries + 1)))
    fails = data.draw(st.sets(st.sampled_from(order)))
    flushes = data.draw(st.sets(st.integers(0, deliveries - 1)))
    channel = run(deliveries, order, fails, flushes)
    assert not channel.outstanding
    assert channel.acked == set(order) - fails
    assert channel.requeued == fails


def test_calls_that_return_in_order_are_acked_in_one_frame() -> None:
    frames: list[tuple[int, bool]] = []

    class Recording(ModelChannel):
        def ack(self, tag: int, multiple: bool) -> None:
            frames.append((tag, multiple))
            super().ack(tag, multiple)

    channel = Recording(5)
    acks = _ChannelAcks(channel)
    for tag in range(1, 6):
        channel.returned.add(tag)
        acks.ready.add(tag)
    asyncio.run(acks.flush())
    assert frames == [(5, True)]


def test_a_call_that_has_not_returned_holds_the_run_back() -> None:
    frames: list[tuple[int, bool]] = []

    class Recording(ModelChannel):
        def ack(self, tag: int, multiple: bool) -> None:
            frames.append((tag, multiple))
            super().ack(tag, multiple)

    channel = Recording(5)
    acks = _ChannelAcks(channel)
    for tag in (1, 2, 4, 5):  # 3 is still running
        channel.returned.add(tag)
        acks.ready.add(tag)
    asyncio.run(acks.flush())
    assert frames == [(2, True), (4, False), (5, False)]
    channel.returned.add(3)
    acks.ready.add(3)
    asyncio.run(acks.flush())
    assert frames[-1] == (3, False)
    assert not channel.outstanding


@pytest.mark.anyio
@pytest.mark.rabbitmq
async def test_failures_among_concurrent_calls_are_requeued_and_the_rest_acked_once(
    broker: Broker,
) -> None:
    transport = await broker.start(auto_delete_topology=True)
    queue = broker.queue()
    handled: list[bytes] = []
    failed: set[bytes] = set()

    async def consumer(message: Message) -> None:
        await asyncio.sleep(0.001 * (int(message.body) % 4))  # return out of order
        if int(message.body) % 3 == 0 and message.body not in failed:
            failed.add(message.body)
            raise RuntimeError("once")
        handled.append(message.body)

    await transport.consume(sub(queue, prefetch=20, concurrency=6), consumer)
    for n in range(90):
        await transport.publish(Message(name="test.event", body=str(n).encode()))
    await wait_until(lambda: len(handled) >= 90, timeout=60)
    await transport.stop_consuming(grace=5)
    # A second ack of one tag would have closed the channel and delivered messages again.
    assert sorted(handled) == sorted(str(n).encode() for n in range(90))
    assert transport.connected
    reader = await broker.start(auto_delete_topology=True)
    assert await reader.browse(queue) == []


class FakeChannel:
    """aiormq's channel, as far as taking deliveries over goes."""

    is_closed = False

    def __init__(self) -> None:
        self.consumers: dict[str, object] = {"ctag": object()}


def delivered(channel: FakeChannel, tag: int) -> DeliveredMessage:
    return DeliveredMessage(
        delivery=aiormq.spec.Basic.Deliver(
            consumer_tag="ctag", delivery_tag=tag, routing_key="test.event"
        ),
        header=ContentHeader(properties=aiormq.spec.Basic.Properties()),
        body=str(tag).encode(),
        channel=channel,  # type: ignore[arg-type]
    )


def test_deliveries_keep_their_order_while_aiormq_takes_over() -> None:
    # aio-pika's path adds a task per delivery: tag 1, delivered before the take-over, is still
    # on its way through on_message when tags 2 and 3 come straight from aiormq.
    async def consumer(message: Message) -> None:
        pass

    async def main() -> list[int | None]:
        channel = FakeChannel()
        runner = QueueConsumer("q", consumer, 1, channel=None)  # type: ignore[arg-type]
        first = aio_pika.IncomingMessage(delivered(channel, 1))

        later: list[asyncio.Future[None]] = []

        async def through_aio_pika() -> None:
            runner.take_over(channel, "ctag")
            later.append(asyncio.ensure_future(runner.on_message(first)))

        steps = [asyncio.ensure_future(through_aio_pika())]
        steps += [asyncio.ensure_future(runner.on_delivery(delivered(channel, t))) for t in (2, 3)]
        await asyncio.gather(*steps)
        await asyncio.gather(*later)
        await wait_until(lambda: len(runner._deliveries) == 3)
        assert channel.consumers["ctag"] == runner.on_delivery
        return [delivery.delivery_tag for delivery in runner._deliveries]

    assert asyncio.run(main()) == [1, 2, 3]


@pytest.mark.anyio
@pytest.mark.rabbitmq
async def test_one_worker_handles_waiting_messages_in_order(broker: Broker) -> None:
    transport = await broker.start(auto_delete_topology=True)
    queue = broker.queue()
    subscription = sub(queue, prefetch=128, concurrency=1)
    await transport.declare(subscription)
    for n in range(300):
        await transport.publish(Message(name="test.event", body=str(n).encode()))
    handled: list[int] = []

    async def consumer(message: Message) -> None:
        handled.append(int(message.body))

    await transport.consume(subscription, consumer)
    await wait_until(lambda: len(handled) >= 300, timeout=60)
    # On the installed aio-pika and aiormq, aiormq hands the deliveries straight to the bus
    # after the first (an upgrade that stopped this would leave the bus slower, not wrong).
    runner = transport._consumers[-1]
    assert runner.on_delivery in runner._channel.consumers.values()
    await transport.stop_consuming(grace=5)
    assert handled == list(range(300))
