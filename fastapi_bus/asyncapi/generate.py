"""The AsyncAPI 3.0 document of a bus, built from its routers.

* Every handler is a ``receive`` operation and every ``router.publishes(...)`` a ``send``
  operation, on the channel whose address is the event name (or the handler's pattern).
* Each channel carries the messages that travel on it; a message's payload is the JSON schema
  of its pydantic type, with named models shared in ``components.schemas``.
* The transport adds what it knows of itself (``Transport.asyncapi``): on RabbitMQ, AMQP
  bindings with the topic exchange and the queue each handler consumes; on Redis, ``x-redis``
  extensions with the streams, consumer groups and Pub/Sub channels.
"""

from __future__ import annotations

import inspect
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from fastapi_bus.asyncapi.schemas import payload_schemas
from fastapi_bus.core.names import pattern_matches
from fastapi_bus.routing.route import EventDeclaration, EventRoute
from fastapi_bus.runtime.bus import EventBus

__all__ = ["ASYNCAPI_VERSION", "get_asyncapi"]

ASYNCAPI_VERSION = "3.0.0"
_JSON = "application/json"
_BASE_MODEL_DOC = inspect.getdoc(BaseModel)


def get_asyncapi(
    bus: EventBus, *, title: str, version: str, description: str | None = None
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``bus`` (building the bus first, so its declarations are
    checked), as JSON-ready dicts."""
    bus.build()
    return _Builder(bus).document(title=title, version=version, description=description)


_WILDCARDS = {"*": "any", "#": "all"}


def _ident(text: str) -> str:
    """``text`` as an AsyncAPI identifier (letters, digits, ``_`` and ``-``)."""
    words = [_WILDCARDS.get(word, word) for word in text.split(".")]
    return re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(words)) or "_"


def _unique(base: str, taken: set[str]) -> str:
    name, counter = base, 1
    while name in taken:
        counter += 1
        name = f"{base}_{counter}"
    taken.add(name)
    return name


def _title(name: str) -> str:
    words = re.sub(r"[_.:-]+", " ", name).strip()
    return words[:1].upper() + words[1:] if words else name


def _model_doc(model: Any) -> str | None:
    """A class's own docstring (``inspect.getdoc`` would return a base class's)."""
    own = vars(model).get("__doc__") if inspect.isclass(model) else None
    return inspect.cleandoc(own) if isinstance(own, str) and own.strip() else None


def _declared_doc(declaration: EventDeclaration) -> str | None:
    text = declaration.description
    if text is None or text == _BASE_MODEL_DOC:  # inherited from BaseModel, not written
        return _model_doc(declaration.model)
    return text


def _tags(names: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"name": name} for name in dict.fromkeys(names)]


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)}


def _prune(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without empty optional fields."""
    return {key: value for key, value in obj.items() if value not in (None, "", [], {})}


class _Builder:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.url = urlsplit(bus.transport.url)
        self.channels: dict[str, dict[str, Any]] = {}  # by address
        self.channel_ids: dict[str, str] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.message_ids: dict[tuple[str, int], str] = {}
        self.payload_types: list[Any] = []  # a message's payload, by index
        self.tag_names: list[str] = []
        self.known: dict[str, Any] = {}  # event names shown in the document: their payload

    def document(self, *, title: str, version: str, description: str | None) -> dict[str, Any]:
        routes = [route for route in self.bus.routes if route.include_in_schema]
        declarations: dict[str, EventDeclaration] = {}
        for router in self.bus.routers:
            for declaration in router.declarations:
                if declaration.include_in_schema:
                    declarations.setdefault(declaration.name, declaration)
        for name, declaration in declarations.items():
            self.known[name] = declaration.model
        for route in routes:
            if not route.is_pattern:
                self.known.setdefault(route.event, self._payload(route))
        for address in sorted({route.event for route in routes} | set(declarations)):
            self._add_channel(address)
        taken: set[str] = set()
        for route in routes:
            self.operations[_unique(_ident(route.name), taken)] = self._receive(route)
        for declaration in declarations.values():
            op_id = _unique(_ident(f"publish_{declaration.name}"), taken)
            self.operations[op_id] = self._send(declaration)
        schemas, components = payload_schemas(self.payload_types)
        for message in self.messages.values():
            message["payload"] = schemas[message["payload"]]
        info = {
            "title": title,
            "version": version,
            "description": description,
            "tags": _tags(tuple(self.tag_names)),
        }
        return _prune(
            {
                "asyncapi": ASYNCAPI_VERSION,
                "id": f"urn:fastapi-bus:{self.bus.service}",
                "info": _prune(info),
                "defaultContentType": _JSON,
                "servers": self._servers(),
                "channels": {self.channel_ids[a]: ch for a, ch in self.channels.items()},
                "operations": self.operations,
                "components": _prune({"schemas": components, "messages": self.messages}),
            }
        )

    # servers

    def _servers(self) -> dict[str, Any]:
        transport = self.bus.transport
        protocol = transport.protocol or self.url.scheme or "unknown"
        # Whatever the transport's URL carries before "@" is credentials: never published.
        host = self.url.netloc.rpartition("@")[2] or "localhost"
        server: dict[str, Any] = {"host": host, "protocol": self.url.scheme or protocol}
        server.update(transport.asyncapi("server"))
        return {_ident(protocol): server}

    # channels and messages

    def _add_channel(self, address: str) -> None:
        self.channel_ids[address] = _unique(_ident(address), set(self.channel_ids.values()))
        words = address.split(".")
        # A "#" would read as a URI fragment: such a pattern has no address, only its extension.
        channel: dict[str, Any] = {"address": None if "#" in words else address, "messages": {}}
        if "*" in words or "#" in words:
            channel["title"] = f"Events matching {address}"
            channel["description"] = (
                f"Every event whose name matches the topic pattern `{address}` (`*` stands "
                "for exactly one word, `#` for zero or more words)."
            )
            channel["x-topic-pattern"] = address
        channel.update(self.bus.transport.asyncapi("channel", name=address))
        self.channels[address] = channel

    def _message(self, name: str, payload: Any, description: str | None) -> str:
        """The id of the message component for event ``name`` with ``payload`` type."""
        key = (name, id(payload))
        known = self.message_ids.get(key)
        if known is not None:
            if description and "description" not in self.messages[known]:
                self.messages[known]["description"] = description
            return known
        message_id = _unique(_ident(name), set(self.messages))
        self.message_ids[key] = message_id
        title = payload.__name__ if inspect.isclass(payload) else None
        message: dict[str, Any] = {
            "name": name,
            "title": title,
            "description": description or _model_doc(payload),
            "contentType": _JSON,
            "payload": len(self.payload_types),  # replaced by the schema at the end
        }
        self.payload_types.append(Any if payload is None else payload)
        message.update(self.bus.transport.asyncapi("message", name=name))
        self.messages[message_id] = _prune(message)
        return message_id

    def _use(self, address: str, message_id: str) -> dict[str, str]:
        """Put a message on a channel; the reference to it there, for an operation."""
        channel_id = self.channel_ids[address]
        self.channels[address]["messages"][message_id] = _ref("components", "messages", message_id)
        return _ref("channels", channel_id, "messages", message_id)

    def _route_messages(self, route: EventRoute) -> list[dict[str, str]]:
        if not route.is_pattern:
            payload = self._payload(route)
            return [self._use(route.event, self._message(route.event, payload, None))]
        if route.event_type is not None:
            return [self._use(route.event, self._message(route.event, route.event_type, None))]
        # A pattern handler without a type takes whichever known events match the pattern.
        known = sorted(name for name in self.known if pattern_matches(route.event, name))
        if not known:
            return [self._use(route.event, self._message(route.event, None, None))]
        return [
            self._use(route.event, self._message(name, self.known[name], None)) for name in known
        ]

    def _payload(self, route: EventRoute) -> Any:
        """The type a handler of an event name validates it with (``None``: any JSON)."""
        if route.event_type is not None:
            return route.event_type
        return self.bus.registry.models.get(route.event)

    # operations

    def _receive(self, route: EventRoute) -> dict[str, Any]:
        self.tag_names.extend(route.tags)
        operation: dict[str, Any] = {
            "action": "receive",
            "channel": _ref("channels", self.channel_ids[route.event]),
            "title": _title(route.name),
            "summary": route.summary,
            "description": route.description,
            "tags": _tags(route.tags),
            "messages": self._route_messages(route),
            # Every process gets its own copy of each event: worth saying, on any broker.
            "x-broadcast": True if route.broadcast else None,
        }
        operation.update(
            self.bus.transport.asyncapi(
                "receive",
                name=route.event,
                queue=self.bus.queue_for(route),
                broadcast=route.broadcast,
            )
        )
        return _prune(operation)

    def _send(self, declaration: EventDeclaration) -> dict[str, Any]:
        self.tag_names.extend(declaration.tags)
        description = _declared_doc(declaration)
        message_id = self._message(declaration.name, declaration.model, description)
        operation: dict[str, Any] = {
            "action": "send",
            "channel": _ref("channels", self.channel_ids[declaration.name]),
            "title": f"Publish {declaration.name}",
            "description": description,
            "tags": _tags(declaration.tags),
            "messages": [self._use(declaration.name, message_id)],
        }
        operation.update(self.bus.transport.asyncapi("send", name=declaration.name))
        return _prune(operation)
