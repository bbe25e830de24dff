from __future__ import annotations

import subprocess
import sys

import pytest

import fastapi_bus


def test_all_is_the_public_surface() -> None:
    public = {name for name in dir(fastapi_bus) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(fastapi_bus, name)).__name__ == "module"}
    assert set(fastapi_bus.__all__) - {"__version__"} == public - modules


def test_every_public_name_is_documented() -> None:
    for name in fastapi_bus.__all__:
        obj = getattr(fastapi_bus, name)
        if name in ("__version__", "Bus", "ConsumeApp"):  # type aliases
            continue
        assert getattr(obj, "__doc__", None), f"{name} has no docstring"


def test_the_web_extras_load_only_when_used() -> None:
    # A fresh interpreter: this one has imported everything already.
    code = """
import sys
from fastapi_bus import BusExtension, FastAPI
from fastapi.testclient import TestClient

app = FastAPI()
app.include_extension(BusExtension(service="shop"))
lazy = ("yaml", "fastapi_bus.admin", "fastapi_bus.asyncapi.generate",
        "fastapi_bus.asyncapi.render")
print(sorted(name for name in lazy if name in sys.modules))
with TestClient(app) as client:
    assert client.get("/events/asyncapi.yaml").status_code == 200
    assert client.get("/events/docs").status_code == 200
print(sorted(name for name in lazy if name in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == "['fastapi_bus.asyncapi.generate', 'fastapi_bus.asyncapi.render', 'yaml']"


def test_the_asyncapi_package_exports_its_names() -> None:
    import fastapi_bus.asyncapi
    from fastapi_bus.asyncapi import docs, generate

    assert fastapi_bus.asyncapi.get_asyncapi is generate.get_asyncapi
    assert fastapi_bus.asyncapi.install_asyncapi_routes is docs.install_asyncapi_routes
    assert set(fastapi_bus.asyncapi.__all__) <= set(dir(fastapi_bus.asyncapi))
    with pytest.raises(AttributeError):
        fastapi_bus.asyncapi.nothing  # noqa: B018
