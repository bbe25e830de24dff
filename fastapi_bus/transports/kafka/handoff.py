"""Handing records to the producer's batches, in order per topic, without waiting in turn.

aiokafka's ``send`` puts a record in its partition's batch at once, unless that batch is full:
then it waits until the batch is on its way. Concurrent publishes to one topic must not each
wait there (each would wait on a timer of its own, and their records could overtake one
another), and they must not take turns either: a lock wakes one waiter per event-loop turn,
and the producer sends each turn's few records as a request of their own. So, per topic, one
call hands its record to the producer; records that come while it waits queue up behind it,
and one task hands all of them over, in order, as soon as there is room, in as few requests
as the batches allow. Each caller gets the future of Kafka's answer for its own record at
once, queued or not, so that a publish waits for one thing only (its answer), not for its turn
and then for its answer.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

__all__ = ["Handoff", "Headers", "KeyPartitioner"]

Headers = list[tuple[str, bytes]]
#: A record waiting for its turn: value, headers, key, and the future of Kafka's answer.
_Waiting = tuple[bytes | None, Headers, bytes | None, "asyncio.Future[Any]"]


class KeyPartitioner:
    """aiokafka's default partitioner (the murmur2 hash of the key, as Kafka's Java client
    computes it, modulo the number of partitions; a random available partition for a record
    without a key), remembering each key's hash: a record's key is most often its event name,
    and hashing it in Python cost about as much as the rest of handing the record over."""

    __slots__ = ("_hashes",)

    #: How many keys' hashes are kept (keys that are ids, each used once, need not fill it).
    KEPT = 4096

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        hashed = self._hashes.get(key)
        if hashed is None:
            hashed = murmur2(key) & 0x7FFFFFFF
            if len(self._hashes) < self.KEPT:
                self._hashes[key] = hashed
        return all_partitions[hashed % len(all_partitions)]


class _Lane:
    __slots__ = ("busy", "pump", "waiting")

    def __init__(self) -> None:
        #: A record of this topic is being handed to the producer (which may be waiting).
        self.busy = False
        self.waiting: deque[_Waiting] = deque()
        self.pump: asyncio.Task[None] | None = None


class _Relay:
    """Passes Kafka's answer to a record on to the future its publisher awaits."""

    __slots__ = ("_answer",)

    def __init__(self, answer: asyncio.Future[Any]) -> None:
        self._answer = answer

    def __call__(self, sent: asyncio.Future[Any]) -> None:
        answer = self._answer
        if sent.cancelled():
            answer.cancel()
            return
        error = sent.exception()  # retrieved, even if nobody awaits the answer any more
        if answer.done():
            return  # its publisher was cancelled after the record was handed over
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(sent.result())


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
        take the record, or if the producer refused it).

        If records of ``topic`` are waiting for room, the record queues up behind them and
        the future comes at once; cancelling it before the record's turn keeps the record
        from being sent."""
        lane = self._lanes.get(topic)
        if lane is None:
            lane = self._lanes[topic] = _Lane()
        if lane.busy:
            answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            lane.waiting.append((value, headers, key, answer))
            return answer
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
        answer: asyncio.Future[Any] | None = None
        try:
            while waiting:
                value, headers, key, answer = waiting.popleft()
                if answer.done():
                    continue  # its publisher was cancelled: not sent
                try:
                    sent = await send(topic, value, key=key, headers=headers)
                except Exception as exc:
                    if not answer.done():
                        answer.set_exception(exc)
                else:
                    sent.add_done_callback(_Relay(answer))
                answer = None
        finally:
            # Cancelled (the loop is closing): the records not handed over are not sent.
            if answer is not None:
                answer.cancel()
            while waiting:
                waiting.popleft()[3].cancel()
            lane.busy = False
            lane.pump = None

    async def close(self) -> None:
        """Stop handing records over (after the producer stopped: they are refused)."""
        pumps = [lane.pump for lane in self._lanes.values() if lane.pump is not None]
        await asyncio.gather(*pumps, return_exceptions=True)
        self._lanes.clear()
