"""The MCP tools' registry: one module per family (generate, editing, lineage, history, jobs), results in
app.protocol.results."""

from __future__ import annotations

from collections.abc import Mapping

from mcp.server.mcpserver.tools.base import Tool
from mcp.types import ToolAnnotations

from app.core.styles import Style
from app.protocol.app import APP_ONLY, app_tools, stamp
from app.protocol.editing import editing_tools
from app.protocol.generate import pix_generate_tool
from app.protocol.history import READ_ONLY, get_generation, list_generations, pix_status
from app.protocol.jobs import pix_cancel, pix_wait
from app.protocol.lineage import pix_regenerate_tool
from app.protocol.schemas import compact_tools
from app.protocol.uploads import upload_tools
from app.settings import Settings


def all_tools(settings: Settings, styles: Mapping[str, Style] | None = None) -> list[Tool]:
    return compact_tools(stamp([
        pix_generate_tool(settings, styles),
        *editing_tools(settings, styles),
        pix_regenerate_tool(),
        Tool.from_function(list_generations, title="List generations",
                           annotations=READ_ONLY.model_copy(update={"title": "List generations"})),
        Tool.from_function(get_generation, title="Get a generation",
                           annotations=READ_ONLY.model_copy(update={"title": "Get a generation"})),
        Tool.from_function(pix_wait, title="Wait for a generation",
                           annotations=READ_ONLY.model_copy(update={"title": "Wait for a generation"})),
        Tool.from_function(pix_cancel, title="Cancel a generation", annotations=ToolAnnotations(
            title="Cancel a generation", read_only_hint=False, destructive_hint=True, idempotent_hint=True,
            open_world_hint=False)),
        Tool.from_function(pix_status, title="Server and quota status",
                           annotations=READ_ONLY.model_copy(update={"title": "Server and quota status"})),
        *upload_tools(APP_ONLY),
        *app_tools(),
    ]))
