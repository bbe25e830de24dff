"""The ``fastapi-bus`` commands: errors, ``publish``, ``events``, handler selection, and the
pieces of the worker that need no process of their own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from typer.testing import CliRunner, Result

from fastapi_bus import (
    BusExtension,
    BusState,
    ConfigurationError,
    EventRouter,
    MemoryTransport,
    get_bus,
)
from fastapi_bus.cli import app as cli
from fastapi_bus.cli.loading import bus_lifespan
from fastapi_bus.cli.worker import apply_connect_timeout
from fastapi_bus.ops.health import HealthServer
from fastapi_bus.ops.worker import Lifespan, StartupError, configure_bus, select_handlers
from fastapi_bus.runtime.bus import EventBus
from tests.utils import needs_aio_pika, wait_until_sync
from tests.worker_app import create_app, delete_topology

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests.worker_app:app"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def memory_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tests.worker_app:app`` on memory://, unless a test says otherwise."""
    for key in ("URL", "EXCHANGE", "SERVICE", "LOG", "RELEASE"):
        monkeypatch.delenv(f"FASTAPI_BUS_TEST_{key}", raising=False)
    monkeypatch.delenv("FASTAPI_BUS_CONSUME", raising=False)


# loading errors

WRONG_TARGETS = [
    ("tests.worker_app", "expected module:attribute"),
    ("tests.no_such_module:app", "cannot import module 'tests.no_such_module'"),
    ("tests.worker_app:nope", "has no attribute 'nope'"),
    ("tests.worker_app:plain_app", "has no fastapi-bus"),
]


@pytest.mark.parametrize(("target", "message"), WRONG_TARGETS)
@pytest.mark.parametrize("command", [["worker"], ["events"], ["publish", "OrderPlaced"]])
def test_a_wrong_target_is_a_one_line_usage_error(
    command: list[str], target: str, message: str
) -> None:
    result = invoke(command[0], target, *command[1:])
    assert result.exit_code == 2
    assert message in one_line_error(result)


def test_unknown_handlers_are_named_with_the_known_ones() -> None:
    result = invoke("worker", TARGET, "--handlers", "record_order,nope")
    assert result.exit_code == 2
    assert one_line_error(result) == (
        "Error: unknown handler(s): nope; known handlers: record_order, slow_job"
    )
    result = invoke("worker", TARGET, "--handlers", "tag:nope")
    assert result.exit_code == 2
    assert "known tags: orders, slow" in one_line_error(result)


def test_the_same_errors_under_a_supervisor() -> None:
    # Checked once before any child starts, rather than by every child, again and again.
    result = invoke("worker", TARGET, "--processes", "2", "--handlers", "nope")
    assert result.exit_code == 2
    assert "unknown handler(s): nope" in one_line_error(result)


def test_reload_without_watchfiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # makes `import watchfiles` fail
    result = invoke("worker", TARGET, "--reload")
    assert result.exit_code == 2
    assert "pip install 'fastapi-bus[reload]'" in one_line_error(result)


def test_health_options_are_checked(tmp_path: Path) -> None:
    result = invoke("worker", TARGET, "--health-file", str(tmp_path / "nowhere" / "health"))
    assert result.exit_code == 2
    assert "no directory" in one_line_error(result)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("worker", TARGET, "--health-port", str(port))
    assert result.exit_code == 1
    assert f"cannot serve health on 127.0.0.1:{port}" in one_line_error(result)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def unreachable() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs ``fastapi-bus ARGS`` in a new process, on a RabbitMQ URL where nothing listens."""
    url = f"amqp://guest:guest@127.0.0.1:{unused_port()}/"

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fastapi_bus.cli", *args],
            cwd=ROOT,
            env={**os.environ, "FASTAPI_BUS_TEST_URL": url, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def cannot_connect(done: subprocess.CompletedProcess[str]) -> str:
    """The last line of a command that could not connect: one ``Error:`` line, exit 1."""
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    assert "cannot connect to RabbitMQ" in last
    return last


@needs_aio_pika
@pytest.mark.parametrize("command", [["worker"], ["publish", "OrderPlaced", '{"order_id": "1"}']])
def test_an_unreachable_broker_is_a_one_line_error(
    command: list[str], tmp_path: Path, unreachable: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    # The app's transport would keep trying for 30 s; the option makes it give up sooner.
    args = [command[0], TARGET, *command[1:], "--connect-timeout", "0.3"]
    done = unreachable(*args, env={"FASTAPI_BUS_TEST_LOG": str(tmp_path / "log")})
    assert "within 0.3s" in cannot_connect(done)
    assert not (tmp_path / "log").exists() or " startup " not in (tmp_path / "log").read_text()


# publish


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["OrderPlaced", '{"order": 1}'],
            "event 'OrderPlaced' is invalid: order_id: Field required",
        ),
        (["Nope", "{}"], "known events: OrderPlaced, SlowJob, billing.invoiced"),
        (["OrderPlaced", '{"order_id": '], "the payload is not valid JSON"),
        (["OrderPlaced", '{"order_id": "1"}', "--header", "novalue"], "use key=value"),
    ],
)
def test_publish_checks_its_input_before_connecting(args: list[str], message: str) -> None:
    result = invoke("publish", TARGET, *args)
    assert result.exit_code == 2
    assert message in one_line_error(result)


async def take(url: str, queue: str) -> Any:
    """The next message of ``queue``, straight from RabbitMQ (or ``None``)."""
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        handle = await channel.get_queue(queue, ensure=False)
        return await handle.get(fail=False, no_ack=True)
    finally:
        await connection.close()


@pytest.mark.rabbitmq
def test_publish_sends_one_event(rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exchange, service = f"test-cli-{uuid.uuid4().hex[:10]}", f"cli{uuid.uuid4().hex[:10]}"
    for key, value in (("URL", rabbitmq_url), ("EXCHANGE", exchange), ("SERVICE", service)):
        monkeypatch.setenv(f"FASTAPI_BUS_TEST_{key}", value)
    try:
        result = invoke(
            "publish", TARGET, "OrderPlaced", '{"order_id": "42"}',
            "--header", "tenant=acme", "--header", "note=a=b", "--correlation-id", "corr-1",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        # The command declared the handlers' queues, so the event waits in its queue.
        incoming = asyncio.run(take(rabbitmq_url, f"{service}.record_order"))
        assert incoming is not None
        assert incoming.message_id == result.stdout.strip()
        assert incoming.correlation_id == "corr-1"
        assert json.loads(incoming.body) == {"order_id": "42"}
        assert (incoming.headers["tenant"], incoming.headers["note"]) == ("acme", "a=b")

        delayed = invoke("publish", TARGET, "SlowJob", '{"job_id": "d"}', "--delay", "0.1")
        assert delayed.exit_code == 0, delayed.output
        found: list[Any] = []

        def arrived() -> bool:
            found.append(asyncio.run(take(rabbitmq_url, f"{service}.slow_job")))
            return found[-1] is not None

        wait_until_sync(arrived, 20, "the delayed event")
        assert found[-1].message_id == delayed.stdout.strip()
    finally:
        asyncio.run(delete_topology(rabbitmq_url, exchange, service))


# events


def test_events_lists_events_handlers_and_publishes() -> None:
    result = invoke("events", TARGET, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["service"] == "worker-tests"
    assert info["events"] == [
        {
            "name": "OrderPlaced",
            "model": "tests.worker_app.OrderPlaced",
            "handlers": ["record_order"],
        },
        {"name": "SlowJob", "model": "tests.worker_app.SlowJob", "handlers": ["slow_job"]},
        {"name": "billing.invoiced", "model": "tests.worker_app.Invoiced", "handlers": []},
    ]
    assert info["handlers"][1] == {
        "name": "slow_job",
        "event": "SlowJob",
        "pattern": False,
        "queue": "worker-tests.slow_job",
        "tags": ["slow"],
        "broadcast": False,
        "prefetch": 10,
        "concurrency": 10,
    }
    assert info["publishes"] == [
        {
            "name": "billing.invoiced",
            "model": "tests.worker_app.Invoiced",
            "description": "An invoice was sent.",
        }
    ]
    table = invoke("events", TARGET)
    assert table.exit_code == 0
    for text in ("Events", "Handlers", "Publishes", "billing.invoiced", "OrderPlaced"):
        assert text in table.stdout


# publish-only web processes, and what the worker changes on a bus


def extension(**options: Any) -> BusExtension:
    return BusExtension(service="svc", routers=[EventRouter()], **options)


def test_consume_comes_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert extension().bus.consume is True
    monkeypatch.setenv("FASTAPI_BUS_CONSUME", "false")
    assert extension().bus.consume is False
    assert extension(consume=True).bus.consume is True
    monkeypatch.setenv("FASTAPI_BUS_CONSUME", "1")
    assert extension().bus.consume is True
    monkeypatch.setenv("FASTAPI_BUS_CONSUME", " Broadcast ")
    assert extension().bus.consume == "broadcast"
    monkeypatch.setenv("FASTAPI_BUS_CONSUME", "maybe")
    with pytest.raises(ConfigurationError, match=r"FASTAPI_BUS_CONSUME='maybe'.*broadcast"):
        extension()
    with pytest.raises(ConfigurationError, match="consume must be True, False or 'broadcast'"):
        extension(consume="broadcasts")


def bus_of(app: FastAPI) -> EventBus:
    return get_bus(app)


def test_configure_bus_forces_consuming_and_sets_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTAPI_BUS_CONSUME", "false")
    bus = bus_of(create_app())
    configure_bus(bus, concurrency=25, grace=3)
    assert (bus.consume, bus.concurrency, bus.prefetch, bus.shutdown_grace) == (True, 25, 25, 3)
    bus = bus_of(create_app())
    configure_bus(bus, prefetch=4, concurrency=2)
    assert (bus.prefetch, bus.concurrency) == (4, 2)


@pytest.mark.parametrize(
    ("spec", "selected"),
    [
        (None, ["record_order", "slow_job"]),
        ("", ["record_order", "slow_job"]),
        ("slow_job", ["slow_job"]),
        ("tag:orders", ["record_order"]),
        (" tag:orders , slow_job ", ["record_order", "slow_job"]),
    ],
)
def test_select_handlers(spec: str | None, selected: list[str]) -> None:
    bus = bus_of(create_app())
    routes = select_handlers(bus, spec)
    assert [route.name for route in routes] == selected
    assert [route.name for route in bus.routes if bus.selects(route)] == selected


@pytest.mark.anyio
async def test_only_the_selected_handlers_consume() -> None:
    bus = bus_of(create_app())
    select_handlers(bus, "tag:slow")
    await bus.start()
    await bus.start_consuming()
    try:
        assert bus.consuming == {"slow_job"}
        assert isinstance(bus.transport, MemoryTransport)
    finally:
        await bus.close(grace=0)
    assert bus.consuming == set()


def test_connect_timeout_is_set_where_the_transport_has_one() -> None:
    class Patient(MemoryTransport):
        connect_timeout = 30.0

    bus = EventBus(Patient(), service="svc")
    apply_connect_timeout(bus, 2.5)
    assert bus.transport.connect_timeout == 2.5  # type: ignore[attr-defined]
    plain = EventBus(MemoryTransport(), service="svc")
    apply_connect_timeout(plain, 2.5)  # nothing to set: a warning, no error
    assert not hasattr(plain.transport, "connect_timeout")


# the lifespan driver and the health endpoint, in process


@pytest.mark.anyio
async def test_a_failing_startup_is_one_line() -> None:
    @contextlib.asynccontextmanager
    async def broken(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no database\nsecond line")
        yield

    lifespan = Lifespan(FastAPI(lifespan=broken))
    with pytest.raises(StartupError) as caught:
        await lifespan.startup()
    assert str(caught.value) == "RuntimeError: no database"


@pytest.mark.anyio
async def test_the_lifespan_driver_shares_state_and_shuts_down() -> None:
    steps: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        steps.append("startup")
        yield {"pool": "ready"}
        steps.append("shutdown")

    driver = Lifespan(FastAPI(lifespan=lifespan))
    await driver.startup()
    assert driver.state == {"pool": "ready"}
    assert await driver.shutdown() is True
    assert steps == ["startup", "shutdown"]


def test_the_commands_take_an_event_bus_as_their_target() -> None:
    result = invoke("events", "tests.bus_worker:bus", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["service"] == "worker-tests"
    assert [handler["name"] for handler in info["handlers"]] == ["record_order"]
    document = invoke("asyncapi", "tests.bus_worker:bus")
    assert document.exit_code == 0, document.output
    assert json.loads(document.stdout)["info"]["title"] == "worker-tests"


class Ping(BaseModel):
    n: int


@pytest.mark.anyio
async def test_a_bare_bus_runs_through_the_lifespan_driver() -> None:
    seen: list[int] = []
    events = EventRouter()

    @events.on(Ping)
    async def ping(event: Ping) -> None:
        seen.append(event.n)

    bus = EventBus(MemoryTransport(), service="bare", routers=[events])
    driver = Lifespan(bus_lifespan(bus))
    await driver.startup()
    started = bus.state
    await bus.publish(Ping(n=1))
    await bus.wait_idle()
    assert await driver.shutdown() is True
    assert (started, bus.state, seen) == (BusState.CONSUMING, BusState.CLOSED, [1])


@pytest.mark.anyio
async def test_a_bare_bus_that_cannot_start_fails_the_lifespan_in_one_line() -> None:
    routers = [EventRouter(), EventRouter()]
    for router in routers:

        @router.on(Ping)
        async def ping(event: Ping) -> None: ...

    bus = EventBus(MemoryTransport(), service="bare", routers=routers)
    with pytest.raises(StartupError) as caught:
        await Lifespan(bus_lifespan(bus)).startup()
    assert "two handlers named 'ping'" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert bus.state is BusState.CLOSED


@pytest.mark.anyio
async def test_health_server_answers() -> None:
    healthy = {"now": False}
    server = HealthServer(lambda: (healthy["now"], {"status": "x"}), port=0)
    await server.start()

    async def fetch(request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request)
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        return answer

    try:
        assert (await fetch(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
            b"HTTP/1.1 503 "
        )
        healthy["now"] = True
        answer = await fetch(b"GET /health?verbose=1 HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert answer.endswith(b'{"status": "x"}')
        assert (await fetch(b"HEAD /live HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\n")
        assert (await fetch(b"POST /health HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        assert (await fetch(b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    finally:
        await server.close()


# --version, --factory, dlq errors


def test_version() -> None:
    from fastapi_bus import __version__

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"fastapi-bus {__version__}"


def test_an_app_factory_is_called_with_factory() -> None:
    result = invoke("events", "tests.worker_app:create_app", "--factory", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["service"] == "worker-tests"


def test_a_factory_without_the_flag_says_to_pass_it() -> None:
    result = invoke("events", "tests.worker_app:create_app")
    assert result.exit_code == 2
    assert "pass --factory" in one_line_error(result)


DLQ_COMMANDS = [
    ["list"],
    ["show", TARGET, "some-id"],
    ["replay"],
    ["purge", TARGET, "--yes"],
]


def _dlq_args(command: list[str], *extra: str) -> list[str]:
    head, *rest = command
    return ["dlq", head, *(rest or [TARGET]), *extra]


@pytest.mark.parametrize("command", DLQ_COMMANDS)
def test_dlq_on_memory_says_the_broker_is_inside_the_app(command: list[str]) -> None:
    result = invoke(*_dlq_args(command))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "embedded broker" in line
    assert "cannot be inspected from another process" in line


@needs_aio_pika
@pytest.mark.parametrize("command", DLQ_COMMANDS)
def test_dlq_names_an_unknown_handler_before_connecting(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on this port: the check must not need the broker.
    monkeypatch.setenv("FASTAPI_BUS_TEST_URL", f"amqp://guest:guest@127.0.0.1:{unused_port()}/")
    result = invoke(*_dlq_args(command, "--handler", "nope"))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "no handler 'nope'" in line
    assert "record_order" in line


@needs_aio_pika
def test_dlq_on_an_unreachable_broker_is_one_line_within_the_timeout(
    unreachable: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = unreachable("dlq", "list", TARGET, "--connect-timeout", "0.3")
    cannot_connect(done)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_publish_on_memory_says_no_other_process_receives_it() -> None:
    result = invoke("publish", TARGET, "OrderPlaced", '{"order_id": "1"}')
    assert result.exit_code == 0, result.output
    assert "no other process will receive the event" in result.stderr
