"""The events page and the routes that serve the AsyncAPI document.

The generator, the renderer and PyYAML are imported when the document is first built, not
with this module: the extension installs these routes in every web process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, params
from fastapi.responses import HTMLResponse, JSONResponse, Response

if TYPE_CHECKING:
    from fastapi_bus.runtime.bus import EventBus

__all__ = [
    "DEFAULT_CSS_URL",
    "DEFAULT_JS_URL",
    "asyncapi_yaml",
    "get_asyncapi_html",
    "install_asyncapi_routes",
    "yaml_url",
]

_COMPONENT = "https://cdn.jsdelivr.net/npm/@asyncapi/react-component@3.2.1"
#: The AsyncAPI React component's standalone browser bundle.
DEFAULT_JS_URL = f"{_COMPONENT}/browser/standalone/index.js"
#: The AsyncAPI React component's stylesheet.
DEFAULT_CSS_URL = f"{_COMPONENT}/styles/default.min.css"

_STYLE = """
body { margin: 0; font-family: system-ui, sans-serif; color: #1f2933; line-height: 1.5; }
.fab-doc { max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
.fab-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 15rem; overflow-y: auto;
  padding: 1rem; background: #f5f7fa; border-right: 1px solid #e4e7eb; font-size: 0.9rem; }
.fab-nav h2 { font-size: 1rem; margin: 0.8rem 0 0.3rem; }
.fab-nav ul { list-style: none; padding: 0; margin: 0; }
.fab-nav li { margin: 0.2rem 0; overflow-wrap: anywhere; }
@media (min-width: 60rem) { .fab-doc { margin-left: 17rem; } }
@media (max-width: 60rem) { .fab-nav { position: static; width: auto; border: 0; } }
.fab-example { background: #f5f7fa; padding: 0.6rem; border-radius: 0.3rem; overflow-x: auto; }
.fab-broadcast { background: #fde8c8; }
.fab-doc h1 { margin-bottom: 0; }
.fab-badge { font-size: 0.9rem; background: #e4e7eb; border-radius: 0.3rem; padding: 0 0.4rem; }
.fab-meta { color: #616e7c; margin-top: 0.2rem; }
.fab-text { white-space: pre-wrap; }
.fab-doc table { border-collapse: collapse; width: 100%; margin: 0.5rem 0; }
.fab-doc th, .fab-doc td { border: 1px solid #cbd2d9; padding: 0.3rem 0.5rem; text-align: left;
  vertical-align: top; }
.fab-doc article { border-top: 1px solid #e4e7eb; padding-top: 0.5rem; }
.fab-action { text-transform: uppercase; font-size: 0.75rem; border-radius: 0.3rem;
  padding: 0.1rem 0.4rem; color: #fff; background: #3e4c59; }
.fab-receive { background: #2f8132; }
.fab-send { background: #2b6cb0; }
.fab-tag { background: #e4e7eb; border-radius: 0.3rem; padding: 0 0.4rem; margin-right: 0.3rem; }
"""

# Shows the interactive page when the component's bundle loaded; otherwise (offline, blocked)
# the server-rendered page stays, and nothing fails.
_SCRIPT = """
(function () {
  "use strict";
  var component = window.AsyncApiStandalone;
  if (!component || typeof component.render !== "function") {
    return;
  }
  try {
    var source = document.getElementById("asyncapi-document").textContent;
    component.render(
      { schema: JSON.parse(source), config: { show: { sidebar: true } } },
      document.getElementById("asyncapi")
    );
    document.getElementById("asyncapi-static").hidden = true;
  } catch (error) {
    console.warn("The AsyncAPI component failed; showing the plain page.", error);
  }
})();
"""


def _script_json(document: dict[str, Any]) -> str:
    """JSON that cannot end its ``<script>`` element or open a comment inside it."""
    text = json.dumps(document, ensure_ascii=False)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, code)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def get_asyncapi_html(
    document: dict[str, Any],
    *,
    title: str | None = None,
    js_url: str = DEFAULT_JS_URL,
    css_url: str = DEFAULT_CSS_URL,
) -> str:
    """The events page: ``document`` rendered on the server, enhanced in the browser by the
    AsyncAPI React component (loaded from ``js_url`` and ``css_url``) when it can load."""
    from fastapi_bus.asyncapi.render import render_document

    page_title = title or f"{document.get('info', {}).get('title', 'Events')} - Events"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(page_title)}</title>
<link rel="stylesheet" href="{escape(css_url)}">
<style>{_STYLE}</style>
</head>
<body>
<div id="asyncapi"></div>
<main id="asyncapi-static" class="fab-doc">
{render_document(document)}
</main>
<script id="asyncapi-document" type="application/json">{_script_json(document)}</script>
<script src="{escape(js_url)}"></script>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def asyncapi_yaml(document: dict[str, Any]) -> str:
    """``document`` as YAML, in the document's order."""
    import yaml

    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def yaml_url(asyncapi_url: str) -> str:
    """Where the YAML document is served: the JSON URL with ``.yaml`` instead of ``.json``."""
    return asyncapi_url.removesuffix(".json") + ".yaml"


def install_asyncapi_routes(
    app: FastAPI,
    bus: EventBus,
    *,
    asyncapi_url: str | None,
    docs_url: str | None,
    dependencies: Sequence[params.Depends],
    js_url: str = DEFAULT_JS_URL,
    css_url: str = DEFAULT_CSS_URL,
) -> None:
    """Serve the AsyncAPI document at ``asyncapi_url`` (JSON) and its ``.yaml`` twin, and the
    events page at ``docs_url``; ``None`` leaves one out. The document is built on the first
    request, from the app's title, version and description, and kept."""
    cache: dict[str, Any] = {}

    def document() -> dict[str, Any]:
        if "json" not in cache:
            from fastapi_bus.asyncapi.generate import get_asyncapi

            cache["json"] = get_asyncapi(
                bus, title=app.title, version=app.version, description=app.description or None
            )
        return cache["json"]  # type: ignore[no-any-return]

    def cached(key: str, build: Callable[[], str]) -> str:
        if key not in cache:
            cache[key] = build()
        return cache[key]  # type: ignore[no-any-return]

    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(document())

    async def asyncapi_yaml_route() -> Response:
        text = cached("yaml", lambda: asyncapi_yaml(document()))
        return Response(text, media_type="application/yaml")

    async def events_page() -> HTMLResponse:
        html = cached("html", lambda: get_asyncapi_html(document(), js_url=js_url, css_url=css_url))
        return HTMLResponse(html)

    route_options: dict[str, Any] = {
        "methods": ["GET"],
        "include_in_schema": False,
        "dependencies": list(dependencies),
    }
    if asyncapi_url is not None:
        app.add_api_route(asyncapi_url, asyncapi_json, **route_options)
        app.add_api_route(yaml_url(asyncapi_url), asyncapi_yaml_route, **route_options)
    if docs_url is not None:
        app.add_api_route(docs_url, events_page, **route_options)
