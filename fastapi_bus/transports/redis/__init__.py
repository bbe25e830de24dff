"""``redis://`` and ``rediss://``: Redis Streams for durable handlers, Pub/Sub for broadcasts.

See ``docs/redis.md`` for what the bus keeps in Redis, its guarantees and how it compares with
RabbitMQ.
"""

from fastapi_bus.transports.redis.transport import RedisTransport

__all__ = ["RedisTransport"]
