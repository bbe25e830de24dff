"""Every exception fastapi-bus raises.

Errors (something is wrong)::

    BusError
    ├── ConfigurationError      wrong declaration or illegal lifecycle move, raised early
    ├── HandlerTimeout          a handler ran past its timeout and was cancelled
    ├── PublishError            an event could not be sent; nothing was sent
    │   ├── UnknownEventError   a name that no router declares
    │   ├── EventValidationError  the payload does not match the event's model
    │   ├── MessageTooLarge     the encoded event is over the bus's max_message_size
    │   └── UnroutableError     no queue is bound to the event (when asked to raise)
    └── TransportError          the broker failed or is unreachable
        └── TransportClosedError  the transport is not running

Signals (a handler's way of steering delivery; not errors)::

    HandlerSignal
    ├── Reject(reason)          do not retry: dead-letter this message now
    └── Retry(delay=None)       try this message again later
"""

from __future__ import annotations

__all__ = [
    "BusError",
    "ConfigurationError",
    "EventValidationError",
    "HandlerSignal",
    "HandlerTimeout",
    "MessageTooLarge",
    "PublishError",
    "Reject",
    "Retry",
    "TransportClosedError",
    "TransportError",
    "UnknownEventError",
    "UnroutableError",
]


class BusError(Exception):
    """Base class of every fastapi-bus error."""


class ConfigurationError(BusError):
    """A handler, router or extension is declared wrongly, or used in the wrong state."""


class PublishError(BusError):
    """An event could not be published. Nothing was sent."""


class UnknownEventError(PublishError):
    """The event name is not declared by any router."""


class EventValidationError(PublishError):
    """The payload does not validate against the event's model."""


class UnroutableError(PublishError):
    """No queue is bound to the event, so the broker could not deliver it anywhere."""


class TransportError(BusError):
    """The broker failed, refused an operation or cannot be reached."""


class TransportClosedError(TransportError):
    """The transport is not running (not started yet, or closed)."""


class HandlerTimeout(BusError, TimeoutError):
    """A handler ran past its ``timeout``: it was cancelled, and the call counts as failed
    (retried by its :class:`~fastapi_bus.RetryPolicy`, then dead-lettered)."""


class MessageTooLarge(PublishError):
    """An event's encoded body is larger than the bus's ``max_message_size``."""


class HandlerSignal(Exception):
    """Base class of the exceptions a handler raises on purpose to steer delivery."""


class Reject(HandlerSignal):
    """Raise in a handler to dead-letter the message at once, without retrying."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Retry(HandlerSignal):
    """Raise in a handler to have the message delivered again, after ``delay`` seconds."""

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason
