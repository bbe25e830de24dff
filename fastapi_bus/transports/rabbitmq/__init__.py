"""``amqp://`` and ``amqps://``: RabbitMQ through aio-pika.

Topology
========

One durable **topic exchange** per bus (``exchange=``, default ``"fastapi_bus"``). An event is
published to it with its name as the routing key. Each subscription owns a durable queue
(quorum by default) bound to the exchange once per pattern, and a dead-letter queue
``<queue>.dlq`` of the same type. The queue dead-letters to its ``.dlq`` through the default
exchange, so anything the broker itself gives up on (a ``delivery-limit`` or ``max-length``
policy, a message this transport cannot decode) ends up there too.

A broadcast subscription gets an exclusive, auto-delete classic queue per transport instance,
``<queue>.<random suffix>``, bound to the same patterns. It disappears with its connection, so a
process only sees broadcasts published while it is connected. Its dead-letter queue is the shared,
durable ``<queue>.dlq``.

Delays
======

RabbitMQ has no delayed delivery without a plugin, so delays are built from what it ships: a
queue-level message TTL and dead-lettering. A delay is rounded **up** to one of a fixed set of
levels (:data:`DELAY_LEVELS_MS`, 0.1 s to 28 days), so there are few delay queues and a
message never arrives early. Each level has, on demand:

* a fanout exchange ``<exchange>.delay.<ms>ms.<queue type>`` bound to
* a queue of the same name with ``x-message-ttl = <ms>``, which nobody consumes. When the TTL runs
  out, RabbitMQ dead-letters the message to ``<exchange>`` (the bus's topic exchange).

Every message in one delay queue has the same TTL, so the oldest is always the next to expire:
there is no head-of-line blocking, which per-message TTLs would cause. The fanout exchange is what
keeps the routing key: a message enters the delay queue with its event name as routing key, and
dead-lettering keeps that key, so the topic exchange routes it as if it had just been published.

``send(queue, message, delay=...)`` uses a second family, ``...<queue type>.direct``, that
dead-letters to the default exchange with the target queue's name as routing key.

Delay queues expire (``x-expires``) a while after their TTL once nobody declares them any more;
the transport re-declares a level before using it if its last declaration is getting old, so a
queue never expires while it may still hold a message. Their fanout exchanges are auto-delete and
go with them.

Two limits: a message that has no queue to go to when its delay ends is dropped by RabbitMQ
(``unroutable`` cannot report it then), and a delay queue holds its messages on one node if it
is classic (quorum delay queues are replicated like the others).

Guarantees
==========

* ``publish``/``send`` return only after RabbitMQ confirmed the message (publisher confirms);
  concurrent calls share one channel and their confirms are pipelined. If the connection drops,
  they wait (up to ``publish_timeout``) for aio-pika to reconnect and publish again, so a
  message may be stored twice, never zero times. A message RabbitMQ nacks (a quorum queue
  electing a leader) is published again on a new channel, up to ``publish_timeout`` too;
  after that they raise :class:`~fastapi_bus.TransportError`.
* A consumer call that returns acks its message; one that raises nacks it back to the queue. A
  message whose ack could not be sent (the connection dropped) is redelivered by the broker.
* ``close`` cancels the consumers, lets running calls finish within the grace period, and then
  closes the channels, which returns every unacknowledged message to its queue.

Modules
=======

``transport`` holds :class:`RabbitMQTransport`; it builds on ``addresses`` (the broker URLs),
``connection`` (connecting, channels), ``failover`` (reconnecting across addresses),
``publishing`` (the publishing channel), ``topology`` (what is declared, and how), ``delays``
(the delay levels and their queues), ``mapping`` (:class:`~fastapi_bus.Message` to and from
AMQP), ``consumer`` (one subscription's deliveries) and ``inspection`` (browse, pull, purge).
"""

from __future__ import annotations

from fastapi_bus.transports.rabbitmq.delays import DELAY_LEVELS_MS, delay_level
from fastapi_bus.transports.rabbitmq.mapping import ATTEMPT_HEADER as ATTEMPT_HEADER
from fastapi_bus.transports.rabbitmq.mapping import CAUSATION_HEADER as CAUSATION_HEADER
from fastapi_bus.transports.rabbitmq.mapping import PUBLISHED_AT_HEADER as PUBLISHED_AT_HEADER
from fastapi_bus.transports.rabbitmq.transport import RabbitMQTransport

__all__ = ["DELAY_LEVELS_MS", "RabbitMQTransport"]

#: The name this had when the transport was a single module (the tests use it).
_delay_level = delay_level
