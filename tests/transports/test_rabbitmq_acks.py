"""The RabbitMQ consumer's batched acknowledgements: ``basic.ack`` with ``multiple`` may only
cover messages whose calls have returned, on the channel that delivered them.

A model broker checks every frame as RabbitMQ would (an ack of a tag that is not outstanding
closes the channel) and that a multiple ack sweeps up nothing but returned messages, whatever the
order in which calls return, fail and are flushed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_bus.core.messages import Message
from fastapi_bus.transports.rabbitmq.consumer import _ChannelAcks
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

    def nack(self, tag: int) -> None:
        assert tag in self.outstanding
        self.outstanding.discard(tag)
        self.requeued.add(tag)


class FakeIncoming:
    def __init__(self, channel: ModelChannel, tag: int) -> None:
        self.channel = channel
        self.delivery_tag = tag

    async def ack(self, multiple: bool = False) -> None:
        self.channel.ack(self.delivery_tag, multiple)


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
                acks.ready[tag] = FakeIncoming(channel, tag)  # type: ignore[assignment]
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
        acks.ready[tag] = FakeIncoming(channel, tag)  # type: ignore[assignment]
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
        acks.ready[tag] = FakeIncoming(channel, tag)  # type: ignore[assignment]
    asyncio.run(acks.flush())
    assert frames == [(2, True), (4, False), (5, False)]
    channel.returned.add(3)
    acks.ready[3] = FakeIncoming(channel, 3)  # type: ignore[assignment]
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
