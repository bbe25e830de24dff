"""Finding the app (``module:attribute``) and its bus, with errors a person can act on.

The target is a FastAPI app with the bus installed, or an :class:`~fastapi_bus.EventBus`
itself: a worker module that builds only the bus never imports FastAPI (see
:func:`bus_lifespan`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.ops.lifespan import describe_error
from fastapi_bus.runtime.bus import EventBus

__all__ = ["Factory", "bus_lifespan", "load_app", "load_bus"]

ASGIMessage = dict[str, Any]

Factory = Annotated[
    bool,
    typer.Option(
        "--factory",
        help="The target is a function that returns the app (called without arguments).",
    ),
]


def load_app(target: str, factory: bool = False) -> Any:
    """Import ``module:attribute`` (the current directory is importable, as with uvicorn); with
    ``factory``, call it and return what it returns."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise typer.BadParameter(f"{target!r}: expected module:attribute, such as main:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise typer.BadParameter(f"cannot import module {module_name!r}: {exc}") from None
        raise
    try:
        obj = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise typer.BadParameter(f"module {module_name!r} has no attribute {attribute!r}") from None
    if factory:
        if not callable(obj):
            raise typer.BadParameter(f"{target!r} is not callable, so it cannot be a --factory")
        try:
            obj = obj()
        except TypeError as exc:
            raise typer.BadParameter(f"calling the factory {target!r} failed: {exc}") from None
    return obj


def bus_lifespan(
    bus: EventBus,
) -> Callable[
    [
        dict[str, Any],
        Callable[[], Awaitable[ASGIMessage]],
        Callable[[ASGIMessage], Awaitable[None]],
    ],
    Awaitable[None],
]:
    """An ASGI app that has only a lifespan, which runs ``bus`` the way
    :class:`~fastapi_bus.BusExtension` runs it with an app: at startup it connects, declares
    the topology and starts the consumers; at shutdown it lets the running handlers finish
    (within the bus's grace period) and disconnects. What a worker drives for a bare bus."""

    async def app(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[ASGIMessage]],
        send: Callable[[ASGIMessage], Awaitable[None]],
    ) -> None:
        if scope["type"] != "lifespan":
            raise RuntimeError(f"{bus!r} serves no {scope['type']!r}: it has only a lifespan")
        await receive()  # lifespan.startup
        try:
            await bus.start()
            await bus.start_consuming()
        except BaseException as exc:
            await bus.close(grace=0)
            await send({"type": "lifespan.startup.failed", "message": describe_error(exc)})
            raise
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            try:
                await bus.stop_consuming()
            finally:
                await bus.close()
        except BaseException as exc:
            await send({"type": "lifespan.shutdown.failed", "message": describe_error(exc)})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    return app


def load_bus(target: str, factory: bool = False) -> tuple[Any, EventBus]:
    """The app at ``target`` (or that the factory ``target`` returns) and its bus. For an
    :class:`~fastapi_bus.EventBus` target, the app is :func:`bus_lifespan` of it."""
    app = load_app(target, factory)
    if isinstance(app, EventBus):
        return bus_lifespan(app), app
    # Imported here: a worker whose target is an EventBus does not import FastAPI.
    from fastapi_bus.web.extension import get_bus

    try:
        return app, get_bus(app)
    except (ConfigurationError, AttributeError):
        hint = (
            ""
            if factory or not callable(app) or hasattr(app, "router")
            else (" (if it is a function that returns the app, pass --factory)")
        )
        raise typer.BadParameter(
            f"{target!r} has no fastapi-bus: install it with "
            f"app.include_extension(BusExtension(...)), or point at an EventBus{hint}"
        ) from None
