"""One durable subscription's stream, read by one consumer of its group.

A reader task takes up to ``prefetch`` entries at a time with ``XREADGROUP`` (without hiredis,
what is waiting comes through a script that packs the batch, see
:data:`~fastapi_bus.transports.redis.scripts.READ`), and reads again once half the prefetch is
free. A fixed pool of ``max_concurrency`` workers handles the entries in order. A call that
returns acknowledges and deletes its entry, in one script call with the others that return
together; one that raises puts the message back at the end of the stream (marked redelivered)
in one atomic step.

Entries stay in the group's pending list while they are handled. A consumer that dies leaves
them there: every consumer claims entries that have been idle longer than ``claim_idle``
(``XAUTOCLAIM``) and handles them as redeliveries, with the delivery count added to the
message's attempt; one delivered more than ``max_deliveries`` times goes to the dead-letter
stream instead (it kills its consumers). Live consumers renew their claim on what they are
handling, so a slow handler does not lose its message to another consumer. A dead consumer's
name leaves the group once it holds nothing and has been idle for ``claim_idle``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.utils import HIREDIS_AVAILABLE

from fastapi_bus.core import headers as H
from fastapi_bus.core.logs import message_extra
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Consumer, Subscription, dead_letter_queue
from fastapi_bus.transports.redis.mapping import FIELD, decode_fields, encode
from fastapi_bus.transports.redis.scripts import GROUP
from fastapi_bus.transports.redis.session import Session, is_missing_group, stop_task

__all__ = ["StreamConsumer"]

logger = logging.getLogger("fastapi_bus.redis")

#: Milliseconds one XREADGROUP waits for new entries before it asks again.
BLOCK_MS = 1000
#: Seconds an acknowledgement is tried again while Redis is unreachable.
ACK_DEADLINE = 30.0


class StreamConsumer:
    """Reads one queue's stream for one consumer callable."""

    def __init__(
        self,
        session: Session,
        reader: Any,
        *,
        queue: str,
        subscription: Subscription,
        consumer: Consumer,
        name: str,
        claim_idle: float,
        max_deliveries: int,
        redeclare: Callable[[], Awaitable[None]],
    ) -> None:
        self._session = session
        self._reader = reader  # a client of its own: XREADGROUP blocks its connection
        self.queue = queue
        self._stream = session.keys.stream(queue)
        self._consumer = consumer
        self._name = name
        self._claim_idle_ms = max(int(claim_idle * 1000), 1)
        self._claim_every = max(claim_idle / 3, 0.05)
        self._redeclare = redeclare
        self._max_deliveries = max_deliveries
        #: Read waiting entries with the packing script: it saves redis-py's pure Python parser
        #: most of its work for some more work on the server. hiredis parses in C already.
        self.packed_reads = not HIREDIS_AVAILABLE
        self._prefetch = subscription.prefetch
        # Read again once half the prefetch is free: fewer, larger reads than one per message.
        self._refill_at = self._prefetch // 2
        #: Entries fetched and not yet acknowledged or put back (each counts against prefetch).
        self._fetched: set[bytes] = set()
        #: Fetched entries waiting for a worker, oldest first.
        self._waiting: collections.deque[tuple[bytes, Any, int]] = collections.deque()
        #: Workers waiting for an entry: each is woken by setting its future.
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waking = 0  # workers woken that have not run yet
        self._room = asyncio.Event()
        self._room.set()
        self._acks: list[bytes] = []  # handled entries waiting for the next acknowledgement
        self._flushes: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._loops = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._claim()),
        ]
        # A fixed pool of workers, one per handler call allowed at once: no task per message.
        self._workers = [
            asyncio.create_task(self._work()) for _ in range(subscription.max_concurrency)
        ]
        self._busy: set[asyncio.Task[None]] = set()

    # reading

    async def _read(self) -> None:
        pause = 0.05
        # After trouble, first look at what this consumer holds already: acknowledgements that
        # were lost with the connection leave entries that only it would otherwise wait for.
        own_first = False
        # With packed reads, entries are read without blocking by a script that packs the batch;
        # only when there were none does a blocking XREADGROUP wait for the next ones.
        block = False
        while not self.stopping:
            if not self._room.is_set():
                await self._room.wait()
            count = self._prefetch - len(self._fetched)
            deliveries = 2 if own_first else 1
            try:
                if not self.packed_reads or (block and not own_first):
                    reply = await self._reader.execute_command(
                        "XREADGROUP", "GROUP", GROUP, self._name, "COUNT", count,
                        "BLOCK", BLOCK_MS, "STREAMS", self._stream, "0" if own_first else ">",
                    )  # fmt: skip
                    got = 0
                    for _, entries in reply or ():
                        for entry_id, fields in entries:
                            self._start(entry_id, fields, deliveries)
                            got += 1
                else:
                    packed = await self._session.read(
                        self._stream, self._name, count, "0" if own_first else ">",
                        client=self._reader,
                    )  # fmt: skip
                    got = self._unpack(packed, deliveries)
            except Exception as exc:
                if self.stopping:
                    return
                await self._trouble(exc, pause)
                pause = min(pause * 2, 2.0)
                own_first = True
                continue
            pause = 0.05
            self._session.up()
            block = not got
            own_first = False

    def _unpack(self, packed: Any, deliveries: int) -> int:
        """Start the entries of a :data:`~fastapi_bus.transports.redis.scripts.READ` reply;
        returns how many it held."""
        if not packed:
            return 0
        index, data = packed
        words = index.split()
        size = len(words)
        start = self._start
        i = pos = got = 0
        while i < size:
            entry_id, kind = words[i], words[i + 1]
            i += 2
            got += 1
            if kind[0] == 120:  # b"x": deleted meanwhile
                start(entry_id, None, deliveries)
            elif kind[0] == 102:  # b"f<n>": fields other than ours
                fields: dict[bytes, bytes] = {}
                for _ in range(int(kind[1:])):
                    end = pos + int(words[i])
                    field = data[pos:end]
                    pos = end + int(words[i + 1])
                    fields[field] = data[end:pos]
                    i += 2
                start(entry_id, fields, deliveries)
            else:
                end = pos + int(kind)
                start(entry_id, {FIELD: data[pos:end]}, deliveries)
                pos = end
        return got

    async def _trouble(self, exc: Exception, pause: float) -> None:
        if is_missing_group(exc):
            # The stream or its group is gone (Redis restarted without its data): make it again.
            logger.warning("queue %r lost its stream; declaring it again", self.queue)
            with contextlib.suppress(Exception):
                await self._redeclare()
        else:
            self._session.down(exc)
        await asyncio.sleep(pause)

    def _start(self, entry_id: bytes | str, fields: Any, deliveries: int) -> None:
        # Ids stay bytes, as Redis sends them: they go back to it as they are.
        key = entry_id if type(entry_id) is bytes else entry_id.encode()  # type: ignore[union-attr]
        if key in self._fetched or self.stopping:
            return
        self._fetched.add(key)
        self._waiting.append((key, fields or {}, deliveries))
        if len(self._fetched) >= self._prefetch:
            self._room.clear()
        if not self._waking:
            self._wake()

    def _wake(self) -> None:
        """Wake one idle worker, if any. One is woken at a time: a worker takes an entry and,
        if more are waiting, wakes the next before it handles its own. Handlers that return
        without waiting on anything thus run one after the other in one worker, and each that
        waits lets one more worker start."""
        idle = self._idle
        while idle:
            worker = idle.popleft()
            if not worker.done():
                worker.set_result(None)
                self._waking += 1
                return

    def _done(self, entry_id: bytes) -> None:
        self._fetched.discard(entry_id)
        if len(self._fetched) <= self._refill_at:
            self._room.set()

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        waiting = self._waiting
        while not self.stopping:
            if not waiting:
                # Nothing to do: wait to be woken by the next entry fetched.
                idle = loop.create_future()
                self._idle.append(idle)
                try:
                    await idle
                finally:
                    if idle.done() and not idle.cancelled():
                        self._waking -= 1
                continue
            entry = waiting.popleft()
            if waiting and not self._waking:
                self._wake()
            self._busy.add(task)
            try:
                await self._handle(*entry)
            finally:
                self._busy.discard(task)

    # handling

    async def _handle(self, entry_id: bytes, fields: Any, deliveries: int) -> None:
        message = decode_fields(fields, name="", redelivered=deliveries > 1)
        if deliveries > 1:
            # A consumer died with it: every delivery it did not survive counts as an attempt.
            message = message.replace(attempt=message.attempt + deliveries - 1)
        try:
            await self._consumer(message)
        except asyncio.CancelledError:
            await asyncio.shield(self._requeue(entry_id, message))
            self._done(entry_id)
            raise
        except Exception:
            logger.exception(
                "consumer of %r failed; the message goes back",
                self.queue,
                extra=message_extra(message),
            )
            await self._requeue(entry_id, message)
            self._done(entry_id)
            return
        self._ack(entry_id)

    def _ack(self, entry_id: bytes) -> None:
        """Acknowledge ``entry_id`` soon, in one script call with the others that finish in the
        same moment. It counts against the prefetch until then."""
        self._acks.append(entry_id)
        if len(self._acks) == 1:
            flush = asyncio.create_task(self._flush_acks())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)

    async def _flush_acks(self) -> None:
        await asyncio.sleep(0)  # let the handlers finishing now add their entries
        ids, self._acks = self._acks, []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACK_DEADLINE
        pause = 0.05
        try:
            while True:
                try:
                    await self._session.ack(self._stream, *ids)
                    return
                except Exception as exc:
                    if loop.time() + pause > deadline:
                        # They stay pending: claimed again later, so they are handled twice.
                        logger.warning(
                            "could not acknowledge %d message(s) of %r (%s); they will be "
                            "delivered again",
                            len(ids), self.queue, exc or type(exc).__name__,
                        )  # fmt: skip
                        return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
        finally:
            for entry_id in ids:
                self._done(entry_id)

    async def _requeue(self, entry_id: bytes, message: Message) -> None:
        try:
            value = encode(message.replace(redelivered=True))
            await self._session.move(self._stream, entry_id, value, self._stream)
        except Exception as exc:
            logger.info(
                "could not requeue entry %s of %r (%s); it is claimed again once idle",
                entry_id.decode(), self.queue, exc or type(exc).__name__,
            )  # fmt: skip

    # claims

    async def _claim(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self._claim_every)
            try:
                await self._renew()
                await self._reclaim()
                await self._prune()
            except Exception as exc:
                if not self.stopping:
                    logger.debug("claiming on %r failed: %s", self.queue, exc)

    async def _renew(self) -> None:
        """Reset the idle time of what we hold, so nobody else claims it."""
        held = list(self._fetched)
        if held:
            await self._session.client.execute_command(
                "XCLAIM", self._stream, GROUP, self._name, 0, *held, "JUSTID"
            )

    async def _reclaim(self) -> None:
        """Take over entries another consumer has held too long (it died, most likely)."""
        client = self._session.client
        start = "0-0"
        while not self.stopping and len(self._fetched) < self._prefetch:
            reply = await client.execute_command(
                "XAUTOCLAIM", self._stream, GROUP, self._name, self._claim_idle_ms, start,
                "COUNT", self._prefetch - len(self._fetched),
            )  # fmt: skip
            start, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                if fields is None:
                    continue  # deleted meanwhile
                pending = await client.xpending_range(
                    self._stream, GROUP, min=entry_id, max=entry_id, count=1
                )
                deliveries = int(pending[0]["times_delivered"]) if pending else 2
                if deliveries > self._max_deliveries:
                    await self._give_up(entry_id, fields, deliveries)
                else:
                    self._start(entry_id, fields, max(deliveries, 2))
            if start in (b"0-0", "0-0") or not entries:
                return

    async def _prune(self) -> None:
        """Remove the consumers that died holding nothing (or whose entries were claimed
        since), so that the group lists only consumers that may still be alive."""
        removed = await self._session.prune_consumers(self._stream, self._name, self._claim_idle_ms)
        if removed:
            logger.info("removed %d dead consumer(s) from the group of %r", removed, self.queue)

    async def _give_up(self, entry_id: bytes | str, fields: Any, deliveries: int) -> None:
        """Dead-letter a message whose consumers kept dying before they acknowledged it."""
        key = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        message = decode_fields(fields, redelivered=True)
        reason = (
            f"delivered {deliveries} times without being acknowledged (its consumer stopped "
            f"answering each time; max_deliveries={self._max_deliveries})"
        )
        headers = {
            **message.headers,
            H.DEAD_LETTER_REASON: reason,
            H.QUEUE: self.queue,
            H.ATTEMPTS: str(message.attempt + deliveries - 1),
        }
        logger.error(
            "dead-lettering message %s of %r: %s",
            message.id,
            self.queue,
            reason,
            extra=message_extra(message),
        )
        dead = encode(message.replace(headers=headers))
        dlq = self._session.keys.stream(dead_letter_queue(self.queue))
        await self._session.move(self._stream, key, dead, dlq)

    # stopping

    def halt(self) -> None:
        """Take no more entries; the fetched ones not started yet go back when stopping."""
        self.stopping = True
        for task in self._loops:
            task.cancel()
        for task in self._workers:
            if task not in self._busy:
                task.cancel()

    async def stop(self, grace: float) -> None:
        self.halt()
        for task in self._loops:
            await stop_task(task)
        busy = [task for task in self._workers if not task.done()]
        if busy:
            _, pending = await asyncio.wait(busy, timeout=max(grace, 0))
            await asyncio.gather(*(stop_task(task) for task in pending))
        await asyncio.gather(*self._workers, return_exceptions=True)
        # What was fetched but never started goes back to the stream at once.
        while self._waiting:
            entry_id, fields, deliveries = self._waiting.popleft()
            await self._requeue(entry_id, decode_fields(fields, redelivered=deliveries > 1))
            self._done(entry_id)
        # The acknowledgements of what finished are on their way: let them arrive.
        await asyncio.gather(*self._flushes, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._session.forget_consumer(self._stream, self._name)
        with contextlib.suppress(Exception):
            await self._reader.aclose()
