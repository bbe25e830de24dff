"""The server-rendered events page: sidebar, examples, constraints, broadcast, Markdown."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from fastapi_bus import BusExtension, EventRouter, FastAPI, Message
from fastapi_bus.asyncapi.render import _inline, _text


class OrderPlaced(BaseModel):
    order_id: str = Field(min_length=3, examples=["o-123"])
    quantity: int = Field(gt=0, le=100)
    note: str = "gift"


def page() -> str:
    events = EventRouter()

    @events.on(OrderPlaced)
    async def reserve_stock(event: OrderPlaced) -> None:
        """Reserve the **items** of `order_id`.

        - checks the *stock*
        - see [the runbook](https://example.com/runbook) or [this](javascript:alert(1))

        <script>alert(1)</script>
        """

    @events.on("orders.#", broadcast=True)
    async def push(event: dict[str, Any], message: Message) -> None: ...

    app = FastAPI(title="Shop")
    app.include_extension(BusExtension("memory://", service="shop", routers=[events]))
    return TestClient(app).get("/events/docs").text


def test_the_sidebar_links_every_operation_and_channel() -> None:
    html = page()
    nav = html[html.index('<nav class="fab-nav"') : html.index("</nav>")]
    assert 'href="#operation-reserve_stock"' in nav
    assert 'href="#operation-push"' in nav
    assert "<code>OrderPlaced</code>" in nav
    assert "<code>orders.#</code>" in nav
    # every link in the sidebar points at something on the page
    for target in re.findall(r'href="#([^"]+)"', nav):
        assert f'id="{target}"' in html, target


def test_broadcast_handlers_are_marked() -> None:
    html = page()
    push = html[html.index('id="operation-push"') :]
    push = push[: push.index("</article>")]
    assert "fab-broadcast" in push
    assert "each process has a queue of its own" in push
    reserve = html[html.index('id="operation-reserve_stock"') :]
    assert "fab-broadcast" not in reserve[: reserve.index("</article>")]


def test_messages_show_an_example_and_the_fields_constraints() -> None:
    html = page()
    example = re.search(r'<pre class="fab-example"><code>(.*?)</code></pre>', html, re.S)
    assert example is not None
    payload = json.loads(example.group(1).replace("&quot;", '"'))
    assert payload == {"order_id": "o-123", "quantity": 1, "note": "gift"}
    OrderPlaced.model_validate(payload)  # the example is valid
    assert "Constraints: at least 3 characters." in html
    assert "Constraints: &gt; 0, ≤ 100." in html
    assert "Examples: <code>&quot;o-123&quot;</code>" in html


def test_docstrings_render_as_safe_markdown() -> None:
    html = page()
    assert "Reserve the <strong>items</strong> of <code>order_id</code>." in html
    assert "<li>checks the <em>stock</em></li>" in html
    assert '<a href="https://example.com/runbook" rel="noopener nofollow">the runbook</a>' in html
    assert 'href="javascript' not in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_markdown_subset_escapes_everything_else() -> None:
    assert _inline("`<b>` **a** *b*") == "<code>&lt;b&gt;</code> <strong>a</strong> <em>b</em>"
    # a quote in a URL cannot leave the attribute
    assert _inline('[x](https://a.b/?q="><script>)') == (
        '<a href="https://a.b/?q=&quot;&gt;&lt;script&gt;" rel="noopener nofollow">x</a>'
    )
    assert _inline("2 * 3 * 4") == "2 * 3 * 4"
    assert _text("one\n\ntwo") == '<div class="fab-text"><p>one</p><p>two</p></div>'
