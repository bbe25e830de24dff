"""The Kafka transport: starting and stopping, declaring, publishing, consuming, inspecting.

The mapping (topics, groups, delays) is explained in the package docstring and docs/kafka.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from fastapi_bus.core.exceptions import (
    ConfigurationError,
    TransportClosedError,
    TransportError,
    UnroutableError,
)
from fastapi_bus.core.messages import Message
from fastapi_bus.core.names import is_pattern
from fastapi_bus.transports.base import (
    AsyncAPIPart,
    Consumer,
    Pulled,
    Subscription,
    Transport,
    dead_letter_queue,
)
from fastapi_bus.transports.kafka.broadcast import BroadcastConsumer
from fastapi_bus.transports.kafka.consumer import QueueConsumer
from fastapi_bus.transports.kafka.delays import DelayMover, delay_headers
from fastapi_bus.transports.kafka.description import describe
from fastapi_bus.transports.kafka.handoff import Handoff, Headers, KeyPartitioner
from fastapi_bus.transports.kafka.inspection import (
    Inspector,
    committed_offsets,
    partitions_matching,
)
from fastapi_bus.transports.kafka.mapping import encode_record
from fastapi_bus.transports.kafka.naming import Names
from fastapi_bus.transports.kafka.pulling import Puller
from fastapi_bus.transports.kafka.settings import parse_url

__all__ = ["KafkaTransport"]

logger = logging.getLogger("fastapi_bus.kafka")

#: Kafka's error code for a topic that exists already.
_TOPIC_EXISTS = 36


class KafkaTransport(Transport):
    """The Kafka transport. See the package docstring and docs/kafka.md.

    Args:
        url: ``kafka://host:9092,host2:9092``; ``kafka://user:password@host:9092`` for SASL
            (``?security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-256`` and the like).
        prefix: the start of every topic and group name; services that talk use the same one.
        partitions: how many partitions the topics the bus creates get (the most consumers of
            one queue that can work at once).
        replication: the replication factor of the topics the bus creates.
        client_options: more options for every aiokafka client (``ssl_context``, ...).
        consumer_options: more options for the group consumers (``session_timeout_ms``,
            ``rebalance_timeout_ms``, ``heartbeat_interval_ms``, ...).
        producer_options: more options for the producer (``linger_ms``, ``compression_type``;
            ``enable_idempotence=True`` where the broker supports it; ``partitioner``, by
            default aiokafka's, remembering each key's hash).
    """

    protocol = "kafka"

    def __init__(
        self,
        url: str = "kafka://localhost:9092",
        *,
        prefix: str = "bus",
        partitions: int = 3,
        replication: int = 1,
        client_options: dict[str, Any] | None = None,
        consumer_options: dict[str, Any] | None = None,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        parsed = parse_url(url)
        if not prefix or not all(c.isalnum() or c in "._-" for c in prefix):
            raise ConfigurationError(f"invalid Kafka topic prefix {prefix!r}")
        if partitions < 1 or replication < 1:
            raise ConfigurationError("partitions and replication must be at least 1")
        self._parsed = parsed
        self._names = Names(prefix)
        self._partitions = partitions
        self._replication = replication
        self._client_options = {
            "bootstrap_servers": parsed.bootstrap,
            **parsed.options,
            **(client_options or {}),
        }
        self._consumer_options = consumer_options or {}
        # The default partitioner, with each key's hash remembered (unless one is given).
        self._producer_options = {
            "acks": "all",
            "partitioner": KeyPartitioner(),
            **(producer_options or {}),
        }
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._inspector: Inspector | None = None
        self._mover: DelayMover | None = None
        self._mover_lock = asyncio.Lock()
        self._topics: set[str] = set()
        self._event_topics: dict[str, str] = {}  # event name: its topic
        self._handoff: Handoff | None = None
        self._consumers: list[QueueConsumer | BroadcastConsumer] = []
        self._pullers: dict[str, Puller] = {}

    @property
    def url(self) -> str:
        return self._parsed.safe

    @property
    def names(self) -> Names:
        """The topic and group names this transport uses."""
        return self._names

    def asyncapi(
        self, part: AsyncAPIPart, *, name: str = "", queue: str = "", broadcast: bool = False
    ) -> dict[str, Any]:
        return describe(
            part, url=self.url, names=self._names, name=name, queue=queue, broadcast=broadcast
        )

    def _scrub(self, error: BaseException) -> str:
        text = str(error) or type(error).__name__
        if self._parsed.password:
            text = text.replace(self._parsed.password, "***")
        return text

    def _consumer(self, **options: Any) -> AIOKafkaConsumer:
        merged = {
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "metadata_max_age_ms": 5000,
            # A broker holds a fetch of partitions with nothing new up to this long, and
            # aiokafka sends the next fetch to that broker only after it: short waits keep
            # delivery prompt (with aiokafka's 500 ms, reading 20,000 waiting records on
            # Tansu took 3-5 times as long; 20 ms or 5 ms were no faster than 100).
            "fetch_max_wait_ms": 100,
            **self._client_options,
            **options,
        }
        return AIOKafkaConsumer(**merged)

    def _group_consumer(self, group: str) -> AIOKafkaConsumer:
        return self._consumer(group_id=group, **self._consumer_options)

    # lifecycle

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._client_options, **self._producer_options)
        admin = AIOKafkaAdminClient(**self._client_options)
        try:
            await producer.start()
            await admin.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await admin.close()
            raise TransportError(
                f"cannot connect to Kafka at {self.url}: {self._scrub(exc)}"
            ) from None
        self._producer, self._admin = producer, admin
        self._handoff = Handoff(producer)
        self._inspector = Inspector(self._consumer, self._names.group, self._queue_regex)

    def _queue_regex(self, queue: str) -> str:
        """The topics a queue's group may read: any event topic, and its own."""
        return f"{self._names.event_regex(('#',))}|^{re.escape(self._names.queue(queue))}$"

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def _require(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient]:
        if self._producer is None or self._admin is None:
            raise TransportClosedError(f"the Kafka transport for {self.url} is not running")
        return self._producer, self._admin

    async def stop_consuming(self, grace: float = 10.0) -> None:
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            consumer.halt()
        await asyncio.gather(*(consumer.stop(grace) for consumer in consumers))

    async def close(self, grace: float = 10.0) -> None:
        if self._producer is None:
            return
        await self.stop_consuming(grace)
        if self._mover is not None:
            await self._mover.stop()
            self._mover = None
        pullers, self._pullers = list(self._pullers.values()), {}
        for puller in pullers:
            await puller.stop()
        producer, admin, handoff = self._producer, self._admin, self._handoff
        self._producer = self._admin = self._inspector = self._handoff = None
        self._topics.clear()
        if handoff is not None:
            await handoff.close()  # every record queued for the producer is handed over
        await producer.stop()
        if admin is not None:
            await admin.close()

    # topology

    async def _ensure_topics(self, *topics: str) -> None:
        _, admin = self._require()
        missing = [t for t in topics if t not in self._topics]
        if not missing:
            return
        new = [NewTopic(t, self._partitions, self._replication) for t in missing]
        try:
            response = await admin.create_topics(new)
        except Exception as exc:
            raise TransportError(
                f"cannot create Kafka topics {missing}: {self._scrub(exc)}"
            ) from None
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_EXISTS):
                raise TransportError(f"cannot create Kafka topic {topic!r}: {rest or code}")
        self._topics.update(missing)

    async def declare(self, subscription: Subscription) -> None:
        names = self._names
        exact = [names.event(p) for p in subscription.patterns if not is_pattern(p)]
        dlq = dead_letter_queue(subscription.queue)
        await self._ensure_topics(*exact, names.queue(dlq))
        await self._start_group(dlq, ())
        if not subscription.broadcast:
            await self._ensure_topics(names.queue(subscription.queue))
            await self._start_group(subscription.queue, subscription.patterns)

    async def _start_group(self, queue: str, patterns: tuple[str, ...]) -> None:
        """Make the queue's group start at the current end of the topics it reads (a queue
        gets what is published after it is declared), where it has no committed offset yet."""
        self._require()
        regex = self._names.subscription_regex(queue, patterns)
        client = self._consumer(group_id=self._names.group(queue))
        try:
            await client.start()
            known = await committed_offsets(client, regex)
        except Exception as exc:
            await client.stop()
            raise TransportError(
                f"cannot declare {queue!r} on {self.url}: {self._scrub(exc)}"
            ) from None
        try:
            partitions = await partitions_matching(client, regex)
            fresh = [tp for tp in partitions if tp not in known]
            if fresh:
                ends = await client.end_offsets(fresh)
                client.assign(fresh)
                await client.commit({tp: OffsetAndMetadata(o, "") for tp, o in ends.items()})
        except Exception as exc:
            # A running member of the group owns its offsets: nothing to start then.
            logger.debug("offsets of %r not initialised: %s", queue, self._scrub(exc))
        finally:
            await client.stop()

    # publishing

    async def _hand(
        self, topic: str, value: bytes | None, headers: Headers, key: bytes | None
    ) -> asyncio.Future[Any]:
        """Hand a record to the producer's batch (in order per topic); returns the future of
        Kafka's answer. Raises :class:`TransportError` if the producer refuses it at once (a
        record queued behind others gets its refusal through the future)."""
        handoff = self._handoff
        if handoff is None:
            raise TransportClosedError(f"the Kafka transport for {self.url} is not running")
        try:
            return await handoff.hand(topic, value, headers, key)
        except Exception as exc:
            raise TransportError(
                f"Kafka did not take a message for {topic!r}: {self._scrub(exc)}"
            ) from None

    async def _taken(self, topic: str, sent: asyncio.Future[Any]) -> None:
        """Wait for Kafka's answer to a record handed over (``acks="all"``)."""
        try:
            await sent
        except Exception as exc:
            raise TransportError(
                f"Kafka did not take a message for {topic!r}: {self._scrub(exc)}"
            ) from None

    async def _produce(
        self, topic: str, value: bytes | None, headers: Headers, key: bytes | None
    ) -> None:
        """Send a record; returns once Kafka has taken it."""
        await self._taken(topic, await self._hand(topic, value, headers, key))

    async def _topic_of(self, name: str) -> str:
        """The topic of the event ``name``, created if this transport has not made sure of it."""
        topic = self._event_topics.get(name)
        if topic is None:
            topic = self._event_topics[name] = self._names.event(name)
        if topic not in self._topics:
            await self._ensure_topics(topic)
        return topic

    async def _hand_message(
        self, topic: str, message: Message, delay: float | None
    ) -> tuple[str, asyncio.Future[Any]]:
        """Hand ``message`` for ``topic`` (through the delay topic with a delay) to the
        producer; returns the topic it went to and the future of Kafka's answer."""
        headers, key = encode_record(message)
        if delay is not None and delay > 0:
            await self._ensure_topics(self._names.delays)
            await self._ensure_mover()
            delayed = headers + delay_headers(topic, delay)
            topic = self._names.delays
            return topic, await self._hand(topic, message.body, delayed, key)
        return topic, await self._hand(topic, message.body, headers, key)

    async def publish(self, message: Message, *, delay: float | None = None) -> None:
        topic = self._event_topics.get(message.name)
        if topic is None or topic not in self._topics:
            topic = await self._topic_of(message.name)
        if delay is not None:
            await self._taken(*await self._hand_message(topic, message, delay))
            return
        # ``_hand`` then ``_taken``, written out: this runs once per publish.
        handoff = self._handoff
        if handoff is None:
            raise TransportClosedError(f"the Kafka transport for {self.url} is not running")
        headers, key = encode_record(message)
        try:
            sent = await handoff.hand(topic, message.body, headers, key)
            await sent
        except Exception as exc:
            raise TransportError(
                f"Kafka did not take a message for {topic!r}: {self._scrub(exc)}"
            ) from None

    async def publish_many(self, messages: Sequence[tuple[Message, float | None]]) -> None:
        """Publish ``messages`` (each with its delay) in this order, pipelined: every record is
        handed to the producer's batches before the first answer is awaited, so they travel
        in as few requests as the batches allow, and records of one partition keep their
        order. Returns once Kafka has taken every one. If one cannot be handed over, the later
        ones are not sent; the first failure is raised once the answers to the records handed
        over have come (a record Kafka refuses in the end does not undo the later ones)."""
        handoff = self._handoff
        if handoff is None:
            raise TransportClosedError(f"the Kafka transport for {self.url} is not running")
        event_topics, topics = self._event_topics, self._topics
        handed: list[tuple[str, asyncio.Future[Any]]] = []
        failure: Exception | None = None
        for message, delay in messages:
            try:
                topic = event_topics.get(message.name)
                if topic is None or topic not in topics:
                    topic = await self._topic_of(message.name)
                if delay is not None:
                    handed.append(await self._hand_message(topic, message, delay))
                    continue
                # ``_hand_message`` without a delay, written out: this runs once per message.
                headers, key = encode_record(message)
                try:
                    sent = await handoff.hand(topic, message.body, headers, key)
                except Exception as exc:
                    raise TransportError(
                        f"Kafka did not take a message for {topic!r}: {self._scrub(exc)}"
                    ) from None
                handed.append((topic, sent))
            except Exception as exc:
                failure = exc
                break
        for topic, sent in handed:
            try:
                await sent
            except Exception as exc:
                failure = failure or TransportError(
                    f"Kafka did not take a message for {topic!r}: {self._scrub(exc)}"
                )
        if failure is not None:
            raise failure

    async def send(self, queue: str, message: Message, *, delay: float | None = None) -> None:
        _, admin = self._require()
        topic = self._names.queue(queue)
        if topic not in self._topics:
            if topic not in await admin.list_topics():
                raise UnroutableError(
                    f"no queue named {queue!r} exists; message {message.id} was not sent"
                )
            self._topics.add(topic)
        await self._taken(*await self._hand_message(topic, message, delay))

    async def _ensure_mover(self) -> None:
        async with self._mover_lock:
            if self._mover is not None:
                return
            await self._ensure_topics(self._names.delays)
            client = self._group_consumer(self._names.group("__delays"))
            mover = DelayMover(client, self._names.delays, self._produce)
            await mover.start()
            self._mover = mover

    # consuming

    async def consume(self, subscription: Subscription, consumer: Consumer) -> None:
        self._require()
        await self.declare(subscription)
        names = self._names
        runner: QueueConsumer | BroadcastConsumer
        if subscription.broadcast:
            runner = BroadcastConsumer(
                self._consumer(group_id=None),
                queue=subscription.queue,
                regex=names.event_regex(subscription.patterns),
                consumer=consumer,
                produce=self._produce,
                dead_topic=names.queue(dead_letter_queue(subscription.queue)),
            )
        else:
            runner = QueueConsumer(
                self._group_consumer(names.group(subscription.queue)),
                subscription=subscription,
                regex=names.subscription_regex(subscription.queue, subscription.patterns),
                consumer=consumer,
                produce=self._produce,
                topic=names.queue(subscription.queue),
                dead_topic=names.queue(dead_letter_queue(subscription.queue)),
            )
            await self._ensure_mover()
        await runner.start()
        self._consumers.append(runner)

    # inspection

    def _inspect(self) -> Inspector:
        self._require()
        assert self._inspector is not None
        return self._inspector

    async def browse(self, queue: str, limit: int = 100) -> list[Message]:
        return await self._inspect().browse(queue, limit)

    async def pull(self, queue: str) -> Pulled | None:
        self._require()
        puller = self._pullers.get(queue)
        if puller is None:
            client = self._consumer(group_id=self._names.group(queue))
            await client.start()
            puller = Puller(client, queue=queue, regex=self._queue_regex(queue))
            self._pullers[queue] = puller
        return await puller.pull()

    async def purge(self, queue: str) -> int:
        return await self._inspect().purge(queue)
