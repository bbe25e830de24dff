"""Declarations: one handler (:class:`EventRoute`) and one published event
(:class:`EventDeclaration`), with the options a handler can be declared with."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from typing_extensions import TypedDict

from fastapi_bus.core.names import is_pattern
from fastapi_bus.core.types import AnyCallable
from fastapi_bus.pipeline.dependencies import HandlerPlan, analyze_handler
from fastapi_bus.pipeline.policy import RetryPolicy

if TYPE_CHECKING:
    from fastapi import params

__all__ = ["EventDeclaration", "EventRoute", "HandlerOptions"]


class HandlerOptions(TypedDict, total=False):
    """The keyword options of :meth:`EventRouter.on` and :meth:`EventRouter.add_handler`."""

    name: str | None
    tags: Sequence[str] | None
    dependencies: Sequence[params.Depends] | None
    include_in_schema: bool
    broadcast: bool
    prefetch: int | None
    concurrency: int | None
    summary: str | None
    description: str | None
    retry: RetryPolicy | None
    idempotent: bool
    timeout: float | None


@dataclasses.dataclass(frozen=True)
class EventDeclaration:
    """An event that a service publishes (``router.publishes(name, Model)``)."""

    name: str
    model: type[BaseModel]
    description: str | None = None
    tags: tuple[str, ...] = ()
    include_in_schema: bool = True


@dataclasses.dataclass(frozen=True)
class EventRoute:
    """One handler: which events it takes and how it is called."""

    #: Event name or topic pattern, prefix included.
    event: str
    #: The handler function.
    endpoint: AnyCallable
    #: The handler's name, unique within a service; its queue is ``{service}.{name}``.
    name: str
    #: The handler's event parameter type (a model, a union...), or ``None`` for raw JSON.
    event_type: Any
    tags: tuple[str, ...] = ()
    dependencies: tuple[params.Depends, ...] = ()
    include_in_schema: bool = True
    broadcast: bool = False
    prefetch: int | None = None
    concurrency: int | None = None
    summary: str | None = None
    description: str | None = None
    #: How failures are retried (``None``: the router's, else the extension's).
    retry: RetryPolicy | None = None
    #: Skip messages this handler has already processed (by message id).
    idempotent: bool = False
    #: Seconds a call may run before it is cancelled and counts as failed (``None``: the
    #: bus's ``handler_timeout``).
    timeout: float | None = None

    @property
    def is_pattern(self) -> bool:
        return is_pattern(self.event)

    @property
    def label(self) -> str:
        return f"handler {self.name!r} ({describe_callable(self.endpoint)})"

    def plan(self, extra_dependencies: Sequence[params.Depends] = ()) -> HandlerPlan:
        """Analyse the handler with these outer dependencies (extension-level) first."""
        return analyze_handler(
            self.endpoint,
            label=self.label,
            dependencies=[*extra_dependencies, *self.dependencies],
        )


def describe_callable(func: AnyCallable) -> str:
    module = getattr(func, "__module__", "?")
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"
