"""``fastapi-bus publish`` (send one event) and ``fastapi-bus events`` (what an app declares)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from fastapi_bus.cli.loading import Factory
from fastapi_bus.cli.worker import ConnectTimeout, Target, apply_connect_timeout, fail, load_target
from fastapi_bus.core.exceptions import BusError, ConfigurationError
from fastapi_bus.core.names import pattern_matches
from fastapi_bus.ops.lifespan import describe_error
from fastapi_bus.runtime.bus import EventBus
from fastapi_bus.transports.base import Subscription

__all__ = ["describe_bus", "events", "publish"]


def _parse_headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--header {item!r}: use key=value", 2)
        headers[key.strip()] = value
    return headers


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Silence these loggers: the transport's one-line error says it all, and their own
    logs would bury it."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _errors(exc: ValidationError) -> str:
    """Pydantic's errors on one line."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'event'}: {error['msg']}"
        for error in exc.errors()
    )


def publish(
    target: Target,
    event: Annotated[str, typer.Argument(help="The event name (e.g. orders.placed).")],
    payload: Annotated[str, typer.Argument(help="The event as a JSON object.")] = "{}",
    header: Annotated[
        list[str] | None, typer.Option("--header", help="A header, key=value (repeatable).")
    ] = None,
    correlation_id: Annotated[str | None, typer.Option(help="The correlation id.")] = None,
    delay: Annotated[
        float | None, typer.Option(min=0.0, help="Deliver no earlier than this many seconds.")
    ] = None,
    connect_timeout: ConnectTimeout = None,
    factory: Factory = False,
) -> None:
    """Validate and send one event; prints its message id."""
    _, bus = load_target(target, factory)
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        fail(f"the payload is not valid JSON: {exc}", 2)
    headers = _parse_headers(header or [])
    bus.consume = False
    apply_connect_timeout(bus, connect_timeout)
    try:
        bus.build()
    except ConfigurationError as exc:
        fail(describe_error(exc), 1)
    # Validate before connecting: a wrong payload fails fast, broker or not.
    model = bus.registry.models.get(event)
    if model is None:
        known = ", ".join(sorted(bus.registry.models)) or "(none)"
        fail(f"event {event!r} is not declared by the app; known events: {known}", 2)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        fail(f"event {event!r} is invalid: {_errors(exc)}", 2)
    if bus.transport.protocol == "memory":
        typer.echo(
            "Warning: this app uses memory://, a broker inside this command's own process: no "
            "other process will receive the event",
            err=True,
        )

    async def send() -> str:
        await bus.start()
        try:
            return await bus.publish(
                event, data, headers=headers, correlation_id=correlation_id, delay=delay
            )
        finally:
            await bus.close(grace=0)

    try:
        with _quiet("aio_pika", "aiormq"):
            message_id = asyncio.run(send())
    except BusError as exc:
        fail(describe_error(exc), 1)
    typer.echo(message_id)


def describe_bus(bus: EventBus) -> dict[str, Any]:
    """The events, handlers and declared publishes of a built bus, as JSON-able data."""
    handlers = []
    for route in bus.routes:
        prefetch = route.prefetch or bus.prefetch
        limits = Subscription(
            queue=bus.queue_for(route),
            patterns=(route.event,),
            prefetch=prefetch,
            concurrency=route.concurrency or bus.concurrency,
        )
        queue = bus.queue_for(route)
        handlers.append(
            {
                "name": route.name,
                "event": route.event,
                "pattern": route.is_pattern,
                "queue": f"{queue}.<process>" if route.broadcast else queue,
                "tags": list(route.tags),
                "broadcast": route.broadcast,
                "prefetch": prefetch,
                "concurrency": limits.max_concurrency,
            }
        )
    events = [
        {
            "name": name,
            "model": f"{model.__module__}.{model.__qualname__}",
            "handlers": [r.name for r in bus.routes if pattern_matches(r.event, name)],
        }
        for name, model in sorted(bus.registry.models.items())
    ]
    publishes = [
        {
            "name": declaration.name,
            "model": f"{declaration.model.__module__}.{declaration.model.__qualname__}",
            "description": declaration.description,
        }
        for router in bus.routers
        for declaration in router.declarations
    ]
    return {
        "service": bus.service,
        "broker": bus.transport.url,
        "events": events,
        "handlers": handlers,
        "publishes": publishes,
    }


def events(
    target: Target,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    factory: Factory = False,
) -> None:
    """List the app's events, handlers and declared publishes."""
    _, bus = load_target(target, factory)
    try:
        bus.build()
    except ConfigurationError as exc:
        fail(describe_error(exc), 1)
    info = describe_bus(bus)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"service [bold]{info['service']}[/bold] on {info['broker']}")
    table = Table("event", "model", "handlers", title="Events")
    for item in info["events"]:
        table.add_row(item["name"], item["model"], ", ".join(item["handlers"]))
    console.print(table)
    table = Table(title="Handlers")
    for column in ("handler", "event", "queue", "tags", "broadcast", "prefetch", "concurrency"):
        # Fold rather than cut: a truncated queue name is of no use to anyone.
        table.add_column(column, overflow="fold")
    for item in info["handlers"]:
        table.add_row(
            item["name"], item["event"], item["queue"], ", ".join(item["tags"]),
            "yes" if item["broadcast"] else "", str(item["prefetch"]), str(item["concurrency"]),
        )  # fmt: skip
    console.print(table)
    table = Table("event", "model", "description", title="Publishes")
    for item in info["publishes"]:
        table.add_row(item["name"], item["model"], item["description"] or "")
    console.print(table)
