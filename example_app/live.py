"""The real-time part: a chat, and the order events as they happen, pushed to browsers.

One ``broadcast=True`` handler per live topic: every web process gets every event on a queue
of its own and hands it to its :class:`~example_app.hub.Hub`, which fans it out to the
WebSockets and SSE streams connected to that process. Any web process can take a message
(``POST /rooms/{room}/messages`` or a WebSocket), and it reaches the browsers on all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import delete, select
from sse_starlette.sse import EventSourceResponse

from example_app.db import Database, RoomMember, get_database
from example_app.events import ChatMessage, RoomPresence
from example_app.hub import Hub, Subscriber
from fastapi_bus import Bus, EventRouter, Message, get_bus

RoomName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,40}$")]


def get_hub() -> Hub:
    """This web process's hub: ``create_app`` provides it through ``dependency_overrides``."""
    raise RuntimeError("no hub: make the app with example_app.main.create_app()")


HubDep = Annotated[Hub, Depends(get_hub)]
DatabaseDep = Annotated[Database, Depends(get_database)]

# Broadcast handlers: each web process runs them, for the clients connected to it. One call at
# a time (concurrency=1) keeps the events in the order they came; handing an event to the hub
# never waits, so this costs nothing.

live = EventRouter(tags=["live"])


@live.on("orders.#", broadcast=True, concurrency=1)
async def push_order_event(event: dict[str, Any], message: Message, hub: HubDep) -> None:
    hub.publish("orders", {"type": message.name, **event})


@live.on("chat.message", broadcast=True, concurrency=1)
async def push_chat_message(event: ChatMessage, hub: HubDep) -> None:
    hub.publish(f"room:{event.room}", {"type": "message", **event.model_dump()})


@live.on("chat.presence", broadcast=True, concurrency=1)
async def push_presence(event: RoomPresence, hub: HubDep) -> None:
    hub.publish(f"room:{event.room}", {"type": "presence", "users": event.users})


# HTTP, WebSocket and SSE endpoints.

api = APIRouter(tags=["live"])


class Say(BaseModel):
    user: str = Field(min_length=1, max_length=40)
    text: str = Field(min_length=1, max_length=2000)


@api.post("/rooms/{room}/messages", status_code=202)
async def post_message(room: RoomName, body: Say, bus: Bus) -> dict[str, str]:
    """Say something in a room: every browser in it sees it, on every web process."""
    message_id = await bus.publish(ChatMessage(room=room, user=body.user, text=body.text))
    return {"message_id": message_id}


@api.get("/rooms/{room}/members")
async def room_members(room: RoomName, database: DatabaseDep) -> list[str]:
    return await members(database, room)


@api.get("/rooms/{room}/stream")
async def room_stream(room: RoomName, hub: HubDep) -> EventSourceResponse:
    """The room's messages and presence as Server-Sent Events (``message``, ``presence``)."""
    return _stream(hub, f"room:{room}")


@api.get("/live/orders")
async def order_stream(hub: HubDep) -> EventSourceResponse:
    """Every order event as it happens, as Server-Sent Events named after the event."""
    return _stream(hub, "orders")


def _stream(hub: Hub, topic: str) -> EventSourceResponse:
    # A ping every 15 s keeps proxies from closing a quiet stream; a client that takes more
    # than 30 s to accept one event is dropped (its queue in the hub is bounded meanwhile).
    return EventSourceResponse(_events(hub.subscribe(topic), hub), ping=15, send_timeout=30)


async def _events(subscriber: Subscriber, hub: Hub) -> AsyncIterator[dict[str, str]]:
    try:
        while (item := await subscriber.get()) is not None:
            yield {"event": str(item["type"]), "data": json.dumps(item)}
    finally:
        hub.unsubscribe(subscriber)


@api.websocket("/rooms/{room}/ws")
async def room_socket(
    websocket: WebSocket,
    room: RoomName,
    hub: HubDep,
    database: DatabaseDep,
    user: Annotated[str, Query(min_length=1, max_length=40)],
) -> None:
    """Join ``room`` as ``user``: receive its messages and presence, send ``{"text": ...}``."""
    await websocket.accept()
    bus = get_bus(websocket.app)
    process: str = websocket.app.state.process_id
    with hub.subscription(f"room:{room}") as subscriber:
        member = await join(database, room, user, process)
        await bus.publish(RoomPresence(room=room, users=await members(database, room)))
        sending = asyncio.create_task(_send(websocket, subscriber))
        try:
            while True:
                data = await websocket.receive_json()
                try:
                    said = ChatMessage(room=room, user=user, text=str(data.get("text", "")))
                except ValidationError:
                    continue  # an empty or oversized message: nothing to say
                await bus.publish(said)
        except (WebSocketDisconnect, json.JSONDecodeError, AttributeError):
            pass
        finally:
            sending.cancel()
            # Leaving runs to its end even if this task is cancelled (a server may cancel a
            # closed connection's task).
            leaving = asyncio.create_task(_leave(bus, database, room, member))
            _background.add(leaving)
            leaving.add_done_callback(_background.discard)
            await asyncio.shield(leaving)


_background: set[asyncio.Task[None]] = set()


async def _leave(bus: Any, database: Database, room: str, member: int) -> None:
    await leave(database, member)
    with contextlib.suppress(Exception):  # shutting down: nobody left to tell
        await bus.publish(RoomPresence(room=room, users=await members(database, room)))


async def _send(websocket: WebSocket, subscriber: Subscriber) -> None:
    """Empty this client's queue into its socket; only this task waits for a slow client."""
    while (item := await subscriber.get()) is not None:
        await websocket.send_json(item)
    await websocket.close()


async def join(database: Database, room: str, user: str, process: str) -> int:
    async with database.sessions.begin() as session:
        member = RoomMember(room=room, user=user, process=process)
        session.add(member)
        await session.flush()
        return member.id


async def leave(database: Database, member: int) -> None:
    async with database.sessions.begin() as session:
        await session.execute(delete(RoomMember).where(RoomMember.id == member))


async def members(database: Database, room: str) -> list[str]:
    async with database.sessions() as session:
        users = await session.scalars(select(RoomMember.user).where(RoomMember.room == room))
        return sorted(set(users))


async def forget_process(database: Database, process: str) -> None:
    """At shutdown: this process's members have left."""
    await asyncio.gather(*_background, return_exceptions=True)
    async with database.sessions.begin() as session:
        await session.execute(delete(RoomMember).where(RoomMember.process == process))
