"""``fastapi-bus worker``: run an app's event handlers without serving HTTP."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from fastapi_bus.cli.loading import Factory, load_bus
from fastapi_bus.core.exceptions import BusError, ConfigurationError
from fastapi_bus.ops.lifespan import StartupError, describe_error
from fastapi_bus.ops.supervisor import Supervisor
from fastapi_bus.ops.worker import Worker, configure_bus, select_handlers
from fastapi_bus.runtime.bus import EventBus

__all__ = ["apply_connect_timeout", "fail", "load_target", "worker"]

Target = Annotated[str, typer.Argument(help="The app, as module:attribute (e.g. main:app).")]
ConnectTimeout = Annotated[
    float | None,
    typer.Option(min=0.0, help="Seconds to keep trying an unreachable broker at startup."),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error and exit with ``code`` (2: wrong usage, 1: it failed)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def load_target(target: str, factory: bool = False) -> tuple[Any, EventBus]:
    """The app and its bus, or a one-line error (exit status 2)."""
    try:
        return load_bus(target, factory)
    except typer.BadParameter as exc:
        fail(exc.message, 2)
    except BusError as exc:  # the app module builds its bus wrongly
        fail(f"cannot load {target!r}: {describe_error(exc)}", 2)


def apply_connect_timeout(bus: EventBus, seconds: float | None) -> None:
    """Set the transport's connect timeout, if it has one to set."""
    if seconds is None:
        return
    if not hasattr(bus.transport, "connect_timeout"):
        logging.getLogger("fastapi_bus.ops.worker").warning(
            "%s has no connect timeout: --connect-timeout is ignored", type(bus.transport).__name__
        )
        return
    bus.transport.connect_timeout = seconds


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _prepared(
    target: str,
    handlers: str | None,
    prefetch: int | None,
    concurrency: int | None,
    grace: float | None,
    connect_timeout: float | None,
    factory: bool = False,
) -> tuple[Any, EventBus, list[Any]]:
    app, bus = load_target(target, factory)
    configure_bus(bus, prefetch=prefetch, concurrency=concurrency, grace=grace)
    apply_connect_timeout(bus, connect_timeout)
    try:
        bus.build()
    except ConfigurationError as exc:
        fail(describe_error(exc), 1)
    try:
        routes = select_handlers(bus, handlers)
    except ConfigurationError as exc:
        fail(str(exc), 2)
    return app, bus, routes


def worker(
    target: Target,
    handlers: Annotated[
        str | None,
        typer.Option(help="Only these handlers: names or tag:NAME, comma-separated."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Default calls at once per handler.")
    ] = None,
    prefetch: Annotated[
        int | None, typer.Option(min=1, help="Default unacknowledged messages per handler.")
    ] = None,
    processes: Annotated[
        int, typer.Option(min=1, help="Run this many worker processes, restarted if they die.")
    ] = 1,
    reload: Annotated[
        bool, typer.Option(help="Restart when Python files change (development; needs watchfiles).")
    ] = False,
    reload_dir: Annotated[
        list[Path] | None, typer.Option(help="Watch this directory (repeatable; default: .).")
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option(min=0.0, help="Seconds running handlers get to finish at shutdown."),
    ] = None,
    health_host: Annotated[str, typer.Option(help="Address of the health endpoint.")] = (
        "127.0.0.1"
    ),
    health_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve GET /health and GET /live on this port (and GET /metrics, "
            "with PrometheusMetrics, in a single worker process).",
        ),
    ] = None,
    health_file: Annotated[
        Path | None, typer.Option(help="Keep this file fresh while healthy.")
    ] = None,
    health_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between health file updates.")
    ] = 5.0,
    connect_timeout: ConnectTimeout = None,
    factory: Factory = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the app's lifespan and event handlers, without serving HTTP."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail(f"--log-level {log_level!r}: use debug, info, warning or error", 2)
    if health_file is not None and not health_file.parent.is_dir():
        fail(f"--health-file {health_file}: no directory {health_file.parent}", 2)
    _configure_logging(log_level)
    if reload or processes > 1:
        if reload:
            try:
                import watchfiles  # noqa: F401
            except ImportError:
                fail("--reload needs watchfiles: pip install 'fastapi-bus[reload]'", 2)
        else:
            # Check once here, rather than have every child fail the same way, again and again.
            _prepared(target, handlers, prefetch, concurrency, grace, connect_timeout, factory)
        command = [sys.executable, "-m", "fastapi_bus.cli", "worker", target]
        options: dict[str, object] = {
            "--handlers": handlers,
            "--concurrency": concurrency,
            "--prefetch": prefetch,
            "--grace": grace,
            "--connect-timeout": connect_timeout,
            "--log-level": log_level,
        }
        for option, value in options.items():
            if value is not None:
                command += [option, str(value)]
        if factory:
            command.append("--factory")
        supervisor = Supervisor(
            command,
            processes,
            reload=reload,
            reload_dirs=reload_dir or (),
            health_host=health_host,
            health_port=health_port,
            health_file=health_file,
            health_interval=health_interval,
        )
        try:
            raise typer.Exit(asyncio.run(supervisor.run()))
        except StartupError as exc:
            fail(str(exc), 1)

    app, bus, routes = _prepared(
        target, handlers, prefetch, concurrency, grace, connect_timeout, factory
    )
    if bus.transport.protocol == "memory":
        logging.getLogger("fastapi_bus.ops.worker").warning(
            "this app uses memory://, a broker inside this process: a worker only sees the "
            "events it publishes itself"
        )
    runner = Worker(
        app,
        bus,
        routes,
        health_host=health_host,
        health_port=health_port,
        health_file=health_file,
        health_interval=health_interval,
        parent_pid=parent_pid,
    )
    try:
        code = asyncio.run(runner.run())
    except StartupError as exc:
        fail(f"the worker could not start: {exc}", 1)
    raise typer.Exit(code)
