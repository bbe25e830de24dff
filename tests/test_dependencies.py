"""Dependency injection in event handlers, with FastAPI's ``Depends`` semantics.

Where a route and a handler can run the same dependency graph, the parity tests run it both
ways and compare what happened, call by call: FastAPI is the reference.
"""

import functools
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import pytest
from fastapi import (
    BackgroundTasks,
    Body,
    Cookie,
    Depends,
    File,
    Form,
    Header,
    Path,
    Query,
    Request,
    Response,
    WebSocket,
    params,
)
from fastapi.security import SecurityScopes
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from fastapi_bus import (
    Bus,
    BusExtension,
    ConfigurationError,
    EventRouter,
    FastAPI,
    Message,
    Publisher,
    Reject,
    RetryPolicy,
    get_bus,
)
from fastapi_bus.testing import dead_letters, drain, publish
from tests.helpers import OrderPlaced

F = TypeVar("F", bound=Callable[..., Any])

#: FastAPI >= 0.121 has Depends(..., scope="function" | "request").
HAS_SCOPE = "scope" in inspect.signature(Depends).parameters


class Ping(BaseModel):
    n: int = 0


class Pong(BaseModel):
    n: int = 0


class Boom(Exception):
    """Raised by handlers on purpose."""


@dataclass
class DB:
    serial: int


def seven() -> int:
    """A module-level dependency, for annotations written as text."""
    return 7


# helpers


def build_app(
    *routers: EventRouter,
    dependencies: Sequence[params.Depends] = (),
    app_dependencies: Sequence[params.Depends] | None = None,
) -> FastAPI:
    app = FastAPI(dependencies=app_dependencies)
    app.include_extension(
        BusExtension(
            url="memory://", routers=list(routers), service="deps", dependencies=dependencies
        )
    )
    return app


def deliver(client: TestClient, *events: BaseModel) -> None:
    """Publish each event and wait until it (and what it caused) is handled, one at a time."""
    for event in events:
        publish(client, event)
        drain(client)


def with_parameter(
    func: F,
    name: str,
    annotation: Any = inspect.Parameter.empty,
    default: Any = inspect.Parameter.empty,
) -> F:
    """Give ``func`` one more keyword-only parameter: to parametrize a test over annotations
    and defaults, and for text annotations and self-references."""
    signature = inspect.signature(func)
    extra = inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )
    func.__dict__["__signature__"] = signature.replace(
        parameters=[*signature.parameters.values(), extra]
    )
    return func


# kinds of dependencies


def test_sync_async_and_yield_dependencies_clean_up_after_the_handler_in_reverse_order() -> None:
    record: list[str] = []

    def sync_dep() -> str:
        record.append("sync")
        return "s"

    async def async_dep() -> str:
        record.append("async")
        return "a"

    def gen_dep() -> Iterator[str]:
        record.append("gen:setup")
        yield "g"
        record.append("gen:cleanup")

    async def agen_dep() -> AsyncIterator[str]:
        record.append("agen:setup")
        yield "ag"
        record.append("agen:cleanup")

    def last_gen() -> Iterator[str]:
        record.append("last:setup")
        yield "l"
        record.append("last:cleanup")

    events = EventRouter()

    @events.on("Ping")
    async def handler(
        event: Ping,
        s: Annotated[str, Depends(sync_dep)],
        a: Annotated[str, Depends(async_dep)],
        g: Annotated[str, Depends(gen_dep)],
        ag: Annotated[str, Depends(agen_dep)],
        last: Annotated[str, Depends(last_gen)],
    ) -> None:
        record.append(f"handler {event.n}: {s} {a} {g} {ag} {last}")

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping(n=1))
        assert dead_letters(client) == []
    assert record == [
        "sync",
        "async",
        "gen:setup",
        "agen:setup",
        "last:setup",
        "handler 1: s a g ag l",
        "last:cleanup",
        "agen:cleanup",
        "gen:cleanup",
    ]


def test_the_handlers_exception_is_thrown_into_yield_dependencies() -> None:
    record: list[str] = []
    attempts: list[int] = []

    def sync_gen() -> Iterator[None]:
        record.append("sync:setup")
        try:
            yield
        except Boom as exc:
            record.append(f"sync:caught {exc}")
            raise
        finally:
            record.append("sync:finally")

    async def async_gen() -> AsyncIterator[None]:
        record.append("async:setup")
        try:
            yield
        except Boom as exc:
            record.append(f"async:caught {exc}")
            raise
        finally:
            record.append("async:finally")

    events = EventRouter()

    @events.on("Ping", retry=RetryPolicy(attempts=2, backoff=0, delays=()))
    async def handler(
        event: Ping,
        _sync: Annotated[None, Depends(sync_gen)],
        _async: Annotated[None, Depends(async_gen)],
    ) -> None:
        attempts.append(len(attempts) + 1)
        record.append(f"handler attempt {len(attempts)}")
        if len(attempts) == 1:
            raise Boom("first attempt")

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping())  # fails once, is retried, then succeeds
        assert dead_letters(client) == []
    assert record == [
        "sync:setup",
        "async:setup",
        "handler attempt 1",
        "async:caught first attempt",
        "async:finally",
        "sync:caught first attempt",
        "sync:finally",
        "sync:setup",
        "async:setup",
        "handler attempt 2",
        "async:finally",
        "sync:finally",
    ]


def test_cleanup_sees_a_rejection_and_the_message_is_dead_lettered() -> None:
    record: list[str] = []

    async def transaction() -> AsyncIterator[None]:
        try:
            yield
        except Reject as exc:
            record.append(f"rollback: {exc.reason}")
            raise
        else:
            record.append("commit")

    events = EventRouter()

    @events.on("Ping")
    async def handler(event: Ping, _tx: Annotated[None, Depends(transaction)]) -> None:
        raise Reject("not today")

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping(n=3))
        letters = dead_letters(client, "handler")
    assert record == ["rollback: not today"]
    assert [letter.name for letter in letters] == ["Ping"]


def test_a_yield_dependency_that_swallows_the_exception_cannot_turn_failure_into_success() -> None:
    record: list[str] = []

    def forgiving() -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # forgets to raise again
            record.append(f"swallowed {type(exc).__name__}")

    events = EventRouter()

    @events.on("Ping")
    async def handler(event: Ping, bus: Bus, _f: Annotated[None, Depends(forgiving)]) -> None:
        await bus.publish(Pong(n=event.n))
        raise Reject("broken")

    @events.on("Pong")
    async def on_pong(event: Pong) -> None:
        record.append("pong")

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping(n=1))
        letters = dead_letters(client, "handler")
    # The handler failed: its message is dead-lettered and what it published is not sent.
    assert [letter.name for letter in letters] == ["Ping"]
    assert letters[0].headers["x-bus-exception-type"] == "fastapi_bus.core.exceptions.Reject"
    assert record == ["swallowed Reject"]


def test_sub_dependencies_and_annotated_aliases_share_one_value_per_message() -> None:
    made: list[DB] = []

    def get_db() -> DB:
        db = DB(serial=len(made))
        made.append(db)
        return db

    DBDep = Annotated[DB, Depends(get_db)]

    @dataclass
    class Repo:
        db: DB

    def get_repo(db: DBDep) -> Repo:
        return Repo(db)

    RepoDep = Annotated[Repo, Depends(get_repo)]

    def get_service(repo: RepoDep, db: DBDep) -> tuple[Repo, DB]:
        return repo, db

    seen: list[tuple[DB, DB, DB]] = []
    events = EventRouter()

    @events.on("Ping")
    async def handler(
        event: Ping,
        db: DBDep,
        repo: RepoDep,
        service: Annotated[tuple[Repo, DB], Depends(get_service)],
    ) -> None:
        seen.append((db, repo.db, service[1]))
        assert service[0] is repo

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping(n=1), Ping(n=2))
        assert dead_letters(client) == []
    # Called once per message (not once per use), and again for the next message.
    assert made == [DB(0), DB(1)]
    assert [tuple(db.serial for db in row) for row in seen] == [(0, 0, 0), (1, 1, 1)]
    assert all(row[0] is row[1] is row[2] for row in seen)


def test_use_cache_false_calls_the_dependency_each_time() -> None:
    calls: list[int] = []

    def counter() -> int:
        calls.append(len(calls))
        return len(calls)

    def uncached_inside(x: Annotated[int, Depends(counter, use_cache=False)]) -> int:
        return x

    values: list[tuple[int, ...]] = []
    events = EventRouter()

    @events.on("Ping")
    async def handler(
        event: Ping,
        a: Annotated[int, Depends(counter, use_cache=False)],
        b: Annotated[int, Depends(counter, use_cache=False)],
        c: Annotated[int, Depends(uncached_inside)],
    ) -> None:
        values.append((a, b, c))

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping(), Ping())
    assert values == [(1, 2, 3), (4, 5, 6)]


def test_classes_and_callable_instances_as_dependencies() -> None:
    record: list[str] = []

    def get_name() -> str:
        return "db"

    class Settings:
        def __init__(self, name: Annotated[str, Depends(get_name)], size: int = 5) -> None:
            self.name = name
            self.size = size

    class Pool:
        """A class whose __call__ is a generator is still called to build an instance."""

        def __init__(self, settings: Annotated[Settings, Depends()]) -> None:
            self.settings = settings

        def __call__(self) -> Iterator[str]:
            yield "never used"

    class AsyncChecker:
        def __init__(self, role: str) -> None:
            self.role = role

        async def __call__(self, msg: Message) -> str:
            return f"{self.role}:{msg.name}"

    class SyncChecker:
        def __call__(self, settings: Annotated[Settings, Depends(Settings)]) -> str:
            return f"sync:{settings.name}"

    class Resource:
        def __call__(self) -> Iterator[str]:
            record.append("resource:open")
            yield "resource"
            record.append("resource:close")

    class AsyncResource:
        async def __call__(self) -> AsyncIterator[str]:
            record.append("aresource:open")
            yield "aresource"
            record.append("aresource:close")

    admin = AsyncChecker("admin")
    events = EventRouter()

    @events.on("Ping")
    async def handler(
        event: Ping,
        settings: Annotated[Settings, Depends()],
        pool: Annotated[Pool, Depends(Pool)],
        role: Annotated[str, Depends(admin)],
        sync: Annotated[str, Depends(SyncChecker())],
        resource: Annotated[str, Depends(Resource())],
        aresource: Annotated[str, Depends(AsyncResource())],
        plain: Settings = Depends(),  # noqa: B008 - the pre-Annotated spelling
    ) -> None:
        assert isinstance(settings, Settings)
        assert isinstance(pool, Pool)
        assert pool.settings is settings is plain  # cached per message, whatever the spelling
        record.append(
            f"handler: {settings.name} {settings.size} {role} {sync} {resource} {aresource}"
        )

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping())
        assert dead_letters(client) == []
    assert record == [
        "resource:open",
        "aresource:open",
        "handler: db 5 admin:Ping sync:db resource aresource",
        "aresource:close",
        "resource:close",
    ]


def test_equal_callable_instances_are_each_called_themselves() -> None:
    @dataclass(frozen=True)
    class Tagger:
        tag: str
        sink: list[str] = field(compare=False, hash=False)

        def __call__(self) -> str:
            self.sink.append(self.tag)
            return self.tag

    first_sink: list[str] = []
    second_sink: list[str] = []
    first, second = Tagger("t", first_sink), Tagger("t", second_sink)
    assert first == second
    events = EventRouter()

    # Not Annotated[str, Depends(first)]: typing caches Annotated by equality, so the second
    # spelling would come back as the first (for routes too).
    @events.on("Ping")
    async def one(event: Ping, tag: str = Depends(first)) -> None: ...

    @events.on("Pong")
    async def two(event: Pong, tag: str = Depends(second)) -> None: ...

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping(), Pong())
    assert (first_sink, second_sink) == (["t"], ["t"])


def test_partials_and_decorated_dependencies() -> None:
    async def scaled(factor: int, msg: Message) -> str:
        return f"{msg.name}x{factor}"

    def traced(func: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Awaitable[str]:  # a sync wrapper
            return func(*args, **kwargs)

        return wrapper

    @traced
    async def decorated(msg: Message) -> str:
        return f"decorated {msg.name}"

    def gen(prefix: str) -> Iterator[str]:
        yield f"{prefix}-gen"

    got: list[tuple[str, str, str]] = []
    events = EventRouter()

    @events.on("Ping")
    async def handler(
        event: Ping,
        a: Annotated[str, Depends(functools.partial(scaled, factor=3))],
        b: Annotated[str, Depends(decorated)],
        c: Annotated[str, Depends(functools.partial(gen, "p"))],
    ) -> None:
        got.append((a, b, c))

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping())
    assert got == [("Pingx3", "decorated Ping", "p-gen")]


def test_text_annotations_are_evaluated_in_the_module_of_the_callable() -> None:
    got: list[int] = []
    events = EventRouter()

    async def handler(event: Ping, **kwargs: int) -> None:
        got.append(kwargs["n"])

    handler.__dict__["__signature__"] = inspect.Signature(
        [
            inspect.Parameter("event", inspect.Parameter.KEYWORD_ONLY, annotation="Ping"),
            inspect.Parameter(
                "n", inspect.Parameter.KEYWORD_ONLY, annotation="Annotated[int, Depends(seven)]"
            ),
        ]
    )
    events.on("Ping")(handler)
    assert events.routes[0].event_type is Ping

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping())
    assert got == [7]


def test_a_text_annotation_that_cannot_be_evaluated_fails_at_registration() -> None:
    async def handler(event: Ping) -> None: ...

    with_parameter(handler, "db", "Annotated[NoSuchType, Depends(seven)]")
    with pytest.raises(ConfigurationError, match=r"'handler'.*NoSuchType.*'db'") as info:
        EventRouter().on("Ping")(handler)
    assert "cannot be evaluated" in str(info.value)


# dependencies around the handler


def test_extension_router_and_handler_dependencies_run_before_the_handler_in_order() -> None:
    record: list[str] = []

    def tracker(label: str) -> Callable[[], None]:
        def dep() -> None:
            record.append(label)

        return dep

    async def async_outer() -> AsyncIterator[None]:
        record.append("extension:open")
        yield
        record.append("extension:close")

    inner = EventRouter(dependencies=[Depends(tracker("inner router"))])

    @inner.on("Ping", dependencies=[Depends(tracker("on"))])
    async def handler(event: Ping, _p: Annotated[None, Depends(tracker("param"))]) -> None:
        record.append("handler")

    outer = EventRouter(dependencies=[Depends(tracker("outer router"))])
    outer.include_router(inner, dependencies=[Depends(tracker("include"))])
    app = build_app(outer, dependencies=[Depends(async_outer)])
    with TestClient(app) as client:
        deliver(client, Ping())
        assert dead_letters(client) == []
    assert record == [
        "extension:open",
        "outer router",
        "include",
        "inner router",
        "on",
        "param",
        "handler",
        "extension:close",
    ]


def test_router_dependencies_share_the_per_message_cache_with_the_handler() -> None:
    calls: list[str] = []

    def current_user(msg: Message) -> str:
        calls.append(msg.id)
        return "alice"

    seen: list[str] = []
    events = EventRouter(dependencies=[Depends(current_user)])

    @events.on("Ping")
    async def handler(event: Ping, user: Annotated[str, Depends(current_user)]) -> None:
        seen.append(user)

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping(), Ping())
    assert seen == ["alice", "alice"]
    assert len(calls) == 2
    assert len(set(calls)) == 2


# overrides


def test_dependency_overrides_set_before_the_app_starts() -> None:
    def get_db() -> DB:
        return DB(serial=1)

    def get_repo(db: Annotated[DB, Depends(get_db)]) -> int:
        return db.serial

    def fake_db(msg: Message, extra: int = 40) -> DB:  # another signature
        return DB(serial=extra + len(msg.name))

    got: list[int] = []
    events = EventRouter()

    @events.on("Ping")
    async def handler(event: Ping, serial: Annotated[int, Depends(get_repo)]) -> None:
        got.append(serial)

    app = build_app(events)
    app.dependency_overrides[get_db] = fake_db
    with TestClient(app) as client:
        deliver(client, Ping())
    assert got == [44]


def test_dependency_overrides_changed_while_the_app_runs() -> None:
    record: list[str] = []

    def real_source() -> str:
        record.append("real")
        return "real"

    def tenant(source: Annotated[str, Depends(real_source)]) -> str:
        return f"tenant from {source}"

    def fake_token() -> str:
        record.append("token")
        return "token"

    def fake_source(token: Annotated[str, Depends(fake_token)]) -> Iterator[str]:
        record.append("fake:open")
        yield f"fake with {token}"
        record.append("fake:close")

    def extension_level() -> None:
        record.append("extension")

    def extension_override() -> None:
        record.append("extension override")

    class Clock:
        def __init__(self) -> None:
            self.now = "real time"

    class FrozenClock:
        now = "frozen time"

    got: list[tuple[str, str]] = []
    events = EventRouter()

    @events.on("Ping")
    async def handler(
        event: Ping,
        who: Annotated[str, Depends(tenant)],
        clock: Annotated[Clock, Depends()],
    ) -> None:
        got.append((who, clock.now))

    app = build_app(events, dependencies=[Depends(extension_level)])
    with TestClient(app) as client:
        deliver(client, Ping())
        app.dependency_overrides[real_source] = fake_source
        app.dependency_overrides[Clock] = FrozenClock
        app.dependency_overrides[extension_level] = extension_override
        deliver(client, Ping())
        app.dependency_overrides.clear()
        deliver(client, Ping())
        assert dead_letters(client) == []
    assert got == [
        ("tenant from real", "real time"),
        ("tenant from fake with token", "frozen time"),
        ("tenant from real", "real time"),
    ]
    assert record == [
        "extension",
        "real",
        "extension override",
        "token",
        "fake:open",
        "fake:close",
        "extension",
        "real",
    ]


# Message and Bus


def test_message_is_injected_in_handlers_and_dependencies() -> None:
    seen: list[Message] = []

    def from_dependency(message: Message) -> str:
        seen.append(message)
        return message.id

    def nested(first_id: Annotated[str, Depends(from_dependency)], msg: Message) -> str:
        seen.append(msg)
        return first_id

    ids: list[str] = []
    events = EventRouter()

    @events.on("Ping")
    async def handler(event: Ping, msg: Message, via: Annotated[str, Depends(nested)]) -> None:
        seen.append(msg)
        ids.append(via)

    app = build_app(events)
    with TestClient(app) as client:
        message_id = publish(client, Ping(n=5))
        drain(client)
    assert ids == [message_id]
    assert len(seen) == 3
    assert all(message is seen[0] for message in seen)
    assert (seen[0].id, seen[0].name, seen[0].body) == (message_id, "Ping", b'{"n":5}')


def test_bus_in_a_handler_publishes_with_correlation_and_causation() -> None:
    pings: list[Message] = []
    pongs: list[tuple[Pong, Message]] = []
    publishers: list[tuple[Publisher, Publisher]] = []

    def notifier(bus: Bus) -> Publisher:
        return bus

    events = EventRouter()

    @events.on("Ping")
    async def on_ping(
        event: Ping, msg: Message, bus: Bus, via_dep: Annotated[Publisher, Depends(notifier)]
    ) -> None:
        pings.append(msg)
        publishers.append((bus, via_dep))
        await bus.publish(Pong(n=event.n + 1))

    @events.on("Pong")
    async def on_pong(event: Pong, msg: Message) -> None:
        pongs.append((event, msg))

    app = build_app(events)

    @app.post("/ping", status_code=202)
    async def place(ping: Ping, bus: Bus) -> dict[str, str]:
        await bus.publish(ping)
        return {}

    with TestClient(app) as client:
        response = client.post("/ping", json={"n": 1}, headers={"X-Request-ID": "req-42"})
        assert response.status_code == 202
        drain(client)
        assert dead_letters(client) == []
    [ping] = pings
    [(pong, pong_message)] = pongs
    assert pong == Pong(n=2)
    assert ping.correlation_id == "req-42"
    assert pong_message.correlation_id == "req-42"
    assert pong_message.causation_id == ping.id
    [(bus, via_dep)] = publishers
    assert bus is via_dep


def test_sync_handlers_and_dependencies_run_in_a_worker_thread() -> None:
    threads: dict[str, int] = {}

    async def on_loop() -> None:
        threads["loop"] = threading.get_ident()

    def sync_dep() -> None:
        threads["sync dependency"] = threading.get_ident()

    events = EventRouter()

    @events.on("Ping")
    def handler(
        event: Ping,
        _loop: Annotated[None, Depends(on_loop)],
        _sync: Annotated[None, Depends(sync_dep)],
    ) -> None:
        threads["handler"] = threading.get_ident()

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping())
        assert dead_letters(client) == []
    assert set(threads) == {"loop", "sync dependency", "handler"}
    assert threads["handler"] != threads["loop"]
    assert threads["sync dependency"] != threads["loop"]


# refused at registration

HTTP_ONLY: list[tuple[str, Any, Any]] = [
    ("Query()", str, Query()),
    ("Header()", str, Header()),
    ("Cookie()", str, Cookie()),
    ("Path()", str, Path()),
    ("Body()", str, Body()),
    ("Form()", str, Form()),
    ("File()", bytes, File()),
    ("Annotated Query", Annotated[str, Query()], inspect.Parameter.empty),
    ("Annotated Header", Annotated[str, Header()], inspect.Parameter.empty),
    ("Annotated Cookie", Annotated[str, Cookie()], inspect.Parameter.empty),
    ("Annotated Path", Annotated[str, Path()], inspect.Parameter.empty),
    ("Annotated Body", Annotated[dict[str, int], Body()], inspect.Parameter.empty),
    ("Annotated Form", Annotated[str, Form()], inspect.Parameter.empty),
    ("Annotated File", Annotated[bytes, File()], inspect.Parameter.empty),
    ("Request", Request, inspect.Parameter.empty),
    ("WebSocket", WebSocket, inspect.Parameter.empty),
    ("HTTPConnection", HTTPConnection, inspect.Parameter.empty),
    ("Response", Response, inspect.Parameter.empty),
    ("BackgroundTasks", BackgroundTasks, inspect.Parameter.empty),
    ("SecurityScopes", SecurityScopes, inspect.Parameter.empty),
]
HTTP_ONLY_IDS = [case[0] for case in HTTP_ONLY]


@pytest.mark.parametrize(("what", "annotation", "default"), HTTP_ONLY, ids=HTTP_ONLY_IDS)
def test_http_only_parameters_of_a_handler_fail_at_registration(
    what: str, annotation: Any, default: Any
) -> None:
    async def bad_handler(event: Ping) -> None: ...

    with_parameter(bad_handler, "bad_param", annotation, default)
    events = EventRouter()
    with pytest.raises(ConfigurationError) as info:
        events.on("Ping")(bad_handler)
    message = str(info.value)
    assert "handler 'bad_handler'" in message
    assert "parameter 'bad_param'" in message
    assert "only in HTTP requests" in message
    assert events.routes == []


@pytest.mark.parametrize(("what", "annotation", "default"), HTTP_ONLY, ids=HTTP_ONLY_IDS)
def test_http_only_parameters_of_a_sub_dependency_fail_at_registration(
    what: str, annotation: Any, default: Any
) -> None:
    def bad_dependency() -> int:
        return 1

    with_parameter(bad_dependency, "bad_param", annotation, default)

    def middle(x: Annotated[int, Depends(bad_dependency)]) -> int:
        return x

    events = EventRouter()
    with pytest.raises(ConfigurationError) as info:

        @events.on("Ping")
        async def handler(event: Ping, y: Annotated[int, Depends(middle)]) -> None: ...

    message = str(info.value)
    assert "handler 'handler'" in message
    assert "middle'" in message
    assert "bad_dependency'" in message
    assert "parameter 'bad_param'" in message
    assert events.routes == []


def test_http_only_parameters_of_router_extension_and_on_dependencies_fail() -> None:
    def needs_request(request: Request) -> None: ...

    async def handler(event: Ping) -> None: ...

    router = EventRouter(dependencies=[Depends(needs_request)])
    with pytest.raises(ConfigurationError, match=r"needs_request'.*parameter 'request'"):
        router.on("Ping")(handler)

    with pytest.raises(ConfigurationError, match=r"needs_request'.*parameter 'request'"):
        EventRouter().on("Ping", dependencies=[Depends(needs_request)])(handler)

    events = EventRouter()
    events.on("Ping")(handler)
    app = build_app(events, dependencies=[Depends(needs_request)])
    with pytest.raises(ConfigurationError, match=r"needs_request'.*parameter 'request'"):
        get_bus(app).build()


def test_a_dependency_parameter_without_a_value_fails_and_a_default_is_used() -> None:
    def paged(limit: int) -> int:  # in a route: a query parameter
        return limit

    events = EventRouter()
    with pytest.raises(ConfigurationError, match=r"paged'.*parameter 'limit' has no value"):

        @events.on("Ping")
        async def handler(event: Ping, page: Annotated[int, Depends(paged)]) -> None: ...

    def defaulted(limit: int = 20) -> int:
        return limit

    got: list[int] = []

    @events.on("Ping")
    async def ok(event: Ping, page: Annotated[int, Depends(defaulted)]) -> None:
        got.append(page)

    app = build_app(events)
    with TestClient(app) as client:
        deliver(client, Ping())
    assert got == [20]


def test_two_event_parameters_fail() -> None:
    with pytest.raises(ConfigurationError, match=r"'two_events'.*'first', 'second'"):

        @EventRouter().on("Ping")
        async def two_events(first: Ping, second: Pong) -> None: ...


def test_other_malformed_signatures_fail_at_registration() -> None:
    async def handler(event: Ping) -> None: ...

    with_parameter(handler, "anything", default=Depends())
    with pytest.raises(ConfigurationError, match=r"'anything' uses Depends\(\) without"):
        EventRouter().on("Ping")(handler)

    def star(*values: int) -> int:
        return 0

    with pytest.raises(ConfigurationError, match=r"star'.*'values': \*args"):

        @EventRouter().on("Ping")
        async def h1(event: Ping, x: Annotated[int, Depends(star)]) -> None: ...

    def positional(x: int = 1, /) -> int:
        return x

    with pytest.raises(ConfigurationError, match=r"positional'.*'x' is positional-only"):

        @EventRouter().on("Ping")
        async def h2(event: Ping, x: Annotated[int, Depends(positional)]) -> None: ...

    def loop() -> int:
        return 0

    with_parameter(loop, "again", int, Depends(loop))
    with pytest.raises(ConfigurationError, match=r"loop'.*depends on itself"):

        @EventRouter().on("Ping")
        async def h3(event: Ping, x: Annotated[int, Depends(loop)]) -> None: ...


@pytest.mark.skipif(not HAS_SCOPE, reason="Depends(scope=...) needs FastAPI >= 0.121")
def test_a_request_scoped_dependency_cannot_depend_on_a_function_scoped_one() -> None:
    def short() -> Iterator[int]:
        yield 1

    def long(x: Annotated[int, Depends(short, scope="function")]) -> Iterator[int]:
        yield x

    with pytest.raises(ConfigurationError, match=r"long'.*'x'.*scope 'function'"):

        @EventRouter().on("Ping")
        async def handler(event: Ping, y: Annotated[int, Depends(long)]) -> None: ...


# parity with FastAPI: the same graph through a route and through a handler


def run_both_ways(
    app: FastAPI, record: list[str], times: int = 2, raise_server_exceptions: bool = True
) -> tuple[list[str], list[str]]:
    """Call the app's POST /ping ``times`` times, then deliver ``times`` Ping events; return
    what each way recorded."""
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        return record_both_ways(client, record, times)


def record_both_ways(
    client: TestClient, record: list[str], times: int = 2
) -> tuple[list[str], list[str]]:
    record.clear()
    for n in range(times):
        client.post("/ping", json={"n": n})
    via_http = list(record)
    record.clear()
    deliver(client, *(Ping(n=n) for n in range(times)))
    via_bus = list(record)
    record.clear()
    return via_http, via_bus


def serve_both_ways(
    endpoint: Callable[..., Any],
    *,
    route_dependencies: Sequence[params.Depends] = (),
    app_dependencies: Sequence[params.Depends] = (),
) -> FastAPI:
    """The same function as the route POST /ping and as the handler of Ping events."""
    events = EventRouter()
    events.on("Ping", dependencies=route_dependencies)(endpoint)
    app = build_app(events, dependencies=app_dependencies, app_dependencies=list(app_dependencies))
    app.post("/ping", dependencies=list(route_dependencies))(endpoint)
    return app


def test_parity_sub_dependencies_caching_classes_and_cleanup_order() -> None:
    record: list[str] = []

    def counter() -> int:
        record.append("counter")
        return len(record)

    async def session() -> AsyncIterator[str]:
        record.append("session:open")
        try:
            yield "session"
        finally:
            record.append("session:close")

    def connection(s: Annotated[str, Depends(session)]) -> Iterator[str]:
        record.append("connection:open")
        yield f"{s}/connection"
        record.append("connection:close")

    class Repository:
        def __init__(
            self,
            conn: Annotated[str, Depends(connection)],
            fresh: Annotated[int, Depends(counter, use_cache=False)],
        ) -> None:
            record.append(f"Repository({conn}, {fresh})")

    class Checker:
        def __init__(self, name: str) -> None:
            self.name = name

        async def __call__(self, repo: Annotated[Repository, Depends()]) -> str:
            record.append(f"check {self.name}")
            return self.name

    def audit() -> Iterator[None]:
        record.append("audit:open")
        yield
        record.append("audit:close")

    async def app_level(n: Annotated[int, Depends(counter)]) -> AsyncIterator[None]:
        record.append(f"app:open {n}")
        yield
        record.append("app:close")

    async def endpoint(
        event: Ping,
        first: Annotated[int, Depends(counter, use_cache=False)],
        second: Annotated[int, Depends(counter)],
        repo: Annotated[Repository, Depends()],
        checked: Annotated[str, Depends(Checker("a"))],
        session_again: Annotated[str, Depends(session)],
        repo_again: Repository = Depends(Repository),  # noqa: B008 - the pre-Annotated spelling
    ) -> None:
        record.append(
            f"endpoint {event.n}: {first} {second} {repo is repo_again} {checked} {session_again}"
        )

    app = serve_both_ways(
        endpoint, route_dependencies=[Depends(audit)], app_dependencies=[Depends(app_level)]
    )
    via_http, via_bus = run_both_ways(app, record)
    assert via_bus == via_http
    # A real graph ran, twice, and was cleaned up after the endpoint each time.
    assert via_http.count("session:open") == via_http.count("session:close") == 2
    assert sum(line.startswith("Repository(") for line in via_http) == 2  # once per request
    # The use_cache=False sub-dependency of a cached one runs at each use; ``second`` reuses the
    # value that the extension/app-level dependency computed.
    assert "endpoint 0: 4 1 True a session" in via_http
    assert via_http[-1] == "app:close"


def test_parity_cleanup_when_the_endpoint_raises() -> None:
    record: list[str] = []

    def outer() -> Iterator[None]:
        record.append("outer:open")
        try:
            yield
        except Exception as exc:
            record.append(f"outer:caught {type(exc).__name__}")
            raise
        finally:
            record.append("outer:close")

    async def inner(o: Annotated[None, Depends(outer)]) -> AsyncIterator[None]:
        record.append("inner:open")
        try:
            yield
        except Exception as exc:
            record.append(f"inner:caught {type(exc).__name__}")
            raise
        finally:
            record.append("inner:close")

    async def endpoint(
        event: Ping,
        _i: Annotated[None, Depends(inner)],
        _o: Annotated[None, Depends(outer)],
    ) -> None:
        record.append("endpoint")
        raise Reject("refused")

    app = serve_both_ways(endpoint)
    via_http, via_bus = run_both_ways(app, record, times=1, raise_server_exceptions=False)
    assert via_bus == via_http
    assert "inner:caught Reject" in via_http
    assert via_http[-1] == "outer:close"


def test_parity_dependency_overrides() -> None:
    record: list[str] = []

    def real_source() -> str:
        record.append("real")
        return "real"

    def fake_token() -> str:
        record.append("token")
        return "token"

    def fake_source(token: Annotated[str, Depends(fake_token)], suffix: str = "!") -> Iterator[str]:
        record.append(f"fake:open {token}")
        yield f"fake{suffix}"
        record.append("fake:close")

    def tenant(source: Annotated[str, Depends(real_source)]) -> str:
        record.append(f"tenant {source}")
        return source

    class Client:
        def __init__(self, source: Annotated[str, Depends(real_source)]) -> None:
            record.append(f"Client {source}")

    class FakeClient:
        def __init__(self, token: Annotated[str, Depends(fake_token)]) -> None:
            record.append(f"FakeClient {token}")

    def also_real() -> str:
        record.append("also real")
        return "also"

    async def endpoint(
        event: Ping,
        t: Annotated[str, Depends(tenant)],
        s: Annotated[str, Depends(real_source)],
        client: Annotated[Client, Depends()],
        a: Annotated[str, Depends(also_real)],
        b: Annotated[str, Depends(fake_source)],
    ) -> None:
        record.append(f"endpoint {t} {s} {a} {b}")

    app = serve_both_ways(endpoint)
    with TestClient(app) as client:
        plain = record_both_ways(client, record)
        # Overrides set while the app runs, with other signatures, for sub-dependencies too;
        # two originals overridden by one callable, and one override that is also used as is.
        app.dependency_overrides[real_source] = fake_source
        app.dependency_overrides[also_real] = fake_source
        app.dependency_overrides[Client] = FakeClient
        overridden = record_both_ways(client, record)
    assert plain[1] == plain[0]
    assert overridden[1] == overridden[0]
    assert "endpoint real real also fake!" in plain[0]
    assert "endpoint fake! fake! fake! fake!" in overridden[0]
    assert "real" not in overridden[0]


@pytest.mark.skipif(not HAS_SCOPE, reason="Depends(scope=...) needs FastAPI >= 0.121")
def test_parity_function_scoped_dependencies_exit_first() -> None:
    record: list[str] = []

    def tracked(label: str) -> Callable[[], Iterator[None]]:
        def dep() -> Iterator[None]:
            record.append(f"{label}:open")
            yield
            record.append(f"{label}:close")

        return dep

    request_a, function_b, request_c = tracked("a"), tracked("b"), tracked("c")

    async def endpoint(
        event: Ping,
        _a: Annotated[None, Depends(request_a)],
        _b: Annotated[None, Depends(function_b, scope="function")],
        _c: Annotated[None, Depends(request_c, scope="request")],
    ) -> None:
        record.append("endpoint")

    app = serve_both_ways(endpoint)
    via_http, via_bus = run_both_ways(app, record, times=1)
    assert via_bus == via_http
    assert via_http[via_http.index("endpoint") + 1] == "b:close"


def test_handler_parameters_with_defaults_get_their_defaults() -> None:
    seen: list[tuple[str, int, str]] = []
    events = EventRouter()

    @events.on(OrderPlaced)
    async def handler(event: OrderPlaced, limit: int = 3, label: str = "x") -> None:
        seen.append((event.order_id, limit, label))

    app = FastAPI()
    app.include_extension(BusExtension(routers=[events], service="shop"))
    with TestClient(app) as client:
        publish(client, OrderPlaced(order_id="1", total=1))
        drain(client)
    assert seen == [("1", 3, "x")]
