"""Looking into a queue without consuming it: what its group has not committed yet.

A queue's waiting messages are the records between its group's committed offsets and the end
of each partition. Browsing reads them with a consumer of no group, so nothing moves.
Purging moves the group's committed offsets to the end; Kafka accepts that only while no
consumer of the group is running.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from fastapi_bus.core.messages import Message
from fastapi_bus.transports.kafka.mapping import decode

__all__ = ["Inspector", "committed_offsets", "partitions_matching", "read_between"]


async def partitions_matching(client: AIOKafkaConsumer, regex: str) -> list[TopicPartition]:
    """Every partition of the topics whose names match ``regex``."""
    matcher = re.compile(regex)
    return [
        TopicPartition(topic, p)
        for topic in sorted(await client.topics())
        if matcher.fullmatch(topic)
        for p in client.partitions_for_topic(topic) or ()
    ]


async def committed_offsets(client: AIOKafkaConsumer, regex: str) -> dict[Any, int]:
    """The committed offsets of ``client``'s group on the partitions of matching topics."""
    tps = await partitions_matching(client, regex)
    found = await asyncio.gather(*(client.committed(tp) for tp in tps))
    pairs = zip(tps, found, strict=True)
    return {tp: offset for tp, offset in pairs if offset is not None and offset >= 0}


async def read_between(
    client: AIOKafkaConsumer, starts: dict[Any, int]
) -> tuple[list[tuple[Any, Any]], dict[Any, int]]:
    """The records from ``starts`` to the end of each partition (assigning ``client`` to
    them), and the offset after the last one read of each.

    The end is where reading finds nothing more, not the end offset the broker reports: a
    broker may report a high watermark that lags the records it already serves (Tansu does
    under concurrent writes), and stopping there would hide the newest records."""
    ends: dict[Any, int] = await client.end_offsets(list(starts)) if starts else {}
    found: list[tuple[Any, Any]] = []
    if not starts:
        return found, ends
    client.assign(list(starts))
    for tp, offset in starts.items():
        client.seek(tp, offset)
    quiet = 0
    while quiet < 2:  # two empty fetches in a row: nothing more to read
        batch = await client.getmany(timeout_ms=250 if quiet else 1000)
        quiet = 0 if batch else quiet + 1
        for tp, records in batch.items():
            for record in records:
                found.append((tp, record))
                ends[tp] = max(ends.get(tp, 0), record.offset + 1)
    return found, ends


class Inspector:
    """Browses and purges queues through their groups' committed offsets."""

    def __init__(
        self,
        new_consumer: Callable[..., AIOKafkaConsumer],
        group: Callable[[str], str],
        regex: Callable[[str], str],
    ) -> None:
        self._new_consumer = new_consumer
        self._group = group
        self._regex = regex  # the topics a queue's group may read

    async def _committed(self, queue: str) -> dict[Any, int]:
        """The group's committed offsets on the topics it may read (one request per
        partition: OffsetFetch for a whole group is not served by every broker)."""
        client = self._new_consumer(group_id=self._group(queue))
        await client.start()
        try:
            return await committed_offsets(client, self._regex(queue))
        finally:
            await client.stop()

    async def browse(self, queue: str, limit: int) -> list[Message]:
        committed = await self._committed(queue)
        if not committed or limit <= 0:
            return []
        client = self._new_consumer(group_id=None)
        await client.start()
        try:
            records, _ = await read_between(client, committed)
        finally:
            await client.stop()
        found = [(r.timestamp, decode(r.value, r.headers)) for _, r in records]
        found.sort(key=lambda item: (item[0], item[1].published_at))
        return [message for _, message in found[:limit]]

    async def purge(self, queue: str) -> int:
        committed = await self._committed(queue)
        if not committed:
            return 0
        client = self._new_consumer(group_id=self._group(queue))
        await client.start()
        try:
            ends = await client.end_offsets(list(committed))
            count: int = sum(max(end - committed[tp], 0) for tp, end in ends.items())
            if count:
                client.assign(list(ends))
                await client.commit({tp: OffsetAndMetadata(end, "") for tp, end in ends.items()})
            return count
        finally:
            await client.stop()
