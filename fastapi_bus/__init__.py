"""fastapi-bus: a message bus for FastAPI."""

from fastapi_bus.bus import BusState, EventBus
from fastapi_bus.deadletters import DeadLetter, DeadLetterQueue
from fastapi_bus.exceptions import (
    BusError,
    ConfigurationError,
    EventValidationError,
    HandlerSignal,
    PublishError,
    Reject,
    Retry,
    TransportClosedError,
    TransportError,
    UnknownEventError,
    UnroutableError,
)
from fastapi_bus.extension import BusExtension, Extension, FastAPI, get_bus
from fastapi_bus.faults import Fault
from fastapi_bus.idempotency import IdempotencyStore, MemoryIdempotencyStore
from fastapi_bus.messages import Message
from fastapi_bus.metrics import CounterMetrics, Metrics
from fastapi_bus.middleware import ConsumeApp, Delivery, Middleware
from fastapi_bus.publisher import Bus, Publisher
from fastapi_bus.retry import RetryPolicy
from fastapi_bus.routing import EventRoute, EventRouter
from fastapi_bus.transports import MemoryTransport, Transport

__version__ = "0.1.0"

__all__ = [
    "Bus",
    "BusError",
    "BusExtension",
    "BusState",
    "ConfigurationError",
    "ConsumeApp",
    "CounterMetrics",
    "DeadLetter",
    "DeadLetterQueue",
    "Delivery",
    "EventBus",
    "EventRoute",
    "EventRouter",
    "EventValidationError",
    "Extension",
    "FastAPI",
    "Fault",
    "HandlerSignal",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "MemoryTransport",
    "Message",
    "Metrics",
    "Middleware",
    "PublishError",
    "Publisher",
    "Reject",
    "Retry",
    "RetryPolicy",
    "Transport",
    "TransportClosedError",
    "TransportError",
    "UnknownEventError",
    "UnroutableError",
    "__version__",
    "get_bus",
]
