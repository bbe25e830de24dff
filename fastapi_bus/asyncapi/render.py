"""The AsyncAPI document as plain HTML, readable without JavaScript or network.

Every piece of text comes from the application's code (titles, docstrings, field descriptions)
and is escaped here; nothing in the document can add markup.
"""

from __future__ import annotations

import json
import re
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
        _nav(document),
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


def _text(value: Any, tag: str = "div") -> str:
    """A docstring or description, as a safe subset of Markdown: paragraphs, ``-`` lists,
    `code`, **bold**, *emphasis* and [links](https://...). Everything is escaped first, so
    no markup in the text survives; links keep only http(s), relative and fragment URLs."""
    if not value:
        return ""
    if tag == "span":  # inside a table cell: one line
        return f'<span class="fab-text">{_inline(" ".join(str(value).split()))}</span>'
    blocks = []
    for block in re.split(r"\n\s*\n", str(value).strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines and all(line.startswith(("- ", "* ")) for line in lines):
            items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
            blocks.append(f"<ul>{items}</ul>")
        elif lines:
            blocks.append(f"<p>{_inline(' '.join(lines))}</p>")
    return f'<{tag} class="fab-text">{"".join(blocks)}</{tag}>'


_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_EM = re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])")
_SAFE_URL = re.compile(r"^(https?://|/|#|\./)", re.IGNORECASE)


def _inline(text: str) -> str:
    # Code spans first, kept aside so that nothing inside them is read as Markdown.
    spans: list[str] = []

    def keep(match: re.Match[str]) -> str:
        spans.append(f"<code>{_e(match.group(1))}</code>")
        return f"\x00{len(spans) - 1}\x00"

    out = _e(_CODE.sub(keep, text))

    def link(match: re.Match[str]) -> str:
        label, url = match.group(1), match.group(2)
        if not _SAFE_URL.match(url.replace("&amp;", "&")):
            return match.group(0)
        return f'<a href="{url}" rel="noopener nofollow">{label}</a>'

    out = _LINK.sub(link, out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    out = _EM.sub(r"<em>\1</em>", out)
    return re.sub("\x00(\\d+)\x00", lambda m: spans[int(m.group(1))], out)


def _nav(document: dict[str, Any]) -> str:
    """The sidebar: every operation and channel, linked."""
    channels = document.get("channels", {})
    operations = [
        f'<li><a href="#{_anchor("operation", op_id)}">'
        f'<span class="fab-action fab-{_e(op.get("action", ""))}">{_e(op.get("action", ""))}'
        f"</span> {_e(op_id)}</a>{_BROADCAST if op.get('x-broadcast') else ''}</li>"
        for op_id, op in document.get("operations", {}).items()
    ]
    channel_links = [
        f'<li><a href="#{_anchor("channel", channel_id)}"><code>'
        f"{_e(_address(channel, channel_id))}</code></a></li>"
        for channel_id, channel in channels.items()
    ]
    if not operations and not channel_links:
        return ""
    return (
        '<nav class="fab-nav" aria-label="Contents">'
        + (f"<h2>Operations</h2><ul>{''.join(operations)}</ul>" if operations else "")
        + (f"<h2>Channels</h2><ul>{''.join(channel_links)}</ul>" if channel_links else "")
        + "</nav>"
    )


_BROADCAST = (
    ' <span class="fab-tag fab-broadcast" title="every process gets every event">broadcast</span>'
)


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
        queue = _queue_name(operation)
        body.append(
            f'<article id="{_anchor("operation", op_id)}" class="fab-operation">'
            f'<h3><span class="fab-action fab-{_e(action)}">{_e(action)}</span> '
            f"<code>{_e(address)}</code> {_e(operation.get('title', op_id))}"
            + (_BROADCAST if operation.get("x-broadcast") else "")
            + "</h3>"
            + (f"<p>{tags}</p>" if tags else "")
            + (
                "<p>A broadcast handler: each process has a queue of its own, and sees every "
                "event published while it runs.</p>"
                if operation.get("x-broadcast")
                else ""
            )
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
            + _example_block(payload, schemas)
            + "</article>"
        )
    return _section("messages", "Messages", body)


def _example_block(payload: Any, schemas: dict[str, Any]) -> str:
    example = _example(payload, schemas, 0)
    if example is _NO_EXAMPLE:
        return ""
    text = json.dumps(example, indent=2, ensure_ascii=False)
    return f'<p>Example payload:</p><pre class="fab-example"><code>{_e(text)}</code></pre>'


_NO_EXAMPLE = object()
_SAMPLES: dict[str, Any] = {
    "string": "string",
    "integer": 0,
    "number": 0.0,
    "boolean": True,
    "null": None,
}


def _example(schema: Any, schemas: dict[str, Any], depth: int) -> Any:
    """An example of ``schema``: its own ``examples`` or ``default`` where it has them, else
    values that fit its type and bounds."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return _NO_EXAMPLE
    if "$ref" in schema:
        return _example(schemas.get(_ref_name(str(schema["$ref"]))), schemas, depth + 1)
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    for key in ("example", "default", "const"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for union in ("oneOf", "anyOf", "allOf"):
        if isinstance(schema.get(union), list) and schema[union]:
            return _example(schema[union][0], schemas, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        result = {}
        for name, field in props.items():
            value = _example(field, schemas, depth + 1)
            if value is not _NO_EXAMPLE:
                result[name] = value
        return result
    if kind == "array":
        item = _example(schema.get("items"), schemas, depth + 1)
        return [] if item is _NO_EXAMPLE else [item]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        if low is None:
            return _SAMPLES[kind]
        return low + 1 if "exclusiveMinimum" in schema and "minimum" not in schema else low
    if kind == "string":
        fmt = schema.get("format")
        formats = {
            "date-time": "2024-01-01T00:00:00Z",
            "date": "2024-01-01",
            "uuid": ("00000000-0000-0000-0000-000000000000"),
            "email": "user@example.com",
        }
        return formats.get(
            str(fmt),
            "x" * max(int(schema.get("minLength", 0)), 1) if "minLength" in schema else "string",
        )
    if kind in _SAMPLES:
        return _SAMPLES[kind]
    return _NO_EXAMPLE


_CONSTRAINTS = {
    "minimum": "≥ {}",
    "exclusiveMinimum": "&gt; {}",
    "maximum": "≤ {}",
    "exclusiveMaximum": "&lt; {}",
    "multipleOf": "a multiple of {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "pattern": "matches <code>{}</code>",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "uniqueItems": "unique items",
}


def _constraints(field: dict[str, Any]) -> str:
    found = []
    for key, template in _CONSTRAINTS.items():
        if key in field and field[key] is not False:
            value = field[key]
            found.append(template.format(_e(value if not isinstance(value, bool) else "")))
    return ("Constraints: " + ", ".join(found) + ".") if found else ""


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
        details = [_text(field.get("description"), "span")] if isinstance(field, dict) else []
        if isinstance(field, dict):
            details.append(_constraints(field))
            examples = field.get("examples")
            if isinstance(examples, list) and examples:
                shown = ", ".join(f"<code>{_e(json.dumps(x))}</code>" for x in examples[:3])
                details.append(f"Examples: {shown}")
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


def _queue_name(operation: dict[str, Any]) -> str | None:
    """The queue (or stream) a receive operation consumes, as its transport described it."""
    described = [*operation.get("bindings", {}).values(), operation.get("x-redis", {})]
    for fields in described:
        for key in ("x-queue", "stream"):
            value = fields.get(key)
            name = value.get("name") if isinstance(value, dict) else value
            if isinstance(name, str):
                return name
    return None
