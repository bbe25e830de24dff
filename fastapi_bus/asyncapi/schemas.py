"""Payload schemas: pydantic's JSON schemas, shared in ``components.schemas``.

All payload types are converted in one pass, so a model used by several events is described
once, and two models with the same class name in different modules get distinct names.
pydantic writes JSON Schema 2020-12 with OpenAPI's discriminator; the AsyncAPI schema format
builds on draft 07, so the few keywords that differ are rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

__all__ = ["SCHEMA_REF_PREFIX", "payload_schemas"]

#: Where ``$ref`` of payload schemas point.
SCHEMA_REF_PREFIX = "#/components/schemas/"

_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMAS = (
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
)


def payload_schemas(types: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The JSON schema of each of ``types`` (in order), and the shared named schemas they
    reference (for ``components.schemas``)."""
    if not types:
        return [], {}
    inputs = [(index, "validation", TypeAdapter(tp)) for index, tp in enumerate(types)]
    by_key, shared = TypeAdapter.json_schemas(
        inputs,  # type: ignore[arg-type]
        by_alias=True,
        ref_template=SCHEMA_REF_PREFIX + "{model}",
    )
    schemas = [to_asyncapi_schema(by_key[(index, "validation")]) for index in range(len(types))]
    components = {
        name: to_asyncapi_schema(schema) for name, schema in shared.get("$defs", {}).items()
    }
    return schemas, components


def to_asyncapi_schema(schema: Any) -> Any:
    """``schema`` with JSON Schema 2020-12 and OpenAPI keywords rewritten for AsyncAPI."""
    if not isinstance(schema, dict):
        return schema  # ``true`` / ``false`` schemas
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SUBSCHEMA_LISTS and isinstance(value, list):
            result[key] = [to_asyncapi_schema(item) for item in value]
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            result[key] = {name: to_asyncapi_schema(item) for name, item in value.items()}
        elif key in _SUBSCHEMAS:
            result[key] = to_asyncapi_schema(value)
        elif key == "discriminator" and isinstance(value, dict):
            # AsyncAPI names the discriminating property with a string; each variant of the
            # union pins that property with ``const``, so ``oneOf`` alone still selects one.
            if isinstance(value.get("propertyName"), str):
                result[key] = value["propertyName"]
        else:
            result[key] = value
    if "prefixItems" in result:
        # Draft 07 spells a tuple as a list of ``items``, the rest as ``additionalItems``.
        rest = result.pop("items", None)
        result["items"] = result.pop("prefixItems")
        if rest is not None:
            result["additionalItems"] = rest
    return result
