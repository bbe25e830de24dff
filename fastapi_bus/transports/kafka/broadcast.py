"""Broadcast subscriptions: every process reads every message, without a consumer group.

The subscription's consumer is assigned every partition of the matching event topics and
starts at their end, so a process gets what is published while it runs (and nothing from
before). Topics that appear later (a wildcard pattern matching a new event) are added when
found, from their beginning. Nothing is committed: a handler that raises is logged and the
message is not delivered again. A record the bus cannot read goes to the subscription's
dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from fastapi_bus.transports.base import Consumer
from fastapi_bus.transports.kafka.consumer import Produce, dead_letter_record
from fastapi_bus.transports.kafka.mapping import read

__all__ = ["BroadcastConsumer"]

logger = logging.getLogger("fastapi_bus.kafka")

#: Seconds between looks for new topics that match a broadcast subscription.
REFRESH = 2.0


class BroadcastConsumer:
    """Hands one process's broadcasts of one subscription to one consumer callable."""

    def __init__(
        self,
        client: AIOKafkaConsumer,
        *,
        queue: str,
        regex: str,
        consumer: Consumer,
        produce: Produce,
        dead_topic: str,
    ) -> None:
        self._client = client
        self._produce = produce
        self._dead_topic = dead_topic
        self.queue = queue
        self._regex = re.compile(regex)
        self._consumer = consumer
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        await self._client.start()
        await self._assign(await self._partitions(), from_end=True)
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._refresh())]

    async def _partitions(self) -> set[TopicPartition]:
        topics = await self._client.topics()
        found: set[TopicPartition] = set()
        for topic in topics:
            if self._regex.fullmatch(topic):
                partitions = self._client.partitions_for_topic(topic) or ()
                found |= {TopicPartition(topic, p) for p in partitions}
        return found

    async def _assign(self, partitions: set[TopicPartition], *, from_end: bool) -> None:
        old = set(self._client.assignment())
        new = partitions - old
        if not new:
            return
        positions = {tp: await self._client.position(tp) for tp in old}
        self._client.assign(sorted(old | new))
        for tp, offset in positions.items():
            self._client.seek(tp, offset)
        if from_end:
            await self._client.seek_to_end(*new)
        else:
            await self._client.seek_to_beginning(*new)
        for tp in new:
            await self._client.position(tp)  # fixes the start before anything is published

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            try:
                await self._client._client.force_metadata_update()
                await self._assign(await self._partitions(), from_end=False)
            except Exception as exc:
                logger.debug("looking for new topics of %r failed: %s", self.queue, exc)

    async def _read(self) -> None:
        while not self._stopping:
            try:
                batch = await self._client.getmany(timeout_ms=200)
            except Exception as exc:
                logger.warning("broadcast %r: fetching failed (%s)", self.queue, exc)
                await asyncio.sleep(0.5)
                continue
            for records in batch.values():
                for record in records:
                    if self._stopping:
                        return
                    await self._deliver(record)

    async def _deliver(self, record: Any) -> None:
        message, problem = read(record.value, record.headers)
        try:
            if problem is None:
                await self._consumer(message)
            else:
                await dead_letter_record(
                    self._produce, self._dead_topic, self.queue, record, message, problem
                )
        except Exception:
            logger.exception("broadcast to %r failed; the message is dropped", self.queue)

    def halt(self) -> None:
        """Take no more messages (the one being handled may finish)."""
        self._stopping = True
        for task in self._tasks[1:]:
            task.cancel()

    async def stop(self, grace: float) -> None:
        self.halt()
        if self._tasks:
            # The reader ends after the message in hand, or is cut off after ``grace``.
            await asyncio.wait(self._tasks[:1], timeout=max(grace, 0))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._client.stop()
