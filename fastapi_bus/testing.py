"""Helpers for testing apps that use fastapi-bus.

```python
import functools
from collections.abc import Mapping
from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel
from fastapi_bus.testing import dead_letters, drain, publish

def test_order_reserves_stock() -> None:
    with TestClient(app) as client:
        client.post("/orders", json={"order_id": "1", "total": 3.5})
        publish(client, OrderPlaced(order_id="2", total=1.0))   # from test code
        drain(client)                 # every event handled, including the ones they published
        assert stock.reserved == ["1"]
        assert dead_letters(client) == []
```
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.core.messages import Message
from fastapi_bus.runtime.bus import EventBus
from fastapi_bus.web.extension import get_bus

__all__ = ["dead_letters", "drain", "publish"]


def _running(client: TestClient) -> tuple[EventBus, Any]:
    portal = getattr(client, "portal", None)
    if portal is None:
        raise ConfigurationError("use the TestClient as a context manager: `with TestClient(app)`")
    return get_bus(client.app), portal  # type: ignore[arg-type]


def publish(
    client: TestClient,
    event: BaseModel | str,
    payload: BaseModel | Mapping[str, Any] | None = None,
    **options: Any,
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
