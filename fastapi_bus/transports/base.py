"""The transport seam: the only place that talks to a broker.

A transport moves :class:`~fastapi_bus.core.messages.Message` objects between processes. It knows
queues, routing keys and acknowledgements; it knows nothing of pydantic, routers or dependencies.

Every transport gives the same guarantees, checked by one shared contract test suite:

* ``publish`` routes a message by its name to every queue bound by a matching pattern
  (fan-out across queues); consumers of one queue compete, so each message is handled once
  per queue.
* The consumer callable returning acknowledges the message; raising (or being cancelled) leaves
  it unacknowledged, and the broker delivers it again with ``redelivered=True``.
* A delayed message is delivered no earlier than its delay.
* At most ``prefetch`` messages per consumer are unacknowledged at once.
* ``close`` stops taking messages, lets in-flight ones finish within the grace period, and
  returns the unfinished ones to their queue.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from fastapi_bus.core.exceptions import ConfigurationError, UnroutableError
from fastapi_bus.core.messages import Message

__all__ = [
    "AsyncAPIPart",
    "Consumer",
    "Pulled",
    "Subscription",
    "Transport",
    "Unroutable",
    "check_unroutable",
    "dead_letter_queue",
    "redact_url",
    "report_unroutable",
]

#: What a transport calls for each delivery. Returning acks the message; raising leaves it
#: unacknowledged so that the broker delivers it again.
Consumer = Callable[[Message], Awaitable[None]]

#: The objects of an AsyncAPI document that a transport describes (see
#: :meth:`Transport.asyncapi`): the server, an event's channel, a message, and the operations
#: of a handler (``receive``) and of a declared publisher (``send``).
AsyncAPIPart = Literal["server", "channel", "message", "receive", "send"]

#: What a transport does with an event that no queue is bound to.
Unroutable = Literal["ignore", "log", "raise"]


@dataclasses.dataclass(frozen=True)
class Subscription:
    """A queue, the event patterns bound to it, and how to consume it."""

    #: The queue's name, such as ``"shop.reserve_stock"``. For a broadcast subscription this is
    #: the base name: each process gets its own exclusive queue derived from it.
    queue: str
    #: Event names or topic patterns (``orders.*``) that route to this queue.
    patterns: tuple[str, ...]
    #: At most this many unacknowledged messages per consumer.
    prefetch: int = 10
    #: At most this many handler calls at once (``None``: as many as ``prefetch``).
    concurrency: int | None = None
    #: Every process gets every message, through an exclusive auto-delete queue of its own.
    broadcast: bool = False

    @property
    def max_concurrency(self) -> int:
        """How many deliveries may be processed at once."""
        return min(self.prefetch, self.concurrency or self.prefetch)


class Pulled(abc.ABC):
    """A message taken from a queue by :meth:`Transport.pull` and not yet settled."""

    def __init__(self, message: Message) -> None:
        self.message = message

    @abc.abstractmethod
    async def ack(self) -> None:
        """Remove the message from its queue for good."""

    @abc.abstractmethod
    async def release(self) -> None:
        """Give the message back to its queue."""


def check_unroutable(value: str) -> Unroutable:
    """``value`` if it is a valid :data:`Unroutable` setting; else a ConfigurationError."""
    if value not in ("ignore", "log", "raise"):
        raise ConfigurationError(f"unroutable must be 'ignore', 'log' or 'raise', not {value!r}")
    return value  # type: ignore[return-value]


def report_unroutable(policy: Unroutable, message: Message, logger: logging.Logger) -> None:
    """Tell of an event no queue took, as ``policy`` says: nothing, a warning, or an error."""
    if policy == "ignore":
        return
    text = f"no queue is bound to event {message.name!r}; message {message.id} was dropped"
    if policy == "raise":
        raise UnroutableError(text)
    logger.warning(text)


def dead_letter_queue(queue: str) -> str:
    """The name of the dead-letter queue that belongs to ``queue``."""
    return f"{queue}.dlq"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs and error messages.

    Works on multi-host URLs too (``amqp://user:pw@host1:5672,host2:5672/``).
    """
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    netloc = f"{user}:***@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Transport(abc.ABC):
    """Base class of all transports. Subclasses implement the abstract methods."""

    #: The URL scheme(s) this transport serves, for messages and the AsyncAPI document.
    protocol: str = ""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The broker URL without credentials."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect to the broker. Raises :class:`~fastapi_bus.TransportError` on failure."""

    @abc.abstractmethod
    async def close(self, grace: float = 10.0) -> None:
        """Stop consuming, wait up to ``grace`` seconds for in-flight deliveries, return the
        unfinished ones to their queues, then disconnect. Safe to call twice."""

    @abc.abstractmethod
    async def declare(self, subscription: Subscription) -> None:
        """Create the subscription's queue, its bindings and its dead-letter queue. Idempotent."""

    @abc.abstractmethod
    async def publish(self, message: Message, *, delay: float | None = None) -> None:
        """Route ``message`` by its name to every bound queue. Returns once the broker has
        accepted it. With ``delay``, it is delivered no earlier than ``delay`` seconds from now."""

    def publish_nowait(self, message: Message) -> bool:
        """Publish ``message`` (without delay) at once, if this transport can without waiting
        for anything: an in-process broker whose queue has room. True once it is published;
        False, doing nothing, otherwise (then await :meth:`publish`). Brokers over a network
        always wait for their broker: the default returns False."""
        return False

    async def publish_many(self, messages: Sequence[tuple[Message, float | None]]) -> None:
        """Publish ``messages`` (each with its delay, as :meth:`publish` takes it) in this
        order; returns once the broker has accepted every one. Stops at the first that fails
        and raises. Transports that can keep several in flight in order override this."""
        for message, delay in messages:
            await self.publish(message, delay=delay)

    @abc.abstractmethod
    async def send(self, queue: str, message: Message, *, delay: float | None = None) -> None:
        """Put ``message`` straight into ``queue`` (for retries, replays and dead letters).
        Raises :class:`~fastapi_bus.UnroutableError` if the queue does not exist."""

    @abc.abstractmethod
    async def consume(self, subscription: Subscription, consumer: Consumer) -> None:
        """Start delivering the subscription's messages to ``consumer``; returns at once.

        ``consumer`` returning acknowledges the message; raising returns it to the queue."""

    async def stop_consuming(self, grace: float = 10.0) -> None:
        """Stop every consumer: no new deliveries; in-flight ones get ``grace`` seconds to
        finish, then go back to their queues. Publishing keeps working until :meth:`close`."""
        await self.close(grace)

    @property
    def connected(self) -> bool:
        """True while the broker connection is up (for health checks)."""
        return True

    #: Seconds a delivery may stay unacknowledged before the broker takes it back by force
    #: (RabbitMQ's consumer timeout), or ``None`` for no such limit. The bus fits handler
    #: timeouts within it.
    consumer_timeout: float | None = None

    @abc.abstractmethod
    async def browse(self, queue: str, limit: int = 100) -> list[Message]:
        """Up to ``limit`` messages waiting in ``queue``, oldest first, without removing them.

        Some brokers can only look by taking and returning messages: browsing may then mark
        them redelivered and raise their delivery count."""

    async def pull(self, queue: str) -> Pulled | None:
        """Take the next message of ``queue`` without a consumer (for tools), or ``None`` if
        it is empty. The message stays unacknowledged until settled."""
        raise NotImplementedError(f"{type(self).__name__} cannot pull messages")

    async def purge(self, queue: str) -> int:
        """Delete every message waiting in ``queue``; returns how many there were."""
        raise NotImplementedError(f"{type(self).__name__} cannot purge queues")

    async def dead_letter(self, queue: str, message: Message) -> None:
        """Keep ``message`` in the dead-letter queue of ``queue``."""
        await self.send(dead_letter_queue(queue), message)

    def asyncapi(
        self, part: AsyncAPIPart, *, name: str = "", queue: str = "", broadcast: bool = False
    ) -> dict[str, Any]:
        """The fields this transport adds to one object of the AsyncAPI document, such as
        ``bindings`` or ``x-...`` extensions (none by default).

        ``name`` is the event name or pattern of a channel, message or operation; ``queue`` and
        ``broadcast`` describe the subscription of a ``receive`` operation."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
