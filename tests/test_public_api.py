from __future__ import annotations

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
