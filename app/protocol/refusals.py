"""Refusals an agent can act on: one plain sentence naming the argument and what it accepts.

The SDK reports a schema error as pydantic prints it ("1 validation error for pix_generateArguments …
[type=…, input_value=…]") and puts "Error executing tool <name>:" before every refusal. Our tools run
as PixazoTool, which turns both into the sentence alone: our own argument models already explain
themselves ("Invalid arguments: `width` must be …"); any other schema error is explained from its
location and pydantic's message.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from pydantic import ValidationError

NOTHING_DONE = "Nothing was recorded or sent to Pixazo."


def plain(error: ValidationError) -> str:
    """One sentence for a failed validation of a tool's arguments."""
    parts: list[str] = []
    for item in error.errors():
        if item["type"] == "invalid_arguments":  # ours: already a sentence, NOTHING_DONE included
            return str(item["msg"]).removeprefix("Invalid arguments: ")
        field = ".".join(str(x) for x in item["loc"]) or "the arguments"
        if item["type"] == "missing":
            text = f"`{field}` is required"
        elif item["type"] == "extra_forbidden":
            text = f"there is no argument `{field}`"
        else:
            text = f"`{field}`: {item['msg'][0].lower()}{item['msg'][1:]}"
        if text not in parts:
            parts.append(text)
    return "; ".join(parts) + ". " + NOTHING_DONE


class PixazoTool(Tool):
    """A tool whose refusals read as the sentence alone (module docstring)."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            return await super().run(arguments, context, convert_result)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(plain(cause)) from cause
            if isinstance(cause, ToolError):
                raise ToolError(str(cause).removeprefix("Invalid arguments: ")) from cause
            raise


def as_pixazo_tool(tool: Tool) -> PixazoTool:
    return PixazoTool(**{name: getattr(tool, name) for name in Tool.model_fields})
