"""``python -m fastapi_bus.cli``: the ``fastapi-bus`` command without its script."""

from fastapi_bus.cli import app

app(prog_name="fastapi-bus")
