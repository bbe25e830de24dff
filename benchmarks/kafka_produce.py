"""Publish N events to Kafka: fastapi-bus against a plain aiokafka producer doing the same
work, interleaved over several rounds, reported as medians and ratios.

    .venv/bin/python benchmarks/kafka_produce.py --events 20000 --rounds 3

Without ``--bootstrap`` it starts a Tansu broker of its own (requirements/tansu.txt). Every
side builds a pydantic model per event (~230-byte JSON), sends it to a fresh topic of 3
partitions with ``acks="all"`` (what the bus's producer uses) and waits until Kafka has taken
it. Each round checks afterwards that the topic holds exactly N records. Two ways of waiting:

* ``--window 1``: one event at a time, each awaited before the next (``send_and_wait``, and
  ``await bus.publish(...)``);
* ``--window W`` (default 100): W sends in flight at once, awaited together, then the next W
  (``send`` and ``asyncio.gather`` of the futures for the plain producer, ``gather`` of
  ``bus.publish``).

``gather`` of W ``bus.publish`` calls runs each in a task of its own, as concurrent requests
of a web app do; so with a window, the ``plain tasks`` side does the same with the plain
producer (``gather`` of W ``send_and_wait`` calls), and ``fastapi-bus`` and ``transport`` are
compared with it as well as with ``plain``.

The plain producer sends the same records as the bus: the model's JSON, the record key the bus
uses (the event name) and the headers the bus writes (a new message id, the event name, the
time), made inline with ``os.urandom`` and ``datetime.now``; the producer options are the bus's
(``acks="all"``, aiokafka's defaults otherwise). Two more sides show what the transport costs
by itself, without the bus's encoding and validation of the event, with messages made from
the model's JSON:

* ``transport``: ``KafkaTransport.publish``, as the bus calls it (with ``--window W``, W
  concurrent calls under ``asyncio.gather``: a task each, as concurrent requests have);
* ``publish_many``: ``KafkaTransport.publish_many`` of each window (the transport's pipelined
  call, what the bus's outbox uses: no task per message, like the plain side's ``send``).

With a window, ``bus many`` is the bus's own batch call: ``EventBus.publish_many`` of each
window's models (validated, encoded, then handed to ``KafkaTransport.publish_many``), the
bus's counterpart of the ``plain`` side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import BaseModel

from fastapi_bus import EventBus
from fastapi_bus.core.messages import Message
from fastapi_bus.transports.kafka import KafkaTransport

PARTITIONS = 3
PAYLOAD = "x" * 200


class Tick(BaseModel):
    n: int
    payload: str


async def count_records(bootstrap: str, topic: str, expected: int) -> int:
    """How many records ``topic`` holds (it was made for one round, so it started empty), read
    from the start until ``expected`` are found and one more fetch finds nothing. Read, not
    taken from the end offsets: Tansu's high watermark may lag the records it serves."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        found = 0
        quiet = 0
        deadline = time.monotonic() + 60
        while quiet < (1 if found >= expected else 3) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            got = sum(len(records) for records in batch.values())
            found += got
            quiet = 0 if got else quiet + 1
        return found
    finally:
        await consumer.stop()


async def plain(
    bootstrap: str, events: int, window: int, cpu: list[float] | None = None, tasks: bool = False
) -> float:
    """Seconds for a plain AIOKafkaProducer to send ``events`` events, ``window`` at once
    (the CPU seconds of this process meanwhile go to ``cpu``); ``tasks``: the window's sends
    as concurrent ``send_and_wait`` calls (a task each, under ``asyncio.gather``)."""
    topic = f"bench-plain-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    key = b"Tick"

    def headers() -> list[tuple[str, bytes]]:
        """What the bus writes: a message id, the event name, the time."""
        now = datetime.now(timezone.utc).isoformat().encode()
        return [("bus-id", os.urandom(16).hex().encode()), ("bus-name", key), ("bus-at", now)]

    try:
        start, start_cpu = time.perf_counter(), time.process_time()
        if window <= 1:
            for n in range(events):
                body = Tick(n=n, payload=PAYLOAD).model_dump_json().encode()
                await producer.send_and_wait(topic, body, key=key, headers=headers())
        elif tasks:

            async def one(n: int) -> None:
                body = Tick(n=n, payload=PAYLOAD).model_dump_json().encode()
                await producer.send_and_wait(topic, body, key=key, headers=headers())

            for first in range(0, events, window):
                await asyncio.gather(*(one(n) for n in range(first, min(first + window, events))))
        else:
            for first in range(0, events, window):
                sent = []
                for n in range(first, min(first + window, events)):
                    body = Tick(n=n, payload=PAYLOAD).model_dump_json().encode()
                    sent.append(await producer.send(topic, body, key=key, headers=headers()))
                await asyncio.gather(*sent)
        elapsed = time.perf_counter() - start
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
    finally:
        await producer.stop()
    await check(bootstrap, topic, events)
    return elapsed


async def bus(
    bootstrap: str, events: int, window: int, cpu: list[float] | None = None, many: bool = False
) -> float:
    """Seconds for ``EventBus.publish`` on KafkaTransport to publish ``events`` events (the
    CPU seconds of this process meanwhile go to ``cpu``). ``many``: each window in one
    ``EventBus.publish_many``."""
    transport = KafkaTransport(f"kafka://{bootstrap}", prefix=f"bench-{uuid.uuid4().hex[:8]}")
    the_bus = EventBus(transport, service="bench")
    await the_bus.start()
    try:
        await the_bus.publish(Tick(n=-1, payload=""))  # creates the topic, not timed
        start, start_cpu = time.perf_counter(), time.process_time()
        if window <= 1:
            for n in range(events):
                await the_bus.publish(Tick(n=n, payload=PAYLOAD))
        elif many:
            for first in range(0, events, window):
                await the_bus.publish_many(
                    [Tick(n=n, payload=PAYLOAD) for n in range(first, min(first + window, events))]
                )
        else:
            for first in range(0, events, window):
                await asyncio.gather(
                    *(
                        the_bus.publish(Tick(n=n, payload=PAYLOAD))
                        for n in range(first, min(first + window, events))
                    )
                )
        elapsed = time.perf_counter() - start
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
    finally:
        await the_bus.close(grace=5)
    await check(bootstrap, transport.names.event("Tick"), events + 1)
    return elapsed


async def transport_only(
    bootstrap: str, events: int, window: int, cpu: list[float] | None = None, many: bool = False
) -> float:
    """Like :func:`bus`, without the bus: ``KafkaTransport.publish`` of a message made from the
    model's JSON (what the transport costs by itself, without encoding and validating the
    event and the publisher's bookkeeping). ``many``: each window in one ``publish_many``."""
    transport = KafkaTransport(f"kafka://{bootstrap}", prefix=f"bench-{uuid.uuid4().hex[:8]}")
    await transport.start()

    def message(n: int) -> Message:
        return Message(name="Tick", body=Tick(n=n, payload=PAYLOAD).model_dump_json().encode())

    try:
        await transport.publish(message(-1))  # creates the topic, not timed
        start, start_cpu = time.perf_counter(), time.process_time()
        if window <= 1:
            for n in range(events):
                await transport.publish(message(n))
        else:
            for first in range(0, events, window):
                numbers = range(first, min(first + window, events))
                if many:
                    await transport.publish_many([(message(n), None) for n in numbers])
                else:
                    await asyncio.gather(*(transport.publish(message(n)) for n in numbers))
        elapsed = time.perf_counter() - start
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
    finally:
        await transport.close(grace=5)
    await check(bootstrap, transport.names.event("Tick"), events + 1)
    return elapsed


async def check(bootstrap: str, topic: str, expected: int) -> None:
    found = await count_records(bootstrap, topic, expected)
    if found != expected:
        raise SystemExit(f"{topic} holds {found} records, not {expected}")


async def run(bootstrap: str, args: argparse.Namespace) -> dict[str, float]:
    """Interleaved rounds of both sides; prints and returns the median rates (events/s)."""
    cpu: dict[str, list[float]] = {"plain": [], "fastapi-bus": [], "transport": []}
    sides: dict[str, Callable[[], Awaitable[float]]] = {
        "plain": lambda: plain(bootstrap, args.events, args.window, cpu["plain"]),
        "fastapi-bus": lambda: bus(bootstrap, args.events, args.window, cpu["fastapi-bus"]),
        "transport": lambda: transport_only(bootstrap, args.events, args.window, cpu["transport"]),
    }
    if args.window > 1:
        cpu["bus many"] = []
        sides["bus many"] = lambda: bus(
            bootstrap, args.events, args.window, cpu["bus many"], many=True
        )
        cpu["publish_many"] = []
        sides["publish_many"] = lambda: transport_only(
            bootstrap, args.events, args.window, cpu["publish_many"], many=True
        )
        cpu["plain tasks"] = []
        sides["plain tasks"] = lambda: plain(
            bootstrap, args.events, args.window, cpu["plain tasks"], tasks=True
        )
    from benchmarks.kafka_consume import report, rounds

    times = await rounds(sides, args.rounds)  # interleaved, so noise hits every side alike
    print(f"{args.events} events, {args.rounds} rounds, window {args.window}, acks=all (medians)")
    # CPU per event: steadier than rates on a busy machine (it does not count waiting).
    against = ("plain", "plain tasks") if "plain tasks" in sides else ("plain",)
    return report(times, cpu, args.events, against)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="host:9092 (default: start Tansu)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=100, help="sends in flight at once")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.kafka_consume import broker  # the given broker, or a Tansu of our own

    with broker(args.bootstrap) as bootstrap:
        asyncio.run(run(bootstrap, args))


if __name__ == "__main__":
    main()
