"""fastapi-bus against the plain drivers doing the same job, on the same broker, in the same run.

    python -m benchmarks                        # every workload, 3 rounds, 20,000 events
    python -m benchmarks --only consume-classic,publish --rounds 5
    python -m benchmarks --rounds 3 --out docs/performance.md   # refresh the docs' table

Each workload runs the plain driver and fastapi-bus in turn, once per round, and reports the
medians and their ratio. Every side's count is checked (each event handled exactly once,
queues holding what they should): a run that loses, invents or repeats an event fails the
command with exit code 1, however fast it was.

``--out FILE`` writes the table to FILE; if FILE has the lines ``<!-- benchmarks:start -->``
and ``<!-- benchmarks:end -->``, only what is between them is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.common import Config, CountError, Row, Skipped, SkipWorkload, table

Workload = Callable[[Config], Awaitable[list[Row]]]

START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


def _load(module: str, function: str = "run") -> Workload:
    async def run(config: Config) -> list[Row]:
        import importlib

        workload: Workload = getattr(importlib.import_module(f"benchmarks.{module}"), function)
        return await workload(config)

    return run


#: The workloads, in the order they run: name -> (what it measures, how to run it).
WORKLOADS: dict[str, tuple[str, Workload]] = {
    "consume-classic": (
        "RabbitMQ: consume N waiting events, classic queue",
        _load("rabbit_consume", "run_classic"),
    ),
    "consume-quorum": (
        "RabbitMQ: consume N waiting events, quorum queue",
        _load("rabbit_consume", "run_quorum"),
    ),
    "consume-features": (
        "RabbitMQ: consume, classic queue, a handler with a dependency and idempotent=True",
        _load("rabbit_consume", "run_features"),
    ),
    "publish": ("RabbitMQ: publish with confirms, sequential and 256 at once", _load("publish")),
    "http": ("HTTP endpoint publishing one event, under uvicorn", _load("http_publish")),
    "latency": ("RabbitMQ: end-to-end p99 latency at a fixed rate", _load("latency")),
    "rss": ("RabbitMQ: the consumer process's peak memory (and --soak)", _load("rss")),
    "memory": ("memory:// against an asyncio.Queue loop", _load("memory")),
    "redis": (
        "Redis: consume N waiting events (benchmarks/redis_consume.py)",
        _load("redis_suite"),
    ),
    "kafka": (
        "Kafka: consume N waiting events (benchmarks/kafka_consume.py)",
        _load("kafka_suite"),
    ),
}


def parse(argv: list[str] | None = None) -> tuple[Config, list[str], Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(__doc__ or "").splitlines()[0],
        epilog="workloads: " + "; ".join(f"{k}: {v[0]}" for k, v in WORKLOADS.items()),
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--events", type=int, default=20_000, help="events per side and round")
    parser.add_argument("--only", default="", help="NAME[,NAME]: run only these workloads")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (tests)")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--kafka-bootstrap", default=None, help="host:9092 (default: start a Tansu broker)"
    )
    parser.add_argument("--requests", type=int, default=3_000, help="HTTP requests per side")
    parser.add_argument(
        "--rate", type=int, default=1_000,
        help="events/s of the latency workload and the soak (default 1000); keep it below "
        "what the broker confirms (the publish rows) or the latency is queueing",
    )  # fmt: skip
    parser.add_argument(
        "--soak", type=float, default=0.0, metavar="SECONDS",
        help="also run a steady flow this long per side and report its RSS",
    )  # fmt: skip
    parser.add_argument(
        "--retries", type=int, default=1,
        help="run a workload again when it failed with an error (a broker restarted), not a "
        "wrong count (default 1)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()] or list(WORKLOADS)
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    config = Config(
        events=args.events,
        rounds=args.rounds,
        url=args.url,
        redis_url=args.redis_url,
        kafka_bootstrap=args.kafka_bootstrap,
        requests=args.requests,
        rate=args.rate,
        soak=args.soak,
        retries=max(args.retries, 0),
    )
    if args.quick:
        config = dataclasses.replace(
            config, events=300, rounds=1, requests=100, seconds=1.0, quick=True
        )
    if min(config.rounds, config.events, config.requests, config.rate) < 1:
        parser.error("--rounds, --events, --requests and --rate must be at least 1")
    return config, names, args.out


def describe(config: Config, names: list[str]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{config.events:,} events per side and round, {config.rounds} interleaved round(s), "
        f"medians; {config.requests:,} HTTP requests; latency at {config.rate:,} events/s for "
        f"{config.seconds:g} s; Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"{now}"
    )


def write(path: Path, text: str) -> None:
    if path.exists():
        current = path.read_text()
        if START in current and END in current:
            before, _, rest = current.partition(START)
            _, _, after = rest.partition(END)
            path.write_text(f"{before}{START}\n{text}{END}{after}")
            return
    path.write_text(text)


async def reachable(urls: list[str], timeout: float) -> bool:
    """Wait until every broker in ``urls`` accepts connections (``timeout`` seconds at most)."""
    deadline = time.monotonic() + timeout
    for url in urls:
        parts = urlsplit(url)
        while True:
            try:
                _, writer = await asyncio.open_connection(parts.hostname, parts.port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(1)
    return True


async def run(config: Config, names: list[str]) -> tuple[list[Row], list[Skipped], list[str]]:
    rows: list[Row] = []
    skipped: list[Skipped] = []
    failures: list[str] = []
    brokers = [config.url, config.redis_url]
    for name in names:
        started = time.perf_counter()
        print(f"[{name}] {WORKLOADS[name][0]} ...", file=sys.stderr, flush=True)
        for attempt in range(config.retries + 1):
            try:
                rows.extend(await WORKLOADS[name][1](config))
            except CountError as exc:  # never retried: a wrong run is a wrong run
                failures.append(f"{name}: COUNT CHECK FAILED: {exc}")
                print(f"[{name}] COUNT CHECK FAILED: {exc}", file=sys.stderr, flush=True)
            except SkipWorkload as exc:
                skipped.append(Skipped(name, str(exc)))
                print(f"[{name}] skipped: {exc}", file=sys.stderr, flush=True)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
                print(f"[{name}] failed: {problem}", file=sys.stderr, flush=True)
                if attempt < config.retries and await reachable(brokers, 300):
                    # A broker that went away (restarted) spoils a run, not the code: the whole
                    # workload runs again, all its rounds, once the broker is back.
                    print(f"[{name}] running it again", file=sys.stderr, flush=True)
                    await asyncio.sleep(5)
                    continue
                failures.append(f"{name}: {problem}")
            else:
                print(f"[{name}] done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            break
    return rows, skipped, failures


def main(argv: list[str] | None = None) -> int:
    config, names, out = parse(argv)
    rows, skipped, failures = asyncio.run(run(config, names))
    text = f"{describe(config, names)}\n\n{table(rows, skipped)}"
    print(text, end="")
    if out is not None:
        write(out, text)
    if failures:
        print("\nFAILED (the numbers of a side that lost, invented or repeated events do not "
              "count):", file=sys.stderr)  # fmt: skip
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
