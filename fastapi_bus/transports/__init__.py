"""Transports: the brokers fastapi-bus can run on, chosen by URL scheme."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.transports.base import Subscription, Transport, redact_url
from fastapi_bus.transports.memory import MemoryTransport

__all__ = ["MemoryTransport", "Subscription", "Transport", "transport_from_url"]


#: The optional brokers by URL scheme: the module and class of their transport, and the extra
#: that installs their client (with what else it needs).
_BROKERS: dict[str, tuple[str, str, str]] = {
    "amqp": ("rabbitmq", "RabbitMQTransport", "RabbitMQ support: pip install "
             "'fastapi-bus[rabbitmq]' (on Python 3.11 or newer)"),
    "redis": ("redis", "RedisTransport", "Redis support: pip install 'fastapi-bus[redis]'"),
    "kafka": ("kafka", "KafkaTransport", "Kafka support: pip install 'fastapi-bus[kafka]'"),
}  # fmt: skip
_BROKERS["amqps"] = _BROKERS["amqp"]
_BROKERS["rediss"] = _BROKERS["redis"]


def transport_from_url(url: str, **options: Any) -> Transport:
    """Build the transport for ``url``: ``memory://``, ``amqp://``, ``amqps://``, ``redis://``,
    ``rediss://`` or ``kafka://``.

    Brokers other than memory are optional extras, imported only when their URL is used.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryTransport(url, **options)
    if scheme not in _BROKERS:
        known = ", ".join(f"{name}://" for name in ["memory", *sorted(_BROKERS)])
        raise ConfigurationError(f"no transport for {redact_url(url)!r}: use {known}")
    module, name, needs = _BROKERS[scheme]
    try:
        transport: Callable[..., Transport] = getattr(
            importlib.import_module(f"fastapi_bus.transports.{module}"), name
        )
    except ImportError as exc:
        raise ConfigurationError(f"{redact_url(url)} needs {needs} ({exc})") from None
    return transport(url, **options)
