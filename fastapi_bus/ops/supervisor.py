"""Several worker processes, restarted when they die, and reloading when the code changes.

The supervisor runs each worker as a child process (``command``), in a session of its own so
that a Ctrl+C in the terminal reaches only the supervisor, which passes it on. A child that dies
is started again after a delay that doubles with each quick death (a crash loop does not spin)
and resets once a child has run for a while. SIGTERM or SIGINT are forwarded to every child,
and the supervisor waits for them all; a second signal is forwarded too, so the children exit
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi_bus.ops.health import HealthFile, HealthServer, is_fresh, start_health, stop_health

if TYPE_CHECKING:
    from fastapi_bus.telemetry.prometheus import MultiProcessMetrics

__all__ = ["Supervisor"]

logger = logging.getLogger("fastapi_bus.ops.supervisor")

#: How often the supervisor looks at its children.
_TICK = 0.1


@dataclasses.dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.0
    restarts: int = 0
    health_file: Path | None = None
    exit_code: int | None = None


class Supervisor:
    """Keeps ``processes`` copies of ``command`` running until told to stop.

    Args:
        command: the child's command line (a ``fastapi-bus worker`` without ``--processes``).
        processes: how many children.
        reload: restart every child when a Python file under ``reload_dirs`` changes; a child
            that fails is then only started again by the next change.
        health_port, health_file: report health for the whole group: healthy while every
            child is (the children keep heartbeat files in a private directory). With
            prometheus-client installed, the health port also serves ``GET /metrics``: the
            children's Prometheus metrics added up (its multiprocess mode).
        min_backoff, max_backoff: the first and the longest delay before a restart.
        stable_after: a child that ran this long before dying is restarted without delay
            growth: it was not a crash loop.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int = 1,
        *,
        reload: bool = False,
        reload_dirs: Sequence[Path] = (),
        health_host: str = "127.0.0.1",
        health_port: int | None = None,
        health_file: Path | None = None,
        health_interval: float = 5.0,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stable_after: float = 30.0,
    ) -> None:
        self.command = list(command)
        self.children = [_Child(index) for index in range(processes)]
        self.reload = reload
        self.reload_dirs = list(reload_dirs) or [Path.cwd()]
        self.health_interval = health_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.server = (
            HealthServer(self.health, health_host, health_port) if health_port is not None else None
        )
        self.file = HealthFile(health_file, self.health, health_interval) if health_file else None
        self.stopping = asyncio.Event()
        self._forwarded: set[int] = set()
        self._reloading = asyncio.Event()
        self._metrics: MultiProcessMetrics | None = None
        self._env: dict[str, str] | None = None

    # health

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while every child runs and its own heartbeat is fresh."""
        workers = []
        for child in self.children:
            alive = child.process is not None and child.process.poll() is None
            report: Any = None
            fresh = False
            if alive and child.health_file is not None:
                fresh = is_fresh(child.health_file, self.health_interval)
                with contextlib.suppress(OSError, ValueError):
                    report = json.loads(child.health_file.read_text())
            workers.append(
                {
                    "index": child.index,
                    "pid": child.process.pid if alive and child.process else None,
                    "status": "ok" if fresh else ("starting" if alive else "down"),
                    "restarts": child.restarts,
                    "health": report if fresh else None,
                }
            )
        healthy = not self.stopping.is_set() and all(w["status"] == "ok" for w in workers)
        status = "ok" if healthy else ("stopping" if self.stopping.is_set() else "unavailable")
        return healthy, {"status": status, "pid": os.getpid(), "workers": workers}

    # children

    def _start(self, child: _Child, now: float) -> None:
        command = list(self.command)
        if child.health_file is not None:
            command += ["--health-file", str(child.health_file)]
            command += ["--health-interval", str(self.health_interval)]
        command += ["--parent-pid", str(os.getpid())]
        child.process = subprocess.Popen(command, start_new_session=True, env=self._env)
        child.started = now
        logger.info("started worker %d (pid %d)", child.index, child.process.pid)

    def _exited(self, child: _Child, code: int, now: float) -> None:
        assert child.process is not None
        pid = child.process.pid
        child.process = None
        child.exit_code = code
        if self._metrics is not None:
            self._metrics.process_exited(pid)
        if self.reload:
            logger.error(
                "worker %d (pid %d) exited with status %d; waiting for a code change",
                child.index,
                pid,
                code,
            )
            child.next_start = float("inf")
            return
        if now - child.started >= self.stable_after:
            child.backoff = 0.0
        child.backoff = min(max(child.backoff * 2, self.min_backoff), self.max_backoff)
        child.next_start = now + child.backoff
        child.restarts += 1
        logger.warning(
            "worker %d (pid %d) exited with status %d; restarting it in %gs",
            child.index,
            pid,
            code,
            child.backoff,
        )

    def _tick(self, now: float) -> None:
        for child in self.children:
            if child.process is not None:
                code = child.process.poll()
                if code is None:
                    continue
                self._exited(child, code, now)
            if child.process is None and now >= child.next_start:
                self._start(child, now)

    def _signal_children(self, signum: int) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signum)

    async def _wait_children(self) -> None:
        # Polled: asyncio has no portable "child exited" event for Popen processes.
        while any(c.process is not None and c.process.poll() is None for c in self.children):  # noqa: ASYNC110
            await asyncio.sleep(_TICK / 2)
        for child in self.children:
            if child.process is not None:
                child.exit_code = child.process.returncode
                child.process = None

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.stopping.is_set():
            logger.warning("second %s: telling the workers to exit at once", name)
        else:
            logger.warning("%s received: stopping the workers", name)
            self.stopping.set()
        self._forwarded.add(signum)
        self._signal_children(signum)

    def _share_metrics(self, default: Path) -> None:
        """Where prometheus-client is installed, the children write their metrics to files
        (in ``PROMETHEUS_MULTIPROC_DIR`` if set, else in ``default``) and the health port
        serves them added up."""
        if importlib.util.find_spec("prometheus_client") is None:
            return
        from fastapi_bus.telemetry.prometheus import MULTIPROCESS_DIR, MultiProcessMetrics

        directory = os.environ.get(MULTIPROCESS_DIR) or str(default)
        os.makedirs(directory, exist_ok=True)
        self._env = {**os.environ, MULTIPROCESS_DIR: directory}
        self._metrics = MultiProcessMetrics(directory)
        assert self.server is not None
        self.server.metrics = self._metrics

    # reload

    async def _watch(self) -> None:
        import watchfiles

        async for changes in watchfiles.awatch(
            *self.reload_dirs, watch_filter=watchfiles.PythonFilter(), stop_event=self.stopping
        ):
            paths = sorted({path for _, path in changes})
            logger.warning("%s changed: reloading", ", ".join(paths))
            self._reloading.set()

    async def _reload_children(self, now: float) -> None:
        self._reloading.clear()
        self._signal_children(signal.SIGTERM)
        await self._wait_children()
        for child in self.children:
            child.next_start = now
            child.backoff = 0.0

    # running

    async def run(self) -> int:
        """Supervise until a signal; returns 0 if every child stopped cleanly, else 1."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal, signum)
        background: list[asyncio.Task[None]] = []
        with contextlib.ExitStack() as stack:
            if self.server is not None or self.file is not None:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bus-")))
                for child in self.children:
                    child.health_file = folder / f"worker-{child.index}.json"
                if self.server is not None:
                    self._share_metrics(folder / "metrics")
            try:
                background += await start_health(self.server, self.file)
                if self.reload:
                    background.append(asyncio.create_task(self._watch()))
                while not self.stopping.is_set():
                    self._tick(loop.time())
                    if self._reloading.is_set():
                        await self._reload_children(loop.time())
                        continue
                    await asyncio.sleep(_TICK)
            finally:
                # The signal handler has passed the signal on: sending another would be a
                # second signal, which makes the children exit at once.
                if not self._forwarded:
                    self._signal_children(signal.SIGTERM)
                await self._wait_children()
                await stop_health(self.server, background)
                for signum in signals:
                    loop.remove_signal_handler(signum)
        # A child killed by the signal we forwarded, before it could handle it, stopped cleanly.
        clean = {0, *(-signum for signum in self._forwarded), -signal.SIGTERM}
        failed = [c for c in self.children if c.exit_code is not None and c.exit_code not in clean]
        for child in failed:
            logger.error("worker %d exited with status %d", child.index, child.exit_code)
        return 1 if failed else 0
