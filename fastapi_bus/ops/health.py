"""Health signals for orchestrators: a tiny HTTP endpoint and a heartbeat file.

Both ask a *check*: a callable returning ``(healthy, details)``, where ``details`` is a JSON-able
dict. ``GET /health`` answers 200 with the details when healthy, 503 otherwise; ``GET /live``
answers 200 as long as the process runs; ``GET /metrics`` serves the bus's metrics where they
can be scraped (``metrics=PrometheusMetrics()``). The heartbeat file holds the details and is
rewritten every ``interval`` seconds while healthy, and removed as soon as it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi_bus.ops.lifespan import StartupError
from fastapi_bus.telemetry import Exposition

__all__ = ["Check", "HealthFile", "HealthServer", "is_fresh"]

logger = logging.getLogger("fastapi_bus.ops.health")

Check = Callable[[], tuple[bool, dict[str, Any]]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[503] = "Service Unavailable"
_JSON = "application/json"
#: A client that sends nothing for this long is dropped, so it cannot hold a connection.
_READ_TIMEOUT = 5.0
#: How often the heartbeat file's check runs; the file is only rewritten every ``interval``.
_POLL = 0.25


class HealthServer:
    """Serves ``GET /health`` (200 or 503, JSON) and ``GET /live`` (200) on ``host:port``,
    and ``GET /metrics`` when given ``metrics``."""

    def __init__(
        self,
        check: Check,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        metrics: Exposition | None = None,
    ) -> None:
        self.check = check
        self.host = host
        self.port = port
        self.metrics = metrics
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen; raises :class:`OSError` with a readable message if it cannot."""
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot serve health on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        # Port 0 means "any free port": report the one the system picked.
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("health endpoint on http://%s:%d/health", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
            accept = None
            while True:  # of the headers, only Accept matters (to /metrics)
                line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "accept":
                    accept = value.strip()
            method, status, body, content_type = self.answer(
                request.decode("latin-1").split(), accept
            )
            payload = b"" if method == "HEAD" else body
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + payload)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def answer(self, request: list[str], accept: str | None = None) -> tuple[str, int, bytes, str]:
        """The method, status, body and content type for a request line split into words
        (and its ``Accept`` header)."""
        if len(request) < 2:
            return "", 400, _json({"error": "bad request"}), _JSON
        method, path = request[0], request[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return method, 405, _json({"error": "use GET"}), _JSON
        if path == "/live":
            return method, 200, _json({"status": "alive", "pid": os.getpid()}), _JSON
        if path == "/health":
            healthy, details = _safe(self.check)
            return method, 200 if healthy else 503, _json(details), _JSON
        if path == "/metrics" and self.metrics is not None:
            body, content_type = self.metrics.exposition(accept)
            return method, 200, body, content_type
        paths = "/health, /live" + (", /metrics" if self.metrics is not None else "")
        return method, 404, _json({"error": f"not found; try {paths}"}), _JSON


class HealthFile:
    """Keeps ``path`` fresh while the check passes: a probe can test its age."""

    def __init__(self, path: Path, check: Check, interval: float = 5.0) -> None:
        self.path = path
        self.check = check
        self.interval = interval
        self._written = -float("inf")
        self._warned = False

    async def run(self) -> None:
        """Keep the file up to date until cancelled (then remove it)."""
        try:
            while True:
                self.update()
                await asyncio.sleep(min(_POLL, self.interval))
        finally:
            self.remove()

    def update(self) -> None:
        healthy, details = _safe(self.check)
        if not healthy:
            self.remove()
            return
        now = time.monotonic()
        if now - self._written < self.interval and self.path.exists():
            return
        # Write then rename, so that a reader never sees half a file.
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(_json(details))
            os.replace(temporary, self.path)
        except OSError as exc:
            if not self._warned:  # once: it is checked several times a second
                logger.warning("cannot write the health file %s: %s", self.path, exc)
                self._warned = True
            return
        self._written = now
        self._warned = False

    def remove(self) -> None:
        self._written = -float("inf")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def is_fresh(path: Path, interval: float) -> bool:
    """Whether a heartbeat file kept with this ``interval`` says its process is healthy."""
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    # Some slack, so that a busy event loop is not taken for a dead one.
    return age < 3 * interval + 1


def _safe(check: Check) -> tuple[bool, dict[str, Any]]:
    try:
        return check()
    except Exception as exc:  # a broken check must not take the endpoint down with it
        logger.exception("the health check failed")
        return False, {"status": "error", "error": f"{type(exc).__name__}: {exc}"}


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


async def start_health(
    server: HealthServer | None, file: HealthFile | None
) -> list[asyncio.Task[None]]:
    """Start the health endpoint and the heartbeat file, where configured; returns the
    background task to cancel at the end. A port that cannot be bound is a StartupError."""
    if server is not None:
        try:
            await server.start()
        except OSError as exc:
            raise StartupError(exc.strerror or str(exc)) from None
    return [asyncio.create_task(file.run())] if file is not None else []


async def stop_health(server: HealthServer | None, background: list[asyncio.Task[None]]) -> None:
    """Undo :func:`start_health` (and stop any other ``background`` tasks)."""
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    if server is not None:
        await server.close()
