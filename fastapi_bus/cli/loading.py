"""Finding the app (``module:attribute``) and its bus, with errors a person can act on."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any

import typer

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.runtime.bus import EventBus
from fastapi_bus.web.extension import get_bus

__all__ = ["Factory", "load_app", "load_bus"]

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


def load_bus(target: str, factory: bool = False) -> tuple[Any, EventBus]:
    """The app at ``target`` (or that the factory ``target`` returns) and its bus."""
    app = load_app(target, factory)
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
            f"app.include_extension(BusExtension(...)){hint}"
        ) from None
