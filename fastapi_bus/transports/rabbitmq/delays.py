"""Delayed delivery without a plugin: the delay levels, and their exchanges and queues.

A delay is rounded up to a level; each level is a fanout exchange bound to a queue with that
message TTL, which dead-letters to the bus's exchange (or, for ``send``, to the default
exchange). See the package docstring for why this keeps order and routing keys.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

from fastapi_bus.core.exceptions import ConfigurationError, PublishError, TransportError
from fastapi_bus.transports.rabbitmq.connection import OPERATION_TIMEOUT
from fastapi_bus.transports.rabbitmq.topology import (
    TEST_QUEUE_EXPIRES_MS,
    QueueSpec,
    Topology,
    declare_queue,
)

_SECOND = 1_000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
#: The delays RabbitMQ can apply, in milliseconds. A delay is rounded up to the next one.
DELAY_LEVELS_MS: tuple[int, ...] = (
    100, 250, 500,
    1 * _SECOND, 2 * _SECOND, 3 * _SECOND, 5 * _SECOND, 7 * _SECOND, 10 * _SECOND,
    15 * _SECOND, 20 * _SECOND, 30 * _SECOND, 45 * _SECOND,
    1 * _MINUTE, 90 * _SECOND, 2 * _MINUTE, 3 * _MINUTE, 5 * _MINUTE, 7 * _MINUTE, 10 * _MINUTE,
    15 * _MINUTE, 20 * _MINUTE, 30 * _MINUTE, 45 * _MINUTE,
    1 * _HOUR, 90 * _MINUTE, 2 * _HOUR, 3 * _HOUR, 4 * _HOUR, 6 * _HOUR, 8 * _HOUR,
    12 * _HOUR, 18 * _HOUR,
    1 * _DAY, 36 * _HOUR, 2 * _DAY, 3 * _DAY, 4 * _DAY, 5 * _DAY, 7 * _DAY, 10 * _DAY,
    14 * _DAY, 21 * _DAY, 28 * _DAY,
)  # fmt: skip
#: RabbitMQ keeps message timestamps in whole milliseconds; this keeps a delay from coming up
#: a fraction of a millisecond short.
_DELAY_MARGIN_MS = 2

#: How long after its TTL an unused delay queue lives (and how often it is re-declared: half).
_DELAY_QUEUE_GRACE_MS = 20 * _MINUTE


def delay_level(delay: float) -> int:
    """The level, in milliseconds, that a delay of ``delay`` seconds is rounded up to."""
    wanted = math.ceil(delay * _SECOND) + _DELAY_MARGIN_MS
    for level in DELAY_LEVELS_MS:
        if level >= wanted:
            return level
    longest = DELAY_LEVELS_MS[-1] // _SECOND
    raise PublishError(
        f"a delay of {delay:g}s is longer than the longest one supported ({longest}s)"
    )


class DelayQueues:
    """Declares the delay levels a transport uses, and declares them again before they expire.

    ``open_channel`` gives a temporary channel on the transport's connection; ``scrub`` takes
    the password out of error texts.
    """

    def __init__(
        self,
        topology: Topology,
        open_channel: Callable[[], AbstractAsyncContextManager[aio_pika.abc.AbstractChannel]],
        scrub: Callable[[str], str],
    ) -> None:
        self._topology = topology
        self._open_channel = open_channel
        self._scrub = scrub
        #: Delay exchange name: when it was last declared (event loop time).
        self._declared: dict[str, float] = {}
        #: Delay exchange name: (TTL in ms, whether it routes to a queue by name).
        self._kinds: dict[str, tuple[int, bool]] = {}
        self._lock = asyncio.Lock()

    def reset(self) -> None:
        """Before a (re)start: asyncio primitives belong to the loop that first waits on them."""
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        """The broker may have lost them (a restart, a deletion): declare each before its use."""
        self._declared.clear()

    def knows(self, exchange: str) -> bool:
        """Whether ``exchange`` is one of the delay exchanges this transport published to."""
        return exchange in self._kinds

    async def exchange(self, delay: float, *, direct: bool) -> str:
        """The declared delay exchange for ``delay`` seconds; ``direct`` for ``send``."""
        level = delay_level(delay)
        topology = self._topology
        name = f"{topology.exchange}.delay.{level}ms.{topology.queue_type}"
        if direct:
            name += ".direct"
        self._kinds[name] = (level, direct)
        await self.ensure(name)
        return name

    async def ensure(self, name: str) -> None:
        """Declare the delay level ``name`` unless this was done recently enough."""
        level, direct = self._kinds[name]
        test = self._topology.test
        loop = asyncio.get_running_loop()
        grace = TEST_QUEUE_EXPIRES_MS if test else _DELAY_QUEUE_GRACE_MS
        # Re-declaring resets the queue's x-expires clock. Doing it whenever the last time is
        # more than half the grace ago keeps the queue alive for every message we put into it.
        refresh = grace / _SECOND / 2
        if loop.time() - self._declared.get(name, -math.inf) < refresh:
            return
        async with self._lock:
            if loop.time() - self._declared.get(name, -math.inf) < refresh:
                return
            started = loop.time()
            spec = QueueSpec(
                name=name,
                durable=not test,
                exclusive=False,
                auto_delete=False,
                arguments={
                    "x-message-ttl": level,
                    "x-expires": level + grace,
                    "x-dead-letter-exchange": "" if direct else self._topology.exchange,
                    **({} if test else {"x-queue-type": self._topology.queue_type}),
                },
            )
            try:
                async with self._open_channel() as channel:
                    exchange = await asyncio.wait_for(
                        channel.declare_exchange(
                            name,
                            aio_pika.ExchangeType.FANOUT,
                            durable=not test,
                            auto_delete=True,
                        ),
                        OPERATION_TIMEOUT,
                    )
                    queue = await declare_queue(channel, spec)
                    await asyncio.wait_for(queue.bind(exchange), OPERATION_TIMEOUT)
            except (ConfigurationError, TransportError):
                raise
            except asyncio.TimeoutError:
                raise TransportError(f"declaring delay queue {name!r} timed out") from None
            except aio_pika.exceptions.AMQPError as exc:
                raise TransportError(
                    f"cannot declare delay queue {name!r}: {self._scrub(str(exc))}"
                ) from None
            self._declared[name] = started
