"""Consume N waiting events on Kafka: fastapi-bus against a plain aiokafka loop doing the same
work, interleaved over several rounds, reported as medians and ratios.

    .venv/bin/python benchmarks/kafka_consume.py --events 20000 --rounds 3

Without ``--bootstrap`` it starts a Tansu broker of its own (requirements/tansu.txt). Each
round fills a topic of 3 partitions with N events (~230-byte JSON bodies, the bus's record
headers), then times, from the first event handled to the last (so that joining the consumer
group, a few seconds, does not count), how long each side takes to read, validate with
pydantic and commit all of them, and the CPU time this process spent meanwhile per event
(steadier than the rates on a busy machine):

* ``plain``: one group consumer, ``getmany(max_records=prefetch)``, validate each, then commit
  the batch's offsets, with the options the bus gives its consumers (:data:`CONSUMER_OPTIONS`).
  It reads the event's topic only: the bus's queue also reads its own topic, where its retries
  go (empty here), which is the bus's cost to carry;
* ``fastapi-bus``: an ``EventBus`` on ``KafkaTransport`` with one handler taking the model;
* ``transport``: ``KafkaTransport.consume`` alone, with a callable that validates each message
  as the plain loop does (what the transport costs, without the bus's handler pipeline).

Each round runs every side once, starting one side later than the round before; a ratio is
the median of the rounds' own ratios (the sides of one round saw the same machine), printed
with its range. Each side's rate is printed with its range too: ``plain``'s own moves a lot
from one round to the next, as a run of 20,000 events is timed over a fraction of a second,
in which one fetch the broker holds (up to ``fetch_max_wait_ms``) or a busy moment of the
machine weighs a lot. More rounds (``--rounds 7``) and events (``--events 60000``) give
steadier medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from fastapi_bus import EventBus, EventRouter
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.base import Subscription
from fastapi_bus.transports.kafka import KafkaTransport
from fastapi_bus.transports.kafka.mapping import encode, partition_key

GROUP_OPTIONS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 300}
#: What KafkaTransport gives its group consumers besides ``GROUP_OPTIONS``.
CONSUMER_OPTIONS = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "metadata_max_age_ms": 5000,
    "fetch_max_wait_ms": 100,
}


class Tick(BaseModel):
    n: int
    payload: str


async def fill(bootstrap: str, topic: str, events: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        for start in range(0, events, 1000):
            sends = []
            for n in range(start, min(start + 1000, events)):
                message = Message(
                    name="Tick", body=Tick(n=n, payload="x" * 200).model_dump_json().encode()
                )
                # A key per event spreads them over the partitions, as a partition-key would.
                key = f"{partition_key(message).decode()}-{n}".encode()
                sends.append(
                    await producer.send(topic, message.body, key=key, headers=encode(message))
                )
            await asyncio.gather(*sends)
    finally:
        await producer.stop()


class Clock:
    def __init__(self, events: int) -> None:
        self.events = events
        self.count = 0
        self.first = 0.0
        self.done = asyncio.Event()
        self.elapsed = 0.0
        self.first_cpu = 0.0
        #: CPU seconds this process spent meanwhile (the broker runs in another process).
        self.cpu = 0.0

    def tick(self) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()
        self.count += 1
        if self.count >= self.events:
            self.elapsed = time.perf_counter() - self.first
            self.cpu = time.process_time() - self.first_cpu
            self.done.set()


async def plain(
    bootstrap: str, events: int, prefetch: int, cpu: list[float] | None = None
) -> float:
    """Seconds from the first event handled to the last (their CPU seconds go to ``cpu``)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench-plain-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1)])
    await admin.close()
    await fill(bootstrap, topic, events)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=topic,
        **CONSUMER_OPTIONS, **GROUP_OPTIONS,
    )  # fmt: skip
    await consumer.start()
    clock = Clock(events)
    try:
        while not clock.done.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=prefetch)
            for records in batch.values():
                for record in records:
                    Tick.model_validate_json(record.value)
                    clock.tick()
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()
    if cpu is not None:
        cpu.append(clock.cpu)
    return clock.elapsed


async def bus(bootstrap: str, events: int, prefetch: int, cpu: list[float] | None = None) -> float:
    """Seconds from the first event handled to the last (their CPU seconds go to ``cpu``)."""
    transport = KafkaTransport(
        f"kafka://{bootstrap}",
        prefix=f"bench-{uuid.uuid4().hex[:8]}",
        consumer_options=GROUP_OPTIONS,
    )
    router = EventRouter()
    clock = Clock(events)

    @router.on(Tick)
    async def count(event: Tick) -> None:
        clock.tick()

    the_bus = EventBus(transport, service="bench", routers=[router], prefetch=prefetch)
    await the_bus.start()
    try:
        queue = the_bus.queue_for(the_bus.routes[0])
        await transport.declare(Subscription(queue=queue, patterns=("Tick",)))
        await fill(bootstrap, transport.names.event("Tick"), events)
        await the_bus.start_consuming()
        await asyncio.wait_for(clock.done.wait(), 600)
    finally:
        await the_bus.close(grace=5)
    if cpu is not None:
        cpu.append(clock.cpu)
    return clock.elapsed


async def transport_only(
    bootstrap: str, events: int, prefetch: int, cpu: list[float] | None = None
) -> float:
    """Like :func:`bus`, without the bus: ``KafkaTransport.consume`` with a consumer callable
    that only validates, as the plain loop does. What the transport costs by itself."""
    transport = KafkaTransport(
        f"kafka://{bootstrap}",
        prefix=f"bench-{uuid.uuid4().hex[:8]}",
        consumer_options=GROUP_OPTIONS,
    )
    clock = Clock(events)

    async def consumer(message: Message) -> None:
        Tick.model_validate_json(message.body)
        clock.tick()

    subscription = Subscription(queue="bench.tick", patterns=("Tick",), prefetch=prefetch)
    await transport.start()
    try:
        await transport.declare(subscription)
        await fill(bootstrap, transport.names.event("Tick"), events)
        await transport.consume(subscription, consumer)
        await asyncio.wait_for(clock.done.wait(), 600)
    finally:
        await transport.close(grace=5)
    if cpu is not None:
        cpu.append(clock.cpu)
    return clock.elapsed


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.kafka_broker import tansu

    with tansu() as started:
        yield started


async def rounds(
    sides: dict[str, Callable[[], Awaitable[float]]], count: int
) -> dict[str, list[float]]:
    """Each side's seconds in each of ``count`` rounds. Every round runs every side once, and
    each round starts one side later than the one before, so that no side always runs first
    (or right after the same other side) while the broker's state grows over the run."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(count):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(await sides[name]())
    return times


def report(
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    events: int,
    against: tuple[str, ...] = ("plain",),
) -> dict[str, float]:
    """Print each side's median rate; its ratio to each side of ``against``, as the median of
    the ratios of the rounds (the sides of one round saw the same machine), with their range;
    and the median CPU time per event. Returns the median rates."""
    rates = {name: events / statistics.median(t) for name, t in times.items()}
    per_event = {name: statistics.median(c) / events * 1e6 for name, c in cpu.items()}
    for name, rate in rates.items():
        versus = ""
        for other in against:
            ratios = [b / a for a, b in zip(times[name], times[other], strict=True)]
            versus += (
                f"   {statistics.median(ratios):.2f}x {other} ({min(ratios):.2f}-{max(ratios):.2f})"
            )
        low, high = events / max(times[name]), events / min(times[name])
        print(
            f"  {name:12} {rate:9,.0f} ({low:7,.0f}-{high:7,.0f}) events/s{versus}   "
            f"{per_event[name]:5.1f} us CPU/event"
        )
    return rates


async def run(bootstrap: str, args: argparse.Namespace) -> None:
    cpu: dict[str, list[float]] = {"plain": [], "fastapi-bus": [], "transport": []}
    sides: dict[str, Callable[[], Awaitable[float]]] = {
        "plain": lambda: plain(bootstrap, args.events, args.prefetch, cpu["plain"]),
        "fastapi-bus": lambda: bus(bootstrap, args.events, args.prefetch, cpu["fastapi-bus"]),
        "transport": lambda: transport_only(
            bootstrap, args.events, args.prefetch, cpu["transport"]
        ),
    }
    times = await rounds(sides, args.rounds)  # interleaved, so noise hits every side alike
    print(f"{args.events} events, {args.rounds} rounds, prefetch {args.prefetch} (medians)")
    # CPU per event: steadier than rates on a busy machine (it does not count waiting).
    report(times, cpu, args.events)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="host:9092 (default: start Tansu)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=128)
    args = parser.parse_args()
    with broker(args.bootstrap) as bootstrap:
        asyncio.run(run(bootstrap, args))


if __name__ == "__main__":
    main()
