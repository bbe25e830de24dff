"""Find the AsyncAPI test tools; under CI they must be there, locally their absence skips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "run scripts/install-asyncapi-tools"


def _missing(what: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: the AsyncAPI tests must run; {INSTALL_HINT})")
    pytest.skip(f"{what}; {INSTALL_HINT}")


def node() -> str:
    """The ``node`` executable, with the validator's npm packages installed."""
    executable = shutil.which("node")
    if executable is None:
        _missing("node is not installed")
    if not (NODE_MODULES / "@asyncapi" / "parser").is_dir():
        _missing(f"the AsyncAPI parser is not installed in {NODE_MODULES}")
    return str(executable)


def chromium() -> str:
    """Debian's headless-capable Chromium."""
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"{CHROMIUM} is missing")
    return str(CHROMIUM)


def component_dir() -> Path:
    """The AsyncAPI React component's npm package (its standalone bundle and styles)."""
    node()
    path = NODE_MODULES / "@asyncapi" / "react-component"
    if not (path / "browser" / "standalone" / "index.js").is_file():
        _missing(f"the AsyncAPI React component is not installed in {NODE_MODULES}")
    return path


def validate(document: dict[str, Any] | str, tmp_path: Path) -> tuple[int, str]:
    """Run the official parser on ``document`` (a dict, or JSON/YAML text): its exit code
    and its report."""
    text = document if isinstance(document, str) else json.dumps(document)
    target = tmp_path / "asyncapi-document.txt"
    target.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [node(), str(HERE / "validate.mjs"), str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr
