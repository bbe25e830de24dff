"""The AsyncAPI document as plain HTML, readable without JavaScript or network.

Every piece of text comes from the application's code (titles, docstrings, field descriptions)
and is escaped here; nothing in the document can add markup.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

__all__ = ["render_document"]

_MAX_DEPTH = 8  # of nested inline schemas: deeper ones are summarised as their type


def render_document(document: dict[str, Any]) -> str:
    """The body of the events page: servers, operations, channels, messages and schemas."""
    info = document.get("info", {})
    components = document.get("components", {})
    parts = [
        '<header class="fab-header">',
        f"<h1>{_e(info.get('title', 'Events'))} "
        f'<span class="fab-badge">{_e(info.get("version", ""))}</span></h1>',
        f'<p class="fab-meta">AsyncAPI {_e(document.get("asyncapi", ""))}</p>',
        _text(info.get("description")),
        "</header>",
        _servers(document.get("servers", {})),
        ""
        if document.get("operations")
        else "<p>This service neither handles nor publishes events.</p>",
        _operations(document),
        _channels(document.get("channels", {})),
        _messages(components.get("messages", {}), components.get("schemas", {})),
        _schemas(components.get("schemas", {})),
    ]
    return "\n".join(part for part in parts if part)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _text(value: Any, tag: str = "p") -> str:
    if not value:
        return ""
    return f'<{tag} class="fab-text">{_e(value)}</{tag}>'


def _anchor(kind: str, name: str) -> str:
    return _e(f"{kind}-{name}")


def _link(kind: str, name: str, label: str | None = None) -> str:
    return f'<a href="#{_anchor(kind, name)}">{_e(label if label is not None else name)}</a>'


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")


def _address(channel: dict[str, Any], default: str) -> str:
    """A channel's address, or its topic pattern when it has none."""
    return str(channel.get("address") or channel.get("x-topic-pattern") or default)


def _section(section_id: str, title: str, body: list[str]) -> str:
    if not body:
        return ""
    items = "\n".join(body)
    return f'<section id="{section_id}" class="fab-section">\n<h2>{title}</h2>\n{items}\n</section>'


def _servers(servers: dict[str, Any]) -> str:
    rows = [
        f"<tr><td>{_e(name)}</td><td>{_e(server.get('protocol', ''))}</td>"
        f"<td><code>{_e(server.get('host', ''))}{_e(server.get('pathname', ''))}</code></td>"
        f"<td>{_e(server.get('description', ''))}</td></tr>"
        for name, server in servers.items()
    ]
    if not rows:
        return ""
    head = "<tr><th>Server</th><th>Protocol</th><th>Host</th><th>Description</th></tr>"
    return _section("servers", "Servers", [f"<table>{head}{''.join(rows)}</table>"])


def _operations(document: dict[str, Any]) -> str:
    channels = document.get("channels", {})
    body = []
    for op_id, operation in document.get("operations", {}).items():
        channel_id = _ref_name(operation.get("channel", {}).get("$ref", ""))
        address = _address(channels.get(channel_id, {}), channel_id)
        action = operation.get("action", "")
        tags = "".join(
            f'<span class="fab-tag">{_e(tag.get("name", ""))}</span>'
            for tag in operation.get("tags", [])
        )
        messages = ", ".join(
            _link("message", _ref_name(ref.get("$ref", "")))
            for ref in operation.get("messages", [])
        )
        queue = operation.get("bindings", {}).get("amqp", {}).get("x-queue", {}).get("name")
        body.append(
            f'<article id="{_anchor("operation", op_id)}" class="fab-operation">'
            f'<h3><span class="fab-action fab-{_e(action)}">{_e(action)}</span> '
            f"<code>{_e(address)}</code> {_e(operation.get('title', op_id))}</h3>"
            + (f"<p>{tags}</p>" if tags else "")
            + _text(operation.get("summary"))
            + _text(operation.get("description"))
            + f"<p>Operation <code>{_e(op_id)}</code>"
            + (f", queue <code>{_e(queue)}</code>" if queue else "")
            + (f". Messages: {messages}" if messages else "")
            + ".</p></article>"
        )
    return _section("operations", "Operations", body)


def _channels(channels: dict[str, Any]) -> str:
    rows = []
    for channel_id, channel in channels.items():
        messages = ", ".join(_link("message", name) for name in channel.get("messages", {}))
        rows.append(
            f'<tr id="{_anchor("channel", channel_id)}"><td><code>{_e(_address(channel, ""))}'
            f"</code></td><td>{messages}</td><td>{_e(channel.get('description', ''))}</td></tr>"
        )
    if not rows:
        return ""
    head = "<tr><th>Address</th><th>Messages</th><th>Description</th></tr>"
    return _section("channels", "Channels", [f"<table>{head}{''.join(rows)}</table>"])


def _messages(messages: dict[str, Any], schemas: dict[str, Any]) -> str:
    body = []
    for message_id, message in messages.items():
        title = message.get("title")
        payload = message.get("payload", {})
        fields = ""
        if isinstance(payload, dict) and "$ref" in payload:
            # A shared model: its fields here too, so the message reads on its own.
            fields = _schema_body(schemas.get(_ref_name(str(payload["$ref"]))), 0)
        body.append(
            f'<article id="{_anchor("message", message_id)}" class="fab-message">'
            f"<h3><code>{_e(message.get('name', message_id))}</code>"
            + (f" {_e(title)}" if title else "")
            + "</h3>"
            + _text(message.get("description"))
            + f"<p>Content type <code>{_e(message.get('contentType', ''))}</code></p>"
            + _schema_body(payload, 0)
            + fields
            + "</article>"
        )
    return _section("messages", "Messages", body)


def _schemas(schemas: dict[str, Any]) -> str:
    body = [
        f'<article id="{_anchor("schema", name)}" class="fab-schema"><h3>{_e(name)}</h3>'
        + _text(schema.get("description") if isinstance(schema, dict) else None)
        + _schema_body(schema, 0)
        + "</article>"
        for name, schema in schemas.items()
    ]
    return _section("schemas", "Schemas", body)


def _schema_body(schema: Any, depth: int) -> str:
    """A table of an object's fields, or the type of anything else."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return f'<p class="fab-type">Type: {_type(schema)}</p>'
    required = set(schema.get("required", []))
    rows = []
    for name, field in schema["properties"].items():
        details = [_e(field.get("description", ""))] if isinstance(field, dict) else []
        if isinstance(field, dict) and "default" in field:
            details.append(f"Default: <code>{_e(json.dumps(field['default']))}</code>")
        if isinstance(field, dict) and "properties" in field and depth < _MAX_DEPTH:
            details.append(_schema_body(field, depth + 1))
        rows.append(
            f"<tr><td><code>{_e(name)}</code></td><td>{_type(field)}</td>"
            f"<td>{'yes' if name in required else 'no'}</td>"
            f"<td>{' '.join(detail for detail in details if detail)}</td></tr>"
        )
    head = "<tr><th>Field</th><th>Type</th><th>Required</th><th>Description</th></tr>"
    return f'<table class="fab-fields">{head}{"".join(rows)}</table>'


def _type(schema: Any) -> str:
    """A short, linked description of a schema's type."""
    if schema is True or schema == {}:
        return "any"
    if not isinstance(schema, dict):
        return "nothing"
    if "$ref" in schema:
        return _link("schema", _ref_name(str(schema["$ref"])))
    if "const" in schema:
        return f"<code>{_e(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        values = ", ".join(f"<code>{_e(json.dumps(value))}</code>" for value in schema["enum"])
        return f"one of {values}"
    for union in ("oneOf", "anyOf"):
        if isinstance(schema.get(union), list):
            return " | ".join(_type(option) for option in schema[union])
    if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
        return _type(schema["allOf"][0])
    kind = schema.get("type", "any")
    text = " | ".join(_e(k) for k in kind) if isinstance(kind, list) else _e(kind)
    if "format" in schema:
        text += f" ({_e(schema['format'])})"
    items = schema.get("items")
    if kind == "array" and isinstance(items, list):
        text += " of (" + ", ".join(_type(item) for item in items) + ")"
    elif kind == "array" and items is not None:
        text += f" of {_type(items)}"
    extra = schema.get("additionalProperties")
    if kind == "object" and isinstance(extra, dict):
        text += f" of {_type(extra)}"
    return text
