"""``fastapi-bus asyncapi``: print the AsyncAPI document of an app's events."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fastapi_bus.asyncapi.generate import get_asyncapi
from fastapi_bus.cli.loading import Factory
from fastapi_bus.cli.worker import load_target
from fastapi_bus.core.exceptions import ConfigurationError

__all__ = ["asyncapi"]


def asyncapi(
    target: Annotated[str, typer.Argument(help="The app, as module:attribute (main:app).")],
    yaml: Annotated[bool, typer.Option("--yaml", help="Print YAML instead of JSON.")] = False,
    factory: Factory = False,
) -> None:
    """Print the AsyncAPI 3.0 document of the app's events."""
    app, bus = load_target(target, factory)
    try:
        document = get_asyncapi(
            bus,
            title=str(getattr(app, "title", None) or bus.service),
            version=str(getattr(app, "version", None) or "0.1.0"),
            description=getattr(app, "description", None) or None,
        )
    except ConfigurationError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    if yaml:
        # Imported here: the module serves the document over HTTP too, so it imports FastAPI,
        # which a worker built on an EventBus alone does not need.
        from fastapi_bus.asyncapi.docs import asyncapi_yaml

        typer.echo(asyncapi_yaml(document), nl=False)
    else:
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
