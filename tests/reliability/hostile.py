"""Hostile input for the consume path: what a broken or malicious producer can put in a queue,
and how each transport puts it there.

A :class:`Raw` message is injected straight into a handler's queue. :data:`INJECTORS` says how,
per transport protocol: through ``Transport.send`` by default (every transport has it), and for
RabbitMQ as a bare AMQP message with whatever properties and header tables a foreign client
could send. A new transport gets the default; give it its own injector to reach deeper.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import strategies as st

from fastapi_bus import Message
from fastapi_bus.transports.base import Transport

__all__ = ["INJECTORS", "Raw", "inject", "raw_messages"]

#: The bus under test refuses bodies above this (kept small so that "huge" stays fast).
MAX_SIZE = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Raw:
    """Everything a producer controls, unchecked."""

    body: bytes
    name: str | None
    content_type: str | None
    content_encoding: str | None
    message_id: str | None
    #: Header values of any AMQP type (text-only transports get their text form).
    headers: dict[str, Any]


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _json_value() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    )


_valid = st.builds(
    lambda order_id, total: json.dumps({"order_id": order_id, "total": total}).encode(),
    st.text(max_size=30),
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6),
)
_bodies = st.one_of(
    _valid,
    st.binary(max_size=512),
    st.builds(lambda value: json.dumps(value).encode(), _json_value()),
    st.builds(_nested, st.integers(1, 20_000), st.sampled_from(["array", "object"])),
    st.builds(
        lambda n: b'{"order_id": "' + b"x" * n + b'", "total": 1}', st.integers(0, 3 * MAX_SIZE)
    ),
    # Invalid UTF-8 inside otherwise valid JSON, and JSON in other encodings.
    st.builds(
        lambda junk: b'{"order_id": "' + junk + b'", "total": 1}',
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"]),
    ),
    st.sampled_from(
        ['{"order_id": "é", "total": 1}'.encode(enc) for enc in ("utf-16", "utf-32", "latin-1")]
    ),
    st.just(b""),
)
_content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=latin-1",
            "APPLICATION/JSON",
            "text/plain",
            "application/xml",
            "application/octet-stream",
            "",
        ]
    ),
    st.none(),
    st.text(max_size=40),
)
_names = st.one_of(
    st.sampled_from(["OrderPlaced", "NoSuchEvent", "", "orders.#", "a.b.c"]),
    st.none(),
    st.text(max_size=60),
)
_header_values = st.one_of(
    st.text(max_size=50),
    st.binary(max_size=50).map(bytearray),  # AMQP byte arrays; invalid UTF-8 included
    st.integers(-(2**62), 2**62),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),  # RabbitMQ cannot parse inf
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(-(2**31), 2**31), max_size=3),
)
_header_keys = st.one_of(
    st.sampled_from(["x-bus-attempt", "x-bus-published-at", "x-bus-causation-id", "x-death"]),
    st.sampled_from(["x-bus-dead-letter-reason", "x-bus-first-failure-at", "traceparent"]),
    st.text(min_size=1, max_size=30),
)

raw_messages = st.builds(
    Raw,
    body=_bodies,
    name=_names,
    content_type=_content_types,
    content_encoding=st.none() | st.sampled_from(["gzip", "utf-8", "base64", "identity"]),
    message_id=st.none() | st.text(max_size=40),
    headers=st.dictionaries(_header_keys, _header_values, max_size=6),
)


def _text(value: Any) -> str:
    if isinstance(value, bytearray):
        return value.decode("utf-8", errors="replace")
    return str(value)


async def send_through_the_transport(transport: Transport, queue: str, raw: Raw) -> None:
    """Any transport: a :class:`Message` with the raw fields, as far as it can carry them."""
    message = Message(
        name=raw.name or "",
        body=raw.body,
        id=raw.message_id or uuid.uuid4().hex,
        headers={key: _text(value) for key, value in raw.headers.items()},
        content_type=raw.content_type or "",
    )
    await transport.send(queue, message)


async def send_bare_amqp(transport: Transport, queue: str, raw: Raw) -> None:
    """RabbitMQ: a bare AMQP message on the transport's connection, properties as given."""
    import aio_pika

    connection = transport._connection  # type: ignore[attr-defined]
    async with connection.channel() as channel:
        message = aio_pika.Message(
            raw.body,
            headers=raw.headers,
            content_type=raw.content_type,
            content_encoding=raw.content_encoding,
            message_id=raw.message_id,
            type=raw.name,
        )
        await channel.default_exchange.publish(message, routing_key=queue)


Injector = Callable[[Transport, str, Raw], Awaitable[None]]

#: How raw messages reach a queue, by transport protocol.
INJECTORS: dict[str, Injector] = {"amqp": send_bare_amqp}


async def inject(transport: Transport, queue: str, raw: Raw) -> None:
    injector = INJECTORS.get(transport.protocol, send_through_the_transport)
    await injector(transport, queue, raw)
