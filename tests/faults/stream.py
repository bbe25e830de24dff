"""A stream of events through real processes, counted by key: publishers in the test's event
loop (each a bus of its own, with its own connection) and ``fastapi-bus worker`` processes.

Every publish that returned is recorded; the workers append each handled key to a file. At the
end, every recorded key must have been handled; keys handled more than once are duplicates.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from fastapi_bus import EventBus
from tests.faults.fault_app import Tick, events, transport
from tests.utils import wait_until

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.faults.fault_app:app"


@dataclasses.dataclass
class Report:
    """What one run measured."""

    published: int
    publish_errors: int
    handled: int
    duplicates: int
    missing: int
    seconds: float

    def line(self, scenario: str) -> str:
        return (
            f"{scenario}: {self.published} published (+{self.publish_errors} failed publishes), "
            f"{self.handled} handled, {self.missing} missing, {self.duplicates} duplicates, "
            f"{self.seconds:.1f}s"
        )


class Stream:
    def __init__(
        self,
        url: str,
        out: Path,
        *,
        publishers: int = 3,
        workers: int = 2,
        pace: float = 0.02,
        events_at_least: int = 0,
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.url = url
        self.out = out
        self.env = {
            **os.environ,
            "FAULTS_URL": url,
            "FAULTS_EXCHANGE": f"faults-{tag}",
            "FAULTS_SERVICE": f"faults{tag}",
            "FAULTS_OUT": str(out),
        }
        self.publisher_count = publishers
        self.worker_count = workers
        self.pace = pace
        self.per_publisher = -(-events_at_least // publishers)
        self.published: set[str] = set()
        self.errors: list[str] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self._buses: list[EventBus] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._started = 0.0

    # running

    async def start(self) -> None:
        self._started = time.monotonic()
        self.workers = [self._worker(number) for number in range(self.worker_count)]
        for number in range(self.publisher_count):
            bus = EventBus(
                transport(self.url),
                service=self.env["FAULTS_SERVICE"],
                routers=[events],
                consume=False,
            )
            await bus.start()
            self._buses.append(bus)
            self._tasks.append(asyncio.create_task(self._publish(number, bus)))

    def _worker(self, number: int) -> subprocess.Popen[bytes]:
        """A ``fastapi-bus worker`` process; its log goes to ``worker-<number>.err``."""
        with (self.out / f"worker-{number}.err").open("wb") as sink:
            return subprocess.Popen(
                [sys.executable, "-m", "fastapi_bus.cli", "worker", TARGET],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )

    async def _publish(self, number: int, bus: EventBus) -> None:
        sequence = 0
        while not (self._stop.is_set() and sequence >= self.per_publisher):
            key = f"{number}-{sequence}"
            sequence += 1
            try:
                await bus.publish(Tick(key=key))
            except Exception as exc:  # counted and reported: the event is not owed
                self.errors.append(f"{key}: {exc}")
            else:
                self.published.add(key)
            # Pace the stream so that it runs through the faults, not to wait for anything.
            await asyncio.sleep(self.pace)

    # counting

    def handled(self) -> collections.Counter[str]:
        counts: collections.Counter[str] = collections.Counter()
        for path in self.out.glob("handled-*.txt"):
            counts.update(path.read_text().split())
        return counts

    def handled_count(self) -> int:
        return sum(self.handled().values())

    async def wait_handled(self, at_least: int, timeout: float = 60.0) -> None:
        """Wait until the workers handled ``at_least`` events (duplicates included)."""
        self.check_workers()
        await wait_until(
            lambda: self.handled_count() >= at_least, timeout, f"{at_least} handled events"
        )

    async def wait_progress(self, events: int = 30, timeout: float = 60.0) -> None:
        """Wait until both publishing and handling moved on by ``events``: the stream flows."""
        published, handled = len(self.published), self.handled_count()
        await wait_until(
            lambda: len(self.published) >= published + events, timeout, "publishes to return"
        )
        await self.wait_handled(handled + events, timeout)

    def check_workers(self) -> None:
        for number, worker in enumerate(self.workers):
            if worker.poll() is not None:
                raise AssertionError(
                    f"worker {number} exited ({worker.returncode}):\n{self.worker_log(number)}"
                )

    def worker_log(self, number: int) -> str:
        return (self.out / f"worker-{number}.err").read_text(errors="replace")

    async def wait_logged(self, line: str, times: int, timeout: float = 60.0) -> None:
        """Wait until every worker's log holds ``line`` at least ``times`` times."""

        def logged() -> bool:
            self.check_workers()
            return all(
                self.worker_log(number).count(line) >= times for number in range(len(self.workers))
            )

        await wait_until(logged, timeout, f"every worker to log {line!r} {times} time(s)")

    async def finish(self, timeout: float = 120.0) -> Report:
        """Stop publishing, wait until every published event is handled, stop the workers."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)
        for bus in self._buses:
            await bus.close()
        published = set(self.published)
        self.check_workers()
        try:
            await wait_until(
                lambda: published <= set(self.handled()), timeout, "every published event"
            )
        finally:
            await self.stop_workers()
        handled = self.handled()
        return Report(
            published=len(published),
            publish_errors=len(self.errors),
            handled=len(handled),
            duplicates=sum(handled.values()) - len(handled),
            missing=len(published - set(handled)),
            seconds=time.monotonic() - self._started,
        )

    async def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                await asyncio.to_thread(worker.wait, 30)
            except subprocess.TimeoutExpired:
                worker.kill()
                await asyncio.to_thread(worker.wait, 30)

    async def abort(self) -> None:
        """Clean up after a failure: cancel the publishers, stop the workers."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for bus in self._buses:
            with contextlib.suppress(Exception):  # the node may be gone; the test failed anyway
                await asyncio.wait_for(bus.close(grace=0), 20)
        await self.stop_workers()
