"""How a RabbitMQ bus looks in an AsyncAPI document: its AMQP 0.9.1 bindings."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi_bus.core.names import is_pattern
from fastapi_bus.transports.base import AsyncAPIPart

__all__ = ["AMQP_BINDING_VERSION", "describe"]

#: The version of AsyncAPI's AMQP bindings that the document follows.
AMQP_BINDING_VERSION = "0.3.0"


def _vhost(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if path not in ("", "/") else "/"


def describe(
    part: AsyncAPIPart,
    *,
    url: str,
    exchange: str,
    queue_type: str,
    name: str,
    queue: str,
    broadcast: bool,
) -> dict[str, Any]:
    """The fields a RabbitMQ transport adds to one object of the AsyncAPI document."""
    vhost = _vhost(url)
    if part == "server":
        server: dict[str, Any] = {"protocolVersion": "0.9.1"}
        if vhost != "/":
            server["pathname"] = "/" + vhost
        server["description"] = f"RabbitMQ, virtual host {vhost!r}"
        return server
    if part == "channel":
        exchange_binding = {
            "name": exchange,
            "type": "topic",
            "durable": True,
            "autoDelete": False,
            "vhost": vhost,
        }
        binding = {"is": "routingKey", "exchange": exchange_binding}
        return {"bindings": {"amqp": {**binding, "bindingVersion": AMQP_BINDING_VERSION}}}
    if part == "message":
        if is_pattern(name):
            return {}
        return {"bindings": {"amqp": {"messageType": name, "bindingVersion": AMQP_BINDING_VERSION}}}
    if part == "send":
        return {"bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING_VERSION}}}
    x_queue: dict[str, Any]
    if broadcast:
        # Each process binds an exclusive queue of its own, named after this one.
        x_queue = {
            "name": f"{queue}.<process id>",
            "durable": False,
            "exclusive": True,
            "autoDelete": True,
            "type": "classic",
        }
    else:
        x_queue = {
            "name": queue,
            "durable": True,
            "exclusive": False,
            "autoDelete": False,
            "type": queue_type,
        }
    x_queue["vhost"] = vhost
    receive = {"ack": True, "bindingVersion": AMQP_BINDING_VERSION, "x-queue": x_queue}
    return {"bindings": {"amqp": receive}}
