"""Which model belongs to which event name, and turning events into validated messages."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError
from typing_extensions import Unpack

from fastapi_bus.core.exceptions import (
    ConfigurationError,
    EventValidationError,
    MessageTooLarge,
    PublishError,
    UnknownEventError,
)
from fastapi_bus.core.messages import Message
from fastapi_bus.core.names import validate_event_name
from fastapi_bus.core.types import check_options
from fastapi_bus.runtime.publishing import EncodeOptions, Payload, Publishable

__all__ = ["MAX_MESSAGE_SIZE", "EventRegistry"]

#: The default ``max_message_size``: 1 MiB of encoded body.
MAX_MESSAGE_SIZE = 1024 * 1024


class EventRegistry:
    """Which model belongs to which event name, from handlers and ``publishes`` declarations.

    ``max_message_size``: the largest encoded body :meth:`encode` makes, in bytes (``None``:
    no limit)."""

    def __init__(self, max_message_size: int | None = MAX_MESSAGE_SIZE) -> None:
        if max_message_size is not None and (
            isinstance(max_message_size, bool)
            or not isinstance(max_message_size, int)
            or max_message_size < 1
        ):
            raise ConfigurationError(
                f"max_message_size must be a positive number of bytes (or None), "
                f"got {max_message_size!r}"
            )
        self.max_message_size = max_message_size
        self.models: dict[str, type[BaseModel]] = {}
        self._sources: dict[str, str] = {}
        self._names: dict[type[BaseModel], list[str]] = {}
        #: For each class of instance published so far: its event name, and the model that
        #: validates its bytes (worked out once, not at every publish).
        self._published: dict[type[BaseModel], tuple[str, type[BaseModel]]] = {}

    def add(self, name: str, model: type[BaseModel], source: str) -> None:
        known = self.models.get(name)
        if known is not None and known is not model:
            raise ConfigurationError(
                f"event {name!r} is declared with two models: {_qualname(known)} (by "
                f"{self._sources[name]}) and {_qualname(model)} (by {source})"
            )
        if known is None:
            self._published.clear()
            self.models[name] = model
            self._sources[name] = source
            self._names.setdefault(model, []).append(name)

    def name_for(self, model: type[BaseModel]) -> str:
        names = self._names.get(model)
        if not names:
            return model.__name__
        if len(names) > 1:
            raise PublishError(
                f"{_qualname(model)} is declared for several events ({', '.join(names)}): "
                "say which, as bus.publish(name, instance)"
            )
        return names[0]

    def encode(
        self, event: Publishable, payload: Payload = None, **options: Unpack[EncodeOptions]
    ) -> Message:
        """Validate an event and turn it into a message; raises and sends nothing if invalid."""
        check_options(options, EncodeOptions, "encode")
        return self.message(
            event,
            payload,
            options.get("headers"),
            options.get("correlation_id"),
            options.get("causation_id"),
        )

    def message(
        self,
        event: Publishable,
        payload: Payload,
        headers: Mapping[str, str] | None,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> Message:
        """:meth:`encode` with its options as arguments (what every publish calls)."""
        known = self._published.get(type(event))  # type: ignore[arg-type]
        if known is not None and payload is None:
            name, model = known
            body = _checked_body(name, event, model)  # type: ignore[arg-type]
        elif isinstance(event, BaseModel):
            if payload is not None:
                raise PublishError("pass either a model instance, or a name and a payload")
            name = self.name_for(type(event))
            body = self._validated_body(name, event)
            self._published[type(event)] = (name, self.models.get(name) or type(event))
        elif isinstance(event, str):
            validate_event_name(event)
            body = self._validated_body(event, payload)
            name = event
        else:
            raise PublishError(
                f"cannot publish {event!r}: pass a pydantic model instance or a name"
            )
        limit = self.max_message_size
        if limit is not None and len(body) > limit:
            raise MessageTooLarge(
                f"event {name!r} is {len(body):,} bytes encoded, over max_message_size "
                f"({limit:,} bytes); nothing was sent. Publish a reference to the data (a URL, "
                "a storage key) instead, or raise the bus's max_message_size"
            )
        text_headers: dict[str, str] | None = None  # the message makes ``{}`` when read
        if headers:
            text_headers = dict(headers)
            for key, value in text_headers.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise PublishError(f"headers must be text to text, got {key!r}: {value!r}")
        return Message(name, body, None, text_headers, correlation_id, causation_id)

    def _validated_body(self, name: str, payload: Payload) -> bytes:
        model = self.models.get(name)
        if isinstance(payload, BaseModel):
            if model is not None and not isinstance(payload, model):
                raise EventValidationError(
                    f"event {name!r} takes {_qualname(model)}, got {_qualname(type(payload))}"
                )
            return _checked_body(name, payload, model or type(payload))
        if model is None:
            raise UnknownEventError(
                f"event {name!r} is not declared: no handler takes it and no router declares it "
                "with router.publishes(name, Model); publish a model instance instead"
            )
        else:
            if payload is None or not isinstance(payload, Mapping):
                raise EventValidationError(
                    f"event {name!r} needs a dict or a model, got {payload!r}"
                )
            try:
                instance = model.model_validate(dict(payload))
            except ValidationError as exc:
                raise EventValidationError(f"event {name!r} is invalid: {exc}") from exc
            return instance.model_dump_json(by_alias=True).encode()


def _checked_body(name: str, event: BaseModel, model: type[BaseModel]) -> bytes:
    """``event`` as JSON, once ``model`` validated exactly those bytes (what consumers will
    validate): an event changed after it was made, or built with ``model_construct``, or whose
    serializer writes what does not validate back, is refused here."""
    try:
        # ``model_dump_json`` without its ``str`` round trip. Serialising with
        # ``warnings="error"`` doubled the cost of publishing; a field holding a value of the
        # wrong type is caught by the validation below.
        body: bytes = event.__pydantic_serializer__.to_json(event, by_alias=True, warnings=False)
    except PydanticSerializationError as exc:
        raise EventValidationError(f"event {name!r} cannot be serialized: {exc}") from exc
    try:
        model.__pydantic_validator__.validate_json(body)
    except ValidationError as exc:
        raise EventValidationError(f"event {name!r} is invalid: {exc}") from exc
    return body


def _qualname(model: type) -> str:
    return f"{model.__module__}.{model.__qualname__}"
