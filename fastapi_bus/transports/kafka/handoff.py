"""Handing records to the producer's batches, in order per topic, without waiting in turn.

aiokafka's ``send`` puts a record in its partition's batch at once, unless that batch is full:
then it waits until the batch is on its way. Concurrent publishes to one topic must not each
wait there (each would wait on a timer of its own, and their records could overtake one
another), and they must not take turns either: a lock wakes one waiter per event-loop turn,
and the producer sends each turn's few records as a request of their own. So, per topic, one
call hands its record to the producer; records that come while it waits queue up behind it,
and one task hands all of them over, in order, as soon as there is room, in as few requests
as the batches allow. Each caller gets the future of Kafka's answer for its own record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer

__all__ = ["Handoff", "Headers"]

Headers = list[tuple[str, bytes]]
#: A record waiting for its turn: value, headers, key, and the future of its Kafka future.
_Waiting = tuple[bytes | None, Headers, bytes | None, "asyncio.Future[asyncio.Future[Any]]"]


class _Lane:
    __slots__ = ("busy", "pump", "waiting")

    def __init__(self) -> None:
        #: A record of this topic is being handed to the producer (which may be waiting).
        self.busy = False
        self.waiting: deque[_Waiting] = deque()
        self.pump: asyncio.Task[None] | None = None


class Handoff:
    """Hands records to ``producer``, in the order they come, per topic."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._lanes: dict[str, _Lane] = {}

    async def hand(
        self, topic: str, value: bytes | None, headers: Headers, key: bytes | None
    ) -> asyncio.Future[Any]:
        """Put the record in the producer's batch, after every record handed before it to
        ``topic``; returns the future of Kafka's answer (awaiting it raises if Kafka did not
        take the record)."""
        lane = self._lanes.get(topic)
        if lane is None:
            lane = self._lanes[topic] = _Lane()
        if lane.busy:
            turn: asyncio.Future[asyncio.Future[Any]] = asyncio.get_running_loop().create_future()
            lane.waiting.append((value, headers, key, turn))
            return await turn
        lane.busy = True
        try:
            # Returns without waiting unless the partition's batch is full.
            sent: asyncio.Future[Any] = await self._producer.send(
                topic, value, key=key, headers=headers
            )
            return sent
        finally:
            if lane.waiting:
                lane.pump = asyncio.get_running_loop().create_task(self._pump(topic, lane))
            else:
                lane.busy = False

    async def _pump(self, topic: str, lane: _Lane) -> None:
        """Hand the records that queued up while the producer waited, oldest first."""
        send = self._producer.send
        waiting = lane.waiting
        turn: asyncio.Future[asyncio.Future[Any]] | None = None
        try:
            while waiting:
                value, headers, key, turn = waiting.popleft()
                if turn.done():
                    continue  # its publisher was cancelled: not sent
                try:
                    sent = await send(topic, value, key=key, headers=headers)
                except Exception as exc:
                    if not turn.done():
                        turn.set_exception(exc)
                else:
                    if not turn.done():
                        turn.set_result(sent)
                turn = None
        finally:
            # Cancelled (the loop is closing): the records not handed over are not sent.
            if turn is not None:
                turn.cancel()
            while waiting:
                waiting.popleft()[3].cancel()
            lane.busy = False
            lane.pump = None

    async def close(self) -> None:
        """Stop handing records over (after the producer stopped: they are refused)."""
        pumps = [lane.pump for lane in self._lanes.values() if lane.pump is not None]
        await asyncio.gather(*pumps, return_exceptions=True)
        self._lanes.clear()
