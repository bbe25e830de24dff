"""Finding the app (``module:attribute``) and its bus, with errors a person can act on."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer

from fastapi_bus.core.exceptions import ConfigurationError
from fastapi_bus.runtime.bus import EventBus
from fastapi_bus.web.extension import get_bus

__all__ = ["load_app", "load_bus"]


def load_app(target: str) -> Any:
    """Import ``module:attribute`` (the current directory is importable, as with uvicorn)."""
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
    return obj


def load_bus(target: str) -> tuple[Any, EventBus]:
    """The app at ``target`` and the bus installed on it."""
    app = load_app(target)
    try:
        return app, get_bus(app)
    except (ConfigurationError, AttributeError):
        raise typer.BadParameter(
            f"{target!r} has no fastapi-bus: install it with "
            "app.include_extension(BusExtension(...))"
        ) from None
