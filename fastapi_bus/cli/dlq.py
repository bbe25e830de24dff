"""``fastapi-bus dlq``: look at, replay and purge dead-lettered messages."""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from fastapi_bus.cli.loading import Factory
from fastapi_bus.cli.publish import _quiet
from fastapi_bus.cli.worker import ConnectTimeout, apply_connect_timeout, fail, load_target
from fastapi_bus.core.exceptions import BusError, ConfigurationError
from fastapi_bus.ops.lifespan import describe_error
from fastapi_bus.runtime.bus import EventBus
from fastapi_bus.runtime.deadletters import DeadLetter, DeadLetterQueue, Filters

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["dlq"]

dlq = typer.Typer(help="Look at, replay and purge dead-lettered messages.", no_args_is_help=True)
T = TypeVar("T")


@functools.cache
def _console() -> Console:
    """The terminal, through rich: imported when a command prints (not by a worker, which
    loads the command line too)."""
    from rich.console import Console

    return Console()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str | None) -> timedelta | None:
    """``30s``, ``15m``, ``2h``, ``7d`` or ``1w``."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match:
        raise typer.BadParameter(f"{text!r}: use a number and a unit, such as 30m, 2h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


Target = Annotated[str, typer.Argument(help="The app, as module:attribute (e.g. main:app).")]
Handler = Annotated[str | None, typer.Option("--handler", "-H", help="Only this handler.")]

#: The dead-letter filters (:class:`Filters`) as options, shared by the commands that take
#: them (see :func:`with_filters`).
FILTER_OPTIONS: dict[str, Any] = {
    "handler": Handler,
    "exception": Annotated[
        str | None,
        typer.Option("--exception", "-e", help="Only this exception type (e.g. KeyError)."),
    ],
    "older_than": Annotated[
        str | None, typer.Option(help="Only failures older than this (e.g. 2h).")
    ],
    "newer_than": Annotated[
        str | None, typer.Option(help="Only failures newer than this (e.g. 30m).")
    ],
    "message_id": Annotated[
        list[str] | None, typer.Option("--id", help="Only this message id (repeatable).")
    ],
}


def with_filters(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the filter options, right after its arguments; it receives them as
    one ``filters: Filters`` parameter."""
    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.name != "filters"]
    arguments = [p for p in params if p.default is inspect.Parameter.empty]
    options = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
        for name, kind in FILTER_OPTIONS.items()
    ]
    rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[len(arguments) :]]

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        given = {name: kwargs.pop(name) for name in FILTER_OPTIONS}
        command(*args, filters=_filters(**given), **kwargs)

    run.__signature__ = signature.replace(parameters=[*arguments, *options, *rest])  # type: ignore[attr-defined]
    return run


def _filters(
    handler: str | None,
    exception: str | None,
    older_than: str | None,
    newer_than: str | None,
    message_id: list[str] | None,
) -> Filters:
    return Filters(
        handler=handler,
        exception_type=exception,
        older_than=parse_age(older_than),
        newer_than=parse_age(newer_than),
        message_ids=message_id,
    )


def _run(
    target: str,
    work: Callable[[DeadLetterQueue], Awaitable[T]],
    *,
    handler: str | None = None,
    connect_timeout: float | None = None,
    factory: bool = False,
) -> T:
    """Load the app, check what can be checked without a broker, then connect and ``work``.
    Every failure is one line on stderr and a non-zero exit."""
    _, bus = load_target(target, factory)
    if bus.transport.protocol == "memory":
        fail(
            "this app uses memory://, an embedded broker that lives inside the app's own "
            "process: its dead letters cannot be inspected from another process (use "
            "get_bus(app).dead_letters in the app, or the admin routes)",
            2,
        )
    try:
        bus.build()
    except ConfigurationError as exc:
        fail(describe_error(exc), 1)
    if handler is not None:
        known = sorted(route.name for route in bus.routes)
        if handler not in known:
            fail(f"no handler {handler!r} in this app; known handlers: {', '.join(known)}", 2)
    apply_connect_timeout(bus, connect_timeout)

    async def main() -> T:
        await _connect(bus)
        try:
            return await work(bus.dead_letters)
        finally:
            await bus.close(grace=0)

    try:
        # The connection's retry warnings would bury the one line that says what failed.
        with _quiet("aio_pika", "aiormq", "fastapi_bus.rabbitmq"):
            return asyncio.run(main())
    except BusError as exc:
        fail(describe_error(exc), 1)


async def _connect(bus: EventBus) -> None:
    bus.consume = False
    await bus.start()


@dlq.command("list")
@with_filters
def list_(
    target: Target,
    filters: Filters,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    connect_timeout: ConnectTimeout = None,
    factory: Factory = False,
) -> None:
    """List dead-lettered messages, oldest first."""
    letters = _run(
        target,
        lambda q: q.list(limit=limit, **filters),
        handler=filters.get("handler"),
        connect_timeout=connect_timeout,
        factory=factory,
    )
    from rich.table import Table

    table = Table("message id", "event", "handler", "attempts", "failed at", "reason")
    for letter in letters:
        failed = (
            letter.last_failure_at.isoformat(timespec="seconds") if letter.last_failure_at else ""
        )
        table.add_row(
            letter.message.id, letter.message.name, letter.handler, str(letter.attempts), failed,
            letter.reason.splitlines()[0][:80] if letter.reason else "",
        )  # fmt: skip
    console = _console()
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@dlq.command()
def show(
    target: Target,
    message_id: Annotated[str, typer.Argument(help="The message id.")],
    handler: Handler = None,
    connect_timeout: ConnectTimeout = None,
    factory: Factory = False,
) -> None:
    """Show one dead letter: headers, body, reason and traceback."""
    letter = _run(
        target,
        lambda q: q.show(message_id, handler=handler),
        handler=handler,
        connect_timeout=connect_timeout,
        factory=factory,
    )
    if letter is None:
        fail(f"no dead letter with message id {message_id}", 1)
    _print_letter(letter)


def _print_letter(letter: DeadLetter) -> None:
    message = letter.message
    fields: list[tuple[str, Any]] = [
        ("message id", message.id), ("event", message.name), ("handler", letter.handler),
        ("queue", letter.queue), ("attempts", letter.attempts),
        ("correlation id", message.correlation_id), ("causation id", message.causation_id),
        ("published at", message.published_at.isoformat()),
        ("first failure", letter.first_failure_at), ("last failure", letter.last_failure_at),
        ("exception", letter.exception_type), ("message", letter.exception_message),
        ("reason", letter.reason),
    ]  # fmt: skip
    console = _console()
    for name, value in fields:
        console.print(f"[bold]{name}:[/bold] {'' if value is None else value}", markup=True)
    console.print("[bold]headers:[/bold]")
    for key, value in sorted(message.headers.items()):
        if key != "x-bus-traceback":
            console.print(f"  {key}: {value}", markup=False)
    console.print("[bold]body:[/bold]")
    console.print(message.body.decode("utf-8", "replace"), markup=False)
    if letter.traceback:
        console.print("[bold]traceback:[/bold]")
        console.print(letter.traceback, markup=False)


def _bulk(
    target: str, verb: str, filters: Filters, connect_timeout: float | None, factory: bool
) -> int:
    async def work(queue: DeadLetterQueue) -> int:
        total = len(await queue.list(limit=10_000_000, **filters))
        from rich.progress import Progress

        with Progress(console=_console(), transient=True) as bar:
            task = bar.add_task(f"{verb}...", total=total)
            method = queue.replay if verb == "replaying" else queue.purge
            return await method(**filters, progress=lambda done: bar.update(task, completed=done))

    handler = filters.get("handler")
    return _run(target, work, handler=handler, connect_timeout=connect_timeout, factory=factory)


@dlq.command()
@with_filters
def replay(
    target: Target,
    filters: Filters,
    connect_timeout: ConnectTimeout = None,
    factory: Factory = False,
) -> None:
    """Send dead letters back to their handler's queue, keeping their message ids."""
    done = _bulk(target, "replaying", filters, connect_timeout, factory)
    _console().print(f"replayed {done} message(s)")


@dlq.command()
@with_filters
def purge(
    target: Target,
    filters: Filters,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    connect_timeout: ConnectTimeout = None,
    factory: Factory = False,
) -> None:
    """Delete dead letters for good."""
    if not yes:
        typer.confirm("Delete the matching dead letters for good?", abort=True)
    done = _bulk(target, "purging", filters, connect_timeout, factory)
    _console().print(f"purged {done} message(s)")
