"""``fastapi-bus worker``: real worker processes against a real RabbitMQ.

Each test gets its own exchange and service (so its own queues), a log file where the app's
handlers and lifespan append lines, and a release directory: ``slow_job`` runs until the test
creates a file named after the job there, so a test decides when a handler finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fastapi_bus import BusState, get_bus
from fastapi_bus.ops.supervisor import Supervisor
from tests.utils import free_port, wait_until, wait_until_sync
from tests.worker_app import create_app, delete_topology

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests.worker_app:app"
#: Starting a Python process, connecting, stopping: generous, as CI machines can be slow.
TIMEOUT = 30.0


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def handled_total(port: int, handler: str) -> float:
    """``fastapi_bus_handled_total`` of ``handler``, scraped from a health port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        text = response.read().decode()
    finally:
        connection.close()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "fastapi_bus_handled_total" and sample.labels["handler"] == handler
    )


def answers(port: int, path: str, status: int) -> bool:
    try:
        return get(port, path)[0] == status
    except OSError:  # not listening yet
        return False


class Process:
    """A ``fastapi-bus worker`` child; its stderr goes to a file the test can read."""

    def __init__(
        self, args: list[str], env: dict[str, str], stderr: Path, target: str = TARGET
    ) -> None:
        self.stderr = stderr
        with stderr.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fastapi_bus.cli", "worker", target, *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_for_output(self, text: str) -> None:
        def seen() -> bool:
            if text in self.output():
                return True
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited before {text!r}:\n{self.output()}")
            return False

        wait_until_sync(seen, TIMEOUT, what=repr(text))

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self) -> int:
        return self.process.wait(TIMEOUT)


class Deployment:
    """One test's namespace on the broker, its log and release files, and its workers."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        tag = uuid.uuid4().hex[:10]
        self.url = url
        self.exchange = f"test-worker-{tag}"
        self.service = f"worker{tag}"
        self.tmp = tmp_path
        self.log = tmp_path / "handled.log"
        self.release = tmp_path / "release"
        self.release.mkdir()
        self.env = {
            "FASTAPI_BUS_TEST_URL": url,
            "FASTAPI_BUS_TEST_EXCHANGE": self.exchange,
            "FASTAPI_BUS_TEST_SERVICE": self.service,
            "FASTAPI_BUS_TEST_LOG": str(self.log),
            "FASTAPI_BUS_TEST_RELEASE": str(self.release),
            # The web processes' setting; the worker command must consume regardless.
            "FASTAPI_BUS_CONSUME": "false",
        }
        self.processes: list[Process] = []

    def worker(
        self, *args: str, url: str | None = None, metrics: bool = False, target: str = TARGET
    ) -> Process:
        stderr = self.tmp / f"worker-{len(self.processes)}.err"
        env = {**os.environ, **self.env}
        if url is not None:
            env["FASTAPI_BUS_TEST_URL"] = url
        if metrics:
            env["FASTAPI_BUS_TEST_METRICS"] = "1"
        process = Process(list(args), env, stderr, target)
        self.processes.append(process)
        return process

    @contextlib.contextmanager
    def web(self) -> Iterator[TestClient]:
        """The web side: the same app module, publish-only through FASTAPI_BUS_CONSUME."""
        app = create_app()
        with TestClient(app) as client:
            bus = get_bus(app)
            assert bus.consume is False
            yield client
            assert bus.state is BusState.STARTED  # never consumed

    def rows(self, what: str | None = None) -> list[tuple[int, str, str, str]]:
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            pid, kind, ident, detail = line.split(" ")
            if what is None or kind == what:
                found.append((int(pid), kind, ident, detail))
        return found

    def pids(self, what: str) -> list[int]:
        """Worker processes that logged ``what``, in order of first appearance (the web app,
        in this process, logs its lifespan too)."""
        return list(dict.fromkeys(row[0] for row in self.rows(what) if row[0] != os.getpid()))

    def jobs(self, detail: str) -> list[tuple[int, str]]:
        return [(pid, ident) for pid, _, ident, d in self.rows("job") if d == detail]

    def release_job(self, job_id: str) -> None:
        (self.release / job_id).touch()

    def close(self) -> None:
        for process in self.processes:
            if process.process.poll() is None:
                process.process.kill()
            process.process.wait()
        asyncio.run(delete_topology(self.url, self.exchange, self.service))


@pytest.fixture
def deployment(
    rabbitmq_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    made = Deployment(rabbitmq_url, tmp_path)
    for key, value in made.env.items():
        monkeypatch.setenv(key, value)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.rabbitmq
def test_the_web_publishes_and_the_worker_handles(deployment: Deployment) -> None:
    with deployment.web() as client:
        # Before any worker runs: the web process declared the queues, so these wait there.
        for order in ("o1", "o2", "o3"):
            assert client.post(f"/orders/{order}").status_code == 200
        worker = deployment.worker("--handlers", "record_order")
        worker.wait_for_output("worker ready")
        for order in ("o4", "o5"):
            assert client.post(f"/orders/{order}").status_code == 200
        wait_until_sync(lambda: len(deployment.rows("order")) == 5, TIMEOUT, what="5 orders")

    orders = deployment.rows("order")
    assert sorted(ident for _, _, ident, _ in orders) == ["o1", "o2", "o3", "o4", "o5"]
    # Handled by the worker only, with the resources of the app's own lifespan, which ran
    # through the app's middleware as it does under a server.
    assert {(pid, detail) for pid, _, _, detail in orders} == {(worker.pid, "from-lifespan")}
    assert worker.pid in deployment.pids("middleware")
    assert deployment.pids("startup") == [worker.pid]

    worker.send(signal.SIGTERM)
    assert worker.wait() == 0
    assert deployment.pids("shutdown") == [worker.pid]


@pytest.mark.rabbitmq
def test_a_worker_runs_a_bare_event_bus_without_importing_fastapi(deployment: Deployment) -> None:
    # The web app publishes; the worker module builds only an EventBus on the same service.
    worker = deployment.worker(target="tests.bus_worker:bus")
    worker.wait_for_output("worker ready")
    with deployment.web() as client:
        for order in ("o1", "o2"):
            assert client.post(f"/orders/{order}").status_code == 200
        wait_until_sync(lambda: len(deployment.rows("order")) == 2, TIMEOUT, what="2 orders")

    assert sorted(deployment.rows("order")) == [
        (worker.pid, "order", "o1", "no-fastapi"),
        (worker.pid, "order", "o2", "no-fastapi"),
    ]
    worker.send(signal.SIGTERM)
    assert worker.wait() == 0
    assert "fastapi-bus stopped" in worker.output()


@pytest.mark.rabbitmq
def test_sigterm_finishes_the_running_handler_and_loses_nothing(deployment: Deployment) -> None:
    jobs = ["j1", "j2", "j3", "j4"]
    with deployment.web() as client:
        for job in jobs:
            client.post(f"/jobs/{job}")
    first = deployment.worker("--handlers", "slow_job", "--concurrency", "1", "--grace", "60")
    wait_until_sync(lambda: bool(deployment.jobs("start")), TIMEOUT, what="a job to start")
    [(pid, running)] = deployment.jobs("start")
    assert pid == first.pid

    first.send(signal.SIGTERM)
    first.wait_for_output("SIGTERM received")
    # Only now may the handler finish: it does, after the signal, and the worker exits 0.
    deployment.release_job(running)
    assert first.wait() == 0
    assert deployment.jobs("done") == [(first.pid, running)]
    assert deployment.jobs("start") == [(first.pid, running)]  # took nothing new
    assert deployment.pids("shutdown") == [first.pid]

    # The messages it had prefetched went back, and another worker handles them.
    deployment.release_job("all")
    second = deployment.worker("--handlers", "slow_job")
    wait_until_sync(lambda: len(deployment.jobs("done")) == 4, TIMEOUT, what="every job")
    done = deployment.jobs("done")
    assert sorted(ident for _, ident in done) == jobs
    assert {pid for pid, ident in done if ident != running} == {second.pid}
    second.send(signal.SIGINT)
    assert second.wait() == 0


@pytest.mark.rabbitmq
def test_a_killed_workers_messages_go_to_another_worker(deployment: Deployment) -> None:
    doomed = deployment.worker("--handlers", "slow_job")
    with deployment.web() as client:
        client.post("/jobs/k1")
        client.post("/jobs/k2")
    wait_until_sync(lambda: bool(deployment.jobs("start")), TIMEOUT, what="a job to start")
    doomed.send(signal.SIGKILL)
    assert doomed.wait() == -signal.SIGKILL

    deployment.release_job("all")
    survivor = deployment.worker("--handlers", "slow_job")
    wait_until_sync(lambda: len(deployment.jobs("done")) == 2, TIMEOUT, what="both jobs")
    assert sorted(deployment.jobs("done")) == [(survivor.pid, "k1"), (survivor.pid, "k2")]
    survivor.send(signal.SIGTERM)
    assert survivor.wait() == 0


@pytest.mark.rabbitmq
def test_a_second_signal_exits_at_once_and_loses_nothing(deployment: Deployment) -> None:
    stuck = deployment.worker("--handlers", "slow_job", "--grace", "600")
    with deployment.web() as client:
        client.post("/jobs/s1")
    wait_until_sync(lambda: bool(deployment.jobs("start")), TIMEOUT, what="the job to start")
    stuck.send(signal.SIGTERM)
    stuck.wait_for_output("SIGTERM received")
    stuck.send(signal.SIGTERM)
    assert stuck.wait() == 128 + signal.SIGTERM
    assert "second SIGTERM" in stuck.output()
    assert deployment.pids("shutdown") == []  # no graceful shutdown: it just left

    deployment.release_job("all")
    other = deployment.worker("--handlers", "slow_job")
    wait_until_sync(lambda: bool(deployment.jobs("done")), TIMEOUT, what="the job")
    assert deployment.jobs("done") == [(other.pid, "s1")]
    other.send(signal.SIGTERM)
    assert other.wait() == 0


@pytest.mark.rabbitmq
def test_health_endpoint_and_file(deployment: Deployment) -> None:
    port = free_port()
    health_file = deployment.tmp / "healthy.json"
    worker = deployment.worker(
        "--handlers", "tag:slow,record_order", "--health-port", str(port),
        "--health-file", str(health_file), "--health-interval", "0.2",
    )  # fmt: skip
    wait_until_sync(lambda: answers(port, "/health", 200), TIMEOUT, what="healthy")
    status, report = get(port, "/health")
    assert report["status"] == "ok"
    assert report["broker"]["connected"] is True
    assert report["handlers"] == {"record_order": "running", "slow_job": "running"}
    assert get(port, "/live") == (200, {"status": "alive", "pid": worker.pid})
    assert get(port, "/nope")[0] == 404
    wait_until_sync(health_file.exists, TIMEOUT, what="the health file")
    assert json.loads(health_file.read_text())["handlers"]["slow_job"] == "running"

    with deployment.web() as client:
        client.post("/jobs/h1")
    wait_until_sync(lambda: bool(deployment.jobs("start")), TIMEOUT, what="the job to start")
    worker.send(signal.SIGTERM)
    worker.wait_for_output("SIGTERM received")
    # Draining: not ready any more, but alive, and the heartbeat file is gone.
    status, report = get(port, "/health")
    assert (status, report["status"]) == (503, "stopping")
    assert get(port, "/live")[0] == 200
    wait_until_sync(lambda: not health_file.exists(), TIMEOUT, what="the file to go")
    deployment.release_job("h1")
    assert worker.wait() == 0


class Proxy:
    """A TCP proxy in front of RabbitMQ that the test can cut and restore, as a network
    failure would: while cut, it drops every connection and refuses new ones."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self.port = free_port()
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{self.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None
        self.streams: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Future[Any]] = set()

    def __enter__(self) -> Proxy:
        self.thread.start()
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    def _call(self, work: Any) -> None:
        asyncio.run_coroutine_threadsafe(work, self.loop).result(10)

    def restore(self) -> None:
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
        for stream in list(self.streams):
            stream.transport.abort()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.streams.update((writer, upstream))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        both = asyncio.gather(pipe(reader, upstream), pipe(upstream_reader, writer))
        self.tasks.add(both)
        try:
            await both
        finally:
            self.tasks.discard(both)
            self.streams.difference_update((writer, upstream))


@pytest.mark.rabbitmq
def test_health_reports_a_lost_broker(deployment: Deployment) -> None:
    port = free_port()
    with Proxy(deployment.url) as proxy:
        worker = deployment.worker(
            "--handlers", "record_order", "--health-port", str(port), url=proxy.url
        )
        wait_until_sync(lambda: answers(port, "/health", 200), TIMEOUT, what="healthy")

        proxy.cut()
        wait_until_sync(lambda: answers(port, "/health", 503), TIMEOUT, what="unhealthy")
        report = get(port, "/health")[1]
        assert report["broker"]["connected"] is False
        assert report["handlers"] == {"record_order": "disconnected"}
        assert get(port, "/live")[0] == 200

        proxy.restore()
        wait_until_sync(lambda: answers(port, "/health", 200), TIMEOUT, what="healthy again")
        # The consumer came back with the connection: it handles what is published now.
        with deployment.web() as client:
            client.post("/orders/r1")
        wait_until_sync(lambda: bool(deployment.rows("order")), TIMEOUT, what="the order")
        assert deployment.rows("order") == [(worker.pid, "order", "r1", "from-lifespan")]
        worker.send(signal.SIGTERM)
        assert worker.wait() == 0


@pytest.mark.rabbitmq
def test_processes_restarts_a_dead_child_and_forwards_sigterm(deployment: Deployment) -> None:
    port = free_port()
    supervisor = deployment.worker(
        "--processes", "2", "--handlers", "record_order",
        "--health-port", str(port), "--health-interval", "0.2",
        metrics=True,
    )  # fmt: skip
    wait_until_sync(lambda: len(deployment.pids("startup")) == 2, TIMEOUT, what="2 children")
    wait_until_sync(lambda: answers(port, "/health", 200), TIMEOUT, what="healthy")
    victim, spared = deployment.pids("startup")
    assert supervisor.pid not in (victim, spared)

    os.kill(victim, signal.SIGKILL)
    wait_until_sync(lambda: len(deployment.pids("startup")) == 3, TIMEOUT, what="a restart")
    replacement = deployment.pids("startup")[2]
    wait_until_sync(lambda: answers(port, "/health", 200), TIMEOUT, what="healthy again")
    workers = get(port, "/health")[1]["workers"]
    assert sorted(w["pid"] for w in workers) == sorted([spared, replacement])
    assert sorted(w["restarts"] for w in workers) == [0, 1]

    with deployment.web() as client:
        for order in ("p1", "p2", "p3", "p4"):
            client.post(f"/orders/{order}")
    wait_until_sync(lambda: len(deployment.rows("order")) == 4, TIMEOUT, what="the orders")
    # The supervisor serves the children's metrics added up, whichever child handled what.
    # (Children report their counts every health interval: wait for the next report.)
    wait_until_sync(lambda: handled_total(port, "record_order") == 4, TIMEOUT, what="4 handled")

    supervisor.send(signal.SIGTERM)
    assert supervisor.wait() == 0
    # Both children were told, and the supervisor waited for their graceful shutdown.
    assert sorted(deployment.pids("shutdown")) == sorted([spared, replacement])


def test_reload_restarts_the_worker_when_code_changes(tmp_path: Path) -> None:
    # memory:// is enough here: this is about processes, not the broker.
    log = tmp_path / "handled.log"
    watched = tmp_path / "src"
    watched.mkdir()
    env = {**os.environ, "FASTAPI_BUS_TEST_LOG": str(log)}
    env.pop("FASTAPI_BUS_TEST_URL", None)
    worker = Process(["--reload", "--reload-dir", str(watched)], env, tmp_path / "reload.err")
    try:

        def startups() -> list[str]:
            text = log.read_text() if log.exists() else ""
            return [line.split()[0] for line in text.splitlines() if " startup " in line]

        wait_until_sync(lambda: len(startups()) == 1, TIMEOUT, what="the first start")
        worker.wait_for_output("worker ready")
        (watched / "handlers.py").write_text("CHANGED = True\n")
        wait_until_sync(lambda: len(startups()) == 2, TIMEOUT, what="a reload")
        first, second = startups()
        assert first != second
        worker.send(signal.SIGTERM)
        assert worker.wait() == 0
        assert "handlers.py changed: reloading" in worker.output()
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait()


@pytest.mark.anyio
async def test_supervisor_backs_off_a_crash_loop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_bus.ops.supervisor")
    supervisor = Supervisor(
        [sys.executable, "-c", "raise SystemExit(3)"],
        min_backoff=0.05,
        max_backoff=0.2,
        stable_after=60,
    )

    async def stop_after_four_restarts() -> None:
        await wait_until(lambda: supervisor.children[0].restarts >= 4, TIMEOUT, what="restarts")
        supervisor._on_signal(signal.SIGTERM)

    stopper = asyncio.create_task(stop_after_four_restarts())
    await supervisor.run()
    await stopper
    delays = [
        record.getMessage().rsplit(" ", 1)[1]
        for record in caplog.records
        if "restarting it in" in record.getMessage()
    ]
    assert delays[:4] == ["0.05s", "0.1s", "0.2s", "0.2s"]
    assert "exited with status 3" in caplog.text
