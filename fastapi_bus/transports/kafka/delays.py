"""Delayed messages: one topic for all of them, moved to their target topic when due.

A delayed message is a record of the delay topic whose headers name its target topic and when
it is due (the sender's clock, in epoch milliseconds). Every process that consumes or sends
delayed messages runs a mover, a member of one consumer group: it reads the records of its
partitions, holds them until they are due (never earlier), produces them to their target, and
commits offsets in order once moved. A mover that dies before it moved a record leaves it
uncommitted, so another mover moves it (a duplicate is possible, never a loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata

from fastapi_bus.transports.kafka.mapping import DUE, TO
from fastapi_bus.transports.kafka.offsets import OffsetTracker

__all__ = ["DelayMover", "delay_headers"]

logger = logging.getLogger("fastapi_bus.kafka")

#: Records a mover holds before it stops fetching more.
HOLD = 10_000

Produce = Callable[[str, bytes | None, list[tuple[str, bytes]], bytes | None], Awaitable[None]]


def delay_headers(target: str, delay: float) -> list[tuple[str, bytes]]:
    """The headers that send a record to ``target`` in ``delay`` seconds."""
    due = int((time.time() + delay) * 1000) + 1  # rounded up: never early
    return [(TO, target.encode()), (DUE, str(due).encode())]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, mover: DelayMover) -> None:
        self._mover = mover

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._mover.drop(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class DelayMover:
    """Moves this process's share of the delayed messages when they are due."""

    def __init__(self, client: AIOKafkaConsumer, topic: str, produce: Produce) -> None:
        self._client = client
        self._topic = topic
        self._produce = produce
        self._tracker = OffsetTracker()
        self._held: list[tuple[int, int, Any, Any]] = []  # (due ms, n, tp, record)
        self._count = itertools.count()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._client.subscribe([self._topic], listener=_Listener(self))
        await self._client.start()
        self._task = asyncio.create_task(self._run())

    def drop(self, revoked: set[Any]) -> None:
        """Partitions taken away: their held records are another mover's now."""
        self._held = [h for h in self._held if h[2] not in revoked]
        heapq.heapify(self._held)
        self._tracker.forget(revoked)

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("moving delayed messages failed (%s); trying again", exc)
                await asyncio.sleep(0.5)

    async def _step(self) -> None:
        now = time.time() * 1000
        wait_ms = 200
        if self._held:
            wait_ms = int(min(max(self._held[0][0] - now, 0), 200))
        if len(self._held) < HOLD:
            batch = await self._client.getmany(timeout_ms=wait_ms, max_records=500)
            for tp, records in batch.items():
                for record in records:
                    self._hold(tp, record)
        elif wait_ms:
            await asyncio.sleep(wait_ms / 1000)
        await self._move_due()

    def _hold(self, tp: Any, record: Any) -> None:
        raw = dict(record.headers).get(DUE) or b""
        # ASCII digits only (bytes.isdigit): a garbled time moves the record at once.
        due = int(raw) if 0 < len(raw) <= 18 and raw.isdigit() else 0
        self._tracker.take(tp, record.offset)
        heapq.heappush(self._held, (due, next(self._count), tp, record))

    async def _move_due(self) -> None:
        moved = False
        while self._held and self._held[0][0] <= time.time() * 1000:
            _, _, tp, record = heapq.heappop(self._held)
            headers = [(k, v) for k, v in record.headers if k not in (TO, DUE)]
            target = (dict(record.headers).get(TO) or b"").decode("utf-8", "replace")
            if target and "\ufffd" not in target:
                await self._produce(target, record.value, headers, record.key)
            else:
                logger.error(
                    "delayed record %s/%s@%s has no readable target topic; dropped",
                    record.topic, record.partition, record.offset,
                )  # fmt: skip
            self._tracker.finish(tp, record.offset)
            moved = True
        if moved:
            offsets = self._tracker.ready()
            await self._client.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
            self._tracker.committed(offsets)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._client.stop()
