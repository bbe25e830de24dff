"""Helpers for testing apps that use fastapi-bus.

```python
from fastapi.testclient import TestClient

from fastapi_bus.testing import dead_letters, drain, publish, record_published


def test_order_reserves_stock() -> None:
    with TestClient(app) as client, record_published(client) as published:
        client.post("/orders", json={"order_id": "1", "total": 3.5})
        publish(client, OrderPlaced(order_id="2", total=1.0))  # from test code
        drain(client)  # every event handled, including the ones they published
        published.assert_published("StockReserved", payload={"order_id": "1"})
        assert dead_letters(client) == []
```

``adrain``, ``adead_letters`` and ``apublish`` do the same from ``async`` tests, given the
app whose lifespan is running. ``fastapi_bus.pytest_plugin`` adds fixtures.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel
from typing_extensions import Unpack

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.core.messages import Message
from fastapi_bus.runtime.bus import EventBus
from fastapi_bus.runtime.publishing import Payload, Publishable, PublishOptions
from fastapi_bus.web.extension import get_bus

__all__ = [
    "PublishedEvents",
    "adead_letters",
    "adrain",
    "apublish",
    "dead_letters",
    "drain",
    "publish",
    "record_published",
]


def _running(client: TestClient) -> tuple[EventBus, Any]:
    portal = getattr(client, "portal", None)
    if portal is None:
        raise ConfigurationError("use the TestClient as a context manager: `with TestClient(app)`")
    return get_bus(client.app), portal  # type: ignore[arg-type]


def publish(
    client: TestClient,
    event: Publishable,
    payload: Payload = None,
    **options: Unpack[PublishOptions],
) -> str:
    """Publish an event from test code, as ``bus.publish`` would; returns its message id."""
    bus, portal = _running(client)
    message_id: str = portal.call(functools.partial(bus.publish, event, payload, **options))
    return message_id


def drain(client: TestClient, timeout: float = 10.0) -> None:
    """Wait until every published event has been handled (``memory://`` transports)."""
    bus, portal = _running(client)
    portal.call(bus.wait_idle, timeout)


def dead_letters(client: TestClient, handler: str | None = None) -> list[Message]:
    """The dead-lettered messages of one handler, or of all handlers."""
    bus, portal = _running(client)

    async def collect() -> list[Message]:
        letters = await bus.dead_letters.list(handler=handler, limit=1_000_000)
        return [letter.message for letter in letters]

    found: list[Message] = portal.call(collect)
    return found


# async variants: for tests that run the app's lifespan on their own event loop


async def apublish(
    app: Any,
    event: Publishable,
    payload: Payload = None,
    **options: Unpack[PublishOptions],
) -> str:
    """:func:`publish` for ``async`` tests: ``app`` is the app whose lifespan is running."""
    return await get_bus(app).publish(event, payload, **options)


async def adrain(app: Any, timeout: float = 10.0) -> None:
    """:func:`drain` for ``async`` tests."""
    await get_bus(app).wait_idle(timeout)


async def adead_letters(app: Any, handler: str | None = None) -> list[Message]:
    """:func:`dead_letters` for ``async`` tests."""
    letters = await get_bus(app).dead_letters.list(handler=handler, limit=1_000_000)
    return [letter.message for letter in letters]


# what was published


class PublishedEvents:
    """The messages that a bus sent while recording, oldest first, with filters and
    assertions. Get one from :func:`record_published`."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def find(
        self,
        name: str | None = None,
        *,
        payload: BaseModel | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[Message]:
        """The messages with this event ``name``, whose payload has these fields with these
        values (a model instance: the whole payload), and that carry these ``headers``."""
        return [m for m in self.messages if _matches(m, name, payload, headers)]

    def payloads(self, name: str | None = None) -> list[Any]:
        """The decoded JSON payloads of the messages with this event ``name`` (or of all)."""
        return [json.loads(m.body) for m in self.find(name)]

    def assert_published(
        self,
        name: str | None = None,
        *,
        payload: BaseModel | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        count: int | None = None,
    ) -> list[Message]:
        """Fail unless a message matches (exactly ``count`` of them, if given); returns them."""
        found = self.find(name, payload=payload, headers=headers)
        if (count is None and not found) or (count is not None and len(found) != count):
            wanted = "at least one" if count is None else f"exactly {count}"
            raise AssertionError(
                f"expected {wanted} published message(s) matching "
                f"{_describe(name, payload, headers)}, found {len(found)}; published: "
                f"{self._summary()}"
            )
        return found

    def assert_not_published(
        self,
        name: str | None = None,
        *,
        payload: BaseModel | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Fail if any message matches."""
        found = self.find(name, payload=payload, headers=headers)
        if found:
            raise AssertionError(
                f"expected no published message matching {_describe(name, payload, headers)}, "
                f"found {len(found)}: {self._summary(found)}"
            )

    def clear(self) -> None:
        self.messages.clear()

    def _summary(self, messages: list[Message] | None = None) -> str:
        shown = self.messages if messages is None else messages
        if not shown:
            return "nothing"
        return "; ".join(f"{m.name} {m.body.decode('utf-8', 'replace')}" for m in shown)

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return f"PublishedEvents({self._summary()})"


def _matches(
    message: Message,
    name: str | None,
    payload: BaseModel | Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
) -> bool:
    if name is not None and message.name != name:
        return False
    if headers is not None and any(message.headers.get(k) != v for k, v in headers.items()):
        return False
    if payload is None:
        return True
    try:
        body = json.loads(message.body)
    except ValueError:
        return False
    if isinstance(payload, BaseModel):
        return bool(body == payload.model_dump(mode="json"))
    expected = json.loads(json.dumps(dict(payload), default=str))
    return isinstance(body, dict) and all(body.get(k, _MISSING) == v for k, v in expected.items())


_MISSING = object()


def _describe(
    name: str | None,
    payload: BaseModel | Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
) -> str:
    parts = [f"name={name!r}" if name is not None else "any name"]
    if payload is not None:
        parts.append(f"payload={payload!r}")
    if headers is not None:
        parts.append(f"headers={dict(headers)!r}")
    return ", ".join(parts)


@contextlib.contextmanager
def record_published(target: Any) -> Iterator[PublishedEvents]:
    """Record every message that the bus of ``target`` (a ``TestClient``, an app or an
    ``EventBus``) sends to its broker while the block runs: events published by endpoints,
    handlers and test code, when they are actually sent (an event held by a request that
    failed is never recorded)."""
    if isinstance(target, EventBus):
        bus = target
    elif isinstance(target, TestClient):
        bus = get_bus(target.app)  # type: ignore[arg-type]
    else:
        bus = get_bus(target)
    recorded = PublishedEvents()
    transport = bus.transport
    original = transport.publish

    async def publish(message: Message, *, delay: float | None = None) -> None:
        await original(message, delay=delay)
        recorded.messages.append(message)

    setattr(transport, "publish", publish)  # noqa: B010 (an instance attribute, undone below)
    try:
        yield recorded
    finally:
        vars(transport).pop("publish", None)
