"""The events page in a real browser: headless Chromium, with the outside network blocked.

The app is served by uvicorn on a free localhost port. Chromium loads the page, runs its scripts
and dumps the resulting DOM; its console log tells whether any script error went uncaught.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import uvicorn
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from fastapi_bus import BusExtension, EventRouter, FastAPI
from fastapi_bus.asyncapi import DEFAULT_CSS_URL, DEFAULT_JS_URL
from tests.asyncapi import tools
from tests.helpers import OrderPlaced
from tests.utils import wait_until_sync

EVIL = (
    "</script><script>document.body.setAttribute('data-pwned', 'script')</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned', 'img')\">"
)


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port of 127.0.0.1; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until_sync(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def load(url: str, profile: Path, *, settle: bool = False) -> tuple[str, list[str]]:
    """The DOM of ``url`` once loaded, and the console messages of uncaught script errors.

    Only 127.0.0.1 is reachable: other host names do not resolve, and anything else goes to a
    proxy that is not there. With ``settle``, Chromium runs the page in virtual time until its
    pending work is done, so that asynchronous rendering completes before the dump.
    """
    args = [
        tools.chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
    ]
    if settle:
        args.append("--virtual-time-budget=30000")
    result = subprocess.run(
        [*args, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr
    errors = [
        line for line in result.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line
    ]
    return result.stdout, errors


class Page(HTMLParser):
    """The text inside each element with an id, and the attributes of ``<body>``."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.attrs: dict[str, dict[str, str | None]] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        key = found.get("id") or (tag if tag == "body" else None)
        if key is not None:
            self.attrs[key] = found
            self.text.setdefault(key, "")
        self._open.append((tag, key))

    def handle_endtag(self, tag: str) -> None:
        # Void elements (<img>, <meta>...) never close: unwind to the element that does.
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, key in self._open:
            if key is not None:
                self.text[key] += data


def shop_app(js_url: str = DEFAULT_JS_URL, css_url: str = DEFAULT_CSS_URL) -> FastAPI:
    events = EventRouter(prefix="orders", tags=["orders"])

    @events.on("placed")
    async def reserve_stock(event: OrderPlaced) -> None:
        """Reserve the ordered items."""

    async def evil(event: OrderPlaced) -> None: ...

    evil.__doc__ = EVIL
    events.add_handler("evil", evil)
    events.publishes("shipped", OrderPlaced)
    app = FastAPI(title="Shop events")
    app.include_extension(
        BusExtension(
            service="shop", routers=[events], asyncapi_js_url=js_url, asyncapi_css_url=css_url
        )
    )
    return app


def assert_not_injected(page: Page) -> None:
    assert "data-pwned" not in page.attrs["body"]
    assert "data-pwned" not in str(page.attrs)


def test_page_without_network_shows_the_server_rendered_events(tmp_path: Path) -> None:
    with serve(shop_app()) as base:
        dom, errors = load(f"{base}/events/docs", tmp_path / "profile")
    assert errors == []
    page = Page(dom)
    static = page.text["asyncapi-static"]
    # The component's bundle (on the CDN) could not load: the plain page stays.
    assert "hidden" not in page.attrs["asyncapi-static"]
    assert page.text["asyncapi"] == ""
    for text in ("orders.placed", "orders.shipped", "reserve_stock", "Reserve the ordered items."):
        assert text in static, text
    assert "shop.reserve_stock" not in static  # memory broker: no queue bindings
    assert "data-pwned" in static  # the docstring is shown as text...
    assert_not_injected(page)  # ...and did not run


def test_page_with_the_component_renders_it(tmp_path: Path) -> None:
    app = shop_app(
        js_url="/assets/browser/standalone/index.js", css_url="/assets/styles/default.min.css"
    )
    app.mount("/assets", StaticFiles(directory=tools.component_dir()), name="assets")
    with serve(app) as base:
        dom, errors = load(f"{base}/events/docs", tmp_path / "profile", settle=True)
    assert errors == []
    page = Page(dom)
    assert "hidden" in page.attrs["asyncapi-static"]
    rendered = page.text["asyncapi"]
    for text in ("Shop events", "reserve_stock", "orders.placed", "Reserve the ordered items."):
        assert text in rendered, text
    assert_not_injected(page)


def test_script_errors_are_detected(tmp_path: Path) -> None:
    # The check above must be able to fail: a page whose script throws is reported.
    app = FastAPI()

    @app.get("/broken")
    def broken() -> HTMLResponse:
        return HTMLResponse("<html><body><script>notDefinedAnywhere();</script></body></html>")

    with serve(app) as base:
        _, errors = load(f"{base}/broken", tmp_path / "profile")
    assert len(errors) == 1
    assert "notDefinedAnywhere" in errors[0]


@pytest.fixture(autouse=True)
def _tools() -> None:
    tools.chromium()
