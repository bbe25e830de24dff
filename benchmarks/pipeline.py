"""The CPU cost of a handler's consume pipeline per message, without a broker.

    .venv/bin/python -m benchmarks.pipeline --messages 200000 --repeat 7

Each side's consumer (what a transport calls with each message) is driven directly with N
prepared messages, each call run to completion without the event loop's scheduling, and the
best of ``--repeat`` runs is printed per message:

* ``plain``: an ``async`` callable that validates the body with pydantic and counts it;
* ``bus``: the consumer the bus composed for a handler taking the model (the failure step,
  the metrics hooks, the validation, the work cell, the handler call);
* ``bus, dependency``: the handler also takes an ``async def`` dependency (``Depends``);
* ``bus, idempotent``: the handler is ``idempotent=True`` (default in-memory store);
* ``bus, both``.

The difference between ``bus`` and ``plain`` is what the pipeline adds to every message on
every transport. The consumer is read from the bus's composed pipelines (an internal of the
bus): this measures the bus's own code, for its developers.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.common import PAYLOAD, Tick
from fastapi_bus import EventBus
from fastapi_bus.core.messages import Message
from fastapi_bus.transports import transport_from_url

Consumer = Callable[[Message], Awaitable[None]]


def drive(consumer: Consumer, messages: list[Message]) -> float:
    """Microseconds per message of running ``consumer`` on each, to completion."""
    start = time.perf_counter()
    for message in messages:
        call: Any = consumer(message)
        try:
            call.send(None)
        except StopIteration:
            continue
        raise RuntimeError("the consumer waited for something: it cannot be driven directly")
    return (time.perf_counter() - start) / len(messages) * 1e6


async def started_bus(
    count: Callable[[Tick], object], dependency: bool, idempotent: bool
) -> EventBus:
    from benchmarks.features import counting_router

    router = counting_router(count, dependency=dependency, idempotent=idempotent)
    bus = EventBus(transport_from_url("memory://"), service="pipeline", routers=[router])
    await bus.start()
    return bus


async def run(messages: int, repeat: int) -> None:
    body = Tick(n=1, payload=PAYLOAD).model_dump_json().encode()
    seen = [0]
    validate = Tick.__pydantic_validator__.validate_json

    async def plain(message: Message) -> None:
        validate(message.body)
        seen[0] += 1

    def count(event: Tick) -> None:
        seen[0] += 1

    sides: dict[str, Consumer] = {"plain": plain}
    buses = []
    for name, dependency, idempotent in [
        ("bus", False, False),
        ("bus, dependency", True, False),
        ("bus, idempotent", False, True),
        ("bus, both", True, True),
    ]:
        bus = await started_bus(count, dependency, idempotent)
        buses.append(bus)
        ((_, subscription, consumer),) = bus._pipelines.values()
        sides[name] = bus.observer.consumer(consumer, "count", subscription.queue)
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(repeat):
        for name, consumer in sides.items():
            # New messages each run: an idempotent handler would skip the ones it has seen.
            batch = [Message("Tick", body) for _ in range(messages)]
            best[name] = min(best[name], drive(consumer, batch))
    for bus in buses:
        await bus.close()
    print(f"{messages:,} messages, best of {repeat} runs, us per message")
    for name, cost in best.items():
        extra = "" if name == "plain" else f"   (+{cost - best['plain']:.2f} over plain)"
        print(f"  {name:16} {cost:6.2f}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.repeat))


if __name__ == "__main__":
    main()
