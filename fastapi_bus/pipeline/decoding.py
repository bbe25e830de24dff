"""Turning a message body into the handler's event, or saying why it cannot be."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import SchemaValidator

from fastapi_bus.core.messages import JSON, Message

__all__ = ["Decoder", "InvalidMessage", "check_size"]


class InvalidMessage(Exception):
    """The message cannot be turned into the handler's event: retrying will not help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_size(message: Message, limit: int | None) -> None:
    """Refuse a body over ``limit`` bytes before anything reads it."""
    if limit is not None and len(message.body) > limit:
        raise InvalidMessage(
            f"body is {len(message.body):,} bytes, over max_message_size ({limit:,} bytes)"
        )


class Decoder:
    """Decodes JSON bodies, validated against ``event_type`` when there is one."""

    def __init__(self, event_type: Any, label: str) -> None:
        self.label = label
        self.adapter: TypeAdapter[Any] | None = (
            TypeAdapter(event_type) if event_type is not None else None
        )
        #: Body bytes -> event, raising ``ValueError`` (a ``ValidationError``, or JSON that does
        #: not parse) or ``RecursionError``: what :meth:`__call__` turns into the reason.
        self.validate_json: Any = json.loads
        if self.adapter is not None:
            # The adapter's validator itself when it is built (its ``validate_json`` method
            # adds a call and checks of options that are never given here).
            validator = self.adapter.validator
            built = isinstance(validator, SchemaValidator)
            self.validate_json = validator.validate_json if built else self.adapter.validate_json

    def __call__(self, message: Message) -> Any:
        content_type = message.content_type
        if content_type != JSON and content_type.split(";")[0].strip() != JSON:
            raise InvalidMessage(f"unsupported content type {content_type!r}")
        try:
            return self.validate_json(message.body)
        except ValidationError as exc:
            raise InvalidMessage(
                f"payload of {message.name!r} does not validate for {self.label}: {exc}"
            ) from exc
        except ValueError as exc:  # json.loads on a body that is not JSON
            raise InvalidMessage(f"body is not valid JSON: {exc}") from exc
        except RecursionError:  # json.loads on arrays or objects nested thousands deep
            raise InvalidMessage("body is not valid JSON: nested too deeply") from None
