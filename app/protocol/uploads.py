"""Bringing the caller's own images: pix_upload_link (a one-time link for the person), and the app's
upload (pix_app_upload, the bytes through the host, for the in-chat app's file input)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools.base import Tool
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from app.core.uploads import UPLOAD_PATH, UploadError
from app.identity.tokens import current_caller
from app.protocol.results import state_of


class UploadLink(BaseModel):
    upload_url: str  # for the person; it works once
    id: int  # the upload's generation id (PENDING until the image arrives)
    expires_at: str


def _base_url(ctx: Context) -> str | None:
    """Where a person's browser reaches this server: PIXAZO_PUBLIC_URL, else the address the request
    came to; None over stdio (no address at all)."""
    state = state_of(ctx)
    if state.settings.public_url:
        return state.settings.public_url.rstrip("/")
    request: Any = ctx.request_context.request
    if request is not None and hasattr(request, "base_url"):
        return str(request.base_url).rstrip("/")
    return None


async def pix_upload_link(ctx: Context) -> CallToolResult:
    """A one-time link for the person to upload their own image; then pix_wait its id and edit by that id."""
    state = state_of(ctx)
    assert state.uploads is not None  # noqa: S101 - the lifespan always makes one
    base = _base_url(ctx)
    if base is None:
        raise ToolError("Upload links need the HTTP server (pixazo-mcp serve): a link is an address a browser "
                        "opens. Here, give the editing tools an https URL of the image (Pixazo fetches inputs by URL).")
    made = await state.uploads.create_link(current_caller())
    if isinstance(made, str):
        raise ToolError(made)
    url = base + UPLOAD_PATH.format(token=made.token)
    expires = datetime.fromtimestamp(made.expires_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    text = (f"Give the person this link to upload their image: {url}\nIt works once, until {expires}. The upload "
            f"will be generation {made.generation.id}: call pix_wait with id {made.generation.id} to know when it "
            "has arrived, then use that id as `image` (or `mask`) in the editing tools.")
    result = UploadLink(upload_url=url, id=made.generation.id, expires_at=expires)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=result.model_dump())


class AppUpload(BaseModel):
    id: int


async def pix_app_upload(
    ctx: Context,
    data: Annotated[str, Field(description="base64 PNG, JPEG or WebP")],
    name: Annotated[str, Field(max_length=256)] = "",
) -> CallToolResult:
    """(App only.) Keep an image as an upload."""
    state = state_of(ctx)
    assert state.uploads is not None  # noqa: S101 - the lifespan always makes one
    try:
        gen = await state.uploads.from_base64(data, current_caller(), "the app")
    except UploadError as exc:
        raise ToolError(f"{exc.message} Nothing was recorded.") from None
    return CallToolResult(content=[TextContent(type="text", text=f"Uploaded as generation {gen.id}.")],
                          structured_content=AppUpload(id=gen.id).model_dump())


def upload_tools(app_only: dict[str, Any]) -> list[Tool]:
    return [
        Tool.from_function(pix_upload_link, title="Upload link for your own image", annotations=ToolAnnotations(
            title="Upload link for your own image", read_only_hint=False, destructive_hint=False,
            idempotent_hint=False, open_world_hint=False)),
        Tool.from_function(pix_app_upload, title="Upload from the app", meta=app_only, annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)),
    ]
