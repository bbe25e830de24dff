"""Publishing: publishers, and the outboxes that hold events until their unit of work succeeds.

Events published while handling an HTTP request (or an event) are held in an outbox and sent
only when that work succeeds: for a request, when the endpoint finished without an exception
and the response status is below 400, before the response goes out (so a 2xx means the broker
has the events); for a handler, when it returns, before its message is acknowledged.

Code that runs in a worker thread (a plain ``def`` endpoint, dependency or handler, a sync
background task) publishes with :meth:`Publisher.publish_sync`, under the same rules.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol

import anyio.from_thread
from pydantic import BaseModel
from typing_extensions import TypedDict, Unpack

from fastapi_bus.core.exceptions import PublishError
from fastapi_bus.core.messages import Message
from fastapi_bus.core.types import check_options
from fastapi_bus.pipeline.work import DISCARDED, SETTLED, WorkEnd

__all__ = [
    "EncodeOptions",
    "HandlerWork",
    "Outbox",
    "PublishManyOptions",
    "PublishOptions",
    "Publisher",
    "SendMessage",
    "Sender",
    "TransactionalOutbox",
    "claim",
    "current_publisher",
]

#: What can be published: a model instance, or an event name (then a payload follows).
Publishable = BaseModel | str
#: The payload that follows an event name: a dict (validated against the event's model) or a
#: model instance.
Payload = BaseModel | Mapping[str, Any] | None
#: One event of ``publish_many``: a model instance, or an event name and its payload.
PublishItem = BaseModel | tuple[str, Payload]


class MessageOptions(TypedDict, total=False):
    """What a message carries besides its event."""

    #: Extra text headers.
    headers: Mapping[str, str] | None
    #: Default: the current request's or message's.
    correlation_id: str | None


class EncodeOptions(MessageOptions, total=False):
    """The keyword options of ``encode``."""

    #: The id of the message whose handling published this one.
    causation_id: str | None


class PublishOptions(MessageOptions, total=False):
    """The keyword options of ``publish`` and ``publish_sync`` (see
    :meth:`Publisher.publish`)."""

    #: Seconds; the event is delivered no earlier than this.
    delay: float | None
    #: Send now, even inside a request or handler that may still fail.
    immediate: bool
    #: A SQLAlchemy ``AsyncSession``: write the event to the transactional outbox in the
    #: session's transaction; it is sent once that commits, and never if it rolls back.
    session: Any
    #: With ``session``: events with the same key are sent in the order they were published.
    key: str | None


class PublishManyOptions(TypedDict, total=False):
    """The keyword options of ``publish_many`` (see :meth:`Publisher.publish_many`): those of
    ``publish``, for every event; ``headers`` and ``key`` may also be worked out per event."""

    #: Extra text headers; or a function of each item that returns its headers (or ``None``).
    headers: Mapping[str, str] | Callable[[Any], Mapping[str, str] | None] | None
    #: Default: the current request's or message's.
    correlation_id: str | None
    #: Seconds; the events are delivered no earlier than this.
    delay: float | None
    #: Send now, even inside a request or handler that may still fail.
    immediate: bool
    #: A SQLAlchemy ``AsyncSession``: write the events to the transactional outbox in the
    #: session's transaction.
    session: Any
    #: With ``session``: the ordering key of every event, or a function of each item that
    #: returns its key (or ``None``).
    key: str | Callable[[Any], str | None] | None


class Sender(Protocol):
    """What publishers need from the running bus: encode an event, send a message, or keep it
    in the transactional outbox."""

    def encode_message(
        self,
        event: Publishable,
        payload: Payload,
        headers: Mapping[str, str] | None,
        correlation_id: str | None,
        causation_id: str | None,
    ) -> Message: ...

    def send_message(
        self, message: Message, *, delay: float | None = None
    ) -> Coroutine[Any, Any, None]: ...

    def send_message_nowait(self, message: Message) -> bool: ...

    async def send_messages(self, messages: Sequence[tuple[Message, float | None]]) -> None: ...

    async def store_message(
        self, session: Any, message: Message, *, delay: float | None, key: str | None
    ) -> None: ...


class SendMessage(Protocol):
    """Sends an encoded message (the bus's ``send_message``)."""

    def __call__(self, message: Message, *, delay: float | None = None) -> Awaitable[None]: ...


class TransactionalOutbox(Protocol):
    """An outbox in the application's database (such as ``SQLAlchemyOutbox``): events written in
    the same transaction as the data, and a relay that sends them once it has committed."""

    async def add(
        self, session: Any, message: Message, *, delay: float | None, key: str | None
    ) -> None:
        """Write ``message`` in ``session``'s transaction."""

    async def start(self, send: SendMessage) -> None:
        """Start relaying committed messages with ``send``."""

    async def stop(self) -> None:
        """Stop relaying; what is not sent yet stays for the next relay."""


#: The publisher of the running request, or the work cell of the running handler call (whose
#: unit of work, and publisher, its first publish makes: see :func:`claim`).
_current: contextvars.ContextVar[Publisher | list[Any] | None] = contextvars.ContextVar(
    "fastapi_bus_publisher", default=None
)
#: The same variable, for the bus's ``publish`` to read without a call (see
#: :func:`current_publisher`).
publisher_context = _current


class _OutboxState(enum.Enum):
    OPEN = "open"
    SENT = "sent"
    DISCARDED = "discarded"


#: Guards every outbox's "still open? then hold it" (see :class:`Outbox`). One lock for all:
#: it is held for a list append or swap, and taking a lock is cheaper than making one for every
#: request.
_holding = threading.Lock()


class Outbox:
    """Events held back until the unit of work (a request, a handler call) succeeds.

    Worker threads (``publish_sync``) add to it while the event loop may flush it: a lock
    makes "still open? then hold it" one step, so no event slips between the two."""

    __slots__ = ("_bus", "_pending", "state")

    def __init__(self, bus: Sender) -> None:
        self._bus = bus
        self._pending: list[tuple[Message, float | None]] = []
        self.state = _OutboxState.OPEN

    @property
    def is_open(self) -> bool:
        return self.state is _OutboxState.OPEN

    def hold(self, message: Message, delay: float | None) -> bool:
        """Keep ``message`` until the work succeeds; False once the outbox was flushed."""
        with _holding:
            if self.state is _OutboxState.DISCARDED:
                raise PublishError(
                    f"not publishing {message.name!r}: the request or handler it belongs to "
                    "failed, so its events are not sent (pass immediate=True to send anyway)"
                )
            if self.state is _OutboxState.SENT:
                return False
            self._pending.append((message, delay))
            return True

    def hold_all(self, messages: Sequence[tuple[Message, float | None]]) -> bool:
        """:meth:`hold` for several messages at once: all of them, or (once the outbox was
        flushed) none."""
        with _holding:
            if self.state is _OutboxState.DISCARDED:
                names = ", ".join(sorted({message.name for message, _ in messages}))
                raise PublishError(
                    f"not publishing {len(messages)} event(s) ({names}): the request or handler "
                    "they belong to failed, so its events are not sent (pass immediate=True to "
                    "send anyway)"
                )
            if self.state is _OutboxState.SENT:
                return False
            self._pending += messages
            return True

    async def flush(self) -> None:
        """Send everything held, in order. Later publishes go straight out."""
        with _holding:
            pending, self._pending = self._pending, []
            self.state = _OutboxState.SENT
        if pending:
            await self._bus.send_messages(pending)

    def discard(self) -> int:
        """Drop everything held (the work failed). Returns how many events were dropped."""
        with _holding:
            count = len(self._pending)
            self._pending = []
            self.state = _OutboxState.DISCARDED
        return count


class Publisher:
    """Publishes events, in the context of the request or message being handled.

    Get one by declaring a parameter ``bus: Bus`` in an endpoint or an event handler. In
    ``async`` code, ``await bus.publish(...)``; in code that runs in a worker thread (a plain
    ``def`` endpoint, dependency or handler, a sync background task), ``bus.publish_sync(...)``.
    """

    def __init__(
        self,
        bus: Sender,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._bus = bus
        self._correlation_id = correlation_id
        self.causation_id = causation_id
        self._outbox = outbox
        #: The event loop of the request or handler this publisher belongs to, if any.
        self._loop = _running_loop()

    @property
    def correlation_id(self) -> str | None:
        """What its events carry as their correlation id, unless ``publish`` is given one."""
        return self._correlation_id

    def publish(
        self, event: Publishable, payload: Payload = None, **options: Unpack[PublishOptions]
    ) -> Coroutine[Any, Any, str]:
        """Validate and publish one event; returns (once awaited) its message id.

        ```python
        await bus.publish(OrderPlaced(order_id="1", total=3.5))
        await bus.publish("OrderPlaced", {"order_id": "1", "total": 3.5})
        ```

        Args:
            event: a model instance (sent under the name registered for its class, else the
                class name), or an event name followed by ``payload``.
            payload: with a name: a dict (validated against the event's model) or a model.
            headers: extra text headers.
            correlation_id: default: the current request's or message's.
            delay: seconds; the event is delivered no earlier than this.
            immediate: send now, even inside a request or handler that may still fail.

        Raises:
            UnknownEventError: a name with a dict payload that no router declares.
            EventValidationError: the payload does not validate; nothing is sent.
            PublishError: the request or handler this publisher belongs to has failed (a
                background task of a 4xx response, say), or the bus is not running; or this
                is called in a worker thread, where nothing could await it (at the call: use
                :meth:`publish_sync` there).
            TypeError: an unknown keyword (at the call).
        """
        if options:
            check_options(options, PublishOptions, "publish")
        if self._loop is not None and _running_loop() is not self._loop:
            raise PublishError(
                "bus.publish() was called in a worker thread (a plain `def` endpoint, "
                "dependency or handler, or a sync background task), where it cannot be "
                "awaited: call bus.publish_sync(...) there, or make the function `async def`"
            )
        return self._publish(event, payload, options)

    async def _publish(self, event: Publishable, payload: Payload, options: PublishOptions) -> str:
        if not options:  # the usual publish: ``_encode`` and ``_held`` written out
            message = self._bus.encode_message(
                event, payload, None, self.correlation_id, self.causation_id
            )
            outbox = self._outbox
            if outbox is None or not outbox.hold(message, None):
                bus = self._bus
                if not bus.send_message_nowait(message):
                    await bus.send_message(message)
            return message.id
        message, delay = self._encode(event, payload, options)
        session = options.get("session")
        if session is not None:
            # The database transaction is the unit of work: it commits, or nothing is sent.
            await self._bus.store_message(session, message, delay=delay, key=options.get("key"))
        elif not self._held(message, delay, options):
            await self._bus.send_message(message, delay=delay)
        return message.id

    def publish_many(
        self, events: Iterable[PublishItem], **options: Unpack[PublishManyOptions]
    ) -> Coroutine[Any, Any, list[str]]:
        """Validate several events, then publish all of them, in this order; returns (once
        awaited) their message ids, in the same order.

        ```python
        await bus.publish_many([OrderPlaced(order_id="1"), OrderPlaced(order_id="2")])
        await bus.publish_many([("OrderPlaced", {"order_id": "3"}), ShippingRequested(...)])
        ```

        Every event is validated before any is sent: if one does not validate, none is sent.
        The options are those of :meth:`publish` and apply to every event; ``headers`` (and
        ``key``, with ``session``) may also be a function called with each item, which returns
        that event's headers (or key): ``headers=lambda e: {"partition-key": e.order_id}``.

        Inside a request or a handler, the events join its unit of work, as with
        :meth:`publish`: all of them are held until it succeeds, then sent with its other
        events, in order. Otherwise (or with ``immediate=True``) they are sent now, and this
        returns once the broker has taken every one. Transports that can keep several in flight
        in order (Kafka) send them together, waiting for the broker about once; the others send
        them one by one. Should the broker refuse one, this raises; the events before it were
        sent, and where several were in flight, some after it may have been too.

        Args:
            events: model instances, or ``(name, payload)`` pairs, as :meth:`publish` takes
                them.
            headers: extra text headers, or a function of each item that returns them.
            correlation_id: default: the current request's or message's.
            delay: seconds; the events are delivered no earlier than this.
            immediate: send now, even inside a request or handler that may still fail.
            session: write the events to the transactional outbox, in the session's transaction.
            key: with ``session``: the ordering key, or a function of each item that returns it.

        Raises what :meth:`publish` raises (before anything is sent, for the validation of any
        of the events), and :class:`TypeError` for an item that is neither a model instance nor
        a ``(name, payload)`` pair.
        """
        check_options(options, PublishManyOptions, "publish_many")
        if isinstance(events, (str, BaseModel)):
            raise TypeError("publish_many() takes a list of events; to publish one, use publish()")
        if self._loop is not None and _running_loop() is not self._loop:
            raise PublishError(
                "bus.publish_many() was called in a worker thread (a plain `def` endpoint, "
                "dependency or handler, or a sync background task), where it cannot be "
                "awaited: call bus.publish_sync(...) for each event there, or make the "
                "function `async def`"
            )
        return self._publish_many(list(events), options)

    async def _publish_many(
        self, items: list[PublishItem], options: PublishManyOptions
    ) -> list[str]:
        delay = options.get("delay")
        if delay is not None and delay < 0:
            raise ValueError("delay must not be negative")
        headers = options.get("headers")
        headers_of, fixed = (headers, None) if callable(headers) else (None, headers)
        correlation_id = options.get("correlation_id") or self.correlation_id
        encode = self._bus.encode_message
        causation_id = self.causation_id
        messages: list[tuple[Message, float | None]] = []
        for item in items:
            event: Publishable
            payload: Payload
            if isinstance(item, BaseModel):
                event, payload = item, None
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                event, payload = item
            else:
                raise TypeError(
                    f"publish_many() takes model instances or (name, payload) pairs, got {item!r}"
                )
            extra = fixed if headers_of is None else headers_of(item)
            message = encode(event, payload, extra, correlation_id, causation_id)
            messages.append((message, delay))
        ids = [message.id for message, _ in messages]
        if not messages:
            return ids
        session = options.get("session")
        if session is not None:
            key = options.get("key")
            keys = [key(item) for item in items] if callable(key) else [key] * len(items)
            for (message, _), each in zip(messages, keys, strict=True):
                await self._bus.store_message(session, message, delay=delay, key=each)
            return ids
        outbox = self._outbox
        if outbox is None or options.get("immediate", False) or not outbox.hold_all(messages):
            await self._bus.send_messages(messages)
        return ids

    def publish_sync(
        self, event: Publishable, payload: Payload = None, **options: Unpack[PublishOptions]
    ) -> str:
        """:meth:`publish`, for code that runs in a worker thread: a plain ``def`` endpoint,
        dependency or handler, or a sync background task. Same options, same rules: inside a
        request or a handler the event is held until that work succeeds; otherwise (or with
        ``immediate=True``) this waits until the app's event loop has sent it.

        ```python
        @app.post("/orders")
        def place(order: OrderPlaced, bus: Bus) -> None:
            bus.publish_sync(order)
        ```

        Raises what :meth:`publish` raises, and :class:`PublishError` when called on the
        event loop (it would block it: ``await bus.publish(...)`` there) or from a thread
        that has no way back to the app's event loop.
        """
        check_options(options, PublishOptions, "publish_sync")
        if _running_loop() is not None:
            raise PublishError(
                "bus.publish_sync() was called on the event loop, which it would block: in "
                "`async` code, use `await bus.publish(...)`"
            )
        message, delay = self._encode(event, payload, options)
        if self._held(message, delay, options):
            return message.id
        loop = self._loop or _loop_of_worker_thread()
        if loop is None:
            raise PublishError(
                f"cannot publish {message.name!r} from this thread: publish_sync() sends "
                "through the app's event loop, reached from its worker threads (def endpoints, "
                "dependencies and handlers, sync background tasks)"
            )
        send = self._bus.send_message(message, delay=delay)
        asyncio.run_coroutine_threadsafe(send, loop).result()
        return message.id

    def _encode(
        self, event: Publishable, payload: Payload, options: PublishOptions
    ) -> tuple[Message, float | None]:
        if not options:  # the usual publish
            message = self._bus.encode_message(
                event, payload, None, self.correlation_id, self.causation_id
            )
            return message, None
        delay = options.get("delay")
        if delay is not None and delay < 0:
            raise ValueError("delay must not be negative")
        message = self._bus.encode_message(
            event,
            payload,
            options.get("headers"),
            options.get("correlation_id") or self.correlation_id,
            self.causation_id,
        )
        return message, delay

    def _held(self, message: Message, delay: float | None, options: PublishOptions) -> bool:
        """Whether the unit of work's outbox keeps ``message`` (it is sent when the work
        succeeds); raises if that work has failed."""
        outbox = self._outbox
        if outbox is None or (options and options.get("immediate", False)):
            return False
        return outbox.hold(message, delay)


#: The running event loop of this thread, or None (without raising and catching an exception
#: when there is none, as ``asyncio.get_running_loop`` would: asked at every publish).
_running_loop: Callable[[], asyncio.AbstractEventLoop | None] = asyncio._get_running_loop


def _loop_of_worker_thread() -> asyncio.AbstractEventLoop | None:
    """The event loop that started this worker thread (FastAPI's threadpool), if any."""
    try:
        return anyio.from_thread.run_sync(asyncio.get_running_loop)
    except RuntimeError:
        return None


def free_publisher(bus: Sender) -> Publisher:
    """A publisher of ``bus`` that belongs to no request or handler: it can be shared by all
    the code that publishes outside them, in any thread."""
    publisher = Publisher(bus)
    # Tied to no event loop, as a publisher made in a worker thread: ``publish`` then never
    # compares loops (a publisher made at the call could not have been made in another one).
    publisher._loop = None
    return publisher


def current_publisher() -> Publisher | None:
    """The publisher of the request or handler running in this context, if any."""
    current = _current.get()
    if current is None or isinstance(current, Publisher):
        return current
    return claim(current).publisher  # a handler call's work cell


def bind_publisher(publisher: Publisher) -> contextvars.Token[Publisher | list[Any] | None]:
    return _current.set(publisher)


def unbind_publisher(token: contextvars.Token[Publisher | list[Any] | None]) -> None:
    _current.reset(token)


#: Guards the making of a handler call's unit of work (see :func:`claim`): taken by the first
#: publish of a call, and by the publishes of its worker threads until then.
_creating = threading.Lock()


class HandlerWork:
    """The unit of work of one handler call that publishes: its publisher, whose events are
    held until the handler returns (published with the message as their cause).

    Made by the call's first publish, by :func:`claim`; ``ended`` makes one for a call that is
    already over (see :mod:`fastapi_bus.pipeline.work`)."""

    __slots__ = ("_outbox", "publisher")

    def __init__(self, bus: Sender, message: Message, ended: WorkEnd | None = None) -> None:
        outbox = Outbox(bus)
        if ended is SETTLED:
            outbox.state = _OutboxState.SENT  # later publishes go straight out
        elif ended is DISCARDED:
            outbox.state = _OutboxState.DISCARDED  # and are refused after a failure
        self._outbox = outbox
        #: What a ``bus: Bus`` parameter of the handler receives.
        self.publisher = Publisher(
            bus,
            correlation_id=message.correlation_id or message.id,
            causation_id=message.id,
            outbox=outbox,
        )

    def discard(self) -> None:
        self._outbox.discard()

    def flush(self) -> Coroutine[Any, Any, None]:
        return self._outbox.flush()


def claim(cell: list[Any]) -> HandlerWork:
    """The unit of work of the handler call whose work cell this is (``[bus, message]`` while
    the call runs; see :mod:`fastapi_bus.pipeline.work`): made by the first call for it, in
    any thread. Once the call is over, a unit of work born over: its events are sent at once
    (or refused, if the call failed)."""
    if len(cell) == 2:
        with _creating:
            if len(cell) == 2:
                cell.append(HandlerWork(cell[0], cell[1]))
    first = cell[2]
    if first.__class__ is HandlerWork:
        return first
    return HandlerWork(cell[0], cell[1], first)
