"""The README's code and its quickstart do what the README says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fastapi_bus.testing import drain

README = Path(__file__).resolve().parent.parent / "README.md"


def first_python_block() -> str:
    found = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert found is not None, "the README has no python code block"
    return found.group(1)


def test_the_first_code_block_runs_as_shown() -> None:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(first_python_block(), "README.md", "exec"), namespace)
    with TestClient(namespace["app"]) as client:
        response = client.post("/orders", json={"order_id": "o1", "total": 9.5})
        assert response.status_code == 202
        assert response.json() == {"accepted": "o1"}
        drain(client)
    assert namespace["reserved"] == ["o1"]


def test_the_quickstart_requests_are_the_ones_the_example_serves() -> None:
    text = README.read_text()
    body = re.search(r"-d '(\{.*?\})'", text)
    assert body is not None
    assert "curl localhost:8000/orders/o1" in text
    assert '"order_id": "o1"' in body.group(1)
