"""An HTTP endpoint that publishes one event per request, served by uvicorn in a child process:
the server's CPU time per request and the requests per second under a fixed load.

* plain: a ``fastapi.FastAPI`` app whose ``POST /orders`` publishes with aio-pika (connection
  and confirming channel opened in the lifespan);
* fastapi-bus: a ``fastapi_bus.FastAPI`` app with a ``BusExtension`` whose ``POST /orders``
  takes ``bus: Bus`` and calls ``bus.publish(order)`` (sent, and confirmed, before the
  response).

The load: ``--requests`` requests from an ``httpx`` client, 32 at once, after 50 to warm up.
The server's CPU time comes from ``/proc/<pid>/stat``. Every response must be a 2xx and the
queue bound to the exchange must hold one message per request.
"""

# No ``from __future__ import annotations``: FastAPI must see the endpoints' real annotations
# (``Bus`` is imported inside ``bus_app``, so that the plain server never imports fastapi-bus).

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika

from benchmarks import rabbit
from benchmarks.common import PAYLOAD, Config, CountError, Row, Tick, check_total, median

WARM_UP = 50
ROOT = Path(__file__).resolve().parent.parent


def plain_app(url: str, exchange_name: str) -> Any:
    import fastapi

    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        connection = await aio_pika.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        state["exchange"] = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        yield
        await connection.close()

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.post("/orders", status_code=202)
    async def place(order: Tick) -> dict[str, int]:
        body = order.model_dump_json().encode()
        await state["exchange"].publish(rabbit.amqp_message(body), routing_key="Tick")
        return {"accepted": order.n}

    return app


def bus_app(url: str, exchange_name: str) -> Any:
    from fastapi_bus import Bus, BusExtension, FastAPI
    from fastapi_bus.transports import transport_from_url

    app = FastAPI()
    app.include_extension(
        BusExtension(
            transport=transport_from_url(url, exchange=exchange_name, queue_type="classic"),
            service="bench",
        )
    )

    @app.post("/orders", status_code=202)
    async def place(order: Tick, bus: Bus) -> dict[str, int]:
        await bus.publish(order)
        return {"accepted": order.n}

    return app


def serve() -> None:
    """The child process: ``python -m benchmarks.http_publish SIDE URL EXCHANGE PORT``."""
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("side", choices=["plain", "bus"])
    parser.add_argument("url")
    parser.add_argument("exchange")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    make = plain_app if args.side == "plain" else bus_app
    uvicorn.run(
        make(args.url, args.exchange),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def load(base: str, requests: int, concurrency: int, first: int) -> list[int]:
    """POST ``requests`` orders, ``concurrency`` at once; the status codes that were not 2xx."""
    import httpx2

    failed: list[int] = []
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def worker(offset: int) -> None:
            for n in range(first + offset, first + requests, concurrency):
                response = await client.post("/orders", json={"n": n, "payload": PAYLOAD})
                if not 200 <= response.status_code < 300:
                    failed.append(response.status_code)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return failed


async def side(config: Config, name: str) -> tuple[float, float]:
    """Requests per second, and server CPU milliseconds per request."""
    tag = uuid.uuid4().hex[:8]
    exchange, queue = f"bench-http-{tag}", f"bench-http-{tag}"
    connection = await aio_pika.connect(config.url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        bound = await channel.declare_queue(
            queue, durable=True, arguments=rabbit.queue_arguments("classic")
        )
        await bound.bind(declared, "Tick")
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.http_publish", name, config.url, exchange, str(port),
        cwd=ROOT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {name} HTTP server did not start") from None
                await asyncio.sleep(0.1)
        failed = await load(base, WARM_UP, min(WARM_UP, config.http_concurrency), 0)
        cpu = cpu_seconds(server.pid)
        start = time.perf_counter()
        failed += await load(base, config.requests, config.http_concurrency, WARM_UP)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(server.pid) - cpu
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    try:
        if failed:
            raise CountError(
                f"{name} HTTP server: {len(failed)} responses were not 2xx (e.g. {failed[0]})"
            )
        check_total(f"{name} HTTP server: in the queue", WARM_UP + config.requests,
                    await rabbit.depth(config.url, queue))  # fmt: skip
    finally:
        await rabbit.remove(config.url, [queue], exchange)
    return config.requests / elapsed, cpu * 1000 / config.requests


async def run(config: Config) -> list[Row]:
    results: dict[str, list[tuple[float, float]]] = {"plain": [], "bus": []}
    for _ in range(config.rounds):
        for name in results:
            results[name].append(await side(config, name))
    rate = {name: median([r[0] for r in rounds]) for name, rounds in results.items()}
    cpu = {name: median([r[1] for r in rounds]) for name, rounds in results.items()}
    what = f"HTTP POST publishing one event ({config.http_concurrency} concurrent)"
    return [
        Row(what, "requests/s", rate["plain"], rate["bus"], higher_is_better=True),
        Row(what, "server CPU ms/request", cpu["plain"], cpu["bus"], higher_is_better=False),
    ]


if __name__ == "__main__":
    serve()
