"""Taking single messages out of a queue without a running consumer (for the dead-letter
tools): a consumer of the queue's group, assigned its partitions by hand, that reads the
waiting records (oldest first), and commits an acknowledged one's offset once every earlier
record of its partition is acknowledged too.

A released message stays where it was: the group's committed offset never moves past it, and
the next ``pull`` offers it again. Kafka accepts these commits only while no consumer of the
group is running: pulling from a queue that is being consumed raises ``TransportError``.
"""

from __future__ import annotations

import bisect
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata

from fastapi_bus.core.exceptions import TransportError
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Pulled
from fastapi_bus.transports.kafka.inspection import committed_offsets, read_between
from fastapi_bus.transports.kafka.mapping import decode
from fastapi_bus.transports.kafka.offsets import OffsetTracker

__all__ = ["Puller"]

#: (record timestamp, publish time, partition, offset, message): the order of ``pull``.
Item = tuple[float, float, Any, int, Message]


class _Pulled(Pulled):
    def __init__(self, puller: Puller, item: Item) -> None:
        super().__init__(item[4])
        self._puller = puller
        self._item = item

    async def ack(self) -> None:
        await self._puller.ack(self._item)

    async def release(self) -> None:
        self._puller.release(self._item)


class Puller:
    """Pulls one queue's waiting messages through its group's committed offsets."""

    def __init__(self, client: AIOKafkaConsumer, *, queue: str, regex: str) -> None:
        self._client = client  # started, with the queue's group id
        self.queue = queue
        self._regex = regex
        self._waiting: list[Item] = []
        self._next: dict[Any, int] = {}  # where to read each partition from next
        self._tracker = OffsetTracker()

    async def pull(self) -> Pulled | None:
        if not self._waiting:
            await self._load()
        else:
            await self._drop_committed()
        if not self._waiting:
            return None
        item = self._waiting.pop(0)
        self._tracker.take(item[2], item[3])
        return _Pulled(self, item)

    async def _load(self) -> None:
        committed = await committed_offsets(self._client, self._regex)
        starts = {tp: max(offset, self._next.get(tp, 0)) for tp, offset in committed.items()}
        records, ends = await read_between(self._client, starts)
        self._next.update(ends)
        for tp, record in records:
            message = decode(record.value, record.headers)
            item = (record.timestamp, message.published_at.timestamp(), tp, record.offset, message)
            bisect.insort(self._waiting, item, key=lambda i: i[:2])

    async def _drop_committed(self) -> None:
        """Forget what was settled meanwhile by someone else (a purge)."""
        tps = {item[2] for item in self._waiting}
        committed = {tp: await self._client.committed(tp) for tp in tps}
        self._waiting = [i for i in self._waiting if i[3] >= (committed[i[2]] or 0)]

    async def ack(self, item: Item) -> None:
        self._tracker.finish(item[2], item[3])
        offsets = self._tracker.ready()
        if not offsets:
            return
        try:
            self._client.assign(list(offsets))
            await self._client.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except Exception as exc:
            raise TransportError(
                f"cannot acknowledge a message of {self.queue!r} ({exc}); Kafka takes it only "
                "while no consumer of the queue is running"
            ) from None
        self._tracker.committed(offsets)

    def release(self, item: Item) -> None:
        # Still open in the tracker, so no commit passes it; offered again first.
        bisect.insort(self._waiting, item, key=lambda i: i[:2])

    async def stop(self) -> None:
        await self._client.stop()
