"""How a Redis bus looks in an AsyncAPI document: ``x-redis`` extensions (AsyncAPI's Redis
bindings define no fields yet) naming the streams, groups and Pub/Sub channels it uses."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi_bus.transports.base import AsyncAPIPart, dead_letter_queue
from fastapi_bus.transports.redis.scripts import GROUP, Keys

__all__ = ["channel_glob", "describe"]


def channel_glob(keys: Keys, pattern: str) -> str:
    """A Pub/Sub glob that matches the channel of every event that ``pattern`` matches."""
    words = pattern.split(".")
    for index, word in enumerate(words):
        if word == "#":
            # '#' may match no word at all, so the glob must not require the dot before it.
            return keys.channel(".".join(words[:index]) + "*")
        if word == "*":
            words[index] = "*"
    return keys.channel(".".join(words))


def describe(
    part: AsyncAPIPart, *, url: str, keys: Keys, name: str, queue: str, broadcast: bool
) -> dict[str, Any]:
    """The fields a Redis transport adds to one object of the AsyncAPI document."""
    if part == "server":
        database = urlsplit(url).path.strip("/") or "0"
        return {
            "description": (
                f"Redis, database {database}: a stream per handler for durable handlers, "
                f"Pub/Sub for broadcasts; every key starts with {keys.tag}"
            )
        }
    if part == "channel":
        return {"x-redis": {"broadcastChannel": channel_glob(keys, name)}}
    if part != "receive":
        return {}
    if broadcast:
        return {"x-redis": {"pubsub": channel_glob(keys, name), "persisted": False}}
    return {
        "x-redis": {
            "stream": keys.stream(queue),
            "consumerGroup": GROUP,
            "deadLetterStream": keys.stream(dead_letter_queue(queue)),
        }
    }
