"""Run the example app as real processes (uvicorn web processes, a ``fastapi-bus worker``) and
drive it with Debian's Chromium through Playwright, for the browser tests.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium``
(``scripts/install-asyncapi-tools`` installs it). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page

from tests.asyncapi import tools
from tests.utils import free_port, wait_until_sync

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT = 60


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Processes:
    """The example's processes for one test, all sharing ``env``; stopped by :meth:`close`."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "EXAMPLE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'example.db'}",
            "EXAMPLE_PAYMENT_FAILURE_RATE": "0",
            **env,
        }
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def _start(self, args: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, cwd=ROOT, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT
            )
        self.running.append((process, log))
        return process

    def web(self, **env: str) -> str:
        """Start a web process; returns its URL once it answers ``/health``."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "uvicorn", "example_app.main:app", "--port", str(port)]
        process = self._start([*args, "--ws", "wsproto"], f"web-{port}", **env)
        wait_until_sync(
            lambda: _healthy(url) or process.poll() is not None, START_TIMEOUT, f"{url} to start"
        )
        assert process.poll() is None, self.logs()
        return url

    def worker(self) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "fastapi_bus.cli", "worker", "example_app.main:app"]
        return self._start(args, f"worker-{len(self.running)}")

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.running)

    def close(self) -> None:
        for process, _ in self.running:
            process.terminate()
        for process, _ in self.running:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def processes(tmp: Path, **env: str) -> Iterator[Processes]:
    made = Processes(tmp, **env)
    try:
        yield made
    finally:
        made.close()


def chromium_path() -> str:
    """Debian's Chromium; missing, it skips the test (fails it with CI=true)."""
    return tools.chromium()


def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot of ``page`` in ``test-artifacts/``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
