"""What flows through a handler's pipeline: one message on its way to one handler."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Protocol

from fastapi_bus.core.messages import Message

__all__ = ["ConsumeApp", "Delivery", "HandlerInfo"]


class HandlerInfo(Protocol):
    """What the pipeline knows of a handler (an :class:`~fastapi_bus.EventRoute` is one)."""

    @property
    def name(self) -> str:
        """Unique within a service; the queue is ``{service}.{name}``."""

    @property
    def event(self) -> str:
        """The event name or topic pattern it takes."""

    @property
    def label(self) -> str:
        """``handler 'name' (module.function)``, for messages."""

    @property
    def broadcast(self) -> bool:
        """Every process gets every event."""

    @property
    def tags(self) -> tuple[str, ...]:
        """Its tags."""


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message on its way to one handler."""

    message: Message
    #: The handler it is for (its :class:`~fastapi_bus.EventRoute`).
    route: HandlerInfo
    #: The handler's queue.
    queue: str


ConsumeApp = Callable[[Delivery], Awaitable[None]]
