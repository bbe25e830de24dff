"""A flame graph of fastapi-bus consuming from RabbitMQ, with py-spy (``pip install py-spy``).

    python -m benchmarks.flame --events 20000 --out docs/images/consume-flame.svg

It fills a classic queue with N events, then records only while the bus consumes them (py-spy
attaches to this process after the queue is full and stops when the last event is handled),
so the filling does not show. Without py-spy it prints a cProfile top 20 instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from benchmarks import rabbit
from benchmarks.common import Config, Stopwatch, Tick, check_counts


def retitle(svg: Path, events: int) -> None:
    """py-spy titles the graph with its command line: say what it shows instead."""
    title = f"fastapi-bus consuming {events:,} events from a RabbitMQ classic queue (py-spy)"
    text = re.sub(r'(<text id="title"[^>]*>)[^<]*', lambda m: m.group(1) + title,
                  svg.read_text(), count=1)  # fmt: skip
    svg.write_text(text)


async def consume(url: str, events: int, out: Path | None, rate: int, spy: str | None) -> None:
    from fastapi_bus import EventRouter

    router = EventRouter()
    watch = Stopwatch(events)

    @router.on(Tick)
    async def handle(event: Tick) -> None:
        watch.handled(event.n)

    the_bus = rabbit.make_bus(url, router, "classic")
    await the_bus.start()
    profiler: cProfile.Profile | None = None
    recorder: asyncio.subprocess.Process | None = None
    try:
        await rabbit.fill(url, rabbit.bus_queue(the_bus), events)
        if out is not None and spy is not None:
            recorder = await asyncio.create_subprocess_exec(
                spy, "record", "--pid", str(os.getpid()), "--rate", str(rate), "--output",
                str(out), "--format", "flamegraph", "--nonblocking",
            )  # fmt: skip
            await asyncio.sleep(1)  # py-spy attaches
        else:
            profiler = cProfile.Profile()
            profiler.enable()
        start = time.perf_counter()
        await the_bus.start_consuming()
        await watch.wait(Config(events=events).timeout())
        elapsed = time.perf_counter() - start
        if profiler is not None:
            profiler.disable()
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            await asyncio.wait_for(recorder.wait(), 60)
        await the_bus.close(grace=5)
        check_counts("fastapi-bus", events, watch.seen)
        print(f"{events / elapsed:,.0f} events/s while profiled", file=sys.stderr)
    finally:
        await the_bus.close(grace=0)
        await rabbit.remove_bus(url, the_bus)
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=None, help="the SVG (else: cProfile)")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    found = spy if Path(spy).exists() else None
    if args.out is not None and found is None:
        print("py-spy is not installed: a cProfile top 20 instead", file=sys.stderr)
    asyncio.run(consume(args.url, args.events, args.out, args.rate, found))
    if args.out is not None and found is not None:
        retitle(args.out, args.events)


if __name__ == "__main__":
    main()
