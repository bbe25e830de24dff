"""Event routers: declare handlers the way APIRouter declares routes."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ForwardRef, TypeVar

from pydantic import BaseModel, PydanticUserError, TypeAdapter
from typing_extensions import Unpack

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.core.names import validate_event_name, validate_pattern
from fastapi_bus.core.types import AnyCallable, is_model
from fastapi_bus.pipeline.dependencies import event_type_of
from fastapi_bus.pipeline.policy import RetryPolicy
from fastapi_bus.pipeline.timeouts import check_timeout
from fastapi_bus.routing.route import (
    EventDeclaration,
    EventRoute,
    HandlerOptions,
    describe_callable,
)

if TYPE_CHECKING:
    from fastapi import params

__all__ = ["EventRouter"]

F = TypeVar("F", bound=AnyCallable)
EventSpec = str | type[BaseModel]


def _resolvable(annotation: Any, label: str, param: str) -> Any:
    """Check now that pydantic can validate the event type, so a bad one fails here."""
    try:
        if isinstance(annotation, (str, ForwardRef)):
            raise TypeError(f"{annotation!r} is an unresolved name")
        # Building the schema forces pydantic to resolve every type the annotation names.
        TypeAdapter(annotation).json_schema()
    except (PydanticUserError, TypeError, NameError) as exc:
        raise ConfigurationError(
            f"{label}: the type of parameter {param!r} ({annotation!r}) cannot be used to "
            f"validate events: {exc}. Define the types it names at module level."
        ) from None
    return annotation


def _own_doc(model: type[BaseModel]) -> str | None:
    """The model's own docstring (``inspect.getdoc`` would return BaseModel's)."""
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else None


def _join(prefix: str, name: str) -> str:
    if not prefix:
        return name
    return prefix + name if prefix.endswith(".") else f"{prefix}.{name}"


def _check_positive(value: int | None, what: str, owner: str) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"{owner}: {what} must be a positive integer, got {value!r}")


class EventRouter:
    """A group of event handlers, in APIRouter's words.

    ```python
    events = EventRouter(prefix="orders", tags=["orders"])

    @events.on("placed")                # handles "orders.placed"
    async def reserve_stock(event: OrderPlaced, db: Annotated[DB, Depends(get_db)]) -> None: ...
    ```

    Args:
        prefix: put before every event name of this router, joined with a dot.
        tags: for the AsyncAPI document.
        dependencies: ``Depends(...)`` run before each handler of this router.
        include_in_schema: show this router's handlers in the AsyncAPI document.
        prefetch: default for this router's handlers (see :meth:`on`).
        concurrency: default for this router's handlers (see :meth:`on`).
        retry: default :class:`RetryPolicy` for this router's handlers.
    """

    def __init__(
        self,
        *,
        prefix: str = "",
        tags: Sequence[str] | None = None,
        dependencies: Sequence[params.Depends] | None = None,
        include_in_schema: bool = True,
        prefetch: int | None = None,
        concurrency: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if prefix:
            validate_event_name(prefix.rstrip("."), what="router prefix")
        _check_positive(prefetch, "prefetch", "EventRouter")
        _check_positive(concurrency, "concurrency", "EventRouter")
        self.prefix = prefix
        self.tags: list[str] = list(tags or [])
        self.dependencies: list[params.Depends] = list(dependencies or [])
        self.include_in_schema = include_in_schema
        self.prefetch = prefetch
        self.concurrency = concurrency
        self.retry = retry
        self.routes: list[EventRoute] = []
        self.declarations: list[EventDeclaration] = []
        self._frozen_by: str | None = None

    def _check_open(self) -> None:
        if self._frozen_by is not None:
            raise ConfigurationError(
                f"this EventRouter is in use by a running bus ({self._frozen_by}); add handlers "
                "before the app starts"
            )

    def on(self, event: EventSpec, **options: Unpack[HandlerOptions]) -> Callable[[F], F]:
        """Register the decorated function as a handler of ``event``.

        Args:
            event: an event name (``"OrderPlaced"``), a topic pattern (``"orders.*"``: ``*`` is
                one word, ``#`` zero or more), or the event's model class (its name is used).
            name: the handler's name (default: the function's); the queue is
                ``{service}.{name}``, so renaming it moves the handler to a new queue.
            tags, dependencies, include_in_schema: as for routes.
            broadcast: every running process gets every event (for WebSocket fan-out), instead
                of the processes of a service sharing the work.
            prefetch: at most this many messages fetched and not yet acknowledged (default 10).
            concurrency: at most this many calls of this handler at once (default: prefetch).
            summary, description: for the AsyncAPI document (default: from the docstring).
            retry: how failures of this handler are retried (:class:`RetryPolicy`).
            idempotent: skip a message whose id this handler already processed successfully
                (delivery is at-least-once; see the failures guide).
            timeout: seconds a call of this handler may run; past it the call is cancelled
                and counts as a failure (retried, then dead-lettered with a reason saying it
                timed out). Default: the bus's ``handler_timeout``. See the reliability guide.
        """

        def decorator(func: F) -> F:
            self.add_handler(event, func, **options)
            return func

        return decorator

    def add_handler(
        self,
        event: EventSpec,
        func: AnyCallable,
        *,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        dependencies: Sequence[params.Depends] | None = None,
        include_in_schema: bool = True,
        broadcast: bool = False,
        prefetch: int | None = None,
        concurrency: int | None = None,
        summary: str | None = None,
        description: str | None = None,
        retry: RetryPolicy | None = None,
        idempotent: bool = False,
        timeout: float | None = None,
    ) -> EventRoute:
        """Register ``func`` as a handler of ``event``; the same options as :meth:`on`."""
        self._check_open()
        if not callable(func):
            raise ConfigurationError(f"handler for {event!r} must be callable, got {func!r}")
        handler_name: str = name or str(getattr(func, "__name__", ""))
        label = f"handler {handler_name!r} ({describe_callable(func)})"
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise ConfigurationError(f"{label}: a handler cannot be a generator function")
        validate_event_name(handler_name, what=f"{label}: handler name")
        model: type[BaseModel] | None = None
        if isinstance(event, str):
            event_name = validate_pattern(_join(self.prefix, event))
        elif is_model(event):
            model = event
            event_name = validate_event_name(_join(self.prefix, event.__name__))
        else:
            raise ConfigurationError(
                f"{label}: the event must be a name, a pattern or a pydantic model class, "
                f"got {event!r}"
            )
        _check_positive(prefetch, "prefetch", label)
        _check_positive(concurrency, "concurrency", label)
        seconds = check_timeout(timeout, label)
        deps = (*self.dependencies, *(dependencies or []))
        route = EventRoute(
            event=event_name,
            endpoint=func,
            name=handler_name,
            event_type=None,
            tags=(*self.tags, *(tags or [])),
            dependencies=deps,
            include_in_schema=include_in_schema and self.include_in_schema,
            broadcast=broadcast,
            prefetch=prefetch or self.prefetch,
            concurrency=concurrency or self.concurrency,
            summary=summary,
            description=description if description is not None else inspect.getdoc(func),
            retry=retry or self.retry,
            idempotent=idempotent,
            timeout=seconds,
        )
        # Analyse now, so a wrong parameter fails here and names the handler.
        plan = route.plan()
        annotated = event_type_of(plan)
        if annotated is not None:
            annotated = _resolvable(annotated, label, plan.event_param.name)  # type: ignore[union-attr]
        if model is not None and annotated is not None and annotated is not model:
            raise ConfigurationError(
                f"{label}: registered for {model.__name__} but its parameter "
                f"{plan.event_param.name!r} is annotated {annotated!r}"  # type: ignore[union-attr]
            )
        route = dataclasses.replace(route, event_type=annotated if annotated is not None else model)
        self.routes.append(route)
        return route

    def publishes(
        self,
        name: str,
        model: type[BaseModel],
        *,
        description: str | None = None,
        tags: Sequence[str] | None = None,
        include_in_schema: bool = True,
    ) -> None:
        """Declare that this service publishes ``name`` with payloads of ``model``.

        Then ``bus.publish(name, {...})`` validates against ``model``, and ``bus.publish(obj)``
        of a ``model`` instance is sent under ``name``.
        """
        self._check_open()
        full = validate_event_name(_join(self.prefix, name))
        if not is_model(model):
            raise ConfigurationError(f"publishes({name!r}, ...): model must be a pydantic model")
        self.declarations.append(
            EventDeclaration(
                name=full,
                model=model,
                description=description if description is not None else _own_doc(model),
                tags=(*self.tags, *(tags or [])),
                include_in_schema=include_in_schema and self.include_in_schema,
            )
        )

    def include_router(
        self,
        router: EventRouter,
        *,
        prefix: str = "",
        tags: Sequence[str] | None = None,
        dependencies: Sequence[params.Depends] | None = None,
        include_in_schema: bool = True,
    ) -> None:
        """Add every handler and declaration of ``router`` to this one, with this router's
        prefix, tags and dependencies (and these) in front of theirs."""
        self._check_open()
        if router is self:
            raise ConfigurationError("an EventRouter cannot include itself")
        outer = _join(self.prefix, prefix.rstrip(".")) if prefix else self.prefix
        extra_tags = (*self.tags, *(tags or []))
        extra_deps = (*self.dependencies, *(dependencies or []))
        visible = include_in_schema and self.include_in_schema
        for route in router.routes:
            self.routes.append(
                dataclasses.replace(
                    route,
                    event=_join(outer, route.event) if outer else route.event,
                    tags=extra_tags + route.tags,
                    dependencies=extra_deps + route.dependencies,
                    include_in_schema=visible and route.include_in_schema,
                    prefetch=route.prefetch or self.prefetch,
                    concurrency=route.concurrency or self.concurrency,
                    retry=route.retry or self.retry,
                )
            )
        for declaration in router.declarations:
            self.declarations.append(
                dataclasses.replace(
                    declaration,
                    name=_join(outer, declaration.name) if outer else declaration.name,
                    tags=extra_tags + declaration.tags,
                    include_in_schema=visible and declaration.include_in_schema,
                )
            )

    def freeze(self, owner: str) -> None:
        """Refuse further changes (the bus that uses this router has started)."""
        self._frozen_by = owner
