"""How a Kafka bus looks in an AsyncAPI document: the ``kafka`` bindings of AsyncAPI (topic,
consumer group) plus ``x-kafka`` extensions for the topics of retries and dead letters."""

from __future__ import annotations

from typing import Any

from fastapi_bus.core.names import is_pattern
from fastapi_bus.transports.base import AsyncAPIPart, dead_letter_queue
from fastapi_bus.transports.kafka.naming import Names

__all__ = ["describe"]

_VERSION = "0.5.0"


def describe(
    part: AsyncAPIPart, *, url: str, names: Names, name: str, queue: str, broadcast: bool
) -> dict[str, Any]:
    """The fields a Kafka transport adds to one object of the AsyncAPI document."""
    if part == "server":
        return {
            "description": (
                "Kafka: a topic per event name, a consumer group per handler; every topic "
                f"and group starts with {names.prefix!r}"
            )
        }
    if part == "channel":
        if is_pattern(name):
            return {"x-kafka": {"topicRegex": names.event_regex((name,))}}
        return {"bindings": {"kafka": {"topic": names.event(name), "bindingVersion": _VERSION}}}
    if part != "receive":
        return {}
    if broadcast:
        return {"x-kafka": {"consumerGroup": None, "startsAt": "end"}}
    return {
        "x-kafka": {
            "consumerGroup": names.group(queue),
            "queueTopic": names.queue(queue),
            "deadLetterTopic": names.queue(dead_letter_queue(queue)),
            "delayTopic": names.delays,
        },
    }
