"""Apps and models that the AsyncAPI tests document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model

from fastapi_bus import BusExtension, EventRouter, FastAPI, get_bus
from fastapi_bus.asyncapi import get_asyncapi

EVIL = "</script><script>alert(1)</script>"

# Two models with the same class name, from different modules.
BillingAddress = create_model("Address", __module__="shop.billing", street=(str, ...))
ShippingAddress = create_model("Address", __module__="shop.shipping", city=(str, ...))


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool = True


Pet = Annotated[Cat | Dog, Field(discriminator="kind")]


class OrderPlaced(BaseModel):
    """A customer placed an order."""

    order_id: str = Field(description="The order's id.")
    total: float
    billing: BillingAddress  # type: ignore[valid-type]
    shipping: ShippingAddress | None = None  # type: ignore[valid-type]
    items: list[tuple[str, int]] = []
    status: Literal["new", "paid"] = "new"
    placed_at: datetime | None = None
    notes: dict[str, int] = {}


class OrderShipped(BaseModel):
    order_id: str


def make_router() -> EventRouter:
    orders = EventRouter(prefix="orders", tags=["orders"])

    @orders.on("placed", tags=["stock"])
    async def reserve_stock(event: OrderPlaced) -> None:
        """Reserve the items of a new order."""

    @orders.on("*")
    async def audit(event: dict[str, Any]) -> None:
        """Keep a trail of every order event."""

    @orders.on("#", broadcast=True)
    async def live_feed(event) -> None:  # type: ignore[no-untyped-def]
        """Push order events to open dashboards."""

    @orders.on("hidden", include_in_schema=False)
    async def secret_handler(event: OrderShipped) -> None: ...

    orders.publishes("shipped", OrderShipped)

    pets = EventRouter(tags=["pets"])

    @pets.on("pets.adopted")
    async def welcome(event: Pet) -> None:
        """Welcome the new pet."""

    orders.include_router(pets)
    return orders


def make_app(url: str = "memory://", **options: Any) -> FastAPI:
    app = FastAPI(title="Shop", version="2.1.0", description="Sells things.")
    app.include_extension(BusExtension(url, service="shop", routers=[make_router()], **options))
    return app


def document(url: str = "memory://") -> dict[str, Any]:
    app = make_app(url)
    return get_asyncapi(get_bus(app), title=app.title, version=app.version)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


class Point(BaseModel):
    coordinates: tuple[int, float]


class Evil(BaseModel):
    note: str = Field(description=EVIL)


Evil.__doc__ = EVIL


def evil_app() -> FastAPI:
    router = EventRouter(tags=[EVIL])

    async def handler(event: Evil) -> None: ...

    handler.__doc__ = EVIL
    router.add_handler("evil.happened", handler, summary=EVIL)
    router.publishes("evil.sent", Evil, description=EVIL)
    app = FastAPI(title=EVIL, version=EVIL, description=EVIL)
    app.include_extension(BusExtension(service="evil", routers=[router]))
    return app


# for the command line

cli_app = make_app("amqp://guest:hunter2@localhost/")


def _broken_app() -> FastAPI:
    first, second = EventRouter(), EventRouter()

    @first.on("a")
    async def twice(event: OrderShipped) -> None: ...

    second.add_handler("b", twice)
    app = FastAPI()
    app.include_extension(BusExtension(service="broken", routers=[first, second]))
    return app


broken_app = _broken_app()
