"""Lean JSON Schemas for tools/list: an agent pays for every byte of it in every conversation.

Pydantic's schemas carry a title for every property (the name again, capitalised), spell an optional
value as `anyOf: [{type: X}, {type: null}]` and repeat `default: null`. Those say nothing an agent
needs; this drops them and keeps every constraint (types, ranges, enums, required, descriptions).
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver.tools.base import Tool

from app.protocol.icons import FAMILIES, icon
from app.protocol.refusals import as_pixazo_tool


def compact(schema: Any) -> Any:
    """A schema without titles, null defaults, or anyOf-with-null (a type list instead)."""
    if isinstance(schema, list):
        return [compact(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and value is None:
            continue
        if key in ("properties", "$defs", "patternProperties"):
            out[key] = {name: compact(sub) for name, sub in value.items()}
        else:
            out[key] = compact(value)
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        (other,) = [o for o in options if o != {"type": "null"}]
        if isinstance(other, dict) and isinstance(other.get("type"), str) and "$ref" not in other:
            del out["anyOf"]
            out = {**other, **out, "type": [other["type"], "null"]}
    return out


def compact_tools(tools: list[Tool]) -> list[Tool]:
    tools = [as_pixazo_tool(tool) for tool in tools]  # plain refusals (app.protocol.refusals)
    for tool in tools:
        if tool.name in FAMILIES:
            tool.icons = [icon(FAMILIES[tool.name])]
        tool.parameters = compact(tool.parameters)
        if tool.annotations is not None and tool.annotations.title is not None:
            tool.annotations = tool.annotations.model_copy(update={"title": None})  # the tool's own title says it
        if tool.fn_metadata.output_schema is not None:
            tool.fn_metadata.output_schema = compact(tool.fn_metadata.output_schema)
    return tools
