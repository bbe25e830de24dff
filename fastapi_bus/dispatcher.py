"""The innermost steps of a handler's pipeline.

decode → validate → resolve dependencies → call the handler → send what it published.
"""

from __future__ import annotations

import json
import time
import traceback
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from fastapi_bus.dependencies import HandlerPlan
from fastapi_bus.middleware import Delivery
from fastapi_bus.publisher import Outbox, Publisher, bind_publisher, unbind_publisher
from fastapi_bus.solver import SolveContext, solve

if TYPE_CHECKING:
    from fastapi_bus.bus import EventBus
    from fastapi_bus.routing import EventRoute

__all__ = ["HandlerCall", "InvalidMessage", "dead_letter_headers"]


#: Headers added to a dead-lettered message (the original ones are kept).
HEADER_PREFIX = "x-bus-"
MAX_HEADER_TEXT = 2000


class InvalidMessage(Exception):
    """The message cannot be turned into the handler's event: retrying will not help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HandlerCall:
    """Decode and validate the body, solve the dependencies, call the handler, then send the
    events it published."""

    def __init__(self, route: EventRoute, plan: HandlerPlan, event_type: Any, bus: EventBus):
        self.route = route
        self.plan = plan
        self.bus = bus
        self.wants_event = plan.event_param is not None
        self.adapter: TypeAdapter[Any] | None = (
            TypeAdapter(event_type) if event_type is not None else None
        )

    def decode(self, delivery: Delivery) -> Any:
        message = delivery.message
        if message.content_type.split(";")[0].strip() != "application/json":
            raise InvalidMessage(f"unsupported content type {message.content_type!r}")
        try:
            if self.adapter is None:
                return json.loads(message.body)
            return self.adapter.validate_json(message.body)
        except ValidationError as exc:
            raise InvalidMessage(
                f"payload of {message.name!r} does not validate for {self.route.label}: {exc}"
            ) from exc
        except ValueError as exc:  # json.loads on a body that is not JSON
            raise InvalidMessage(f"body is not valid JSON: {exc}") from exc

    async def __call__(self, delivery: Delivery) -> None:
        message = delivery.message
        event = self.decode(delivery) if (self.wants_event or self.adapter) else None
        outbox = Outbox(self.bus)
        publisher = Publisher(
            self.bus,
            correlation_id=message.correlation_id or message.id,
            causation_id=message.id,
            outbox=outbox,
        )
        token = bind_publisher(publisher)
        metrics = self.bus.metrics
        start = time.perf_counter()
        try:
            ctx = SolveContext(
                message=message, publisher=publisher, overrides=self.bus.dependency_overrides
            )
            await solve(self.plan, event, ctx)
        except BaseException as exc:
            outbox.discard()
            if isinstance(exc, Exception):
                metrics.failed(self.route.name, message.name, exc)
            raise
        finally:
            unbind_publisher(token)
        await outbox.flush()
        metrics.handled(self.route.name, message.name, time.perf_counter() - start)


def _trim(text: str, limit: int = MAX_HEADER_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dead_letter_headers(
    delivery: Delivery, reason: str, exc: BaseException | None
) -> dict[str, str]:
    """The headers that explain why a message was dead-lettered."""
    now = datetime.now(timezone.utc).isoformat()
    first = delivery.message.headers.get(f"{HEADER_PREFIX}first-failure-at", now)
    headers = {
        f"{HEADER_PREFIX}dead-letter-reason": _trim(reason),
        f"{HEADER_PREFIX}handler": delivery.route.name,
        f"{HEADER_PREFIX}queue": delivery.queue,
        f"{HEADER_PREFIX}attempts": str(delivery.message.attempt),
        f"{HEADER_PREFIX}first-failure-at": first,
        f"{HEADER_PREFIX}last-failure-at": now,
    }
    if exc is not None:
        cause = exc.__cause__ if isinstance(exc, InvalidMessage) and exc.__cause__ else exc
        headers[f"{HEADER_PREFIX}exception-type"] = (
            f"{type(cause).__module__}.{type(cause).__qualname__}"
        )
        headers[f"{HEADER_PREFIX}exception-message"] = _trim(str(cause))
        headers[f"{HEADER_PREFIX}traceback"] = _trim(
            "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)), 4000
        )
    return headers
