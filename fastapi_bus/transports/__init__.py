"""Transports: the brokers fastapi-bus can run on, chosen by URL scheme."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.transports.base import Subscription, Transport, redact_url
from fastapi_bus.transports.memory import MemoryTransport

__all__ = ["MemoryTransport", "Subscription", "Transport", "transport_from_url"]


def transport_from_url(url: str, **options: Any) -> Transport:
    """Build the transport for ``url``: ``memory://``, ``amqp://``, ``amqps://``, ``redis://``,
    ``rediss://`` or ``kafka://``.

    Brokers other than memory are optional extras, imported only when their URL is used.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryTransport(url, **options)
    if scheme in ("amqp", "amqps"):
        try:
            from fastapi_bus.transports.rabbitmq import RabbitMQTransport
        except ImportError as exc:
            raise ConfigurationError(
                f"{redact_url(url)} needs RabbitMQ support: pip install 'fastapi-bus[rabbitmq]' "
                f"(on Python 3.11 or newer) ({exc})"
            ) from None
        return RabbitMQTransport(url, **options)
    if scheme in ("redis", "rediss"):
        try:
            from fastapi_bus.transports.redis import RedisTransport
        except ImportError as exc:
            raise ConfigurationError(
                f"{redact_url(url)} needs Redis support: pip install 'fastapi-bus[redis]' ({exc})"
            ) from None
        return RedisTransport(url, **options)
    if scheme == "kafka":
        try:
            from fastapi_bus.transports.kafka import KafkaTransport
        except ImportError as exc:
            raise ConfigurationError(
                f"{scheme}:// needs Kafka support: pip install 'fastapi-bus[kafka]' ({exc})"
            ) from None
        return KafkaTransport(url, **options)
    raise ConfigurationError(
        f"no transport for {redact_url(url)!r}: use memory://, amqp://, amqps://, redis://, "
        "rediss:// or kafka://"
    )
