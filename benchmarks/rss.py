"""The memory of a consumer process: each side runs in a child process of its own, so that its
resident set is its own.

* peak: the child consumes N waiting events from a classic queue (the consume workload) and
  reports its peak resident set (``VmHWM``), imports included. The plain child imports
  aio-pika and pydantic. The fastapi-bus child imports what a worker module built on an
  ``EventBus`` imports (``fastapi_bus`` and its RabbitMQ transport; its handler uses no FastAPI
  feature, so FastAPI is never imported), and a second fastapi-bus child also builds a FastAPI
  app with the bus's ``FastAPI`` class first, as a worker that loads the web app does: the
  two rows tell what FastAPI's import adds (about 7 MiB);
* ``--soak SECONDS``: the child publishes and consumes a steady ``--rate`` events/s (one side
  of the latency workload, alone) for that long and reports its resident set (``VmRSS``) a
  tenth of the way in, halfway and at the end of the flow (before the count check, whose list
  of every event handled the allocator keeps): a consumer that leaks keeps growing from one
  sample to the next; one whose allocator warms up levels off.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from benchmarks.common import Config, CountError, Row, median

ROOT = Path(__file__).resolve().parent.parent


def status(field: str) -> float:
    """A ``/proc/self/status`` field in MiB (``VmHWM``, ``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


#: The children of the peak rows: the plain driver, a worker built on an EventBus, and a
#: worker that also builds a FastAPI app (as one whose target is the web app does).
SIDES = ("plain", "bus", "bus-fastapi")


async def child(side: str, url: str, events: int, soak: float, rate: int) -> dict[str, float]:
    from benchmarks import latency, rabbit_consume

    timeout = Config(events=events).timeout()
    if not soak:
        if side == "bus-fastapi":
            from fastapi_bus import FastAPI

            FastAPI()
        consume = rabbit_consume.plain if side == "plain" else rabbit_consume.bus
        await consume(url, events, "classic", timeout)
        loaded = "fastapi" in sys.modules
        if loaded != (side == "bus-fastapi"):
            raise RuntimeError(f"the {side} child {'imported' if loaded else 'lacks'} FastAPI")
        return {"peak": status("VmHWM")}
    samples: list[tuple[float, float]] = []

    async def sample() -> None:
        while True:
            samples.append((time.monotonic(), status("VmRSS")))
            await asyncio.sleep(soak / 100)

    publishing_ends = time.monotonic() + soak
    sampler = asyncio.create_task(sample())
    await latency.steady(side, url, rate, int(rate * soak), soak + timeout)
    sampler.cancel()
    # The samples taken while the events flow: not those after the flow's count check, which
    # lists every event handled (several MiB for a long soak, kept by the allocator after).
    flowing = [rss for at, rss in samples if at <= publishing_ends]
    return {
        "start": flowing[len(flowing) // 10],
        "middle": flowing[len(flowing) // 2],
        "end": flowing[-1],
    }


async def in_child(side: str, config: Config, soak: float) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.rss", side, config.url, str(config.events), str(soak),
        str(config.rate), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    answer = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    if "count_error" in answer:
        raise CountError(f"{side} consumer process: {answer['count_error']}")
    if process.returncode != 0 or "error" in answer:
        raise RuntimeError(f"the {side} consumer process failed: {answer.get('error', out)!r}")
    return {key: float(value) for key, value in answer.items()}


async def run(config: Config) -> list[Row]:
    peaks: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(config.rounds):
        for side in peaks:
            peaks[side].append((await in_child(side, config, 0))["peak"])
    rows = [
        Row(
            f"RabbitMQ consumer process, {config.events:,} events{what}",
            "peak RSS MiB",
            median(peaks["plain"]),
            median(peaks[side]),
            higher_is_better=False,
        )
        for side, what in (("bus", ""), ("bus-fastapi", ", the worker loads a FastAPI app"))
    ]
    if config.soak:
        soaked = {side: await in_child(side, config, config.soak) for side in ("plain", "bus")}
        what = f"RabbitMQ soak, {config.rate:,} events/s for {config.soak:g} s"
        for moment, when in (("start", "a tenth in"), ("middle", "halfway"), ("end", "the end")):
            rows.append(
                Row(
                    what,
                    f"RSS MiB at {when}",
                    soaked["plain"][moment],
                    soaked["bus"][moment],
                    higher_is_better=False,
                )
            )
    return rows


def main() -> None:
    side, url, events, soak, rate = sys.argv[1:6]
    try:
        answer: dict[str, object] = dict(
            asyncio.run(child(side, url, int(events), float(soak), int(rate)))
        )
    except CountError as exc:
        answer = {"count_error": str(exc)}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
