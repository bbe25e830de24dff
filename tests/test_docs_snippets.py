"""Every ```python block of README.md and docs/*.md runs as shown.

How the blocks are run:

- Each block runs on its own, in a fresh module: it must import and define everything it
  uses. Top-level ``await`` is allowed (the block then runs in an event loop).
- A block whose fence names a file, as in ```python title="shop/events.py"```, is that file
  of a small project: it is written to a temporary folder together with the earlier blocks of
  the same page that name files (the last block naming a path wins), and imported from there.
  Later blocks of the page can import it (``from shop.events import OrderPlaced``).
- Functions named ``test_*`` that a block defines, and that take no parameters, are called
  too (``async def`` ones in an event loop), so test examples are checked, not only defined.
- A block that uses an ``amqp://`` broker is skipped where the ``rabbitmq`` extra is not
  installed (Python 3.10). Building such an app needs no server: nothing connects.
- A block that is a fragment on purpose opts out with an HTML comment on the line before its
  fence, giving the reason: ``<!-- snippet: skip (a fragment of the block above) -->``. Keep
  such blocks rare: a reader copies what the docs show.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.util
import inspect
import re
import shutil
import sys
import textwrap
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 30.0

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)(?P<info>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
SKIP = re.compile(r"^\s*<!--\s*snippet:\s*skip\b(?P<reason>.*?)-->\s*$")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int
    code: str
    title: str | None
    skip: str | None

    @property
    def id(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page.name
        return f"{page}:{self.line}"


def snippets(page: Path) -> list[Snippet]:
    found: list[Snippet] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent = opening["indent"]
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if opening["lang"] == "python":
            previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
            skip = SKIP.match(previous)
            title = TITLE.search(opening["info"])
            body = "\n".join(
                line[len(indent) :] if line.startswith(indent) else line
                for line in lines[index + 1 : end]
            )
            found.append(
                Snippet(
                    page=page,
                    line=index + 1,
                    code=textwrap.dedent(body) + "\n",
                    title=title["title"] if title else None,
                    skip=(skip["reason"].strip(" ()") or "no reason given") if skip else None,
                )
            )
        index = end + 1
    return found


ALL = [snippet for page in PAGES for snippet in snippets(page)]


def _run_in_thread(target: Any) -> None:
    """Run ``target()`` and re-raise what it raised; fail if it is not done in time."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        pytest.fail(f"the snippet did not finish within {TIMEOUT} s")
    if outcome:
        raise outcome[0]


def _call_tests(module: types.ModuleType) -> None:
    for name, value in list(vars(module).items()):
        if not name.startswith("test_") or not inspect.isfunction(value):
            continue
        if value.__module__ != module.__name__ or inspect.signature(value).parameters:
            continue
        if inspect.iscoroutinefunction(value):
            asyncio.run(value())
        else:
            value()


def _forget(packages: set[str]) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            del sys.modules[name]


@pytest.mark.parametrize("snippet", ALL, ids=[snippet.id for snippet in ALL])
def test_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.skip is not None:
        pytest.skip(f"marked as a fragment: {snippet.skip}")
    if "amqp" in snippet.code and importlib.util.find_spec("aio_pika") is None:
        pytest.skip("the rabbitmq extra is not installed")
    run_snippet(snippet, tmp_path)


def run_snippet(snippet: Snippet, tmp_path: Path) -> None:
    # The files that the page has shown so far, as a project in tmp_path.
    files: dict[str, str] = {}
    for other in snippets(snippet.page):
        if other.line > snippet.line:
            break
        if other.title is not None and other.skip is None:
            files[other.title] = other.code
    for name, code in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code, encoding="utf-8")
        for parent in path.relative_to(tmp_path).parents:
            init = tmp_path / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text("", encoding="utf-8")
    packages = {Path(name).parts[0].removesuffix(".py") for name in files}
    _forget(packages)
    # pytest may hand a later test the same folder name once this one is deleted, and the
    # import system caches what it listed in a folder: list it afresh.
    sys.path_importer_cache.pop(str(tmp_path), None)
    importlib.invalidate_caches()
    sys.path.insert(0, str(tmp_path))
    module_name = f"docs_snippet_{abs(hash(snippet.id))}"
    try:
        if snippet.title is not None:
            dotted = snippet.title.removesuffix(".py").replace("/", ".")

            def run() -> None:
                _call_tests(importlib.import_module(dotted))

        else:
            module = types.ModuleType(module_name)
            module.__file__ = str(tmp_path / "snippet.py")
            sys.modules[module_name] = module
            code = compile(
                ast.parse(snippet.code, filename=snippet.id),
                snippet.id,
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )

            def run() -> None:
                if code.co_flags & inspect.CO_COROUTINE:
                    asyncio.run(eval(code, module.__dict__))
                else:
                    exec(code, module.__dict__)
                _call_tests(module)

        _run_in_thread(run)
    finally:
        sys.path.remove(str(tmp_path))
        sys.path_importer_cache.pop(str(tmp_path), None)
        sys.modules.pop(module_name, None)
        _forget(packages)
        shutil.rmtree(tmp_path, ignore_errors=True)


PAGE = """# A page

```python title="lib/models.py"
VALUE = 1
```

<!-- snippet: skip (shows only a part) -->
```python
print(undefined)
```

```python
from lib.models import VALUE


def test_value() -> None:
    assert VALUE == {value}
```
"""


@pytest.mark.parametrize(("value", "passes"), [(1, True), (2, False)])
def test_the_runner_runs_files_markers_and_test_functions(
    tmp_path: Path, value: int, passes: bool
) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE.replace("{value}", str(value)), encoding="utf-8")
    models, fragment, user = snippets(page)
    assert models.title == "lib/models.py"
    assert fragment.skip == "shows only a part"
    assert user.skip is None
    project = tmp_path / "project"
    project.mkdir()
    if passes:
        run_snippet(user, project)
    else:
        with pytest.raises(AssertionError):
            run_snippet(user, project)


def test_snippets_are_found() -> None:
    # The parser finds the blocks (a broken fence pattern would make this suite pass vacuously).
    assert len(ALL) > 30
    assert all(snippet.code.strip() for snippet in ALL)
