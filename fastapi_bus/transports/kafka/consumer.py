"""One queue's consumer group member: fetches, hands records to a fixed pool of workers, and
commits offsets in order once the handler returns.

* At most ``prefetch`` records are held (fetched and not finished) at once.
* A record's offset is committed only when it and every earlier record of its partition are
  finished (:class:`OffsetTracker`).
* A call that raises (or is cancelled at shutdown) sends a copy of the message, marked
  redelivered, to the queue's own topic before its offset counts as finished, so it comes
  back to the group; nothing is lost if the process dies in between (the offset is not
  committed yet), at the price of a possible duplicate.
* A record the bus cannot read (a ``bus-…`` header that does not hold what the bus writes
  there, a header that is not UTF-8 text; see :func:`~.mapping.read`) goes to the queue's
  dead-letter topic as it is, with the reason, before its offset counts as finished.
* When the group takes partitions away (a rebalance), their waiting records are dropped
  (the new owner reads them again from the committed offset) and the running ones finish
  and are committed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import repeat
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata

from fastapi_bus.core import headers as H
from fastapi_bus.core.logs import message_extra
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Consumer, Subscription
from fastapi_bus.transports.kafka.mapping import encode_record, read
from fastapi_bus.transports.kafka.offsets import OffsetTracker

__all__ = ["Produce", "QueueConsumer", "dead_letter_record"]

logger = logging.getLogger("fastapi_bus.kafka")

#: Seconds a rebalance waits for the running handlers of the partitions it takes away.
REVOKE_GRACE = 30.0
#: Seconds at least between two commits while handlers keep finishing: each request costs
#: the process about as much CPU as handling a hundred records, and a busy queue would
#: otherwise send one after the other. A handler that finishes after a quiet spell is
#: committed at once; a rebalance and stopping commit at once too.
COMMIT_INTERVAL = 0.05

#: Produces a record: topic, value, headers, key.
Produce = Callable[[str, bytes | None, list[tuple[str, bytes]], bytes | None], Awaitable[None]]


async def dead_letter_record(
    produce: Produce, topic: str, queue: str, record: Any, message: Message, problem: str
) -> None:
    """Put a record the bus cannot read into the dead-letter topic ``topic``, as it is (value,
    key and every header, the unreadable ones too) plus the dead-letter headers."""
    reason = f"the record cannot be read: {problem}"
    logger.error(
        "dead-lettering record %s of %r: %s",
        f"{record.topic}/{record.partition}@{record.offset}",
        queue,
        reason,
        extra=message_extra(message),
    )
    headers = [(k, v if v is not None else b"") for k, v in record.headers]
    headers += [
        (H.DEAD_LETTER_REASON, reason.encode()),
        (H.QUEUE, queue.encode()),
        (H.ATTEMPTS, str(message.attempt).encode()),
    ]
    await produce(topic, record.value, headers, record.key)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: QueueConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner.give_up(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class QueueConsumer:
    """Consumes one queue (a group) for one consumer callable."""

    def __init__(
        self,
        client: AIOKafkaConsumer,
        *,
        subscription: Subscription,
        regex: str,
        consumer: Consumer,
        produce: Produce,
        topic: str,
        dead_topic: str,
    ) -> None:
        self._client = client
        self.queue = subscription.queue
        self._regex = regex
        self._consumer = consumer
        self._produce = produce
        self._topic = topic  # the queue's own: retries go there
        self._dead_topic = dead_topic
        self._prefetch = subscription.prefetch
        # Fetch again once half the prefetch is free: fewer, larger fetches than one per record.
        self._refill_at = self._prefetch // 2
        self._workers_count = subscription.max_concurrency
        self._tracker = OffsetTracker()
        #: Fetched records no worker has taken yet, oldest first, each with its partition and
        #: the partition's open offsets (:meth:`OffsetTracker.take_records`).
        self._waiting: deque[tuple[Any, set[int], Any]] = deque()
        #: The wake-up calls of the workers that wait for records.
        self._idle: deque[asyncio.Future[None]] = deque()
        #: Workers woken up that have not run yet (at most one is woken at a time).
        self._waking = 0
        #: The partition of each worker's record in hand (``None``: the worker is free).
        self._current: list[Any] = []
        self._room = asyncio.Event()
        self._room.set()
        #: The fetcher waits for room (set with ``_room`` cleared, so a finished record
        #: looks at the count only then).
        self._room_wanted = False
        #: Set when a record is finished, while someone waits for that (``_settle``).
        self._changed = asyncio.Event()
        self._settling = 0
        self._commit_lock = asyncio.Lock()
        self._revoking: set[Any] = set()
        self.stopping = False
        self._fetcher: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._committer: asyncio.Task[None] | None = None
        #: The event-loop time before which a paced commit waits (:data:`COMMIT_INTERVAL`).
        self._next_commit = 0.0
        #: A commit request is under way.
        self._requesting = False

    async def start(self) -> None:
        self._client.subscribe(pattern=self._regex, listener=_Listener(self))
        await self._client.start()
        self._fetcher = asyncio.create_task(self._fetch())
        self._current = [None] * self._workers_count
        self._workers = [asyncio.create_task(self._work(i)) for i in range(self._workers_count)]

    # fetching

    async def _fetch(self) -> None:
        pause = 0.05
        tracker, waiting = self._tracker, self._waiting
        while not self.stopping:
            await self._room.wait()
            room = self._prefetch - len(tracker)
            try:
                batch = await self._client.getmany(timeout_ms=200, max_records=room)
            except Exception as exc:
                if self.stopping:
                    return
                logger.warning("fetching %r failed (%s); trying again", self.queue, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.05
            for tp, records in batch.items():
                if records:
                    still = tracker.take_records(tp, records)
                    waiting.extend(zip(repeat(tp), repeat(still), records))
            if waiting:
                self._wake()
            if len(tracker) >= self._prefetch:
                self._room.clear()
                self._room_wanted = True

    def _wake(self) -> None:
        """Wake one waiting worker, unless one is woken already. A worker that takes a record
        wakes the next one while records are left, so records are handled concurrently as
        soon as a handler awaits something, and a batch whose handlers never wait is handled
        by one worker, without a switch per record."""
        if self._waking:
            return
        while self._idle:
            wake = self._idle.popleft()
            if not wake.done():
                wake.set_result(None)
                self._waking += 1
                return

    def _finished(self, still: set[int], offset: int) -> None:
        self._tracker.finish_open(still, offset)
        if len(self._tracker) <= self._refill_at:
            self._room.set()
        self._changed.set()

    # handling

    async def _work(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        waiting, current, tracker = self._waiting, self._current, self._tracker
        consumer, room, refill_at = self._consumer, self._room, self._refill_at
        while True:
            if not waiting:
                wake = loop.create_future()
                self._idle.append(wake)
                await wake
                self._waking -= 1
                continue
            tp, still, record = waiting.popleft()
            offset = record.offset
            if offset not in still or (self._revoking and tp in self._revoking):
                continue  # its partition went elsewhere: the new owner reads it again
            if waiting and not self._waking:
                self._wake()
            message, problem = read(record.value, record.headers)
            current[index] = tp
            try:
                if problem is None:
                    await consumer(message)
                else:
                    await self._dead_letter(record, message, problem)
            except asyncio.CancelledError:
                # Stopping: the message goes back first. A dead letter not written yet stays
                # uncommitted, so the record comes again.
                if problem is None:
                    await asyncio.shield(self._send_back(message))
                    self._finished(still, offset)
                raise
            except Exception:
                logger.exception(
                    "consumer of %r failed; the message goes back",
                    self.queue,
                    extra=message_extra(message),
                )
                await self._send_back(message)
            finally:
                current[index] = None
            # The record is finished (``_finished``, inline: this runs once per record).
            if offset in still:
                still.remove(offset)
                tracker.count -= 1
            if self._room_wanted and tracker.count <= refill_at:
                self._room_wanted = False
                room.set()
            if self._settling:
                self._changed.set()
            committer = self._committer
            if committer is None or committer.done():
                # After the handlers finishing in this moment: one request for all of them.
                self._committer = loop.create_task(self._commit(paced=True))

    async def _dead_letter(self, record: Any, message: Message, problem: str) -> None:
        while True:
            try:
                await dead_letter_record(
                    self._produce, self._dead_topic, self.queue, record, message, problem
                )
                return
            except Exception as exc:
                # Its offset stays uncommitted meanwhile, so it is never lost.
                logger.warning("cannot dead-letter %s of %r (%s)", message.id, self.queue, exc)
                await asyncio.sleep(1.0)

    async def _send_back(self, message: Message) -> None:
        again = message.replace(redelivered=True)
        while True:
            try:
                headers, key = encode_record(again)
                await self._produce(self._topic, again.body, headers, key)
                return
            except Exception as exc:
                # Its offset stays uncommitted meanwhile, so it is never lost.
                logger.warning("cannot send %s back to %r (%s)", message.id, self.queue, exc)
                await asyncio.sleep(1.0)

    async def _commit(self, *, paced: bool = False) -> None:
        """Commit what is ready. ``paced`` (the commits that follow handlers finishing): at
        most one request per :data:`COMMIT_INTERVAL`, for every handler finished by then;
        otherwise (a rebalance, stopping) at once."""
        loop = asyncio.get_running_loop()
        # Again while handlers finished during the last request: none is left behind.
        while True:
            if paced:
                # At least a turn of the loop: one request for the handlers finishing now.
                await asyncio.sleep(max(self._next_commit - loop.time(), 0))
            async with self._commit_lock:
                offsets = self._tracker.ready()
                if offsets:
                    owned = self._client.assignment()
                    offsets = {tp: o for tp, o in offsets.items() if tp in owned}
                if not offsets:
                    return
                self._next_commit = loop.time() + COMMIT_INTERVAL
                self._requesting = True
                try:
                    await self._client.commit(
                        {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()}
                    )
                except Exception as exc:
                    # A rebalance is under way: the next owner reads these records again.
                    logger.info("committing offsets of %r failed (%s)", self.queue, exc)
                    return
                finally:
                    self._requesting = False
                self._tracker.committed(offsets)

    async def give_up(self, revoked: set[Any]) -> None:
        """A rebalance takes ``revoked`` away: finish what runs of them, commit, forget them."""
        self._revoking |= revoked
        kept = [item for item in self._waiting if item[0] not in revoked]
        self._waiting.clear()
        self._waiting.extend(kept)
        await self._settle(lambda: any(tp in revoked for tp in self._current), REVOKE_GRACE)
        await self._commit()
        self._tracker.forget(revoked)
        self._revoking -= revoked
        if len(self._tracker) < self._prefetch:
            self._room.set()

    async def _settle(self, busy: Callable[[], bool], grace: float) -> None:
        """Wait while ``busy()``, at most ``grace`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0)
        self._settling += 1
        try:
            while busy() and loop.time() < deadline:
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(0.1, max(grace, 0.001)))
        finally:
            self._settling -= 1

    # stopping

    def halt(self) -> None:
        self.stopping = True
        if self._fetcher is not None:
            self._fetcher.cancel()

    async def stop(self, grace: float) -> None:
        self.halt()
        if self._fetcher is not None:
            await asyncio.gather(self._fetcher, return_exceptions=True)
        # What has not started stays uncommitted: the group reads it again.
        self._waiting.clear()
        await self._settle(lambda: any(tp is not None for tp in self._current), grace)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        committer = self._committer
        if committer is not None:
            if not self._requesting:
                committer.cancel()  # waiting for its turn: the commit below covers it
            await asyncio.gather(committer, return_exceptions=True)
        await self._commit()
        with contextlib.suppress(Exception):
            await self._client.stop()  # leaves the group
