"""The AsyncAPI document, its routes, the events page and ``fastapi-bus asyncapi``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import Depends, HTTPException
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fastapi_bus import BusExtension, EventRouter, FastAPI, get_bus
from fastapi_bus.asyncapi import DEFAULT_CSS_URL, DEFAULT_JS_URL, get_asyncapi, get_asyncapi_html
from fastapi_bus.asyncapi.schemas import payload_schemas, to_asyncapi_schema
from fastapi_bus.cli import app as cli
from tests.asyncapi import tools
from tests.asyncapi.apps import EVIL, Point, document, evil_app, make_app, refs, resolve
from tests.asyncapi.pages import Elements

# the document


def test_document_describes_handlers_and_declarations() -> None:
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "Shop"
    assert doc["info"]["version"] == "2.1.0"
    assert [tag["name"] for tag in doc["info"]["tags"]] == ["orders", "stock", "pets"]
    operations = doc["operations"]
    assert {op: operations[op]["action"] for op in operations} == {
        "reserve_stock": "receive",
        "audit": "receive",
        "live_feed": "receive",
        "welcome": "receive",
        "publish_orders_shipped": "send",
    }
    addresses = {ch["address"] for ch in doc["channels"].values()}
    assert addresses == {"orders.placed", "orders.*", None, "orders.pets.adopted", "orders.shipped"}
    reserve = operations["reserve_stock"]
    assert reserve["description"] == "Reserve the items of a new order."
    assert reserve["title"] == "Reserve stock"
    assert [tag["name"] for tag in reserve["tags"]] == ["orders", "stock"]
    channel = resolve(doc, reserve["channel"]["$ref"])
    assert channel["address"] == "orders.placed"
    [message_ref] = reserve["messages"]
    assert message_ref["$ref"].startswith(reserve["channel"]["$ref"] + "/messages/")
    message = resolve(doc, resolve(doc, message_ref["$ref"])["$ref"])
    assert message["name"] == "orders.placed"
    assert message["description"] == "A customer placed an order."
    assert message["payload"] == {"$ref": "#/components/schemas/OrderPlaced"}
    # OrderShipped has no docstring: pydantic's BaseModel's is not taken for it.
    assert "description" not in operations["publish_orders_shipped"]
    assert "pydantic" not in json.dumps(doc).lower()
    assert "secret_handler" not in json.dumps(doc)
    assert "orders.hidden" not in json.dumps(doc)


def test_patterns_are_channels_too() -> None:
    doc = document()
    [all_channel] = [
        ch for ch in doc["channels"].values() if ch.get("x-topic-pattern") == "orders.#"
    ]
    # "#" is a URI fragment delimiter, so that pattern has no address.
    assert all_channel["address"] is None
    star = next(ch for ch in doc["channels"].values() if ch["address"] == "orders.*")
    assert star["x-topic-pattern"] == "orders.*"
    # An untyped pattern handler receives the known events that match its pattern.
    feed = doc["operations"]["live_feed"]
    names = {resolve(doc, resolve(doc, m["$ref"])["$ref"])["name"] for m in feed["messages"]}
    assert names == {"orders.placed", "orders.shipped", "orders.pets.adopted"}
    # A typed one receives its own type.
    [audit] = doc["operations"]["audit"]["messages"]
    payload = resolve(doc, resolve(doc, audit["$ref"])["$ref"])["payload"]
    assert payload == {"type": "object", "additionalProperties": True}


def test_every_reference_resolves_and_no_defs_remain() -> None:
    doc = document("amqp://guest:guest@localhost:5672/")
    found = refs(doc)
    assert "#/components/schemas/Cat" in found
    for ref in found:
        resolve(doc, ref)
    assert "$defs" not in json.dumps(doc)


def test_same_class_name_in_two_modules_gives_two_schemas() -> None:
    schemas = document()["components"]["schemas"]
    addresses = {name: schema for name, schema in schemas.items() if "Address" in name}
    assert len(addresses) == 2
    fields = sorted(next(iter(schema["properties"])) for schema in addresses.values())
    assert fields == ["city", "street"]
    placed = schemas["OrderPlaced"]["properties"]
    billing, shipping = placed["billing"]["$ref"], placed["shipping"]["anyOf"][0]["$ref"]
    assert billing != shipping
    assert "street" in resolve({"components": {"schemas": schemas}}, billing)["properties"]


def test_discriminated_union_uses_asyncapi_discriminator() -> None:
    doc = document()
    [message_ref] = doc["operations"]["welcome"]["messages"]
    payload = resolve(doc, resolve(doc, message_ref["$ref"])["$ref"])["payload"]
    assert payload["discriminator"] == "kind"
    assert payload["oneOf"] == [
        {"$ref": "#/components/schemas/Cat"},
        {"$ref": "#/components/schemas/Dog"},
    ]
    # Tuples are spelled the draft 07 way.
    items = doc["components"]["schemas"]["OrderPlaced"]["properties"]["items"]["items"]
    assert items["items"] == [{"type": "string"}, {"type": "integer"}]
    assert "prefixItems" not in json.dumps(doc)


def test_amqp_bindings_and_server_without_credentials() -> None:
    doc = document("amqp://shopper:s3cret-pw@rabbit.internal:5671/shop%2Fprod")
    assert "s3cret-pw" not in json.dumps(doc)
    assert "shopper" not in json.dumps(doc)
    assert doc["servers"] == {
        "amqp": {
            "host": "rabbit.internal:5671",
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "pathname": "/shop/prod",
            "description": "RabbitMQ, virtual host 'shop/prod'",
        }
    }
    placed = next(ch for ch in doc["channels"].values() if ch["address"] == "orders.placed")
    assert placed["bindings"]["amqp"] == {
        "is": "routingKey",
        "exchange": {
            "name": "fastapi_bus",
            "type": "topic",
            "durable": True,
            "autoDelete": False,
            "vhost": "shop/prod",
        },
        "bindingVersion": "0.3.0",
    }
    reserve = doc["operations"]["reserve_stock"]["bindings"]["amqp"]
    assert reserve["bindingVersion"] == "0.3.0"
    assert reserve["x-queue"]["name"] == "shop.reserve_stock"
    assert reserve["x-queue"]["type"] == "quorum"
    assert doc["operations"]["live_feed"]["bindings"]["amqp"]["x-queue"]["exclusive"] is True
    send = doc["operations"]["publish_orders_shipped"]["bindings"]["amqp"]
    assert send == {"deliveryMode": 2, "bindingVersion": "0.3.0"}


def test_memory_server_has_no_bindings() -> None:
    doc = document()
    assert doc["servers"]["memory"]["protocol"] == "memory"
    assert "bindings" not in json.dumps(doc)


def test_redis_extensions_and_server_without_credentials() -> None:
    doc = document("redis://:s3cret-pw@cache.internal:6380/2")
    assert "s3cret-pw" not in json.dumps(doc)
    server = doc["servers"]["redis"]
    assert server["host"] == "cache.internal:6380"
    assert server["protocol"] == "redis"
    assert "database 2" in server["description"]
    reserve = doc["operations"]["reserve_stock"]["x-redis"]
    assert reserve == {
        "stream": "{fastapi_bus}:q:shop.reserve_stock",
        "consumerGroup": "bus",
        "deadLetterStream": "{fastapi_bus}:q:shop.reserve_stock.dlq",
    }
    assert doc["operations"]["live_feed"]["x-redis"]["persisted"] is False
    placed = next(ch for ch in doc["channels"].values() if ch["address"] == "orders.placed")
    assert placed["x-redis"] == {"broadcastChannel": "{fastapi_bus}:bc:orders.placed"}
    assert "bindings" not in json.dumps(doc)


def test_kafka_bindings_and_servers_without_credentials() -> None:
    doc = document("kafka://app:s3cret-pw@k1:9092,k2:9093")
    assert "s3cret-pw" not in json.dumps(doc)
    server = doc["servers"]["kafka"]
    assert (server["host"], server["protocol"]) == ("k1:9092,k2:9093", "kafka")
    assert doc["operations"]["reserve_stock"]["x-kafka"] == {
        "consumerGroup": "bus.shop.reserve_stock",
        "queueTopic": "bus.queue.shop.reserve__stock",
        "deadLetterTopic": "bus.queue.shop.reserve__stock.dlq",
        "delayTopic": "bus.delays",
    }
    assert doc["operations"]["live_feed"]["x-kafka"]["consumerGroup"] is None
    placed = next(ch for ch in doc["channels"].values() if ch["address"] == "orders.placed")
    assert placed["bindings"]["kafka"]["topic"] == "bus.event.orders.placed"


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "amqp://guest:guest@localhost:5672/",
        "redis://localhost:6379/0",
        "kafka://localhost:9092",
    ],
)
def test_official_parser_accepts_the_document(url: str, tmp_path: Path) -> None:
    code, report = tools.validate(document(url), tmp_path)
    assert code == 0, report
    assert report.splitlines()[-1].startswith("0 error(s)"), report
    assert not [line for line in report.splitlines() if line.startswith(("error", "warning"))]


def test_official_parser_accepts_the_yaml_document(tmp_path: Path) -> None:
    # No lifespan: the document needs no broker connection.
    text = (
        TestClient(make_app("amqp://guest:guest@localhost:5672/")).get("/events/asyncapi.yaml").text
    )
    code, report = tools.validate(text, tmp_path)
    assert code == 0, report


def test_validator_reports_errors(tmp_path: Path) -> None:
    broken = document()
    del broken["info"]
    broken["operations"]["audit"]["channel"] = {"$ref": "#/channels/nowhere"}
    code, report = tools.validate(broken, tmp_path)
    assert code == 1
    assert "error" in report and "info" in report and "nowhere" in report


def test_colliding_names_stay_distinct_and_valid(tmp_path: Path) -> None:
    router = EventRouter()

    @router.on("a.b")
    async def first(event: Point) -> None: ...

    @router.on("a.b", name="publish_a_b")
    async def raw(event: dict[str, Any]) -> None: ...

    @router.on("a_b")
    async def second(event: Point) -> None: ...

    @router.on("misc.*")
    async def unknown(event) -> None: ...  # type: ignore[no-untyped-def]

    router.publishes("a.b", Point)
    app = FastAPI()
    app.include_extension(BusExtension(service="edge", routers=[router]))
    doc = get_asyncapi(get_bus(app), title="Edge", version="1")
    assert set(doc["operations"]) == {"first", "publish_a_b", "second", "unknown", "publish_a_b_2"}
    assert {ch["address"]: cid for cid, ch in doc["channels"].items()} == {
        "a.b": "a_b",
        "a_b": "a_b_2",
        "misc.*": "misc_any",
    }
    assert len(doc["channels"]["a_b"]["messages"]) == 2  # Point, and the raw handler's dict
    [misc] = doc["channels"]["misc_any"]["messages"].values()
    assert resolve(doc, misc["$ref"])["payload"] == {}
    code, report = tools.validate(doc, tmp_path)
    assert code == 0, report


def test_schema_keywords_are_rewritten_for_asyncapi() -> None:
    tuple_with_rest = {"type": "array", "prefixItems": [{"type": "integer"}], "items": True}
    assert to_asyncapi_schema({"properties": {"discriminator": tuple_with_rest}}) == {
        "properties": {
            "discriminator": {
                "type": "array",
                "items": [{"type": "integer"}],
                "additionalItems": True,
            }
        }
    }
    union = {"oneOf": [], "discriminator": {"propertyName": "kind", "mapping": {}}}
    assert to_asyncapi_schema(union) == {"oneOf": [], "discriminator": "kind"}
    assert payload_schemas([]) == ([], {})


def test_bus_without_handlers(tmp_path: Path) -> None:
    app = FastAPI()
    app.include_extension(BusExtension(service="quiet"))
    doc = get_asyncapi(get_bus(app), title="Quiet", version="1")
    assert "operations" not in doc and "channels" not in doc and "components" not in doc
    code, report = tools.validate(doc, tmp_path)
    assert code == 0, report
    page = TestClient(app).get("/events/docs").text
    assert "<h1>FastAPI" in page
    assert "This service neither handles nor publishes events." in page


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_missing_tools_fail_under_ci_and_skip_locally(
    ci: str, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(tools, "NODE_MODULES", tmp_path / "node_modules")
    monkeypatch.setattr(tools, "CHROMIUM", tmp_path / "chromium")
    for find in (tools.node, tools.chromium, tools.component_dir):
        with pytest.raises(outcome, match="install-asyncapi-tools"):
            find()


# the routes


def test_routes_serve_json_yaml_and_page() -> None:
    app = make_app()
    with TestClient(app) as client:
        as_json = client.get("/events/asyncapi.json")
        as_yaml = client.get("/events/asyncapi.yaml")
        page = client.get("/events/docs")
    assert as_json.status_code == as_yaml.status_code == page.status_code == 200
    assert as_json.json()["info"]["description"] == "Sells things."
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == as_json.json()
    assert page.headers["content-type"].startswith("text/html")
    assert not any(path.startswith("/events") for path in app.openapi()["paths"])


def test_document_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastapi_bus.asyncapi.generate as generate_module

    calls: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append("built")
        return get_asyncapi(*args, **kwargs)

    monkeypatch.setattr(generate_module, "get_asyncapi", counting)
    app = make_app()
    assert calls == []  # nothing is built before it is asked for
    client = TestClient(app)
    for path in ("/events/asyncapi.json", "/events/asyncapi.json", "/events/docs"):
        assert client.get(path).status_code == 200
    assert calls == ["built"]


def test_urls_can_be_moved_or_turned_off() -> None:
    app = make_app(docs_url=None, asyncapi_url="/spec/events.json")
    client = TestClient(app)
    assert client.get("/events/docs").status_code == 404
    assert client.get("/events/asyncapi.json").status_code == 404
    assert client.get("/spec/events.json").status_code == 200
    assert client.get("/spec/events.yaml").status_code == 200
    off = TestClient(make_app(docs_url=None, asyncapi_url=None))
    for path in ("/events/docs", "/events/asyncapi.json", "/events/asyncapi.yaml"):
        assert off.get(path).status_code == 404


def test_docs_dependencies_protect_every_route() -> None:
    def require_token(token: str | None = None) -> None:
        if token != "let-me-in":
            raise HTTPException(status_code=401, detail="no")

    client = TestClient(make_app(docs_dependencies=[Depends(require_token)]))
    for path in ("/events/docs", "/events/asyncapi.json", "/events/asyncapi.yaml"):
        assert client.get(path).status_code == 401
        assert client.get(path, params={"token": "let-me-in"}).status_code == 200


# the page


def test_text_from_the_code_cannot_inject_markup() -> None:
    app = evil_app()
    page = TestClient(app).get("/events/docs").text
    assert "<script>alert(1)" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parser = Elements()
    parser.feed(page)
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert [attrs.get("src") for attrs in scripts] == [None, DEFAULT_JS_URL, None]
    embedded = parser.script_text["asyncapi-document"]
    assert "</" not in embedded and "<" not in embedded
    doc = json.loads(embedded)
    assert doc["operations"]["handler"]["description"] == EVIL
    assert doc == TestClient(app).get("/events/asyncapi.json").json()


def test_page_renders_the_document_on_the_server() -> None:
    app = make_app("amqp://guest:guest@localhost:5672/")
    page = TestClient(app).get("/events/docs").text
    for text in (
        "<h1>Shop",
        "rabbit" if False else "localhost:5672",
        "orders.placed",
        "orders.pets.adopted",
        "Reserve the items of a new order.",
        "shop.reserve_stock",
        'id="message-orders_placed"',
        "<code>order_id</code>",
        "The order&#x27;s id.",
        'href="#schema-Cat"',
        "publish_orders_shipped",
    ):
        assert text in page, text
    # required fields are marked
    assert "<tr><td><code>total</code></td><td>number</td><td>yes</td>" in page
    assert "<tr><td><code>shipping</code></td>" in page
    assert "one of <code>&quot;new&quot;</code>, <code>&quot;paid&quot;</code>" in page
    assert "string (date-time) | null" in page
    assert "object of integer" in page
    assert "array of array of (string, integer)" in page


def test_page_uses_the_configured_component_urls() -> None:
    app = make_app(asyncapi_js_url="/static/aa.js", asyncapi_css_url="/static/aa.css")
    page = TestClient(app).get("/events/docs").text
    assert '<script src="/static/aa.js"></script>' in page
    assert '<link rel="stylesheet" href="/static/aa.css">' in page
    html = get_asyncapi_html({"info": {"title": "T", "version": "1"}}, js_url='x"><b>')
    assert 'src="x&quot;&gt;&lt;b&gt;"' in html


def test_default_component_is_the_tested_version() -> None:
    package = json.loads((tools.HERE / "package.json").read_text())
    version = package["dependencies"]["@asyncapi/react-component"]
    prefix = f"https://cdn.jsdelivr.net/npm/@asyncapi/react-component@{version}/"
    assert prefix + "browser/standalone/index.js" == DEFAULT_JS_URL
    assert prefix + "styles/default.min.css" == DEFAULT_CSS_URL


# the command line


def test_cli_prints_the_document() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["asyncapi", "tests.asyncapi.apps:cli_app"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["info"]["title"] == "Shop"
    assert "hunter2" not in result.stdout
    as_yaml = runner.invoke(cli, ["asyncapi", "tests.asyncapi.apps:cli_app", "--yaml"])
    assert as_yaml.exit_code == 0, as_yaml.output
    assert yaml.safe_load(as_yaml.stdout) == doc


def test_cli_reports_a_broken_configuration() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["asyncapi", "tests.asyncapi.apps:broken_app"])
    assert result.exit_code == 1
    assert "two handlers named 'twice'" in result.stderr
