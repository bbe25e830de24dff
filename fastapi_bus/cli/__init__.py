"""The ``fastapi-bus`` command line."""

from __future__ import annotations

from typing import Annotated

import typer

from fastapi_bus import __version__
from fastapi_bus.cli.asyncapi import asyncapi
from fastapi_bus.cli.dlq import dlq
from fastapi_bus.cli.loading import load_bus
from fastapi_bus.cli.publish import events, publish
from fastapi_bus.cli.worker import worker

__all__ = ["app", "load_bus", "main"]

app = typer.Typer(
    name="fastapi-bus",
    help="Run and operate fastapi-bus apps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


app.add_typer(dlq, name="dlq")
app.command()(worker)
app.command()(publish)
app.command()(events)
app.command()(asyncapi)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fastapi-bus {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run and operate fastapi-bus apps."""


@app.command()
def version() -> None:
    """Print the installed fastapi-bus version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``fastapi-bus`` script."""
    app()
