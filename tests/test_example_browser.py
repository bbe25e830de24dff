"""The example in a real browser: headless Chromium (Debian's), driven by Playwright.

The app runs as real processes: one uvicorn on memory://, or, on RabbitMQ, two uvicorn web
processes (``FASTAPI_BUS_CONSUME=broadcast``) and a ``fastapi-bus worker``. Screenshots are
saved in ``test-artifacts/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from example_app.payments import DECLINED_CARD
from tests.example_servers import (
    CHROMIUM_ARGS,
    ROOT,
    Processes,
    chromium_path,
    processes,
    screenshot,
)
from tests.utils import wait_until_sync

expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def memory_app(tmp_path: Path) -> Iterator[str]:
    with processes(tmp_path, FASTAPI_BUS_URL="memory://") as running:
        yield running.web()


def join(browser: Browser, url: str, name: str, room: str) -> Page:
    """Open the chat page and join ``room`` as ``name``, through the form."""
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.goto(f"{url}/chat")
    page.fill("#name", name)
    page.fill("#room", room)
    page.click("#join")
    expect(page.locator("body")).to_have_attribute("data-connected", "yes")
    return page


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.click("#send")


def test_two_pages_in_a_room_see_each_other(browser: Browser, memory_app: str) -> None:
    # A third client follows the room with Server-Sent Events.
    watcher = browser.new_page()
    watcher.goto(f"{memory_app}/shop")
    watcher.evaluate(
        """() => {
            window.seen = [];
            const stream = new EventSource("/rooms/lobby/stream");
            stream.addEventListener("message", (e) => window.seen.push(JSON.parse(e.data).text));
            return new Promise((resolve) => { stream.onopen = resolve; });
        }"""
    )
    ada = join(browser, memory_app, "ada", "lobby")
    bob = join(browser, memory_app, "bob", "lobby")
    expect(ada.locator("#members li")).to_have_text(["ada", "bob"])

    say(ada, "hello bob")
    expect(bob.locator("#messages li")).to_have_text(["ada: hello bob"])
    say(bob, "hi ada!")
    expect(ada.locator("#messages li")).to_have_text(["ada: hello bob", "bob: hi ada!"])
    screenshot(ada, "chat-memory")
    wait_until_sync(lambda: len(watcher.evaluate("window.seen")) == 2, 30, "the SSE client")
    assert watcher.evaluate("window.seen") == ["hello bob", "hi ada!"]
    watcher.close()

    bob.close()
    expect(ada.locator("#members li")).to_have_text(["ada"])
    ada.close()


def order_page(browser: Browser, url: str) -> Page:
    page = browser.new_page(viewport={"width": 1000, "height": 760})
    page.goto(f"{url}/shop")
    expect(page.locator("body")).to_have_attribute("data-live", "yes")
    return page


def place_order(page: Page, *, card: str | None = None, quantity: int = 1) -> str:
    page.fill("#quantity", str(quantity))
    if card is not None:
        page.select_option("#card", card)
    before = page.locator("body").get_attribute("data-last-order")
    page.click("#place")
    wait_until_sync(
        lambda: page.locator("body").get_attribute("data-last-order") not in (None, before),
        30,
        "the order to be accepted",
    )
    order_id = page.locator("body").get_attribute("data-last-order")
    assert order_id is not None
    return order_id


def order_row(page: Page, order_id: str) -> Locator:
    return page.locator(f'tr[data-order="{order_id}"] [data-field="status"]')


def test_an_order_placed_from_the_page_is_confirmed_live(browser: Browser, memory_app: str) -> None:
    page = order_page(browser, memory_app)
    order_id = place_order(page, quantity=3)
    expect(order_row(page, order_id)).to_have_text("confirmed")
    for event in ("placed", "stock_reserved", "payment_captured", "confirmed"):
        line = page.locator("#events li", has_text=f"orders.{event} {order_id}")
        expect(line).to_have_count(1)
    screenshot(page, "shop-memory")
    with urllib.request.urlopen(f"{memory_app}/orders/{order_id}") as response:
        order = json.load(response)
    assert order["emails"] == [f"Order {order_id} confirmed"]
    page.close()  # its event stream, open, would hold the server's graceful shutdown


def test_a_declined_payment_ends_failed_on_the_page(browser: Browser, memory_app: str) -> None:
    page = order_page(browser, memory_app)
    order_id = place_order(page, card=DECLINED_CARD)
    expect(order_row(page, order_id)).to_have_text("failed")
    row = page.locator(f'tr[data-order="{order_id}"]')
    # The reason comes from the Fault published when the payment was dead-lettered.
    expect(row).to_contain_text("charge_payment: card ending 0002 was declined")
    screenshot(page, "shop-declined-memory")
    page.close()


@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
def test_two_web_processes_and_a_worker_on_a_broker(
    browser: Browser, broker: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{broker}_url")
    tag = uuid.uuid4().hex[:10]
    if broker == "redis":
        request.addfinalizer(lambda: forget_redis_keys(url, f"test-example-{tag}"))
    with processes(
        tmp_path,
        FASTAPI_BUS_URL=url,
        FASTAPI_BUS_CONSUME="broadcast",
        EXAMPLE_SERVICE=f"example{tag}",
        EXAMPLE_EXCHANGE=f"test-example-{tag}",
        EXAMPLE_AUTO_DELETE="1",
    ) as running:
        first, second = running.web(), running.web()
        running.worker()

        # A page on the first web process; a message posted to the second reaches it.
        ada = join(browser, first, "ada", "lobby")
        bob = join(browser, second, "bob", "lobby")
        expect(ada.locator("#members li")).to_have_text(["ada", "bob"])
        post = urllib.request.Request(
            f"{second}/rooms/lobby/messages",
            data=json.dumps({"user": "api", "text": "through the second process"}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(post) as response:
            assert response.status == 202
        expect(ada.locator("#messages li")).to_have_text(["api: through the second process"])
        say(ada, "and back")
        expect(bob.locator("#messages li").last).to_have_text("ada: and back")
        screenshot(ada, f"chat-{broker}")

        # Orders: the worker runs the durable handlers, each web process pushes their events.
        shop = order_page(browser, first)
        paid = place_order(shop)
        declined = place_order(shop, card=DECLINED_CARD)
        expect(order_row(shop, paid)).to_have_text("confirmed")
        expect(order_row(shop, declined)).to_have_text("failed")
        screenshot(shop, f"shop-{broker}")

        # The declined payment is in the dead-letter queue, for `fastapi-bus dlq`.
        listed = dlq(running, "list", "--handler", "charge_payment")
        assert "1 dead letter(s)" in listed.stdout, listed.stdout + listed.stderr
        assert "orders.stock_reserved" in listed.stdout
        replayed = dlq(running, "replay", "--handler", "charge_payment")
        assert "replayed 1 message(s)" in replayed.stdout, replayed.stdout + replayed.stderr
        # The card is still declined: the payment fails again and is dead-lettered again.
        wait_until_sync(
            lambda: "1 dead letter(s)" in dlq(running, "list").stdout, 60, "the replayed payment"
        )
        expect(order_row(shop, declined)).to_have_text("failed")
        shop.close()


def forget_redis_keys(url: str, prefix: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match="{" + prefix + "}*", count=1000))
        if keys:
            client.delete(*keys)


def dlq(running: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fastapi_bus.cli", "dlq", args[0], "example_app.main:app"]
    return subprocess.run(
        [*command, *args[1:]],
        cwd=ROOT,
        env={**running.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
