"""``kafka://``: Apache Kafka (or a Kafka-wire-compatible broker) through aiokafka.

A topic per event name, a topic per handler queue for retries and replays, a consumer group per
queue, a shared delay topic, and a ``<queue>.dlq`` topic per handler. See ``docs/kafka.md`` for
what the bus creates, its guarantees and what Kafka cannot do.
"""

from fastapi_bus.transports.kafka.transport import KafkaTransport

__all__ = ["KafkaTransport"]
